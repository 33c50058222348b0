//! Operator-facing behaviour: `keyplane bootstrap`, `--help`, the database going away and coming
//! back, and start-up refusals.

use std::path::Path;
use std::process::Output;

use keyplane_core::secrets::CredentialKind;
use keyplane_server::config::StoreConfig;
use keyplane_server::startup::open_store;
use keyplane_server::{Application, ServeConfig, StartupError};
use tokio::process::Command;

use crate::helpers::{
    Backend, DatabaseProxy, TestAppBuilder, assert_error, fresh_postgres_schema, test_master_key,
};
use crate::on_both_stores;

on_both_stores!(
    bootstrap_creates_the_first_organization_once,
    keys_rotate_adds_a_key_and_schedules_the_old_ones_retirement,
    recover_owner_invites_a_new_owner_into_an_organization_nobody_can_enter,
);

/// Settings of a store that a spawned `keyplane` process and the test share.
struct StoreUnderTest {
    config: StoreConfig,
    _dir: tempfile::TempDir,
}

impl StoreUnderTest {
    async fn new(backend: &Backend) -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let mut config = ServeConfig::for_data_dir(dir.path()).store;
        if let Backend::Postgres(url) = backend {
            config.database_url = Some(fresh_postgres_schema(url).await);
            config.master_key = Some(test_master_key());
        }
        Self { config, _dir: dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyplane"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(&self.config.data_dir);
        command
            .env_remove("KEYPLANE_DATABASE_URL")
            .env_remove("KEYPLANE_MASTER_KEY");
        if let Some(url) = &self.config.database_url {
            command.arg("--database-url").arg(url);
        }
        if let Some(key) = &self.config.master_key {
            command.env("KEYPLANE_MASTER_KEY", key);
        }
        command
    }
}

async fn bootstrap(store: &StoreUnderTest, name: &str) -> Output {
    store
        .command(&[
            "bootstrap",
            "--organization-name",
            name,
            "--email",
            "owner@example.com",
            "--json",
        ])
        .output()
        .await
        .unwrap()
}

async fn bootstrap_creates_the_first_organization_once(backend: Backend) {
    let under_test = StoreUnderTest::new(&backend).await;
    let first = bootstrap(&under_test, "Acme Platform").await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let fields = [
        "organization_id",
        "user_id",
        "api_key",
        "api_secret",
        "invitation_url",
    ];
    assert_eq!(
        printed.as_object().unwrap().len(),
        fields.len(),
        "{printed}"
    );
    let field = |name: &str| printed[name].as_str().unwrap().to_owned();
    assert!(field("api_key").starts_with("test_"));
    assert!(field("invitation_url").contains("#token="));

    let (store, secrets) = open_store(&under_test.config).await.unwrap();
    let organization_id = field("organization_id").parse().unwrap();
    let organization = store
        .organization(organization_id)
        .await
        .unwrap()
        .expect("the organization");
    assert_eq!(organization.name, "Acme Platform");
    assert_eq!(
        organization.envs,
        vec![
            keyplane_core::values::Env::Test,
            keyplane_core::values::Env::Live
        ]
    );
    let user = store
        .user(field("user_id").parse().unwrap())
        .await
        .unwrap()
        .expect("the owner");
    assert_eq!(user.email.as_str(), "owner@example.com");
    assert_eq!(user.password_hash, None);
    let memberships = store.memberships_of_user(user.id).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].role, keyplane_core::values::Role::Owner);
    assert_eq!(
        memberships[0].status,
        keyplane_core::values::UserStatus::Invited
    );
    let invitations = store
        .invitations_of_organization(organization_id)
        .await
        .unwrap();
    assert_eq!(invitations.len(), 1);
    let token = field("invitation_url")
        .split_once("#token=")
        .unwrap()
        .1
        .to_owned();
    assert!(secrets.verify_credential(
        CredentialKind::InvitationToken,
        &token,
        &invitations[0].token_hash
    ));

    // The secret is stored only as its keyed hash, and verifies.
    let key = store
        .api_key_by_public_key(&field("api_key"))
        .await
        .unwrap()
        .expect("the key");
    assert_eq!(key.kind, keyplane_core::values::ApiKeyKind::Test);
    assert_eq!(key.status, keyplane_core::values::ApiKeyStatus::Enabled);
    assert!(secrets.verify_credential(
        CredentialKind::ApiSecret,
        &field("api_secret"),
        &key.secret_hash
    ));
    assert_ne!(key.secret_hash.as_bytes(), field("api_secret").as_bytes());

    let events = store.audit_events(organization_id).await.unwrap();
    let mut actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        ["api_key.created", "organization.created", "user.invited"]
    );

    // A second bootstrap refuses and changes nothing.
    let second = bootstrap(&under_test, "Another").await;
    assert!(!second.status.success());
    assert!(second.stdout.is_empty());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("already has an organization"), "{message}");
    assert_eq!(
        store.audit_events(organization_id).await.unwrap().len(),
        events.len()
    );
    assert_eq!(
        store
            .invitations_of_organization(organization_id)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
}

#[tokio::test]
async fn bootstrap_rejects_an_invalid_email_and_stores_nothing() {
    let under_test = StoreUnderTest::new(&Backend::Sqlite).await;
    let output = under_test
        .command(&[
            "bootstrap",
            "--organization-name",
            "Acme",
            "--email",
            "not-an-address",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("email"));
    // The store is still empty: a valid bootstrap now succeeds.
    assert!(bootstrap(&under_test, "Acme").await.status.success());
}

/// The first organization's address can come with the bootstrap, checked like any
/// organization's; a bad one names the field and stores nothing.
#[tokio::test]
async fn bootstrap_takes_the_first_organizations_address() {
    let under_test = StoreUnderTest::new(&Backend::Sqlite).await;
    let with = |country: &str| {
        vec![
            "bootstrap".to_owned(),
            "--organization-name".into(),
            "Acme".into(),
            "--email".into(),
            "owner@example.com".into(),
            "--address".into(),
            "Unter den Linden 1".into(),
            "--zip".into(),
            "10117".into(),
            "--town".into(),
            "Berlin".into(),
            "--country".into(),
            country.into(),
            "--json".into(),
        ]
    };
    let bad = with("XXX");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let output = under_test.command(&bad).output().await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("country_code"));
    let good = with("DEU");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let output = under_test.command(&good).output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (store, _) = keyplane_server::startup::open_store(&under_test.config)
        .await
        .unwrap();
    let organization = store
        .organization(
            created["organization_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
        .await
        .unwrap()
        .expect("the organization");
    assert_eq!(
        organization.address_line1.as_deref(),
        Some("Unter den Linden 1")
    );
    assert_eq!(organization.zip.as_deref(), Some("10117"));
    assert_eq!(organization.town.as_deref(), Some("Berlin"));
    assert_eq!(organization.country_code.as_deref(), Some("DEU"));
    store.close().await;
}

#[tokio::test]
async fn serve_help_lists_every_setting_with_its_default() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    // Help is wrapped to the terminal's width; compare with whitespace collapsed.
    let help = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for expected in [
        "--config",
        "--data-dir",
        "[default: ./keyplane-data]",
        "--database-url",
        "[env: KEYPLANE_DATABASE_URL",
        "--master-key",
        "--master-key-file",
        "--database-max-connections",
        "[default: 16]",
        "--database-timeout",
        "--listen",
        "[default: 127.0.0.1:8443]",
        "--public-url",
        "--hostname",
        "--tls-cert",
        "--tls-key",
        "--trusted-proxy",
        "--shutdown-timeout",
        "[default: 30]",
        "--log",
        "--log-format",
    ] {
        assert!(
            help.contains(expected),
            "`serve --help` lacks {expected}:\n{help}"
        );
    }
}

#[tokio::test]
async fn postgres_without_a_master_key_refuses_to_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    // Checked before any connection is attempted, so no database is needed.
    config.store.database_url = Some("postgres://postgres@127.0.0.1:1/none".into());
    match Application::build(config).await {
        Err(StartupError::MasterKey(message)) => assert!(message.contains("KEYPLANE_MASTER_KEY")),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started without a master key"),
    }
    assert!(!dir.path().join("master.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_while_postgres_is_unreachable_and_recovers_by_itself() {
    let Some(Backend::Postgres(url)) = Backend::postgres() else {
        return;
    };
    let schema_url = fresh_postgres_schema(&url).await;
    let mut proxy = DatabaseProxy::start(&schema_url).await;
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .postgres_at(proxy.url(&schema_url))
        .start()
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.cut().await;
    assert_error(app.get("/readyz").await, 503, "E_UNAVAILABLE").await;
    // The process itself stays up.
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.restore().await;
    // Each unready answer takes up to the 1 s acquire timeout; the pool reconnects by itself.
    let mut recovered = false;
    for _ in 0..20 {
        if app.get("/readyz").await.status() == 200 {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "the server did not recover after the database returned"
    );
}

#[test]
fn a_config_file_fills_in_what_flags_and_environment_do_not_set() {
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("keyplane.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:9000\"\nshutdown-timeout = 5\ntrusted-proxy = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n",
    )
    .unwrap();
    let args = vec![
        "keyplane".to_owned(),
        "--config".into(),
        file.display().to_string(),
        "--shutdown-timeout".into(),
        "7".into(),
    ];
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args).unwrap();
    let extra =
        keyplane_server::config::file_settings_as_flags(&command, &matches, Path::new(&file))
            .unwrap();
    let all: Vec<String> = args
        .into_iter()
        .chain(extra.into_iter().map(|f| f.into_string().unwrap()))
        .collect();
    let matches = command.try_get_matches_from(all).unwrap();
    let config = Cli::from_arg_matches(&matches).unwrap().serve;
    assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(config.shutdown_timeout, 7, "the flag wins over the file");
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(
        config.store.data_dir,
        Path::new("./keyplane-data"),
        "defaults remain"
    );

    std::fs::write(&file, "no-such-setting = 1\n").unwrap();
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(["keyplane"]).unwrap();
    let error =
        keyplane_server::config::file_settings_as_flags(&command, &matches, &file).unwrap_err();
    assert!(error.to_string().contains("no-such-setting"));
}

async fn keys_rotate_adds_a_key_and_schedules_the_old_ones_retirement(backend: Backend) {
    let under_test = StoreUnderTest::new(&backend).await;
    let mut kids = Vec::new();
    for _ in 0..2 {
        let output = under_test
            .command(&["keys", "rotate"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let kid = stdout
            .strip_prefix("New signing key ")
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_else(|| panic!("unexpected output: {stdout}"))
            .to_owned();
        kids.push(kid);
    }
    let (store, _) = keyplane_server::startup::open_store(&under_test.config)
        .await
        .unwrap();
    let stored = store.signing_keys().await.unwrap();
    store.close().await;
    let by_kid = |kid: &str| stored.iter().find(|k| k.kid == kid).expect("stored");
    assert_eq!(stored.len(), 2);
    let (first, second) = (by_kid(&kids[0]), by_kid(&kids[1]));
    let retired_at = first.retired_at.expect("the first key is retired");
    assert_eq!(
        retired_at,
        second.created_at + keyplane_core::tokens::KEY_PROPAGATION_SECONDS
    );
    assert_eq!(second.retired_at, None);
    assert_ne!(first.encrypted_private_key, second.encrypted_private_key);
}

/// The operator's way back in: the first owner never accepted (the link is lost) and nobody
/// else can sign in. `keyplane admin recover-owner` makes a new owner invitation; the person accepts,
/// signs in and acts as owner. Bad input changes nothing and exits 1 with the reason.
async fn recover_owner_invites_a_new_owner_into_an_organization_nobody_can_enter(backend: Backend) {
    let store = StoreUnderTest::new(&backend).await;
    let output = bootstrap(&store, "Stranded").await;
    assert!(output.status.success());
    let boot: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let organization = boot["organization_id"].as_str().unwrap();

    let recover = |args: &[&str]| {
        let mut full = vec!["admin", "recover-owner"];
        full.extend_from_slice(args);
        store.command(&full)
    };
    for (args, reason) in [
        (
            vec!["--organization", "not-a-uuid", "--email", "new@example.com"],
            "organization",
        ),
        (
            vec![
                "--organization",
                "00000000-0000-4000-8000-000000000000",
                "--email",
                "new@example.com",
            ],
            "no organization",
        ),
        (
            vec!["--organization", organization, "--email", "not an email"],
            "email",
        ),
    ] {
        let output = recover(&args).output().await.unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }

    let output = recover(&[
        "--organization",
        organization,
        "--email",
        "rescuer@example.com",
        "--json",
    ])
    .output()
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recovered: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(recovered["organization_id"], organization);
    let token = recovered["invitation_url"]
        .as_str()
        .unwrap()
        .split_once("#token=")
        .unwrap()
        .1
        .to_owned();

    let app = TestAppBuilder::new(&backend)
        .await
        .configure(|config| config.store = store.config.clone())
        .start()
        .await;
    let accepted = app
        .post_json(
            "/api/v0/invitations/accept",
            &serde_json::json!({"token": token, "password": "a rescuer's passphrase"}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let login: serde_json::Value = app
        .post_json(
            "/api/v0/auth",
            &serde_json::json!({"email": "rescuer@example.com", "password": "a rescuer's passphrase"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap();
    let me = app
        .get_as(
            access,
            &format!("/api/v0/users/{}", recovered["user_id"].as_str().unwrap()),
        )
        .await;
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(
        (me["role"].as_str(), me["status"].as_str()),
        (Some("owner"), Some("active"))
    );
    let audit = app
        .get_as(
            access,
            &format!("/api/v0/organizations/{organization}/audit-events?action=owner.recovered"),
        )
        .await;
    let audit: serde_json::Value = audit.json().await.unwrap();
    assert_eq!(audit["count"], 1, "{audit}");
}
