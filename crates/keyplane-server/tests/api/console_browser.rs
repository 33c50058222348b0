//! The web console in a real browser: headless Chromium, driven through chromedriver
//! (WebDriver) against the real server over HTTPS. Elements are found as a person finds them:
//! inputs by their label, buttons and links by their words (contract §10).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, or `CHROMIUM` and `CHROMEDRIVER` naming others): without them each test
//! prints why and passes, except under `CI`, where it fails. These run on SQLite; the store
//! paths they share with the API are covered on both stores by `console.rs`.
//!
//! With `KEYPLANE_SCREENSHOTS=<dir>` the first-run test also writes PNGs of the main pages
//! (sign-in, the API keys list, a new key with its secret) there, at a desktop width:
//! `KEYPLANE_SCREENSHOTS=$PWD/docs/screenshots cargo test -p keyplane-server --test api console_browser`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;

use crate::console::{Console, OWNER_PASSWORD, session_cookie_of};
use crate::helpers::{
    Backend, Fixture, TestApp, mailed_invitation_token, mails_to, ok, send, skip,
};

/// A chromedriver of the test's own (on a free port) and a headless Chromium session.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

fn program(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.exists().then_some(path)
}

impl Browser {
    /// `None` (with the reason printed, or a failure in CI) without Chromium or chromedriver.
    async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            program("CHROMIUM", "/usr/bin/chromium"),
            program("CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            skip(
                "browser tests need Chromium and chromedriver (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--window-size=1280,900",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                ],
            }),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        // chromedriver takes a moment to listen: poll until it answers (bounded).
        let mut attempts = 0;
        let client = loop {
            match ClientBuilder::rustls()
                .expect("a TLS connector")
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("chromedriver did not answer: {error}"),
            }
        };
        Some(Self {
            client,
            _driver: driver,
        })
    }

    async fn open(&self, app: &TestApp, path: &str) {
        self.client.goto(&app.url(path)).await.unwrap();
    }

    /// The input a label names.
    async fn field(&self, label: &str) -> fantoccini::elements::Element {
        let xpath = format!("//*[@id=//label[normalize-space()=\"{label}\"]/@for]");
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("a field labelled {label}: {e}"))
    }

    async fn fill(&self, label: &str, value: &str) {
        let field = self.field(label).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks the button (or link) with these words.
    async fn press(&self, words: &str) {
        let xpath = format!(
            "//button[normalize-space()=\"{words}\" or @aria-label=\"{words}\"] | //a[normalize-space()=\"{words}\" or @aria-label=\"{words}\"]"
        );
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("a button or link {words:?}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits for a page whose heading is `heading`.
    async fn expect_heading(&self, heading: &str) {
        let xpath = format!("//h1[normalize-space()=\"{heading}\"]");
        if let Err(error) = self
            .client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::XPath(&xpath))
            .await
        {
            let source = self.client.source().await.unwrap_or_default();
            panic!("no heading {heading:?} ({error}) in {source}");
        }
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn has(&self, xpath: &str) -> bool {
        !self
            .client
            .find_all(Locator::XPath(xpath))
            .await
            .unwrap()
            .is_empty()
    }

    /// Waits for an element holding `text` (the page after a form was sent).
    async fn expect_text(&self, text: &str) {
        let xpath = format!("//*[contains(normalize-space(), \"{text}\")]");
        if let Err(error) = self
            .client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::XPath(&xpath))
            .await
        {
            let source = self.client.source().await.unwrap_or_default();
            panic!("no {text:?} ({error}) in {source}");
        }
    }

    /// The session cookie the browser holds, if any.
    async fn session_cookie(&self) -> Option<String> {
        self.client
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == "__Host-keyplane_session")
            .map(|c| c.value().to_owned())
    }

    /// Every host the page loaded anything from.
    async fn hosts_loaded(&self) -> Vec<String> {
        let hosts = self
            .client
            .execute(
                "return [location.host].concat(performance.getEntriesByType('resource').map(e => new URL(e.name).host));",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(hosts).unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("KEYPLANE_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Asserts that everything the page loaded came from the app itself.
async fn assert_only_this_host(browser: &Browser, app: &TestApp) {
    let own = format!("localhost:{}", app.port);
    for host in browser.hosts_loaded().await {
        assert_eq!(host, own, "a request left for another host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_then_a_key_created_disabled_rotated_and_deleted_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::start(&Backend::Sqlite).await;
    let link = app.setup_link.clone().expect("a setup link");
    // The link names the configured public URL; the test server listens on a port of its own.
    let (_, path) = link.split_once("/console/setup").unwrap();
    browser.open(&app, &format!("/console/setup{path}")).await;
    browser.expect_heading("Set up Keyplane").await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(
        url.fragment(),
        None,
        "the token is dropped from the address bar"
    );
    for (label, value) in [
        ("Organization name", "Acme Retail"),
        ("Address", "Hauptstrasse 1"),
        ("Zip", "10115"),
        ("Town", "Berlin"),
        ("Country", "DEU"),
        ("Email", "founder@example.com"),
        ("Password", "a long enough passphrase"),
        ("First name", "Ada"),
        ("Last name", "Lovelace"),
    ] {
        browser.fill(label, value).await;
    }
    browser.press("Create organization").await;
    browser.expect_heading("API keys").await;
    assert!(browser.session_cookie().await.is_some(), "signed in");
    assert_only_this_host(&browser, &app).await;
    // htmx runs, and adds no inline style the policy would refuse.
    let htmx = browser
        .client
        .execute(
            "return [typeof htmx === 'object' ? htmx.version : null, document.querySelectorAll('style, [style]').length];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        htmx[0].as_str().is_some_and(|v| v.starts_with("2.")),
        "{htmx}"
    );
    assert_eq!(htmx[1], 0, "no inline style");
    // The filters swap the table in place (htmx), and the address follows.
    let kind = browser.field("Status").await;
    kind.send_keys("disabled").await.unwrap();
    browser
        .expect_text("No API keys match these filters.")
        .await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("status=disabled")
    );
    browser.open(&app, "/console/api-keys").await;
    browser.expect_heading("API keys").await;

    browser.press("New API key").await;
    browser.expect_heading("New API key").await;
    browser.fill("Name", "checkout").await;
    browser.fill("Metadata", r#"{"store": "berlin-01"}"#).await;
    browser.press("Create").await;
    browser.expect_heading("API key created").await;
    let secret = browser.text_of("[aria-labelledby='secret-label']").await;
    let label = browser.text_of("#secret-label").await;
    assert_eq!(label, "Secret");
    assert!(browser.has("//button[normalize-space()='Copy']").await);
    assert!(
        browser
            .has("//*[contains(., 'It will not be shown again')]")
            .await
    );
    let public_key = browser.text_of("#api-key").await;
    assert!(
        !browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&secret)
    );
    app.token_pair(&public_key, &secret).await;
    browser.screenshot("new-key-secret").await;
    assert_only_this_host(&browser, &app).await;

    browser.press("Done").await;
    browser.expect_heading("API keys").await;
    assert!(
        !browser.client.source().await.unwrap().contains(&secret),
        "shown once"
    );
    browser.screenshot("api-keys").await;
    // At 375 px the page does not scroll sideways (the table scrolls in its own box).
    browser.client.set_window_size(375, 800).await.unwrap();
    let widths = browser
        .client
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(widths[0], 375, "the viewport is 375 px wide");
    assert!(
        widths[1].as_u64().unwrap() <= 375,
        "the page is {} px wide at 375 px",
        widths[1]
    );
    browser.client.set_window_size(1280, 900).await.unwrap();
    browser.press("Disable checkout").await;
    browser.expect_text("The API key was disabled.").await;
    assert!(
        !app.stored_api_key(&public_key)
            .await
            .is_usable(keyplane_core::time::now_unix())
    );
    browser.press("Enable checkout").await;
    browser.expect_text("The API key was enabled.").await;
    assert!(
        app.stored_api_key(&public_key)
            .await
            .is_usable(keyplane_core::time::now_unix())
    );

    browser.press("Rotate checkout").await;
    browser.expect_heading("Rotate checkout").await;
    browser.fill("Grace period", "60").await;
    browser.press("Rotate").await;
    browser.expect_heading("API key rotated").await;
    let rotated = browser.text_of("[aria-labelledby='secret-label']").await;
    assert_ne!(rotated, secret);
    app.token_pair(&public_key, &rotated).await;
    app.token_pair(&public_key, &secret).await;

    browser.press("Done").await;
    browser.expect_heading("API keys").await;
    browser.press("Delete checkout").await;
    browser.expect_heading("Delete checkout").await;
    browser
        .fill("Type the key's name to confirm", "checkou")
        .await;
    browser.press("Delete").await;
    browser.expect_text("must be the key's name").await;
    browser
        .fill("Type the key's name to confirm", "checkout")
        .await;
    browser.press("Delete").await;
    browser.expect_text("The API key was deleted.").await;

    // Once an organization exists, the setup page is gone.
    browser.open(&app, "/console/setup").await;
    browser.expect_heading("That did not work").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_in_shows_the_error_and_signing_out_ends_the_session() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let fixture = Fixture::start(&Backend::Sqlite).await;
    let app = &fixture.app;
    app.activate_owner(&fixture.boot, OWNER_PASSWORD).await;
    browser.open(app, "/").await;
    browser.expect_heading("Sign in").await;
    assert!(
        browser
            .has("//a[normalize-space()='Forgot password?']")
            .await
    );
    browser.screenshot("sign-in").await;
    browser.fill("Email", "owner@example.com").await;
    browser.fill("Password", "not the password").await;
    browser.press("Sign in").await;
    browser.expect_text("Invalid credentials").await;
    assert!(
        browser
            .has("//*[@role='alert'][contains(., 'Invalid credentials')]")
            .await
    );
    assert_eq!(
        browser
            .field("Email")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("owner@example.com")
    );
    // By keyboard alone: Enter in the password field sends the form.
    let password = browser.field("Password").await;
    password.clear().await.unwrap();
    password
        .send_keys(&format!("{OWNER_PASSWORD}\u{E007}"))
        .await
        .unwrap();
    browser.expect_heading("API keys").await;
    for link in [
        "Organizations",
        "API keys",
        "People",
        "Audit log",
        "Account",
    ] {
        assert!(
            browser
                .has(&format!("//nav//a[normalize-space()='{link}']"))
                .await,
            "{link}"
        );
    }
    let cookie = browser.session_cookie().await.expect("a session cookie");
    browser.press("Sign out").await;
    browser.expect_heading("Sign in").await;
    assert_eq!(browser.session_cookie().await, None);
    let mut replay = Console::new(app);
    replay.cookie = Some(cookie);
    assert_eq!(
        replay.get("/console/api-keys").await.status(),
        303,
        "the old cookie is dead"
    );
    // A page asked for without a session comes back after signing in.
    browser.open(app, "/console/account").await;
    browser.expect_heading("Sign in").await;
    browser.fill("Email", "owner@example.com").await;
    browser.fill("Password", OWNER_PASSWORD).await;
    browser.press("Sign in").await;
    browser.expect_heading("Account").await;
    assert_only_this_host(&browser, app).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_viewer_accepts_sees_no_write_controls_and_cannot_forge_changes() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let fixture = Fixture::start(&Backend::Sqlite).await;
    let app = &fixture.app;
    ok(send(
        app,
        Method::POST,
        &fixture.token,
        "/api/v0/users",
        Some(json!({"email": "viewer@example.com", "role": "viewer"})),
    )
    .await)
    .await;
    let token = mailed_invitation_token(app, "viewer@example.com");
    browser
        .open(app, &format!("/accept-invitation#token={token}"))
        .await;
    browser.expect_heading("Accept invitation").await;
    browser.fill("Password", "a long enough passphrase").await;
    browser.fill("First name", "Grace").await;
    browser.fill("Last name", "Hopper").await;
    browser.press("Accept invitation").await;
    browser.expect_heading("API keys").await;
    assert!(
        browser.has("//td[contains(., 'bootstrap')]").await,
        "the viewer reads the keys"
    );
    for control in [
        "New API key",
        "Disable bootstrap",
        "Rotate bootstrap",
        "Delete bootstrap",
    ] {
        let xpath = format!("//*[normalize-space()='{control}' or @aria-label='{control}']");
        assert!(!browser.has(&xpath).await, "no {control} for a viewer");
    }
    // Forged from the page itself (this origin, the session's CSRF token): refused by the
    // use case's policy check, as the API refuses it.
    let key = app.stored_api_key(&fixture.boot.api_key).await;
    let statuses = browser
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('meta[name="csrf-token"]').content;
               const post = (path, fields) => fetch(path, {method: 'POST', body: new URLSearchParams(fields), redirect: 'manual'}).then(r => r.status);
               Promise.all([
                 post('/console/api-keys', {name: 'forged', kind: 'test', csrf_token: csrf}),
                 post(arguments[0], {status: 'disabled', csrf_token: csrf}),
                 post('/console/api-keys', {name: 'forged', kind: 'test'}),
               ]).then(done);"#,
            vec![json!(format!("/console/api-keys/{}/status", key.id))],
        )
        .await
        .unwrap();
    assert_eq!(
        statuses,
        json!([403, 403, 403]),
        "role refusals, then the missing CSRF token"
    );
    assert_eq!(
        app.stored_api_key(&fixture.boot.api_key).await,
        key,
        "nothing changed"
    );
    assert_only_this_host(&browser, app).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_person_ends_their_browser_session() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let fixture = Fixture::start(&Backend::Sqlite).await;
    let app = &fixture.app;
    let invited = ok(send(
        app,
        Method::POST,
        &fixture.token,
        "/api/v0/users",
        Some(json!({"email": "dev@example.com", "role": "developer"})),
    )
    .await)
    .await;
    let token = mailed_invitation_token(app, "dev@example.com");
    browser
        .open(app, &format!("/accept-invitation#token={token}"))
        .await;
    browser.fill("Password", "a long enough passphrase").await;
    browser.press("Accept invitation").await;
    browser.expect_heading("API keys").await;
    assert!(
        browser.has("//a[normalize-space()='New API key']").await,
        "a developer manages keys"
    );
    let path = format!("/api/v0/users/{}", invited["_id"].as_str().unwrap());
    ok(send(
        app,
        Method::PATCH,
        &fixture.token,
        &path,
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    browser.open(app, "/console/api-keys").await;
    browser.expect_heading("Sign in").await;
    assert_eq!(
        browser.session_cookie().await,
        None,
        "the dead cookie is cleared"
    );
    // And the plain HTTP view of the same: a session cookie from before the disable is dead.
    let _ = session_cookie_of;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_invites_and_revokes_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let fixture = Fixture::start(&Backend::Sqlite).await;
    let app = &fixture.app;
    // The owner accepts the bootstrap invitation as a person would (the page then shows them
    // as a member with a name, and no invitation of theirs pending).
    let accepted = app
        .post_json(
            "/api/v0/invitations/accept",
            &serde_json::json!({
                "token": crate::helpers::owner_invitation_token(&fixture.boot),
                "password": OWNER_PASSWORD,
                "first_name": "Ada",
                "last_name": "Lovelace",
            }),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    browser.open(app, "/console/sign-in").await;
    browser.fill("Email", "owner@example.com").await;
    browser.fill("Password", OWNER_PASSWORD).await;
    browser.press("Sign in").await;
    browser.expect_heading("API keys").await;
    browser.press("People").await;
    browser.expect_heading("People").await;
    browser.press("Invite").await;
    browser.expect_heading("Invite").await;
    browser.fill("Email", "new.hire@example.com").await;
    browser.press("Send invitation").await;
    browser.expect_text("The invitation was sent.").await;
    assert!(
        browser
            .has("//td[normalize-space()='new.hire@example.com']")
            .await
    );
    assert_eq!(mails_to(app, "new.hire@example.com").len(), 1);
    browser.screenshot("people").await;
    browser.press("Revoke for new.hire@example.com").await;
    browser.expect_text("The invitation was revoked.").await;
    assert!(
        !browser
            .has("//td[normalize-space()='new.hire@example.com']")
            .await
    );
    assert_only_this_host(&browser, app).await;
    // The other screens, for the README's screenshots; each one's own words are checked.
    browser.press("Organizations").await;
    browser.expect_heading("Organizations").await;
    assert!(
        browser
            .has("//*[normalize-space()='New organization']")
            .await
    );
    browser.screenshot("organizations").await;
    browser.press("Audit log").await;
    browser.expect_heading("Audit log").await;
    assert!(browser.has("//td[contains(., 'invitation.revoked')]").await);
    browser.screenshot("audit-log").await;
    browser.close().await;
}
