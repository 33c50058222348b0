//! `Idempotency-Key` (contract §12): replays of every kind of write, mismatches, callers kept
//! apart, answers not kept, bad headers, expiry and purge, what the database holds, a claim
//! left by a stopped node, and the races: many retries at once on one node, and on two nodes
//! sharing PostgreSQL.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Fixture, TestApp, TestAppBuilder, assert_error, mailed_invitation_token, ok,
    owner_invitation_token, send,
};
use keyplane_server::service::idempotency::Begun;

use crate::on_both_stores;

on_both_stores!(
    a_replayed_key_creation_returns_the_same_secret_and_creates_one_key,
    patches_rotations_and_deletes_are_replayed_not_redone,
    a_key_reused_on_another_request_is_a_422_that_changes_nothing,
    callers_never_receive_each_others_answers,
    a_person_keeps_records_apart_per_organization,
    answers_of_work_not_begun_are_not_kept,
    a_conflict_that_asks_for_a_retry_is_not_kept,
    a_method_the_route_does_not_have_is_not_kept,
    a_client_hanging_up_while_its_claim_is_written_leaves_no_orphan_claim,
    bad_idempotency_keys_are_a_400_and_nothing_is_done,
    expired_answers_are_not_replayed_and_are_purged,
    the_database_holds_neither_secrets_nor_idempotency_keys,
    a_claim_left_running_is_in_progress_until_its_lease_ends,
    concurrent_retries_do_the_work_once,
    invitation_accepts_are_idempotent_for_the_invitation_holder,
);

/// What a write answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(value) => {
            assert_eq!(value, "true");
            true
        }
    };
    let body = response.json().await.expect("a JSON body");
    Answer {
        status,
        replayed,
        body,
    }
}

/// A write with a bearer token, an optional `Idempotency-Key` and an exact JSON body.
async fn write(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    answer(request.send().await.expect("the request completes")).await
}

const NEW_KEY: &str = r#"{"kind": "test", "status": "enabled"}"#;

async fn key_count(app: &TestApp, token: &str) -> u64 {
    ok(app.get_as(token, "/api/v0/api-keys").await).await["count"]
        .as_u64()
        .unwrap()
}

/// How many audit events of `action` the bootstrap organization has, less the bootstrap's own
/// (`api_key.created` for its key).
async fn events(fixture: &Fixture, action: &str) -> usize {
    let bootstrap = usize::from(action == "api_key.created");
    all_events(fixture, action).await - bootstrap
}

async fn all_events(fixture: &Fixture, action: &str) -> usize {
    fixture
        .app
        .state
        .store()
        .audit_events(fixture.boot.organization_id.parse().unwrap())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == action)
        .count()
}

/// One stored record, every column as read straight from the database.
#[derive(Debug, sqlx::FromRow)]
struct Record {
    caller: String,
    key_hash: Vec<u8>,
    request_hash: Vec<u8>,
    claim_id: String,
    state: String,
    claimed_at: i64,
    expires_at: i64,
    status: Option<i64>,
    content_type: Option<String>,
    sealed_body: Option<Vec<u8>>,
}

impl Record {
    /// Every byte the row holds.
    fn bytes(&self) -> Vec<u8> {
        [
            self.caller.as_bytes(),
            &self.key_hash,
            &self.request_hash,
            self.claim_id.as_bytes(),
            self.state.as_bytes(),
            self.content_type.as_deref().unwrap_or("").as_bytes(),
            self.sealed_body.as_deref().unwrap_or(&[]),
        ]
        .concat()
    }
}

async fn records(app: &TestApp, backend: &Backend) -> Vec<Record> {
    const SELECT: &str = "SELECT * FROM idempotency_keys ORDER BY claimed_at";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let rows = sqlx::query_as(SELECT).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows = sqlx::query_as(SELECT).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}

/// Runs a statement on the app's database directly (the clock moving on, a node stopping).
async fn execute(app: &TestApp, backend: &Backend, statement: &str) -> u64 {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let done = sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
            done.rows_affected()
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let done = sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
            done.rows_affected()
        }
    }
}

async fn a_replayed_key_creation_returns_the_same_secret_and_creates_one_key(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-1";
    let first = write(app, Method::PUT, token, path, Some("create-pos-1"), NEW_KEY).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed, "the first answer is not a replay");
    let secret = first.body["secret"].as_str().unwrap().to_owned();

    for _ in 0..2 {
        let retry = write(app, Method::PUT, token, path, Some("create-pos-1"), NEW_KEY).await;
        assert_eq!(retry.status, 200);
        assert!(retry.replayed);
        assert_eq!(retry.body, first.body, "the same body, secret included");
    }
    // The replayed secret is the key's: it logs in.
    app.token_pair(first.body["key"].as_str().unwrap(), &secret)
        .await;
    assert_eq!(key_count(app, token).await, 2, "bootstrap and pos-1 only");
    assert_eq!(
        events(&fixture, "api_key.created").await,
        1,
        "one audit event"
    );

    // Without the key, the same request is a new one: the name is taken.
    let fresh = write(app, Method::PUT, token, path, None, NEW_KEY).await;
    assert_eq!((fresh.status, fresh.replayed), (409, false));

    // Replays carry the usual headers of a management answer.
    let response = app
        .client
        .put(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", "create-pos-1")
        .body(NEW_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().contains_key("x-request-id"));
}

async fn patches_rotations_and_deletes_are_replayed_not_redone(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-2";
    assert_eq!(
        write(app, Method::PUT, token, path, None, NEW_KEY)
            .await
            .status,
        200
    );

    let patch = r#"{"metadata": {"store": "Berlin"}}"#;
    let patched = write(app, Method::PATCH, token, path, Some("patch-1"), patch).await;
    assert_eq!((patched.status, patched.replayed), (200, false));
    // Changed since by another request...
    let other = r#"{"metadata": {"store": "Mitte"}}"#;
    assert_eq!(
        write(app, Method::PATCH, token, path, Some("patch-2"), other)
            .await
            .status,
        200
    );
    // ...the retry gets the first answer and does not write Berlin again.
    let retry = write(app, Method::PATCH, token, path, Some("patch-1"), patch).await;
    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(retry.body, patched.body);
    let now = ok(app.get_as(token, path).await).await;
    assert_eq!(now["metadata"], json!({"store": "Mitte"}));
    assert_eq!(events(&fixture, "api_key.updated").await, 2);

    // A rotation's new secret is replayed; the key is rotated once.
    let rotate = &format!("{path}/rotate");
    let rotated = write(app, Method::POST, token, rotate, Some("rotate-1"), "{}").await;
    assert_eq!((rotated.status, rotated.replayed), (200, false));
    let again = write(app, Method::POST, token, rotate, Some("rotate-1"), "{}").await;
    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(again.body["secret"], rotated.body["secret"]);
    assert_eq!(events(&fixture, "api_key.rotated").await, 1);
    app.token_pair(
        rotated.body["key"].as_str().unwrap(),
        rotated.body["secret"].as_str().unwrap(),
    )
    .await;

    // A delete's retry gets the 200 again, not the 404 a second delete answers.
    let deleted = write(app, Method::DELETE, token, path, Some("delete-1"), "").await;
    assert_eq!((deleted.status, deleted.replayed), (200, false));
    let retry = write(app, Method::DELETE, token, path, Some("delete-1"), "").await;
    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(retry.body, json!({"deleted": true}));
    let fresh = write(app, Method::DELETE, token, path, None, "").await;
    assert_eq!(fresh.status, 404);
    assert_eq!(events(&fixture, "api_key.deleted").await, 1);
}

async fn a_key_reused_on_another_request_is_a_422_that_changes_nothing(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let first = write(
        app,
        Method::PUT,
        token,
        "/api/v0/api-keys/pos-3",
        Some("k"),
        NEW_KEY,
    )
    .await;
    assert_eq!(first.status, 200);

    let cases: [(Method, &str, &str); 5] = [
        // Another path (a key that would be created).
        (Method::PUT, "/api/v0/api-keys/pos-4", NEW_KEY),
        // Another body (a disabled key).
        (
            Method::PUT,
            "/api/v0/api-keys/pos-3",
            r#"{"kind": "test", "status": "disabled"}"#,
        ),
        // The same JSON, not the same bytes.
        (
            Method::PUT,
            "/api/v0/api-keys/pos-3",
            r#"{"kind":"test","status":"enabled"}"#,
        ),
        // Another method (a change that would apply).
        (
            Method::PATCH,
            "/api/v0/api-keys/pos-3",
            r#"{"status": "disabled"}"#,
        ),
        // Another query.
        (Method::PUT, "/api/v0/api-keys/pos-3?x=1", NEW_KEY),
    ];
    for (method, path, body) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", "k")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("idempotent-replayed").is_none());
        let error = assert_error(response, 422, "E_IDEMPOTENCY_MISMATCH").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key"),
            "{error}"
        );
    }
    assert_eq!(key_count(app, token).await, 2);
    let stored = ok(app.get_as(token, "/api/v0/api-keys/pos-3").await).await;
    assert_eq!(stored["status"], "enabled");
    assert_eq!(events(&fixture, "api_key.created").await, 1);
    assert_eq!(events(&fixture, "api_key.updated").await, 0);
    // The original request is still replayed.
    let retry = write(
        app,
        Method::PUT,
        token,
        "/api/v0/api-keys/pos-3",
        Some("k"),
        NEW_KEY,
    )
    .await;
    assert_eq!((retry.status, retry.replayed), (200, true));
}

async fn callers_never_receive_each_others_answers(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, boot } = &fixture;
    let path = "/api/v0/api-keys/shared-name";
    let first = write(app, Method::PUT, token, path, Some("same-key"), NEW_KEY).await;
    assert_eq!(first.status, 200);

    // Another API key of the same organization, same key, same request: its own work (the
    // name is taken now), never the first caller's answer with its secret.
    let second = ok(send(
        app,
        Method::PUT,
        token,
        "/api/v0/api-keys/second-caller",
        Some(json!({"kind": "test", "status": "enabled", "role": "admin"})),
    )
    .await)
    .await;
    let second_token = app
        .access_token(
            second["key"].as_str().unwrap(),
            second["secret"].as_str().unwrap(),
        )
        .await;
    let theirs = write(
        app,
        Method::PUT,
        &second_token,
        path,
        Some("same-key"),
        NEW_KEY,
    )
    .await;
    assert_eq!((theirs.status, theirs.replayed), (409, false));
    assert_eq!(theirs.body["code"], "E_CONFLICT");

    // A person of the same organization, likewise.
    app.activate_owner(boot, "owner passphrase 1").await;
    let person = app
        .person_token("owner@example.com", "owner passphrase 1")
        .await;
    let theirs = write(app, Method::PUT, &person, path, Some("same-key"), NEW_KEY).await;
    assert_eq!((theirs.status, theirs.replayed), (409, false));

    // Each caller's own key replays its own answer.
    let mine = write(app, Method::PUT, token, path, Some("same-key"), NEW_KEY).await;
    assert_eq!((mine.status, mine.replayed), (200, true));
    assert_eq!(mine.body["secret"], first.body["secret"]);
    let theirs = write(
        app,
        Method::PUT,
        &second_token,
        path,
        Some("same-key"),
        NEW_KEY,
    )
    .await;
    assert_eq!((theirs.status, theirs.replayed), (409, true));
    assert!(theirs.body.get("secret").is_none());
}

async fn a_person_keeps_records_apart_per_organization(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let child = app
        .another_organization("Child")
        .managed_by(boot.organization_id.parse().unwrap())
        .create()
        .await
        .organization;
    let password = "a strong passphrase";
    ok(app
        .accept_invitation(owner_invitation_token(&boot), password, json!({}))
        .await)
    .await;
    ok(send(
        &app,
        Method::POST,
        &token,
        &format!("/api/v0/organizations/{}/users", child.id),
        Some(json!({"email": "owner@example.com", "role": "admin"})),
    )
    .await)
    .await;
    let invitation = mailed_invitation_token(&app, "owner@example.com");
    ok(app
        .accept_invitation(&invitation, password, json!({}))
        .await)
    .await;
    let mut pairs = Vec::new();
    for organization in [boot.organization_id.clone(), child.id.to_string()] {
        let body = json!({
            "email": "owner@example.com", "password": password, "organization_id": organization,
        });
        pairs.push(ok(app.post_json("/api/v0/auth", &body).await).await);
    }

    // The same person, the same key and request: "my organization's key p-1" means another key
    // in each organization, and each is created.
    let path = "/api/v0/api-keys/p-1";
    let mut created = Vec::new();
    for pair in &pairs {
        let token = pair["access_token"].as_str().unwrap();
        let answer = write(&app, Method::PUT, token, path, Some("same"), NEW_KEY).await;
        assert_eq!(
            (answer.status, answer.replayed),
            (200, false),
            "{}",
            answer.body
        );
        created.push(answer.body["_id"].as_str().unwrap().to_owned());
        let retry = write(&app, Method::PUT, token, path, Some("same"), NEW_KEY).await;
        assert_eq!((retry.status, retry.replayed), (200, true));
        assert_eq!(retry.body["_id"], answer.body["_id"]);
    }
    assert_ne!(created[0], created[1]);
}

async fn answers_of_work_not_begun_are_not_kept(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-5";

    // A 400 is not kept: the same key then serves a corrected body (not a 422).
    let bad = write(
        app,
        Method::PUT,
        token,
        path,
        Some("k-400"),
        r#"{"kind": "bogus"}"#,
    )
    .await;
    assert_eq!((bad.status, bad.replayed), (400, false));
    let again = write(
        app,
        Method::PUT,
        token,
        path,
        Some("k-400"),
        r#"{"kind": "bogus"}"#,
    )
    .await;
    assert_eq!((again.status, again.replayed), (400, false), "run again");
    let fixed = write(app, Method::PUT, token, path, Some("k-400"), NEW_KEY).await;
    assert_eq!((fixed.status, fixed.replayed), (200, false));

    // A 401 is not kept: the same request with a valid token then does the work.
    let other = "/api/v0/api-keys/pos-6";
    let refused = write(
        app,
        Method::PUT,
        "not-a-token",
        other,
        Some("k-401"),
        NEW_KEY,
    )
    .await;
    assert_eq!((refused.status, refused.replayed), (401, false));
    let done = write(app, Method::PUT, token, other, Some("k-401"), NEW_KEY).await;
    assert_eq!((done.status, done.replayed), (200, false));

    // A 403 is not kept either: a viewer's refused delete, retried once the person may.
    app.activate_owner(&fixture.boot, "owner passphrase 1")
        .await;
    let organization = fixture.boot.organization_id.parse().unwrap();
    let user = fixture.boot.user_id.parse().unwrap();
    app.set_role_in_store(organization, user, keyplane_core::values::Role::Viewer)
        .await;
    let viewer = app
        .person_token("owner@example.com", "owner passphrase 1")
        .await;
    let forbidden = write(app, Method::DELETE, &viewer, other, Some("k-403"), "").await;
    assert_eq!((forbidden.status, forbidden.replayed), (403, false));
    app.set_role_in_store(organization, user, keyplane_core::values::Role::Owner)
        .await;
    let owner = app
        .person_token("owner@example.com", "owner passphrase 1")
        .await;
    let deleted = write(app, Method::DELETE, &owner, other, Some("k-403"), "").await;
    assert_eq!((deleted.status, deleted.replayed), (200, false));

    // A 409 (the work began and found a conflict) is kept: its retry gets the 409 again even
    // once the conflict is gone.
    let conflict = write(app, Method::PUT, token, path, Some("k-409"), NEW_KEY).await;
    assert_eq!((conflict.status, conflict.replayed), (409, false));
    assert_eq!(
        write(app, Method::DELETE, token, path, None, "")
            .await
            .status,
        200
    );
    let retry = write(app, Method::PUT, token, path, Some("k-409"), NEW_KEY).await;
    assert_eq!((retry.status, retry.replayed), (409, true));
    assert_eq!(retry.body, conflict.body);
    // And a 404 likewise.
    let missing = write(app, Method::DELETE, token, path, Some("k-404"), "").await;
    assert_eq!((missing.status, missing.replayed), (404, false));
    assert_eq!(
        write(app, Method::PUT, token, path, None, NEW_KEY)
            .await
            .status,
        200
    );
    let retry = write(app, Method::DELETE, token, path, Some("k-404"), "").await;
    assert_eq!((retry.status, retry.replayed), (404, true));
    assert!(
        ok(app.get_as(token, path).await).await["_id"].is_string(),
        "not deleted by the replay"
    );
}
/// A 409 that says "try again" (a change raced the request and nothing was written) is not
/// kept: the retry with the same key does the work instead of getting that 409 back for a day.
/// Every update of the key is made to miss, as when a concurrent change wins each round.
async fn a_conflict_that_asks_for_a_retry_is_not_kept(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-raced";
    assert_eq!(
        write(app, Method::PUT, token, path, None, NEW_KEY)
            .await
            .status,
        200
    );
    let (hold, release): (&[&str], &[&str]) = match backend {
        Backend::Sqlite => (
            &["CREATE TRIGGER hold_api_keys BEFORE UPDATE ON api_keys \
               BEGIN SELECT RAISE(IGNORE); END"],
            &["DROP TRIGGER hold_api_keys"],
        ),
        Backend::Postgres(_) => (
            &[
                "CREATE FUNCTION hold_api_keys() RETURNS trigger LANGUAGE plpgsql \
                 AS 'BEGIN RETURN NULL; END'",
                "CREATE TRIGGER hold_api_keys BEFORE UPDATE ON api_keys \
                 FOR EACH ROW EXECUTE FUNCTION hold_api_keys()",
            ],
            &["DROP TRIGGER hold_api_keys ON api_keys"],
        ),
    };
    for statement in hold {
        execute(app, &backend, statement).await;
    }
    let patch = r#"{"metadata": {"store": "Berlin"}}"#;
    let raced = write(app, Method::PATCH, token, path, Some("raced-1"), patch).await;
    assert_eq!((raced.status, raced.replayed), (409, false));
    assert!(
        raced.body["message"]
            .as_str()
            .unwrap()
            .contains("try again"),
        "{:?}",
        raced.body
    );
    for statement in release {
        execute(app, &backend, statement).await;
    }

    let retry = write(app, Method::PATCH, token, path, Some("raced-1"), patch).await;
    assert_eq!((retry.status, retry.replayed), (200, false), "{retry:?}");
    assert_eq!(retry.body["metadata"], json!({"store": "Berlin"}));
    let again = write(app, Method::PATCH, token, path, Some("raced-1"), patch).await;
    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(events(&fixture, "api_key.updated").await, 1);
}
/// A 405 (a method the route does not have) begins no work: it is not kept, so no record is
/// stored for it and every answer is the server's own, with its `Allow` header.
async fn a_method_the_route_does_not_have_is_not_kept(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    for _ in 0..2 {
        let response = app
            .client
            .put(app.url("/api/v0/organizations"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", "k-405")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(response.headers().contains_key("allow"));
        let answered = answer(response).await;
        assert_eq!((answered.status, answered.replayed), (405, false));
    }
    assert!(records(app, &backend).await.is_empty());
}
/// A transaction of the test's own holding the records' table, so that a claim waits in the
/// database.
enum HeldTable {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl HeldTable {
    async fn hold(app: &TestApp, backend: &Backend) -> Self {
        use sqlx::Connection;
        match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&app.sqlite_url())
                    .await
                    .unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Sqlite(conn)
            }
            Backend::Postgres(_) => {
                let url = app.config.store.database_url.clone().unwrap();
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE idempotency_keys IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Self::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Self::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// A client that hangs up while its claim is still being written (the database is slow) does
/// not leave the claim written and held by nobody, which answered every retry 409 until the
/// lease ran out: the claim and the work run to their end, and the retry gets the answer.
async fn a_client_hanging_up_while_its_claim_is_written_leaves_no_orphan_claim(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-hangup";
    let held = HeldTable::hold(app, &backend).await;
    let hung_up = app
        .client
        .put(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", "hang-1")
        .body(NEW_KEY)
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(hung_up.unwrap_err().is_timeout());
    held.release().await;

    // The request the client left finishes on its own; until then a retry is told to wait.
    let mut retries = 0;
    let retry = loop {
        let retry = write(app, Method::PUT, token, path, Some("hang-1"), NEW_KEY).await;
        if retry.status != 409 || retries == 100 {
            break retry;
        }
        retries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Replayed when the claim was written before the hang-up; done now when the hang-up (or
    // the database's timeout, on a loaded machine) came first. Never a 409 held by nobody.
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(retry.body["secret"].is_string());
    assert_eq!(events(&fixture, "api_key.created").await, 1);
}

async fn bad_idempotency_keys_are_a_400_and_nothing_is_done(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-7";
    let long = "k".repeat(256);
    // (DEL and other controls cannot even be sent: HTTP refuses them in header values.)
    let bad: [&[u8]; 4] = [b"", long.as_bytes(), b"tab\tinside", b"caf\xc3\xa9"];
    for value in bad {
        let response = app
            .client
            .put(app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(NEW_KEY)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 400, "E_VALIDATION").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key:"),
            "{value:?}: {error}"
        );
    }
    // Sent twice.
    let response = app
        .client
        .put(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .body(NEW_KEY)
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "E_VALIDATION").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key:")
    );
    assert_eq!(key_count(app, token).await, 1, "nothing was created");
    assert!(records(app, &backend).await.is_empty(), "nothing kept");

    // The longest key and every printable character are fine.
    let longest = "~".repeat(255);
    let printable: String = (0x20u8..=0x7e).map(char::from).collect();
    for key in [longest.as_str(), printable.trim()] {
        let created = write(
            app,
            Method::PUT,
            token,
            &format!("/api/v0/api-keys/k-{}", key.len()),
            Some(key),
            NEW_KEY,
        )
        .await;
        assert_eq!(created.status, 200, "{}", created.body);
    }
    // Reads ignore the header, however bad.
    let read = app
        .client
        .get(app.url("/api/v0/api-keys"))
        .bearer_auth(token)
        .header("idempotency-key", "")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // So do the token endpoints: they are not management writes.
    let login = app
        .client
        .post(app.url("/api/v0/auth"))
        .header("idempotency-key", "")
        .json(&json!({"api_key": fixture.boot.api_key, "api_secret": fixture.boot.api_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
}

async fn expired_answers_are_not_replayed_and_are_purged(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let path = "/api/v0/api-keys/pos-8";
    let first = write(app, Method::PUT, token, path, Some("old"), NEW_KEY).await;
    assert_eq!(first.status, 200);
    let old = records(app, &backend).await.remove(0);
    let ttl = old.expires_at - old.claimed_at;
    assert!((86_400..86_410).contains(&ttl), "kept for 24 h: {ttl}");
    let other = "/api/v0/api-keys/pos-9";
    let kept = write(app, Method::PUT, token, other, Some("new"), NEW_KEY).await;
    assert_eq!(kept.status, 200);
    assert_eq!(records(app, &backend).await.len(), 2);

    // The clock moves past the first record's expiry.
    let expire = |claim_id: String| {
        let past = keyplane_core::time::now_unix() - 1;
        format!("UPDATE idempotency_keys SET expires_at = {past} WHERE claim_id = '{claim_id}'")
    };
    assert_eq!(
        execute(app, &backend, &expire(old.claim_id.clone())).await,
        1
    );

    // Not replayed: the request runs again (and finds the name taken)...
    let retry = write(app, Method::PUT, token, path, Some("old"), NEW_KEY).await;
    assert_eq!((retry.status, retry.replayed), (409, false));
    // ...and that answer is kept anew, under a new claim.
    let again = write(app, Method::PUT, token, path, Some("old"), NEW_KEY).await;
    assert_eq!((again.status, again.replayed), (409, true));
    let renewed = records(app, &backend)
        .await
        .into_iter()
        .find(|r| r.status == Some(409))
        .unwrap();
    assert_ne!(renewed.claim_id, old.claim_id);

    // Expired again, it is purged; the other record stays and is still replayed.
    assert_eq!(execute(app, &backend, &expire(renewed.claim_id)).await, 1);
    let purged = keyplane_server::service::idempotency::purge_expired(&app.state)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = records(app, &backend).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, Some(200));
    let still = write(app, Method::PUT, token, other, Some("new"), NEW_KEY).await;
    assert_eq!((still.status, still.replayed), (200, true));
    assert_eq!(still.body, kept.body);
    assert_eq!(
        keyplane_server::service::idempotency::purge_expired(&app.state)
            .await
            .unwrap(),
        0
    );
}

async fn the_database_holds_neither_secrets_nor_idempotency_keys(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let key = "idem-7f3c9a1e-plaintext-marker";
    let created = write(
        app,
        Method::PUT,
        token,
        "/api/v0/api-keys/pos-10",
        Some(key),
        NEW_KEY,
    )
    .await;
    assert_eq!(created.status, 200);
    let secret = created.body["secret"].as_str().unwrap();
    let public_key = created.body["key"].as_str().unwrap();
    let stored = records(app, &backend).await;
    assert_eq!(stored.len(), 1);
    let record = &stored[0];
    assert_eq!(record.state, "complete");
    assert_eq!(record.status, Some(200));
    assert!(
        record.caller.starts_with("api_key:"),
        "the caller is the API key: {}",
        record.caller
    );
    let bytes = record.bytes();
    for plain in [secret, key, public_key, "pos-10", "\"secret\""] {
        assert!(
            !bytes
                .windows(plain.len())
                .any(|window| window == plain.as_bytes()),
            "{plain} is stored in the clear"
        );
    }
    assert_eq!(record.key_hash.len(), 32);
    assert_eq!(record.request_hash.len(), 32);
}

async fn a_claim_left_running_is_in_progress_until_its_lease_ends(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, boot } = &fixture;
    let path = "/api/v0/api-keys/pos-11";
    // A node claims the key and stops before answering.
    let bootstrap_key = app.stored_api_key(&boot.api_key).await;
    let key = keyplane_core::idempotency::IdempotencyKey::parse(b"crash").unwrap();
    let begun = keyplane_server::service::idempotency::begin(
        &app.state,
        format!("api_key:{}", bootstrap_key.id),
        &key,
        "PUT",
        path,
        NEW_KEY.as_bytes(),
    )
    .await
    .unwrap();
    let response = app
        .client
        .put(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("idempotency-key", "crash")
        .body(NEW_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(response, 409, "E_IDEMPOTENCY_IN_PROGRESS").await;
    // Another body is a mismatch even while the first runs.
    let other = write(
        app,
        Method::PUT,
        token,
        path,
        Some("crash"),
        r#"{"kind": "test"}"#,
    )
    .await;
    assert_eq!(other.status, 422);
    assert_eq!(key_count(app, token).await, 1, "nothing done");

    // A claim whose work still runs is renewed, so aging alone does not free it...
    let Begun::Run(claimed) = begun else {
        panic!("claimed above")
    };
    let lease = keyplane_core::idempotency::LEASE_SECONDS;
    let age = format!("UPDATE idempotency_keys SET claimed_at = claimed_at - {lease}");
    execute(app, &backend, &age).await;
    keyplane_server::service::idempotency::renew(&app.state, &claimed).await;
    let renewed = write(app, Method::PUT, token, path, Some("crash"), NEW_KEY).await;
    assert_eq!(renewed.status, 409, "{}", renewed.body);
    // ...but once its node stops renewing it, past the lease, a retry takes the claim over and
    // does the work.
    execute(app, &backend, &age).await;
    let done = write(app, Method::PUT, token, path, Some("crash"), NEW_KEY).await;
    assert_eq!((done.status, done.replayed), (200, false));
    let again = write(app, Method::PUT, token, path, Some("crash"), NEW_KEY).await;
    assert_eq!((again.status, again.replayed), (200, true));
    // The stopped node's late renewal and answer change nothing.
    keyplane_server::service::idempotency::renew(&app.state, &claimed).await;
    keyplane_server::service::idempotency::finish(
        &app.state,
        claimed,
        200,
        Some("application/json"),
        b"{}",
    )
    .await;
    let still = write(app, Method::PUT, token, path, Some("crash"), NEW_KEY).await;
    assert_eq!(still.body, done.body);
    assert_eq!(events(&fixture, "api_key.created").await, 1);
}

/// Sends `count` identical requests at once through `apps` in turn; their answers.
async fn race(
    apps: &[Arc<TestApp>],
    token: &str,
    path: &str,
    key: &str,
    count: usize,
) -> Vec<Answer> {
    let barrier = Arc::new(tokio::sync::Barrier::new(count));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let app = apps[index % apps.len()].clone();
        let barrier = barrier.clone();
        let (token, path, key) = (token.to_owned(), path.to_owned(), key.to_owned());
        tasks.spawn(async move {
            let request = app
                .client
                .put(app.url(&path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("idempotency-key", &key)
                .body(NEW_KEY);
            barrier.wait().await;
            answer(request.send().await.expect("the request completes")).await
        });
    }
    tasks.join_all().await
}

/// Exactly one answer did the work; every other is its replay or "in progress".
fn assert_done_once(answers: &[Answer]) -> &Answer {
    let originals: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == 200 && !a.replayed)
        .collect();
    assert_eq!(originals.len(), 1, "{answers:#?}");
    let original = originals[0];
    for answer in answers {
        match (answer.status, answer.replayed) {
            (200, false) => {}
            (200, true) => assert_eq!(answer.body, original.body),
            (409, false) => assert_eq!(answer.body["code"], "E_IDEMPOTENCY_IN_PROGRESS"),
            other => panic!("unexpected answer {other:?}: {}", answer.body),
        }
    }
    original
}

async fn concurrent_retries_do_the_work_once(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let app = Arc::new(fixture.app);
    let answers = race(
        std::slice::from_ref(&app),
        &fixture.token,
        "/api/v0/api-keys/race",
        "race",
        16,
    )
    .await;
    let original = assert_done_once(&answers);
    assert_eq!(key_count(&app, &fixture.token).await, 2);
    let organization = fixture.boot.organization_id.parse().unwrap();
    let created = app
        .state
        .store()
        .audit_events(organization)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == "api_key.created" && e.target_id == original.body["_id"])
        .count();
    assert_eq!(created, 1);
    // Afterwards every retry is the replay.
    let retry = write(
        &app,
        Method::PUT,
        &fixture.token,
        "/api/v0/api-keys/race",
        Some("race"),
        NEW_KEY,
    )
    .await;
    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(retry.body, original.body);
}

/// Two nodes sharing one PostgreSQL database race one key: one does the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_postgres_do_the_work_of_one_key_once() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let a = TestApp::start(&backend).await;
    let b = TestAppBuilder::new(&backend)
        .await
        .sharing_database_with(&a)
        .start()
        .await;
    let boot = a.bootstrap().await;
    let token = a.access_token(&boot.api_key, &boot.api_secret).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    for round in 0..3 {
        let path = format!("/api/v0/api-keys/two-nodes-{round}");
        let key = format!("two-nodes-{round}");
        let answers = race(&[a.clone(), b.clone()], &token, &path, &key, 16).await;
        assert_done_once(&answers);
        // Each node replays the other's answer.
        for node in [&a, &b] {
            let retry = write(node, Method::PUT, &token, &path, Some(&key), NEW_KEY).await;
            assert_eq!((retry.status, retry.replayed), (200, true));
        }
    }
    assert_eq!(key_count(&a, &token).await, 4);
}

async fn invitation_accepts_are_idempotent_for_the_invitation_holder(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let Fixture { app, token, .. } = &fixture;
    let mut invitations = Vec::new();
    for email in ["ada@example.com", "grace@example.com"] {
        ok(send(
            app,
            Method::POST,
            token,
            "/api/v0/users",
            Some(json!({"email": email})),
        )
        .await)
        .await;
        invitations.push(mailed_invitation_token(app, email));
    }
    let request = |token: &str, password: &str| {
        let body = json!({"token": token, "password": password}).to_string();
        app.client
            .post(app.url("/api/v0/invitations/accept"))
            .header("content-type", "application/json")
            .header("idempotency-key", "accept-1")
            .body(body)
    };
    let accept = |token: &str, password: &str| {
        let request = request(token, password);
        async move { answer(request.send().await.unwrap()).await }
    };

    // Many at once: one accepts, the others replay or wait.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = request(&invitations[0], "a strong passphrase");
        tasks.spawn(async move { answer(request.send().await.unwrap()).await });
    }
    let answers = tasks.join_all().await;
    let originals = answers
        .iter()
        .filter(|a| a.status == 200 && !a.replayed)
        .count();
    assert_eq!(originals, 1, "{answers:#?}");
    for answer in &answers {
        assert!(
            matches!((answer.status, answer.replayed), (200, _) | (409, false)),
            "{answer:?}"
        );
    }
    assert_eq!(events(&fixture, "invitation.accepted").await, 1);
    let retry = accept(&invitations[0], "a strong passphrase").await;
    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(retry.body["status"], "active");
    // The same invitation with another password is another request.
    let other = accept(&invitations[0], "another passphrase").await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (422, Some("E_IDEMPOTENCY_MISMATCH"))
    );
    // Another invitation's holder with the same key does their own work.
    let theirs = accept(&invitations[1], "a strong passphrase").await;
    assert_eq!((theirs.status, theirs.replayed), (200, false));
    assert_eq!(theirs.body["email"], "grace@example.com");
    assert_eq!(events(&fixture, "invitation.accepted").await, 2);
    // An unknown token is refused (400) and not kept.
    let unknown = accept("not-an-invitation", "a strong passphrase").await;
    assert_eq!((unknown.status, unknown.replayed), (400, false));
    assert_eq!(
        records(app, &backend)
            .await
            .iter()
            .filter(|r| r.caller.starts_with("invitation:"))
            .count(),
        2
    );
}

/// The document describes the header on every write of the management API, and on nothing
/// else: the same rule as the layer's.
#[test]
fn the_openapi_document_describes_the_header_on_every_management_write() {
    let document = serde_json::to_value(keyplane_server::http::openapi::document()).unwrap();
    let mut writes = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let takes = operation["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "Idempotency-Key"));
            let management_write = path.starts_with("/api/v0/")
                && path != "/api/v0/auth"
                && ["post", "put", "patch", "delete"].contains(&method.as_str());
            assert_eq!(takes, management_write, "{method} {path}");
            if management_write {
                writes += 1;
                let responses = &operation["responses"];
                assert!(
                    responses["422"]["description"]
                        .as_str()
                        .unwrap()
                        .contains("E_IDEMPOTENCY_MISMATCH"),
                    "{method} {path}"
                );
                assert!(
                    responses["409"]["description"]
                        .as_str()
                        .unwrap()
                        .contains("E_IDEMPOTENCY_IN_PROGRESS"),
                    "{method} {path}"
                );
                assert!(
                    responses["200"]["headers"]["Idempotent-Replayed"].is_object(),
                    "{method} {path}"
                );
            }
        }
    }
    assert!(writes >= 20, "{writes}");
}
