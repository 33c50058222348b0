//! The web console over HTTP (contract §10), without a browser: sessions and their cookie,
//! expiry, the Origin and CSRF checks, headers, and every form's bad input answered with the
//! API's messages beside the field. The browser flows are in `console_browser.rs`.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

use crate::helpers::{
    Backend, Fixture, TestApp, TestAppBuilder, invitation_token_in, mailed_invitation_token,
    mails_to, ok, send,
};
use crate::on_both_stores;

pub const OWNER_PASSWORD: &str = "correct horse battery staple";

/// A browser-like client of the console: no redirects followed, the session cookie kept by
/// hand (so its attributes can be checked), `Origin` sent on POST as a browser does.
pub struct Console<'a> {
    pub app: &'a TestApp,
    client: reqwest::Client,
    pub cookie: Option<String>,
}

impl<'a> Console<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let root = reqwest::Certificate::from_der(app.certificate.chain[0].as_ref()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([root])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            app,
            client,
            cookie: None,
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(cookie) = &self.cookie {
            headers.insert(
                "cookie",
                HeaderValue::from_str(&format!("__Host-keyplane_session={cookie}")).unwrap(),
            );
        }
        headers
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.app.url(path))
            .headers(self.headers())
            .send()
            .await
            .unwrap()
    }

    /// A POST as a page of the console sends it: this site's `Origin`.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_from(Some(&self.app.base_url.clone()), path, form)
            .await
    }

    pub async fn post_from(
        &self,
        origin: Option<&str>,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.app.url(path))
            .headers(self.headers())
            .form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap()
    }

    /// Keeps the session cookie a response sets.
    pub fn keep_cookie(&mut self, response: &reqwest::Response) {
        if let Some(value) = session_cookie_of(response) {
            self.cookie = Some(value);
        }
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> reqwest::Response {
        let response = self
            .post(
                "/console/sign-in",
                &[("email", email), ("password", password)],
            )
            .await;
        self.keep_cookie(&response);
        response
    }

    /// The CSRF token of the current session, from a page's meta tag.
    pub async fn csrf(&self) -> String {
        let page = self.get("/console/account").await;
        assert_eq!(page.status(), 200, "a signed-in page");
        let html = page.text().await.unwrap();
        between(&html, r#"<meta name="csrf-token" content=""#, "\"").to_owned()
    }

    /// A POST with the session's CSRF token.
    pub async fn act(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let csrf = self.csrf().await;
        let mut fields = form.to_vec();
        fields.push(("csrf_token", &csrf));
        self.post(path, &fields).await
    }
}

/// The session id a response's `Set-Cookie` holds (empty when it clears the cookie).
pub fn session_cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Host-keyplane_session="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

/// The text between `start` and the next `end`.
pub fn between<'t>(text: &'t str, start: &str, end: &str) -> &'t str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in {text}"))
        + start.len();
    let rest = &text[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

fn location(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A bootstrapped server whose owner has a password, and a console signed in as the owner.
pub async fn owner_console(fixture: &Fixture) -> Console<'_> {
    fixture
        .app
        .activate_owner(&fixture.boot, OWNER_PASSWORD)
        .await;
    let mut console = Console::new(&fixture.app);
    let response = console.sign_in("owner@example.com", OWNER_PASSWORD).await;
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    console
}

/// Invites `email` with `role` through the API and accepts in the console: a console signed in
/// as that person.
pub async fn invited_console<'a>(fixture: &'a Fixture, email: &str, role: &str) -> Console<'a> {
    let app = &fixture.app;
    ok(send(
        app,
        Method::POST,
        &fixture.token,
        "/api/v0/users",
        Some(json!({"email": email, "role": role})),
    )
    .await)
    .await;
    let token = mailed_invitation_token(app, email);
    let mut console = Console::new(app);
    let response = console
        .post(
            "/console/accept-invitation",
            &[
                ("token", &token),
                ("password", "a long enough passphrase"),
                ("first_name", "Grace"),
                ("last_name", "Hopper"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/console/api-keys");
    console.keep_cookie(&response);
    assert!(console.cookie.is_some(), "signed in after accepting");
    console
}

/// Runs `sql` (with `$1` = `value`) on the app's database, as an operator would.
pub async fn run_sql(app: &TestApp, sql: &str, value: i64) {
    match &app.config.store.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).bind(value).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            sqlx::query(sql).bind(value).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

on_both_stores!(
    root_and_pages_without_a_session_go_to_sign_in,
    console_responses_carry_the_security_headers_and_assets_are_immutable,
    signing_in_sets_a_host_only_secure_strict_cookie,
    sign_in_refuses_bad_input_with_the_api_messages,
    posts_need_this_sites_origin_and_the_sessions_csrf_token,
    a_session_ends_after_its_idle_timeout,
    a_session_ends_at_its_lifetime_however_busy,
    signing_out_ends_the_session_and_everywhere_ends_them_all,
    disabling_a_person_ends_their_session,
    a_viewer_sees_no_write_controls_and_forged_posts_are_refused,
    a_new_key_shows_its_secret_once_and_the_secret_works,
    the_new_key_form_refuses_bad_input_with_the_api_messages,
    keys_are_disabled_enabled_rotated_and_deleted,
    keys_of_another_organization_are_not_found,
    first_run_setup_creates_the_organization_and_signs_the_owner_in,
    accepting_an_invitation_refuses_bad_input,
    the_switcher_moves_the_session_to_another_organization_of_the_person,
    a_forgotten_password_is_reset_by_the_mailed_link_once,
    a_reset_link_expires_and_a_person_gets_one_a_minute,
    changing_the_password_checks_the_current_one_and_ends_other_sessions,
    the_audit_log_lists_events_newest_first_with_filters,
    people_are_invited_changed_disabled_and_removed_and_invitations_resent_and_revoked,
    people_controls_follow_the_role_and_forged_changes_are_refused,
    organizations_are_created_edited_given_live_and_deleted,
    a_keys_metadata_and_expiry_are_edited_and_cleared,
);

async fn root_and_pages_without_a_session_go_to_sign_in(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = Console::new(&fixture.app);
    let root = console.get("/").await;
    assert_eq!(root.status(), 303);
    assert_eq!(location(&root), "/console");
    let keys = console.get("/console/api-keys?kind=test").await;
    assert_eq!(keys.status(), 303);
    assert_eq!(
        location(&keys),
        "/console/sign-in?next=%2Fconsole%2Fapi-keys%3Fkind%3Dtest"
    );
    // An unknown or forged cookie is no session either, and is cleared.
    let mut stranger = Console::new(&fixture.app);
    stranger.cookie = Some("not-a-session".into());
    let refused = stranger.get("/console/account").await;
    assert_eq!(refused.status(), 303);
    assert!(location(&refused).starts_with("/console/sign-in"));
    assert_eq!(session_cookie_of(&refused).as_deref(), Some(""));
    // A POST without a session goes to sign-in too (nothing is changed).
    let post = stranger
        .post("/console/api-keys", &[("name", "sneaky"), ("kind", "test")])
        .await;
    assert_eq!(post.status(), 303);
    assert!(location(&post).starts_with("/console/sign-in"));
}

async fn console_responses_carry_the_security_headers_and_assets_are_immutable(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    for path in [
        "/console/sign-in",
        "/console/api-keys",
        "/accept-invitation",
    ] {
        let response = console.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        assert!(!header("content-security-policy").contains("unsafe-inline"));
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "same-origin");
        assert_eq!(header("cache-control"), "no-store");
        assert!(header("content-type").starts_with("text/html"));
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("<script>") && !html.contains(" style="),
            "no inline script or style"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no other host: {path}"
        );
    }
    let page = console.get("/console/api-keys").await.text().await.unwrap();
    for (asset, content_type) in [(".css", "text/css"), (".js", "text/javascript")] {
        let path = page
            .split('"')
            .find(|part| part.starts_with("/console/assets/") && part.ends_with(asset))
            .unwrap();
        let response = Console::new(&fixture.app).get(path).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
    }
    assert_eq!(
        console.get("/console/assets/htmx.js").await.status(),
        404,
        "only hashed names"
    );
}

async fn signing_in_sets_a_host_only_secure_strict_cookie(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    fixture
        .app
        .activate_owner(&fixture.boot, OWNER_PASSWORD)
        .await;
    let console = Console::new(&fixture.app);
    let response = console
        .post(
            "/console/sign-in",
            &[
                ("email", "owner@example.com"),
                ("password", OWNER_PASSWORD),
                ("next", "/console/account"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/console/account");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = session_cookie_of(&response).unwrap();
    assert_eq!(
        cookie,
        format!("__Host-keyplane_session={id}; Secure; HttpOnly; SameSite=Strict; Path=/")
    );
    assert!(id.len() >= 43, "256 random bits");
    // Only its keyed hash is stored.
    let state = &fixture.app.state;
    let hash = state
        .secrets()
        .hash_credential(keyplane_core::secrets::CredentialKind::ConsoleSession, &id);
    let stored = state.store().console_session(&hash).await.unwrap().unwrap();
    assert_eq!(stored.user_id.to_string(), fixture.boot.user_id);
    // `next` cannot lead off the console.
    let elsewhere = console
        .post(
            "/console/sign-in",
            &[
                ("email", "owner@example.com"),
                ("password", OWNER_PASSWORD),
                ("next", "//evil.example/console"),
            ],
        )
        .await;
    assert_eq!(location(&elsewhere), "/console");
    // The sign-in is in the audit log, as an API sign-in is.
    fixture.app.state.flush_background_writes().await;
    let log = ok(fixture
        .app
        .get_as(
            &fixture.token,
            &format!(
                "/api/v0/organizations/{}/audit-events?action=auth.succeeded",
                fixture.boot.organization_id
            ),
        )
        .await)
    .await;
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"]["id"] == fixture.boot.user_id.as_str()),
        "{log}"
    );
}

async fn sign_in_refuses_bad_input_with_the_api_messages(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    fixture
        .app
        .activate_owner(&fixture.boot, OWNER_PASSWORD)
        .await;
    let console = Console::new(&fixture.app);
    let cases: [(&str, &str, u16, &str); 4] = [
        ("", OWNER_PASSWORD, 400, "Email must not be empty"),
        ("owner@example.com", "", 400, "Password must not be empty"),
        (
            "owner@example.com",
            &"x".repeat(513),
            400,
            "Password is too long",
        ),
        (
            "owner@example.com",
            "a wrong password!",
            401,
            "Invalid credentials",
        ),
    ];
    for (email, password, status, message) in cases {
        let response = console
            .post(
                "/console/sign-in",
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!(response.status().as_u16(), status, "{message}");
        assert!(session_cookie_of(&response).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message} in {html}");
        assert!(
            html.contains(&format!(r#"value="{email}""#)),
            "the email is kept"
        );
        assert!(
            password.is_empty() || !html.contains(password),
            "never the password"
        );
    }
}

async fn posts_need_this_sites_origin_and_the_sessions_csrf_token(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let csrf = console.csrf().await;
    let form = [
        ("name", "from-elsewhere"),
        ("kind", "test"),
        ("csrf_token", csrf.as_str()),
    ];
    for origin in [
        None,
        Some("https://evil.example"),
        Some("null"),
        Some("http://localhost"),
    ] {
        let response = console.post_from(origin, "/console/api-keys", &form).await;
        assert_eq!(response.status(), 403, "{origin:?}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("not sent from this site")
        );
    }
    let anonymous = Console::new(&fixture.app)
        .post_from(
            None,
            "/console/sign-in",
            &[("email", "owner@example.com"), ("password", OWNER_PASSWORD)],
        )
        .await;
    assert_eq!(
        anonymous.status(),
        403,
        "sign-in forms need this site's origin too"
    );
    for token in ["", "wrong", &csrf[..csrf.len() - 1]] {
        let response = console
            .post(
                "/console/api-keys",
                &[("name", "forged"), ("kind", "test"), ("csrf_token", token)],
            )
            .await;
        assert_eq!(response.status(), 403, "{token:?}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("This form has expired")
        );
    }
    let missing = console
        .post("/console/api-keys", &[("name", "forged"), ("kind", "test")])
        .await;
    assert_eq!(missing.status(), 403);
    // Nothing was created; the right token works (and through the htmx header too).
    let created = console.post("/console/api-keys", &form).await;
    assert_eq!(created.status(), 200);
    let keys = fixture
        .app
        .state
        .store()
        .list_api_keys(
            fixture.boot.organization_id.parse().unwrap(),
            &keyplane_core::api_keys::ApiKeyQuery {
                order_by: keyplane_core::api_keys::ApiKeyOrder::Name,
                descending: false,
                limit: 100,
                offset: 0,
                kinds: vec![],
                statuses: vec![],
                after: None,
            },
        )
        .await
        .unwrap()
        .items;
    let names: Vec<_> = keys.iter().map(|k| k.name.as_str().to_owned()).collect();
    assert_eq!(names, ["bootstrap", "from-elsewhere"]);
}

async fn a_session_ends_after_its_idle_timeout(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    assert_eq!(console.get("/console/account").await.status(), 200);
    // 29 minutes of silence: still signed in, and the request counts as activity.
    run_sql(
        &fixture.app,
        "UPDATE console_sessions SET created_at = created_at - $1, last_seen_at = last_seen_at - $1",
        29 * 60,
    )
    .await;
    assert_eq!(console.get("/console/account").await.status(), 200);
    run_sql(
        &fixture.app,
        "UPDATE console_sessions SET last_seen_at = last_seen_at - $1",
        30 * 60,
    )
    .await;
    let expired = console.get("/console/account").await;
    assert_eq!(expired.status(), 303);
    assert_eq!(
        location(&expired),
        "/console/sign-in?next=%2Fconsole%2Faccount"
    );
    assert_eq!(
        session_cookie_of(&expired).as_deref(),
        Some(""),
        "the cookie is cleared"
    );
}

async fn a_session_ends_at_its_lifetime_however_busy(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    run_sql(
        &fixture.app,
        "UPDATE console_sessions SET created_at = created_at - $1",
        12 * 3600 - 60,
    )
    .await;
    assert_eq!(console.get("/console/account").await.status(), 200);
    run_sql(
        &fixture.app,
        "UPDATE console_sessions SET created_at = created_at - $1",
        60,
    )
    .await;
    let expired = console.get("/console/api-keys").await;
    assert_eq!(expired.status(), 303);
    assert!(location(&expired).starts_with("/console/sign-in"));
}

async fn signing_out_ends_the_session_and_everywhere_ends_them_all(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let old_cookie = console.cookie.clone();
    let out = console.act("/console/sign-out", &[]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(session_cookie_of(&out).as_deref(), Some(""));
    let mut replay = Console::new(&fixture.app);
    replay.cookie = old_cookie;
    assert_eq!(
        replay.get("/console/account").await.status(),
        303,
        "the old cookie is dead"
    );

    let mut first = Console::new(&fixture.app);
    let mut second = Console::new(&fixture.app);
    first.sign_in("owner@example.com", OWNER_PASSWORD).await;
    second.sign_in("owner@example.com", OWNER_PASSWORD).await;
    assert_eq!(second.get("/console/account").await.status(), 200);
    let everywhere = first.act("/console/account/sign-out-everywhere", &[]).await;
    assert_eq!(everywhere.status(), 303);
    assert_eq!(first.get("/console/account").await.status(), 303);
    assert_eq!(second.get("/console/account").await.status(), 303);
}

async fn disabling_a_person_ends_their_session(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let developer = invited_console(&fixture, "dev@example.com", "developer").await;
    assert_eq!(developer.get("/console/api-keys").await.status(), 200);
    let users = ok(fixture.app.get_as(&fixture.token, "/api/v0/users").await).await;
    let id = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dev@example.com")
        .unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(send(
        &fixture.app,
        Method::PATCH,
        &fixture.token,
        &format!("/api/v0/users/{id}"),
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    let after = developer.get("/console/api-keys").await;
    assert_eq!(after.status(), 303, "ended at once on this node");
    // Enabling the person again does not bring the old session back.
    ok(send(
        &fixture.app,
        Method::PATCH,
        &fixture.token,
        &format!("/api/v0/users/{id}"),
        Some(json!({"status": "active"})),
    )
    .await)
    .await;
    assert_eq!(developer.get("/console/api-keys").await.status(), 303);
}

async fn a_viewer_sees_no_write_controls_and_forged_posts_are_refused(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let viewer = invited_console(&fixture, "viewer@example.com", "viewer").await;
    let page = viewer.get("/console/api-keys").await.text().await.unwrap();
    assert!(page.contains("bootstrap"), "the viewer reads the keys");
    for control in [
        "New API key",
        ">Disable<",
        ">Rotate<",
        ">Delete<",
        "/status\"",
    ] {
        assert!(!page.contains(control), "no {control} for a viewer");
    }
    assert_eq!(viewer.get("/console/api-keys/new").await.status(), 403);
    let key = fixture.app.stored_api_key(&fixture.boot.api_key).await;
    let forged = [
        (
            "/console/api-keys".to_owned(),
            vec![("name", "forged"), ("kind", "test")],
        ),
        (
            format!("/console/api-keys/{}/status", key.id),
            vec![("status", "disabled")],
        ),
        (
            format!("/console/api-keys/{}/rotate", key.id),
            vec![("grace_period_seconds", "0"), ("generation", "0")],
        ),
        (
            format!("/console/api-keys/{}/delete", key.id),
            vec![("confirm_name", "bootstrap")],
        ),
    ];
    for (path, form) in forged {
        let response = viewer.act(&path, &form).await;
        assert_eq!(response.status(), 403, "{path}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("Your role does not allow managing API keys.")
        );
    }
    let unchanged = fixture.app.stored_api_key(&fixture.boot.api_key).await;
    assert_eq!(unchanged, key, "nothing changed");
}

/// The secret and public key on a page that shows a secret.
fn shown_secret(html: &str) -> (String, String) {
    let secret = between(
        between(html, r#"<output id="secret""#, "</output>"),
        ">",
        "<",
    )
    .to_owned();
    let key = between(html, r#"<code id="api-key">"#, "<").to_owned();
    (key, secret)
}

async fn a_new_key_shows_its_secret_once_and_the_secret_works(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let response = console
        .act(
            "/console/api-keys",
            &[
                ("name", "checkout"),
                ("kind", "test"),
                ("metadata", r#"{"store": "berlin-01"}"#),
                ("expires_at", "2035-01-01T00:00"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    assert!(html.contains("It will not be shown again"));
    assert!(html.contains(">Copy<"));
    let (key, secret) = shown_secret(&html);
    assert_eq!(secret.len(), 43);
    let stored = fixture.app.stored_api_key(&key).await;
    assert_eq!(stored.expires_at, Some(2_051_222_400));
    assert_eq!(stored.metadata["store"], "berlin-01");
    fixture.app.token_pair(&key, &secret).await;
    let list = console.get("/console/api-keys").await.text().await.unwrap();
    assert!(
        list.contains("checkout") && !list.contains(&secret),
        "never shown again"
    );
}

async fn the_new_key_form_refuses_bad_input_with_the_api_messages(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let long_metadata = format!(
        "{{{}}}",
        (0..21)
            .map(|i| format!(r#""k{i}": "v""#))
            .collect::<Vec<_>>()
            .join(",")
    );
    // (the form, the field whose error is expected, how the error begins)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("name", ""), ("kind", "test")], "name", "Name must be"),
        (vec![("name", "a b"), ("kind", "test")], "name", "Name "),
        (
            vec![("name", "bootstrap"), ("kind", "test")],
            "name",
            "Name an API key with this name exists in the organization",
        ),
        (
            vec![("name", "fine-name"), ("kind", "gold")],
            "kind",
            "Kind must be one of: test live",
        ),
        (
            vec![("name", "fine-name"), ("kind", "test"), ("metadata", "[1]")],
            "metadata",
            "Metadata must be a JSON object",
        ),
        (
            vec![
                ("name", "fine-name"),
                ("kind", "test"),
                ("metadata", &long_metadata),
            ],
            "metadata",
            "Metadata at most 20 keys",
        ),
        (
            vec![
                ("name", "fine-name"),
                ("kind", "test"),
                ("expires_at", "2001-01-01T00:00"),
            ],
            "expires_at",
            "Expires must be in the future",
        ),
        (
            vec![
                ("name", "fine-name"),
                ("kind", "test"),
                ("expires_at", "tomorrow"),
            ],
            "expires_at",
            "Expires must be a date and time",
        ),
    ];
    for (form, field, message) in cases {
        let response = console.act("/console/api-keys", &form).await;
        assert_eq!(response.status(), 400, "{message}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(
            error.starts_with(message),
            "{message:?} beside {field}: {error:?}"
        );
        for (name, value) in &form {
            if *name != "kind" && !value.is_empty() {
                let escaped = value.replace('"', "&quot;");
                assert!(html.contains(&escaped), "{name} kept: {value}");
            }
        }
    }
    // The same words as the API for the same input.
    let api = send(
        &fixture.app,
        Method::PUT,
        &fixture.token,
        "/api/v0/api-keys/a%20b",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await;
    let api_message = api.json::<serde_json::Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let html = console
        .act("/console/api-keys", &[("name", "a b"), ("kind", "test")])
        .await
        .text()
        .await
        .unwrap();
    let words = api_message.trim_start_matches("name: ");
    assert!(html.contains(&format!("Name {words}")), "{api_message}");
    let keys = fixture
        .app
        .state
        .store()
        .list_api_keys(
            fixture.boot.organization_id.parse().unwrap(),
            &keyplane_core::api_keys::ApiKeyQuery {
                order_by: keyplane_core::api_keys::ApiKeyOrder::Name,
                descending: false,
                limit: 100,
                offset: 0,
                kinds: vec![],
                statuses: vec![],
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(keys.items.len(), 1, "nothing stored");
}

async fn keys_are_disabled_enabled_rotated_and_deleted(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let key = fixture.app.stored_api_key(&fixture.boot.api_key).await;
    let status = format!("/console/api-keys/{}/status", key.id);
    let disabled = console
        .act(
            &status,
            &[
                ("status", "disabled"),
                ("back", "/console/api-keys?kind=test"),
            ],
        )
        .await;
    assert_eq!(disabled.status(), 303);
    assert_eq!(
        location(&disabled),
        "/console/api-keys?kind=test&notice=disabled"
    );
    assert!(
        !fixture
            .app
            .stored_api_key(&key.public_key)
            .await
            .is_usable(keyplane_core::time::now_unix())
    );
    let filtered = console
        .get("/console/api-keys?status=enabled")
        .await
        .text()
        .await
        .unwrap();
    assert!(filtered.contains("No API keys match these filters."));
    let enabled = console
        .act(
            &status,
            &[("status", "enabled"), ("back", "https://evil.example/")],
        )
        .await;
    assert_eq!(
        location(&enabled),
        "/console?notice=enabled",
        "back stays on the console"
    );

    let rotate = format!("/console/api-keys/{}/rotate", key.id);
    let bad = console
        .act(
            &rotate,
            &[("grace_period_seconds", "-1"), ("generation", "0")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("Grace period must be between 0 and")
    );
    let rotated = console
        .act(
            &rotate,
            &[("grace_period_seconds", "60"), ("generation", "0")],
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let (public_key, secret) = shown_secret(&rotated.text().await.unwrap());
    assert_eq!(public_key, key.public_key);
    fixture.app.token_pair(&public_key, &secret).await;
    fixture
        .app
        .token_pair(&public_key, &fixture.boot.api_secret)
        .await;
    // Sending the same form again (a reload) does not rotate again.
    let again = console
        .act(
            &rotate,
            &[("grace_period_seconds", "60"), ("generation", "0")],
        )
        .await;
    assert_eq!(again.status(), 303);
    fixture.app.token_pair(&public_key, &secret).await;
    // Submitting one rotate form several times at once (a double click) rotates once: the
    // rotation is written only while the secret the form was shown for is still the key's.
    let shown_for = fixture
        .app
        .stored_api_key(&public_key)
        .await
        .secret_generation
        .to_string();
    let form = [
        ("grace_period_seconds", "60"),
        ("generation", shown_for.as_str()),
    ];
    let submit = || console.act(&rotate, &form);
    let answers = tokio::join!(submit(), submit(), submit(), submit(), submit(), submit());
    let shown: Vec<u16> = [
        answers.0, answers.1, answers.2, answers.3, answers.4, answers.5,
    ]
    .iter()
    .map(|a| a.status().as_u16())
    .collect();
    assert_eq!(
        shown.iter().filter(|s| **s == 200).count(),
        1,
        "one submit shows a new secret, the others go back to the list: {shown:?}"
    );
    assert!(shown.iter().all(|s| *s == 200 || *s == 303), "{shown:?}");
    assert_eq!(
        fixture
            .app
            .stored_api_key(&public_key)
            .await
            .secret_generation
            .to_string(),
        (shown_for.parse::<i64>().unwrap() + 1).to_string(),
        "rotated once"
    );

    let delete = format!("/console/api-keys/{}/delete", key.id);
    let unconfirmed = console.act(&delete, &[("confirm_name", "bootstra")]).await;
    assert_eq!(unconfirmed.status(), 400);
    assert!(
        unconfirmed
            .text()
            .await
            .unwrap()
            .contains("must be the key's name")
    );
    assert!(
        fixture
            .app
            .state
            .store()
            .api_key(key.id)
            .await
            .unwrap()
            .is_some()
    );
    let deleted = console.act(&delete, &[("confirm_name", "bootstrap")]).await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(location(&deleted), "/console/api-keys?notice=deleted");
    assert!(
        fixture
            .app
            .state
            .store()
            .api_key(key.id)
            .await
            .unwrap()
            .is_none()
    );
    let empty = console.get("/console/api-keys").await.text().await.unwrap();
    assert!(empty.contains("No API keys yet"), "{empty}");
}

async fn keys_of_another_organization_are_not_found(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let other = fixture
        .app
        .another_organization("Elsewhere Ltd")
        .create()
        .await;
    let foreign = fixture.app.stored_api_key(&other.key).await;
    for path in [
        format!("/console/api-keys/{}/rotate", foreign.id),
        format!("/console/api-keys/{}/delete", foreign.id),
        "/console/api-keys/not-an-id/rotate".to_owned(),
    ] {
        assert_eq!(console.get(&path).await.status(), 404, "{path}");
    }
    let response = console
        .act(
            &format!("/console/api-keys/{}/delete", foreign.id),
            &[("confirm_name", "main")],
        )
        .await;
    assert_eq!(response.status(), 404);
    assert!(
        fixture
            .app
            .state
            .store()
            .api_key(foreign.id)
            .await
            .unwrap()
            .is_some()
    );
}

async fn first_run_setup_creates_the_organization_and_signs_the_owner_in(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let link = app
        .setup_link
        .clone()
        .expect("a setup link on an empty store");
    let (path, token) = link.split_once('#').unwrap();
    assert!(path.ends_with("/console/setup"));
    let token = token.strip_prefix("token=").unwrap();
    let console = Console::new(&app);
    let page = console.get("/console/setup").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for label in [
        "Organization name",
        "Address",
        "Zip",
        "Town",
        "Country",
        "Email",
        "Password",
        "First name",
        "Last name",
        "Create organization",
    ] {
        assert!(html.contains(&format!(">{label}<")), "{label}");
    }
    let good = [
        ("name", "Acme Retail"),
        ("address_line1", "Hauptstrasse 1"),
        ("zip", "10115"),
        ("town", "Berlin"),
        ("country_code", "DEU"),
        ("email", "founder@example.com"),
        ("password", "a long enough passphrase"),
        ("first_name", "Ada"),
        ("last_name", "Lovelace"),
    ];
    let with = |field: &str, value: &'static str, token: &'static str| {
        let mut form: Vec<(&str, &str)> = good
            .iter()
            .map(|(k, v)| if *k == field { (*k, value) } else { (*k, *v) })
            .collect();
        form.push(("token", token));
        form
    };
    let token: &'static str = Box::leak(token.to_owned().into_boxed_str());
    let wrong_token = console
        .post("/console/setup", &with("", "", "not-the-token"))
        .await;
    assert_eq!(wrong_token.status(), 403);
    for (field, value, message) in [
        ("name", "", "Organization name is required"),
        (
            "name",
            "Ac",
            "Organization name must be between 3 and 100 characters long",
        ),
        ("country_code", "XXX", "Country "),
        ("email", "not-an-address", "Email "),
        ("password", "short", "Password must be 12 to 256 characters"),
        ("last_name", "", "Last name is required"),
    ] {
        let response = console
            .post("/console/setup", &with(field, value, token))
            .await;
        assert_eq!(response.status(), 400, "{field}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
        assert!(
            html.contains(r#"value="Hauptstrasse 1""#),
            "the form is kept"
        );
    }
    assert!(
        !app.state.store().has_organizations().await.unwrap(),
        "nothing stored"
    );
    let mut console = console;
    let done = console.post("/console/setup", &with("", "", token)).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/console/api-keys");
    console.keep_cookie(&done);
    let keys = console.get("/console/api-keys").await;
    assert_eq!(keys.status(), 200);
    assert!(keys.text().await.unwrap().contains("Acme Retail"));
    assert_eq!(console.get("/console/setup").await.status(), 404);
    assert_eq!(
        console
            .post("/console/setup", &with("", "", token))
            .await
            .status(),
        404
    );
    // The owner signs in with the password given.
    let mut again = Console::new(&app);
    assert_eq!(
        again
            .sign_in("founder@example.com", "a long enough passphrase")
            .await
            .status(),
        303
    );
}

async fn accepting_an_invitation_refuses_bad_input(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let app = &fixture.app;
    let page = Console::new(app)
        .get("/accept-invitation")
        .await
        .text()
        .await
        .unwrap();
    for label in [
        ">Password<",
        ">First name<",
        ">Last name<",
        ">Accept invitation<",
    ] {
        assert!(page.contains(label), "{label}");
    }
    let token = crate::helpers::owner_invitation_token(&fixture.boot).to_owned();
    let console = Console::new(app);
    for (form, message) in [
        (
            vec![("token", token.as_str()), ("password", "short")],
            "Password must be 12 to 256 characters",
        ),
        (
            vec![
                ("token", token.as_str()),
                ("password", "a long enough passphrase"),
                ("first_name", &"x".repeat(101)),
            ],
            "First name must be",
        ),
        (
            vec![
                ("token", "forged"),
                ("password", "a long enough passphrase"),
            ],
            "the invitation is invalid, already used, revoked or expired",
        ),
        (
            vec![("password", "a long enough passphrase")],
            "the invitation is invalid, already used, revoked or expired",
        ),
    ] {
        let response = console.post("/console/accept-invitation", &form).await;
        assert_eq!(response.status(), 400, "{message}");
        assert!(session_cookie_of(&response).is_none());
        assert!(
            response.text().await.unwrap().contains(message),
            "{message}"
        );
    }
}

async fn the_switcher_moves_the_session_to_another_organization_of_the_person(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let page = console.get("/console/api-keys").await.text().await.unwrap();
    assert!(
        !page.contains("organization-switch"),
        "one organization: no switcher"
    );
    // The owner also joins a second organization.
    let other = fixture
        .app
        .another_organization("Second Shop")
        .create()
        .await;
    let second_token = other.token().await;
    ok(send(
        &fixture.app,
        Method::POST,
        &second_token,
        "/api/v0/users",
        Some(json!({"email": "owner@example.com", "role": "admin"})),
    )
    .await)
    .await;
    let invitation = mailed_invitation_token(&fixture.app, "owner@example.com");
    ok(fixture
        .app
        .accept_invitation(&invitation, OWNER_PASSWORD, json!({}))
        .await)
    .await;
    let page = console.get("/console/api-keys").await.text().await.unwrap();
    assert!(page.contains("organization-switch") && page.contains("Second Shop"));
    let organization_id = other.organization.id.to_string();
    let switched = console
        .act(
            "/console/organization",
            &[("organization_id", &organization_id)],
        )
        .await;
    assert_eq!(switched.status(), 303);
    let page = console.get("/console/api-keys").await.text().await.unwrap();
    assert!(
        page.contains(">main<") || page.contains("main<br>"),
        "the second organization's keys"
    );
    assert!(!page.contains("bootstrap"));
    // An organization the person is not in is refused.
    let stranger = fixture.app.another_organization("Stranger").create().await;
    let refused = console
        .act(
            "/console/organization",
            &[("organization_id", &stranger.organization.id.to_string())],
        )
        .await;
    assert_eq!(refused.status(), 404);
}

/// The newest password reset mailed to `email`, waiting for it (it is sent after the answer).
pub async fn mailed_reset(app: &TestApp, email: &str, count: usize) -> String {
    for _ in 0..200 {
        let mails: Vec<_> = mails_to(app, email)
            .into_iter()
            .filter(|m| m.contains("Reset your Keyplane password"))
            .collect();
        if mails.len() >= count {
            return mails.last().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no password reset mail to {email}");
}

async fn a_forgotten_password_is_reset_by_the_mailed_link_once(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let signed_in_before = owner_console(&fixture).await;
    let app = &fixture.app;
    let console = Console::new(app);
    let page = console
        .get("/console/forgot-password")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(">Email<") && page.contains(">Send reset link<"));
    for (email, message) in [
        ("", "Email must not be empty"),
        ("not-an-address", "Email "),
    ] {
        let response = console
            .post("/console/forgot-password", &[("email", email)])
            .await;
        assert_eq!(response.status(), 400);
        let html = response.text().await.unwrap();
        assert!(between(&html, r#"id="field-email-error">"#, "</p>").starts_with(message));
    }
    let unknown = console
        .post(
            "/console/forgot-password",
            &[("email", "nobody@example.com")],
        )
        .await;
    let known = console
        .post(
            "/console/forgot-password",
            &[("email", "OWNER@example.com")],
        )
        .await;
    for response in [&unknown, &known] {
        assert_eq!(response.status(), 303);
        assert_eq!(
            location(response),
            "/console/forgot-password?sent=1",
            "the same answer"
        );
    }
    let mail = mailed_reset(app, "owner@example.com", 1).await;
    assert!(mail.contains(&format!("{}/reset-password#token=", app.state.public_url())));
    assert!(mails_to(app, "nobody@example.com").is_empty());
    let token = invitation_token_in(&mail);

    let page = console.get("/reset-password").await.text().await.unwrap();
    assert!(page.contains(">Password<") && page.contains(">Set password<"));
    let short = console
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "short")],
        )
        .await;
    assert_eq!(short.status(), 400);
    assert!(
        short
            .text()
            .await
            .unwrap()
            .contains("Password must be 12 to 256 characters")
    );
    let mut console = console;
    let done = console
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/console/api-keys");
    console.keep_cookie(&done);
    assert_eq!(
        console.get("/console/api-keys").await.status(),
        200,
        "signed in"
    );
    assert_eq!(
        signed_in_before.get("/console/api-keys").await.status(),
        303,
        "other sessions end"
    );
    let again = Console::new(app)
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "yet another passphrase")],
        )
        .await;
    assert_eq!(again.status(), 400, "the link works once");
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("invalid, already used or expired")
    );
    assert_eq!(
        app.sign_in("owner@example.com", OWNER_PASSWORD)
            .await
            .status(),
        401
    );
    app.person_token("owner@example.com", "a brand new passphrase")
        .await;
    let log = ok(app
        .get_as(
            &fixture.token,
            &format!(
                "/api/v0/organizations/{}/audit-events?action=user.password_reset",
                fixture.boot.organization_id
            ),
        )
        .await)
    .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
}

async fn a_reset_link_expires_and_a_person_gets_one_a_minute(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let app = &fixture.app;
    app.activate_owner(&fixture.boot, OWNER_PASSWORD).await;
    let console = Console::new(app);
    console
        .post(
            "/console/forgot-password",
            &[("email", "owner@example.com")],
        )
        .await;
    let token = invitation_token_in(&mailed_reset(app, "owner@example.com", 1).await);
    // A second link within the minute is refused by the store, in one statement.
    let store = app.state.store();
    let user_id = fixture.boot.user_id.parse().unwrap();
    let now = keyplane_core::time::now_unix();
    let another = keyplane_core::records::PasswordReset {
        token_hash: keyplane_core::secrets::CredentialHash([7; 32]),
        user_id,
        created_at: now,
        expires_at: now + 3600,
    };
    assert!(
        !store
            .offer_password_reset(&another, now - 60)
            .await
            .unwrap()
    );
    // An hour later the mailed link no longer works.
    run_sql(
        app,
        "UPDATE password_resets SET expires_at = expires_at - $1",
        3600,
    )
    .await;
    let expired = console
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(expired.status(), 400);
    assert!(
        expired
            .text()
            .await
            .unwrap()
            .contains("invalid, already used or expired")
    );
    app.person_token("owner@example.com", OWNER_PASSWORD).await;
    // A minute after the first, a new link replaces it.
    run_sql(
        app,
        "UPDATE password_resets SET created_at = created_at - $1",
        61,
    )
    .await;
    assert!(
        store
            .offer_password_reset(&another, now - 60)
            .await
            .unwrap()
    );
}

async fn changing_the_password_checks_the_current_one_and_ends_other_sessions(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let here = owner_console(&fixture).await;
    let mut elsewhere = Console::new(&fixture.app);
    elsewhere.sign_in("owner@example.com", OWNER_PASSWORD).await;
    let page = here.get("/console/account").await.text().await.unwrap();
    assert!(page.contains(">Change password<") && page.contains(">Sign out everywhere<"));
    for (current, new, field, message) in [
        (
            "",
            "a brand new passphrase",
            "current_password",
            "Current password must not be empty",
        ),
        (
            "not the password",
            "a brand new passphrase",
            "current_password",
            "Current password is wrong",
        ),
        (
            OWNER_PASSWORD,
            "short",
            "new_password",
            "New password must be 12 to 256 characters",
        ),
    ] {
        let response = here
            .act(
                "/console/account/password",
                &[("current_password", current), ("new_password", new)],
            )
            .await;
        assert_eq!(response.status(), 400, "{message}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
    }
    let changed = here
        .act(
            "/console/account/password",
            &[
                ("current_password", OWNER_PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status(), 303);
    assert_eq!(location(&changed), "/console/account?notice=password");
    assert_eq!(
        here.get("/console/account").await.status(),
        200,
        "this session goes on"
    );
    assert_eq!(
        elsewhere.get("/console/account").await.status(),
        303,
        "the others end"
    );
    assert_eq!(
        fixture
            .app
            .sign_in("owner@example.com", OWNER_PASSWORD)
            .await
            .status(),
        401
    );
    fixture
        .app
        .person_token("owner@example.com", "a brand new passphrase")
        .await;
    let log = ok(fixture
        .app
        .get_as(
            &fixture.token,
            &format!(
                "/api/v0/organizations/{}/audit-events?action=user.password_changed",
                fixture.boot.organization_id
            ),
        )
        .await)
    .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
}

/// Two nodes on one PostgreSQL database: a session begun on one is honoured by the other, and
/// signing out on one ends it on the other at once (sessions are read from the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_share_console_sessions() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let fixture = TestAppBuilder::new(&backend).await.bootstrapped().await;
    let other = TestAppBuilder::new(&backend)
        .await
        .sharing_database_with(&fixture.app)
        .start()
        .await;
    let here = owner_console(&fixture).await;
    let mut there = Console::new(&other);
    there.cookie = here.cookie.clone();
    assert_eq!(
        there.get("/console/api-keys").await.status(),
        200,
        "node B honours it"
    );
    assert_eq!(here.act("/console/sign-out", &[]).await.status(), 303);
    assert_eq!(
        there.get("/console/api-keys").await.status(),
        303,
        "ended on node B too"
    );
}

async fn the_audit_log_lists_events_newest_first_with_filters(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    console
        .act(
            "/console/api-keys",
            &[("name", "audited"), ("kind", "test")],
        )
        .await;
    let rows = |html: &str| between(html, "<tbody>", "</tbody>").to_owned();
    let page = console.get("/console/audit-log").await;
    assert_eq!(page.status(), 200);
    let all = rows(&page.text().await.unwrap());
    let created = all.find("api_key.created").expect("the key's creation");
    let signed_in = all.find("auth.succeeded").expect("the console sign-in");
    assert!(created < signed_in, "newest first");
    let filtered = rows(
        &console
            .get("/console/audit-log?action=api_key.created")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(filtered.contains("api_key.created") && !filtered.contains("auth.succeeded"));
    let by_actor = rows(
        &console
            .get(&format!(
                "/console/audit-log?actor_id={}",
                fixture.boot.user_id
            ))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(by_actor.contains("api_key.created"));
    let none = console
        .get("/console/audit-log?since=2001-01-01T00:00&until=2001-01-02T00:00")
        .await
        .text()
        .await
        .unwrap();
    assert!(none.contains("No events match these filters."));
    let long = "x".repeat(65);
    for (query, field, message) in [
        (
            "since=yesterday".to_owned(),
            "since",
            "From must be a date and time",
        ),
        (
            "until=2026-13-01T00:00".to_owned(),
            "until",
            "To must be a date and time",
        ),
        (
            "since=2030-01-02T00:00&until=2030-01-01T00:00".to_owned(),
            "since",
            "From must not be after until",
        ),
        (
            format!("actor_id={long}"),
            "actor_id",
            "Actor must be 1 to 64 characters",
        ),
    ] {
        let response = console.get(&format!("/console/audit-log?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
    }
}

async fn membership_of(
    fixture: &Fixture,
    email: &str,
) -> Option<keyplane_core::records::Membership> {
    let store = fixture.app.state.store();
    let user = store.user_by_email(email).await.unwrap()?;
    store
        .membership(fixture.boot.organization_id.parse().unwrap(), user.id)
        .await
        .unwrap()
}

async fn people_are_invited_changed_disabled_and_removed_and_invitations_resent_and_revoked(
    backend: Backend,
) {
    let fixture = Fixture::start(&backend).await;
    let app = &fixture.app;
    let console = owner_console(&fixture).await;
    let page = console.get("/console/people").await.text().await.unwrap();
    assert!(page.contains("owner@example.com"));
    let form = console
        .get("/console/people/invite")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        form.contains(">Email<") && form.contains(">Role<") && form.contains(">Send invitation<")
    );
    for (email, role, field, message) in [
        ("", "developer", "email", "Email "),
        ("not-an-address", "developer", "email", "Email "),
        (
            "dev@example.com",
            "king",
            "role",
            "Role must be one of: owner admin developer viewer",
        ),
        (
            "owner@example.com",
            "admin",
            "email",
            "Email this person already belongs to the organization",
        ),
    ] {
        let response = console
            .act(
                "/console/people/invite",
                &[("email", email), ("role", role)],
            )
            .await;
        assert_eq!(response.status(), 400, "{email} {role}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
        assert!(
            email.is_empty() || html.contains(&format!(r#"value="{email}""#)),
            "kept"
        );
    }
    let invited = console
        .act(
            "/console/people/invite",
            &[("email", "dev@example.com"), ("role", "developer")],
        )
        .await;
    assert_eq!(location(&invited), "/console/people?notice=invited");
    assert_eq!(mails_to(app, "dev@example.com").len(), 1);
    let page = console.get("/console/people").await.text().await.unwrap();
    let pending = between(&page, "Pending invitations", "</table>").to_owned();
    assert!(pending.contains("dev@example.com") && pending.contains("developer"));
    let invitation_id = between(&pending, "/console/invitations/", "/").to_owned();
    let resent = console
        .act(&format!("/console/invitations/{invitation_id}/resend"), &[])
        .await;
    assert_eq!(location(&resent), "/console/people?notice=resent");
    assert_eq!(mails_to(app, "dev@example.com").len(), 2);
    let revoked = console
        .act(&format!("/console/invitations/{invitation_id}/revoke"), &[])
        .await;
    assert_eq!(location(&revoked), "/console/people?notice=revoked");
    let page = console.get("/console/people").await.text().await.unwrap();
    let pending = between(&page, "Pending invitations", "</main>");
    assert!(!pending.contains("dev@example.com"), "revoked");

    console
        .act(
            "/console/people/invite",
            &[("email", "member@example.com"), ("role", "viewer")],
        )
        .await;
    let token = mailed_invitation_token(app, "member@example.com");
    ok(app
        .accept_invitation(&token, "a long enough passphrase", json!({}))
        .await)
    .await;
    let member = membership_of(&fixture, "member@example.com").await.unwrap();
    let id = member.user_id.to_string();
    let changed = console
        .act(&format!("/console/people/{id}/role"), &[("role", "admin")])
        .await;
    assert_eq!(location(&changed), "/console/people?notice=updated");
    assert_eq!(
        membership_of(&fixture, "member@example.com")
            .await
            .unwrap()
            .role
            .as_str(),
        "admin"
    );
    console
        .act(
            &format!("/console/people/{id}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(
        membership_of(&fixture, "member@example.com")
            .await
            .unwrap()
            .status
            .as_str(),
        "disabled"
    );
    console
        .act(
            &format!("/console/people/{id}/status"),
            &[("status", "active")],
        )
        .await;
    assert_eq!(
        membership_of(&fixture, "member@example.com")
            .await
            .unwrap()
            .status
            .as_str(),
        "active"
    );
    let removed = console
        .act(&format!("/console/people/{id}/remove"), &[])
        .await;
    assert_eq!(location(&removed), "/console/people?notice=removed");
    assert!(
        membership_of(&fixture, "member@example.com")
            .await
            .is_none()
    );
    // The last active owner cannot disable themselves: said in a sentence.
    let owner = fixture.boot.user_id.clone();
    let last = console
        .act(
            &format!("/console/people/{owner}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(last.status(), 409);
    assert!(
        last.text()
            .await
            .unwrap()
            .contains("last active owner cannot be removed, demoted or disabled")
    );
    // Someone who is not a member is not found.
    let missing = console
        .act(
            "/console/people/00000000-0000-7000-8000-000000000000/remove",
            &[],
        )
        .await;
    assert_eq!(missing.status(), 404);
}

async fn people_controls_follow_the_role_and_forged_changes_are_refused(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let owner = fixture.boot.user_id.clone();
    let admin = invited_console(&fixture, "admin@example.com", "admin").await;
    let page = admin.get("/console/people").await.text().await.unwrap();
    assert!(page.contains(">Invite<"), "an admin invites");
    assert!(page.contains("owners only"), "but does not touch an owner");
    assert!(
        !page.contains(&format!("/console/people/{owner}/")),
        "no owner controls"
    );
    assert!(
        !page.contains(r#"<option value="owner""#),
        "nor offers the owner role"
    );
    let forged = admin
        .act(
            &format!("/console/people/{owner}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    let promoted = admin
        .act(
            "/console/people/invite",
            &[("email", "boss@example.com"), ("role", "owner")],
        )
        .await;
    assert_eq!(promoted.status(), 403, "an admin cannot invite an owner");
    assert_eq!(
        membership_of(&fixture, "owner@example.com")
            .await
            .unwrap()
            .status
            .as_str(),
        "invited"
    );

    let viewer = invited_console(&fixture, "viewer@example.com", "viewer").await;
    let page = viewer.get("/console/people").await.text().await.unwrap();
    assert!(
        page.contains("admin@example.com"),
        "a viewer reads the members"
    );
    for control in [
        ">Invite<",
        ">Change role<",
        ">Disable<",
        ">Remove<",
        ">Resend<",
        ">Revoke<",
    ] {
        assert!(!page.contains(control), "no {control} for a viewer");
    }
    assert_eq!(viewer.get("/console/people/invite").await.status(), 403);
    let forged = viewer
        .act(
            "/console/people/invite",
            &[("email", "x@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("Your role does not allow this.")
    );
    assert!(membership_of(&fixture, "x@example.com").await.is_none());
}

/// The id of the organization named `name`, through the API.
async fn organization_named(fixture: &Fixture, name: &str) -> Option<String> {
    let list = ok(fixture
        .app
        .get_as(&fixture.token, "/api/v0/organizations?limit=100")
        .await)
    .await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .map(|o| o["_id"].as_str().unwrap().to_owned())
}

async fn organizations_are_created_edited_given_live_and_deleted(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let own = fixture.boot.organization_id.clone();
    let page = console
        .get("/console/organizations")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Test Organization") && page.contains("(yours)"));
    assert!(
        !page.contains(&format!("/console/organizations/{own}/delete")),
        "no deleting itself"
    );
    let form = console
        .get("/console/organizations/new")
        .await
        .text()
        .await
        .unwrap();
    for label in [
        "Managed by",
        "Organization name",
        "Address",
        "Zip",
        "Town",
        "Country",
        "Economy id",
        "Contact person id",
        "Billing address id",
        "Metadata",
        "Create organization",
    ] {
        assert!(form.contains(&format!(">{label}<")), "{label}");
    }
    let good = [
        ("name", "Branch Shop"),
        ("address_line1", "Marienplatz 1"),
        ("zip", "80331"),
        ("town", "Berlin"),
        ("country_code", "DEU"),
        ("managed_by", own.as_str()),
    ];
    let with = |field: &str, value: &'static str| -> Vec<(String, String)> {
        let mut form: Vec<(String, String)> = good
            .iter()
            .filter(|(k, _)| *k != field)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        form.push((field.to_owned(), value.to_owned()));
        form
    };
    for (field, value, message) in [
        ("name", "", "Organization name is required"),
        ("country_code", "XX", "Country "),
        ("zip", "", "Zip is required"),
        ("metadata", "[1, 2]", "Metadata must be a JSON object"),
        ("metadata", r#"{"region": 5}"#, "Metadata region: "),
        ("economy_id", "\u{202e}eco", "Economy id "),
    ] {
        let form = with(field, value);
        let fields: Vec<(&str, &str)> =
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let response = console.act("/console/organizations", &fields).await;
        assert_eq!(response.status(), 400, "{field}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
        assert!(html.contains(r#"value="Marienplatz 1""#), "kept");
    }
    assert!(
        organization_named(&fixture, "Branch Shop").await.is_none(),
        "nothing stored"
    );
    let created = console.act("/console/organizations", &good).await;
    assert_eq!(location(&created), "/console/organizations?notice=created");
    let branch = organization_named(&fixture, "Branch Shop").await.unwrap();
    let tree = console
        .get("/console/organizations")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        between(&tree, "Test Organization", "</main>").contains("Branch Shop"),
        "under its manager"
    );

    let edit = format!("/console/organizations/{branch}/edit");
    let page = console.get(&edit).await.text().await.unwrap();
    assert!(
        page.contains(r#"value="Marienplatz 1""#),
        "the form holds the organization"
    );
    let mut changed: Vec<(&str, &str)> = good[..5].to_vec();
    changed[3] = ("town", "Munich");
    changed.push(("economy_id", "ECO-7"));
    changed.push(("metadata", r#"{"region": "north"}"#));
    let saved = console.act(&edit, &changed).await;
    assert_eq!(location(&saved), "/console/organizations?notice=updated");
    let stored = fixture
        .app
        .state
        .store()
        .organization(branch.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.town.as_deref(), Some("Munich"));
    assert_eq!(stored.economy_id.as_deref(), Some("ECO-7"));
    assert_eq!(stored.metadata["region"], "north");
    let page = console.get(&edit).await.text().await.unwrap();
    assert!(page.contains("ECO-7") && page.contains("north"), "{page}");
    changed.pop();
    changed[2] = ("zip", "");
    let refused = console.act(&edit, &changed).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Zip is required"));

    let live = console
        .act(&format!("/console/organizations/{branch}/live"), &[])
        .await;
    assert_eq!(location(&live), "/console/organizations?notice=live");
    let stored = fixture
        .app
        .state
        .store()
        .organization(branch.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.envs.contains(&keyplane_core::values::Env::Live));

    let mut kiosk: Vec<(&str, &str)> = good[..5].to_vec();
    kiosk[0] = ("name", "Kiosk");
    kiosk.push(("managed_by", branch.as_str()));
    console.act("/console/organizations", &kiosk).await;
    let kiosk = organization_named(&fixture, "Kiosk").await.unwrap();
    let manages = console
        .act(
            &format!("/console/organizations/{branch}/delete"),
            &[("confirm_name", "Branch Shop")],
        )
        .await;
    assert_eq!(manages.status(), 409);
    assert!(
        manages
            .text()
            .await
            .unwrap()
            .contains("still manages organizations; delete those first")
    );
    let unconfirmed = console
        .act(
            &format!("/console/organizations/{kiosk}/delete"),
            &[("confirm_name", "kiosk")],
        )
        .await;
    assert_eq!(unconfirmed.status(), 400);
    assert!(
        unconfirmed
            .text()
            .await
            .unwrap()
            .contains("must be the organization's name")
    );
    let deleted = console
        .act(
            &format!("/console/organizations/{kiosk}/delete"),
            &[("confirm_name", "Kiosk")],
        )
        .await;
    assert_eq!(location(&deleted), "/console/organizations?notice=deleted");
    assert!(organization_named(&fixture, "Kiosk").await.is_none());
    let itself = console
        .act(
            &format!("/console/organizations/{own}/delete"),
            &[("confirm_name", "Test Organization")],
        )
        .await;
    assert_eq!(itself.status(), 403);
    // An organization outside the tree is not found.
    let stranger = fixture.app.another_organization("Stranger").create().await;
    let path = format!("/console/organizations/{}/edit", stranger.organization.id);
    assert_eq!(console.get(&path).await.status(), 404);
    // A developer reads the tree but changes nothing.
    let developer = invited_console(&fixture, "dev@example.com", "developer").await;
    let page = developer
        .get("/console/organizations")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Branch Shop") && !page.contains("New organization"));
    let forged = developer.act("/console/organizations", &good).await;
    assert_eq!(forged.status(), 403);
}

async fn a_keys_metadata_and_expiry_are_edited_and_cleared(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let key = fixture.app.stored_api_key(&fixture.boot.api_key).await;
    let edit = format!("/console/api-keys/{}/edit", key.id);
    let page = console.get(&edit).await.text().await.unwrap();
    assert!(page.contains(">Metadata<") && page.contains(">Expires<") && page.contains(">Save<"));
    for (metadata, expires, field, message) in [
        (
            "{not json",
            "",
            "metadata",
            "Metadata must be a JSON object",
        ),
        (r#"{"n": 1}"#, "", "metadata", "Metadata "),
        (
            "",
            "2001-01-01T00:00",
            "expires_at",
            "Expires must be in the future",
        ),
        ("", "soon", "expires_at", "Expires must be a date and time"),
    ] {
        let response = console
            .act(&edit, &[("metadata", metadata), ("expires_at", expires)])
            .await;
        assert_eq!(response.status(), 400, "{message}");
        let html = response.text().await.unwrap();
        let error = between(&html, &format!(r#"id="field-{field}-error">"#), "</p>");
        assert!(error.starts_with(message), "{message:?}: {error:?}");
    }
    assert_eq!(
        fixture.app.stored_api_key(&key.public_key).await,
        key,
        "nothing changed"
    );
    let saved = console
        .act(
            &edit,
            &[
                ("metadata", r#"{"store": "berlin-01"}"#),
                ("expires_at", "2035-01-01T00:00"),
            ],
        )
        .await;
    assert_eq!(location(&saved), "/console/api-keys?notice=updated");
    let stored = fixture.app.stored_api_key(&key.public_key).await;
    assert_eq!(stored.metadata["store"], "berlin-01");
    assert_eq!(stored.expires_at, Some(2_051_222_400));
    let page = console.get(&edit).await.text().await.unwrap();
    assert!(
        page.contains("berlin-01") && page.contains(r#"value="2035-01-01T00:00""#),
        "prefilled"
    );
    console
        .act(&edit, &[("metadata", ""), ("expires_at", "")])
        .await;
    let cleared = fixture.app.stored_api_key(&key.public_key).await;
    assert!(cleared.metadata.is_empty());
    assert_eq!(cleared.expires_at, None);
}

on_both_stores!(
    forms_with_nul_characters_are_refused_in_the_page_and_nothing_is_looked_up,
    an_oversized_form_is_refused_as_too_large_not_as_expired,
    a_new_password_ends_the_refresh_tokens_the_old_one_obtained,
    an_unreadable_form_or_query_is_answered_with_a_page,
);

/// No store holds NUL in text (PostgreSQL refuses it), so a form field carrying one is a 400
/// page before any handler reads it, signed in or not: never a 503 from the database, never an
/// `auth.failed` event or a throttle step for a credential no account can have.
async fn forms_with_nul_characters_are_refused_in_the_page_and_nothing_is_looked_up(
    backend: Backend,
) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let anonymous = Console::new(&fixture.app);
    for (path, email) in [
        ("/console/sign-in", "owner@example.com\0"),
        ("/console/sign-in", "\0"),
        ("/console/forgot-password", "owner@example.com\0"),
    ] {
        let response = anonymous
            .post(path, &[("email", email), ("password", OWNER_PASSWORD)])
            .await;
        assert_eq!(response.status(), 400, "{path} {email:?}");
        assert!(session_cookie_of(&response).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("NUL"), "{html}");
    }
    let csrf = console.csrf().await;
    let response = console
        .post(
            "/console/api-keys",
            &[
                ("name", "nul\0key"),
                ("kind", "test"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("NUL"));
    // The owner can still sign in: the NUL attempts counted against nothing.
    let mut again = Console::new(&fixture.app);
    let response = again.sign_in("owner@example.com", OWNER_PASSWORD).await;
    assert_eq!(response.status(), 303);
}

/// A form beyond the console's limit is a 413 page saying so, signed in or not; it was never
/// an expired form.
async fn an_oversized_form_is_refused_as_too_large_not_as_expired(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let csrf = console.csrf().await;
    let long = "x".repeat(70 * 1024);
    let signed_in = console
        .post(
            "/console/api-keys",
            &[("csrf_token", &csrf), ("kind", "test"), ("name", &long)],
        )
        .await;
    let anonymous = Console::new(&fixture.app)
        .post(
            "/console/sign-in",
            &[("email", &long), ("password", OWNER_PASSWORD)],
        )
        .await;
    for response in [signed_in, anonymous] {
        assert_eq!(response.status(), 413);
        let html = response.text().await.unwrap();
        assert!(html.contains("too large"), "{html}");
    }
}

/// A password reset (or change) is what a person does when they fear their password is known:
/// the refresh tokens obtained with it through the API (`keyplane login`) end with it, as the
/// console sessions do, and the new password obtains new ones.
async fn a_new_password_ends_the_refresh_tokens_the_old_one_obtained(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let here = owner_console(&fixture).await;
    let app = &fixture.app;
    let sign_in = |password: &str| json!({"email": "owner@example.com", "password": password});
    let pair = ok(app
        .post_json("/api/v0/auth", &sign_in(OWNER_PASSWORD))
        .await)
    .await;
    let refresh = |pair: &serde_json::Value| json!({"refresh_token": pair["refresh_token"]});

    let changed = here
        .act(
            "/console/account/password",
            &[
                ("current_password", OWNER_PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status(), 303);
    assert_eq!(
        app.post_json("/api/v0/auth", &refresh(&pair))
            .await
            .status(),
        401,
        "a change ends the old password's refresh tokens"
    );
    let pair = ok(app
        .post_json("/api/v0/auth", &sign_in("a brand new passphrase"))
        .await)
    .await;

    let console = Console::new(app);
    let asked = console
        .post(
            "/console/forgot-password",
            &[("email", "owner@example.com")],
        )
        .await;
    assert_eq!(asked.status(), 303);
    let token = invitation_token_in(&mailed_reset(app, "owner@example.com", 1).await);
    let reset = console
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "a third passphrase!")],
        )
        .await;
    assert_eq!(reset.status(), 303);
    assert_eq!(
        app.post_json("/api/v0/auth", &refresh(&pair))
            .await
            .status(),
        401,
        "a reset ends them too"
    );
    ok(app
        .post_json("/api/v0/auth", &sign_in("a third passphrase!"))
        .await)
    .await;
}

/// A form or query the handlers cannot read (a field twice, another content type) is refused
/// with a console page keeping axum's status, not the API's JSON error.
async fn an_unreadable_form_or_query_is_answered_with_a_page(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let csrf = console.csrf().await;
    let twice = Console::new(&fixture.app)
        .post(
            "/console/sign-in",
            &[
                ("email", "owner@example.com"),
                ("email", "other@example.com"),
                ("password", OWNER_PASSWORD),
            ],
        )
        .await;
    let signed_in_twice = console
        .post(
            "/console/api-keys",
            &[
                ("csrf_token", &csrf),
                ("name", "a"),
                ("name", "b"),
                ("kind", "test"),
            ],
        )
        .await;
    let query_twice = console
        .get("/console/sign-in?next=/console&next=/console")
        .await;
    for response in [twice, signed_in_twice, query_twice] {
        assert!(response.status().is_client_error(), "{}", response.status());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(response.text().await.unwrap().contains("could not be read"));
    }
}
