//! Attacks found against the running server, kept as tests: each failed on the main of the day
//! it was found and must keep failing to work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keyplane_core::values::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Fixture, TestApp, TestAppBuilder, assert_error, jwt_claims, mailed_invitation_token,
    mails_to, ok, owner_invitation_token, send, venue,
};
use crate::on_both_stores;

/// Made-up methods are arbitrary tokens of any length. Each used to become a metric label kept
/// forever (and a log field): twenty 200 KB methods grew `/metrics` past 4 MB.
#[tokio::test]
async fn made_up_methods_cannot_grow_the_metrics() {
    let app = TestApp::start(&Backend::Sqlite).await;
    // HTTP/1.1, where the method is a token on the request line (HTTP/2 clients cap headers).
    let root = reqwest::Certificate::from_der(app.certificate.chain[0].as_ref()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .http1_only()
        .build()
        .unwrap();
    for n in 0..20 {
        let method = format!("M{n:06}{}", "0".repeat(200 * 1024));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.len() < 16 * 1024, "/metrics is {} bytes", text.len());
    assert!(!text.contains("M000001"), "a made-up method became a label");
    assert!(
        text.contains(
            r#"keyplane_http_requests_total{method="OTHER",route="/healthz",status="405"} 20"#
        ),
        "{text}"
    );
}

/// `/metrics` is for the operator's scraper, not for anyone who can reach the port.
#[tokio::test]
async fn metrics_are_refused_to_clients_outside_the_allowed_networks() {
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|config| config.metrics_allow = vec!["192.0.2.0/24".parse().unwrap()])
        .start()
        .await;
    assert_error(app.get("/metrics").await, 404, "E_NOT_FOUND").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Roles, races, and what an organization may learn or do: each test below asserts behaviour
// that the server before the fix got wrong.

on_both_stores!(
    every_role_against_every_key_creating_path,
    keys_above_the_callers_role_cannot_be_touched,
    a_developers_key_cannot_promote_the_developer,
    logins_racing_a_rotation_leave_no_refresh_token_of_the_old_secret,
    an_owner_promotion_raced_by_an_admins_disable_ends_as_some_serial_order,
    inviting_a_known_person_shows_only_what_the_invitation_gave,
    an_owners_invitation_is_the_owners_to_resend_or_revoke,
    re_enabling_a_key_or_a_person_revives_no_token,
    a_deleted_organizations_people_stop_at_once,
    nul_characters_are_a_400_and_store_nothing,
    management_chains_stop_at_64_organizations,
    a_managed_organization_gets_live_from_its_manager_only,
    oauth_answers_reveal_nothing_of_other_organizations,
);

const PASSWORD: &str = "a long enough passphrase";

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Developer => "developer",
        Role::Viewer => "viewer",
    }
}

fn parse_role(name: &str) -> Role {
    match name {
        "owner" => Role::Owner,
        "admin" => Role::Admin,
        "developer" => Role::Developer,
        "viewer" => Role::Viewer,
        other => panic!("not a role: {other}"),
    }
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 0,
        "developer" => 1,
        "admin" => 2,
        "owner" => 3,
        other => panic!("not a role: {other}"),
    }
}

/// Status and body of a request.
async fn call(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let response = send(app, method, token, path, body).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a key named `name` with the bootstrap admin key's token and no role given (so an
/// admin's, the default); returns the key's body.
async fn plain_key(app: &TestApp, admin: &str, name: &str) -> Value {
    ok(send(
        app,
        Method::PUT,
        admin,
        &format!("/api/v0/api-keys/{name}"),
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await
}

/// Creates a key named `name` with the bootstrap admin key's token; returns the key's body.
async fn admin_made_key(app: &TestApp, admin: &str, name: &str, role: &str) -> Value {
    ok(send(
        app,
        Method::PUT,
        admin,
        &format!("/api/v0/api-keys/{name}"),
        Some(json!({"kind": "test", "status": "enabled", "role": role})),
    )
    .await)
    .await
}

/// Logs a key in and returns its access token, checking the token names the key's role.
async fn key_token(app: &TestApp, key: &Value) -> String {
    let token = app
        .access_token(
            key["key"].as_str().unwrap(),
            key["secret"].as_str().unwrap(),
        )
        .await;
    assert_eq!(jwt_claims(&token)["role"], key["role"], "{key}");
    token
}

/// The bootstrap owner, Ada Lovelace, accepts the invitation of `keyplane bootstrap` with
/// [`PASSWORD`].
async fn accept_bootstrap(
    app: &TestApp,
    boot: &keyplane_server::service::bootstrap::BootstrapOutput,
) {
    let names = json!({"first_name": "Ada", "last_name": "Lovelace"});
    ok(app
        .accept_invitation(owner_invitation_token(boot), PASSWORD, names)
        .await)
    .await;
}

/// Invites `email` into the caller's organization (or `organization`) with `role`, accepts the
/// mailed invitation, and returns the person's id.
async fn invite_and_accept(
    app: &TestApp,
    inviter: &str,
    organization: Option<&str>,
    email: &str,
    role: &str,
) -> String {
    let path = match organization {
        Some(id) => format!("/api/v0/organizations/{id}/users"),
        None => "/api/v0/users".into(),
    };
    let invited = ok(send(
        app,
        Method::POST,
        inviter,
        &path,
        Some(json!({"email": email, "role": role})),
    )
    .await)
    .await;
    let token = mailed_invitation_token(app, email);
    ok(app.accept_invitation(&token, PASSWORD, json!({})).await).await;
    invited["_id"].as_str().unwrap().to_owned()
}

/// Gives a person a role straight in the store (as an operator's repair would), and returns a
/// fresh token of theirs, which names the role.
async fn with_role_in_store(
    app: &TestApp,
    organization: &str,
    user: &str,
    email: &str,
    role: Role,
) -> String {
    app.set_role_in_store(organization.parse().unwrap(), user.parse().unwrap(), role)
        .await;
    let token = app.person_token(email, PASSWORD).await;
    assert_eq!(jwt_claims(&token)["role"], role_name(role));
    token
}

/// The role a key created by a caller of role `creator` gets when it asks for `requested`, or
/// the status of the refusal: `owner` is never a key's role (400), a viewer manages no keys,
/// and nobody makes a key above their own role (403). Without a role, the creator's own (an
/// owner's key is an admin).
fn expected_key_role(creator: &str, requested: Option<&str>) -> Result<&'static str, u16> {
    if requested == Some("owner") {
        return Err(400);
    }
    if creator == "viewer" {
        return Err(403);
    }
    let role = match requested.unwrap_or(if creator == "owner" { "admin" } else { creator }) {
        "admin" => "admin",
        "developer" => "developer",
        "viewer" => "viewer",
        other => panic!("unexpected {other}"),
    };
    if rank(role) > rank(creator) {
        Err(403)
    } else {
        Ok(role)
    }
}

/// Every creator (keys of each key role, people of each role) asks for every role on both
/// key-creating paths; the answer and the stored role follow the rule, and refusals store
/// nothing.
async fn every_role_against_every_key_creating_path(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    assert_eq!(jwt_claims(&admin)["role"], "admin", "the bootstrap key");
    accept_bootstrap(&app, &boot).await;

    let mut creators: Vec<(String, &'static str, String)> = Vec::new();
    for role in ["admin", "developer", "viewer"] {
        let key = admin_made_key(&app, &admin, &format!("maker-{role}"), role).await;
        assert_eq!(key["role"], role);
        creators.push((format!("{role} key"), role, key_token(&app, &key).await));
    }
    // People last: their role is changed in the store between rounds, so each token is used
    // only while its role is the one it was issued under.
    let people = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];
    let mut counter = 0;
    for round in 0..creators.len() + people.len() {
        let (label, creator, token) = if round < creators.len() {
            creators[round].clone()
        } else {
            let role = people[round - creators.len()];
            let token =
                with_role_in_store(&app, &org, &boot.user_id, "owner@example.com", role).await;
            (
                format!("{} person", role_name(role)),
                role_name(role),
                token,
            )
        };
        for requested in [
            None,
            Some("admin"),
            Some("developer"),
            Some("viewer"),
            Some("owner"),
        ] {
            for by_name in [true, false] {
                counter += 1;
                let name = format!("key-{counter}");
                let (path, mut body) = if by_name {
                    (
                        format!("/api/v0/api-keys/{name}"),
                        json!({"kind": "test", "status": "enabled"}),
                    )
                } else {
                    (
                        format!("/api/v0/organizations/{org}/api-keys"),
                        json!({"name": name, "status": "enabled"}),
                    )
                };
                if let Some(role) = requested {
                    body["role"] = json!(role);
                }
                let method = if by_name { Method::PUT } else { Method::POST };
                let what = format!("{label} {method} {path} role {requested:?}");
                let response = send(&app, method, &token, &path, Some(body)).await;
                match expected_key_role(creator, requested) {
                    Ok(role) => {
                        let status = response.status();
                        let made: Value = response.json().await.unwrap();
                        assert_eq!(status, 200, "{what}: {made}");
                        assert_eq!(made["role"], role, "{what}: {made}");
                        let stored = app.stored_api_key(made["key"].as_str().unwrap()).await;
                        assert_eq!(stored.role, parse_role(role), "{what}");
                        key_token(&app, &made).await;
                    }
                    Err(400) => {
                        let error = assert_error(response, 400, "E_VALIDATION").await;
                        assert!(
                            error["message"].as_str().unwrap().contains("role"),
                            "{what}: {error}"
                        );
                    }
                    Err(status) => {
                        assert_error(response, status, "E_FORBIDDEN").await;
                    }
                }
                if expected_key_role(creator, requested).is_err() {
                    assert_error(
                        app.get_as(&admin, &format!("/api/v0/api-keys/{name}"))
                            .await,
                        404,
                        "E_API_KEY_NOT_FOUND",
                    )
                    .await;
                }
            }
        }
    }
}

/// Changing, rotating or deleting a key above one's role is refused and changes nothing; a
/// viewer key writes nothing at all; a developer key manages no people or organizations.
async fn keys_above_the_callers_role_cannot_be_touched(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    let developer = key_token(
        &app,
        &admin_made_key(&app, &admin, "developer", "developer").await,
    )
    .await;
    let viewer = key_token(
        &app,
        &admin_made_key(&app, &admin, "viewer", "viewer").await,
    )
    .await;
    let high = admin_made_key(&app, &admin, "high", "admin").await;
    let level = admin_made_key(&app, &admin, "level", "developer").await;
    let low = admin_made_key(&app, &admin, "low", "viewer").await;
    let id_path = |key: &Value| {
        format!(
            "/api/v0/organizations/{org}/api-keys/{}",
            key["_id"].as_str().unwrap()
        )
    };
    let stored_high = app.stored_api_key(high["key"].as_str().unwrap()).await;

    // A developer, key or person, against an admin key, on both path styles.
    invite_and_accept(&app, &admin, None, "dev@example.com", "developer").await;
    let developer_person = app.person_token("dev@example.com", PASSWORD).await;
    let paths = ["/api/v0/api-keys/high".to_owned(), id_path(&high)];
    for (caller, path) in [&developer, &developer_person]
        .into_iter()
        .flat_map(|caller| paths.iter().map(move |path| (caller, path)))
    {
        for (method, suffix, body) in [
            (Method::PATCH, "", Some(json!({"metadata": {"a": "b"}}))),
            (Method::PATCH, "", Some(json!({"status": "disabled"}))),
            (
                Method::POST,
                "/rotate",
                Some(json!({"grace_period_seconds": 0})),
            ),
            (Method::DELETE, "", None),
        ] {
            let target = format!("{path}{suffix}");
            let response = send(&app, method.clone(), caller, &target, body).await;
            let error = assert_error(response, 403, "E_FORBIDDEN").await;
            assert!(
                error["message"].as_str().unwrap().contains("role"),
                "{method} {target}"
            );
        }
    }
    let after = app.stored_api_key(high["key"].as_str().unwrap()).await;
    assert_eq!(after.metadata, stored_high.metadata);
    assert_eq!(after.status, stored_high.status);
    assert_eq!(after.secret_hash, stored_high.secret_hash, "not rotated");
    key_token(&app, &high).await;

    // Raising a key (its own or another) above the developer's role is refused.
    for path in [
        "/api/v0/api-keys/level".to_owned(),
        id_path(&level),
        "/api/v0/api-keys/developer".into(),
    ] {
        assert_error(
            send(
                &app,
                Method::PATCH,
                &developer,
                &path,
                Some(json!({"role": "admin"})),
            )
            .await,
            403,
            "E_FORBIDDEN",
        )
        .await;
    }
    assert_eq!(
        app.stored_api_key(level["key"].as_str().unwrap())
            .await
            .role,
        Role::Developer
    );
    // `owner` is no key's role, even for an admin.
    let error = assert_error(
        send(
            &app,
            Method::PATCH,
            &admin,
            "/api/v0/api-keys/level",
            Some(json!({"role": "owner"})),
        )
        .await,
        400,
        "E_VALIDATION",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("role"),
        "{error}"
    );
    // Within its role a developer key manages keys: lowers one, changes, rotates, deletes.
    let lowered = ok(send(
        &app,
        Method::PATCH,
        &developer,
        &id_path(&level),
        Some(json!({"role": "viewer"})),
    )
    .await)
    .await;
    assert_eq!(lowered["role"], "viewer");

    // A viewer key writes nothing, not even to a viewer's key.
    let viewer_writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PUT,
            "/api/v0/api-keys/by-viewer".into(),
            Some(json!({"kind": "test", "status": "enabled", "role": "viewer"})),
        ),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/api-keys"),
            Some(json!({"name": "by-viewer", "status": "enabled", "role": "viewer"})),
        ),
        (
            Method::PATCH,
            "/api/v0/api-keys/low".into(),
            Some(json!({"metadata": {"a": "b"}})),
        ),
        (
            Method::POST,
            "/api/v0/api-keys/low/rotate".into(),
            Some(json!({"grace_period_seconds": 0})),
        ),
        (Method::DELETE, "/api/v0/api-keys/low".into(), None),
        (
            Method::POST,
            "/api/v0/users".into(),
            Some(json!({"email": "by-viewer@example.com"})),
        ),
        (
            Method::POST,
            "/api/v0/organizations".into(),
            Some(venue("By Viewer")),
        ),
    ];
    for (method, path, body) in viewer_writes {
        let (status, body) = call(&app, method.clone(), &viewer, &path, body).await;
        assert_eq!(status, 403, "viewer key {method} {path}: {body}");
    }
    let low_stored = app.stored_api_key(low["key"].as_str().unwrap()).await;
    assert!(low_stored.metadata.is_empty(), "unchanged");
    key_token(&app, &low).await;
    assert_error(
        app.get_as(&admin, "/api/v0/api-keys/by-viewer").await,
        404,
        "E_API_KEY_NOT_FOUND",
    )
    .await;
    // It reads.
    for path in ["/api/v0/api-keys", "/api/v0/users", "/api/v0/organizations"] {
        assert_eq!(app.get_as(&viewer, path).await.status(), 200, "{path}");
    }

    // A developer key does not manage people or organizations.
    let person = ok(send(
        &app,
        Method::POST,
        &admin,
        "/api/v0/users",
        Some(json!({"email": "someone@example.com", "role": "developer"})),
    )
    .await)
    .await;
    let person_path = format!("/api/v0/users/{}", person["_id"].as_str().unwrap());
    let child = ok(send(
        &app,
        Method::POST,
        &admin,
        "/api/v0/organizations",
        Some(venue("Child")),
    )
    .await)
    .await;
    let child_path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
    let developer_writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            person_path.clone(),
            Some(json!({"role": "viewer"})),
        ),
        (
            Method::PATCH,
            person_path.clone(),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::POST,
            "/api/v0/users".into(),
            Some(json!({"email": "by-developer@example.com"})),
        ),
        (
            Method::POST,
            "/api/v0/organizations".into(),
            Some(venue("By Developer")),
        ),
        (
            Method::POST,
            format!("{child_path}/enable-env"),
            Some(json!({"env": "LIVE"})),
        ),
    ];
    for (method, path, body) in developer_writes {
        let (status, body) = call(&app, method.clone(), &developer, &path, body).await;
        assert_eq!(status, 403, "developer key {method} {path}: {body}");
    }
    assert_eq!(
        ok(app.get_as(&admin, &person_path).await).await["role"],
        "developer"
    );
    assert_eq!(
        ok(app.get_as(&admin, &child_path).await).await["_envs"],
        json!(["TEST"])
    );
    let users = ok(app.get_as(&admin, "/api/v0/users").await).await;
    assert!(!users.to_string().contains("by-developer"), "{users}");
    let organizations = ok(app.get_as(&admin, "/api/v0/organizations").await).await;
    assert!(
        !organizations.to_string().contains("By Developer"),
        "{organizations}"
    );

    // Within its role a developer key changes, rotates and deletes keys.
    ok(send(
        &app,
        Method::PATCH,
        &developer,
        "/api/v0/api-keys/low",
        Some(json!({"metadata": {"a": "b"}})),
    )
    .await)
    .await;
    ok(send(
        &app,
        Method::POST,
        &developer,
        "/api/v0/api-keys/low/rotate",
        Some(json!({"grace_period_seconds": 0})),
    )
    .await)
    .await;
    ok(send(
        &app,
        Method::DELETE,
        &developer,
        "/api/v0/api-keys/low",
        None,
    )
    .await)
    .await;
}

/// The original attack: a developer makes a key and, with its token, makes themself an admin.
async fn a_developers_key_cannot_promote_the_developer(backend: Backend) {
    let Fixture {
        app, token: admin, ..
    } = Fixture::start(&backend).await;
    let me = invite_and_accept(&app, &admin, None, "dev@example.com", "developer").await;
    let mine = app.person_token("dev@example.com", PASSWORD).await;
    assert_eq!(jwt_claims(&mine)["role"], "developer");
    let key = ok(send(
        &app,
        Method::PUT,
        &mine,
        "/api/v0/api-keys/mine",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    assert_eq!(key["role"], "developer", "the maker's own role: {key}");
    let key_token = key_token(&app, &key).await;
    let me_path = format!("/api/v0/users/{me}");
    for token in [&key_token, &mine] {
        assert_error(
            send(
                &app,
                Method::PATCH,
                token,
                &me_path,
                Some(json!({"role": "admin"})),
            )
            .await,
            403,
            "E_FORBIDDEN",
        )
        .await;
    }
    // Nor through a second key with more rights.
    assert_error(
        send(
            &app,
            Method::PUT,
            &key_token,
            "/api/v0/api-keys/escalated",
            Some(json!({"kind": "test", "status": "enabled", "role": "admin"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    let person = ok(app.get_as(&admin, &me_path).await).await;
    assert_eq!(person["role"], "developer", "{person}");
    assert_error(
        app.get_as(&admin, "/api/v0/api-keys/escalated").await,
        404,
        "E_API_KEY_NOT_FOUND",
    )
    .await;
}

/// Logins with the old secret, from several tasks, race a rotation with no grace period:
/// afterwards no refresh token obtained with the old secret refreshes, whether its login
/// committed before or after the rotation.
async fn logins_racing_a_rotation_leave_no_refresh_token_of_the_old_secret(backend: Backend) {
    let Fixture {
        app, token: admin, ..
    } = Fixture::start(&backend).await;
    let key = plain_key(&app, &admin, "raced").await;
    let login = json!({"api_key": key["key"], "api_secret": key["secret"]});
    let rotated = Arc::new(AtomicBool::new(false));
    let first_login = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, url) = (app.client.clone(), app.url("/api/v0/auth"));
        let (login, rotated, first_login) = (login.clone(), rotated.clone(), first_login.clone());
        tasks.push(tokio::spawn(async move {
            let mut refresh_tokens = Vec::new();
            for _ in 0..50 {
                if rotated.load(Ordering::SeqCst) {
                    break;
                }
                let response = client.post(&url).json(&login).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                match status {
                    200 => {
                        refresh_tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
                        first_login.notify_one();
                    }
                    // The old secret stopped working (and failures may be throttled).
                    401 | 429 => {}
                    other => panic!("login answered {other}: {body}"),
                }
            }
            refresh_tokens
        }));
    }
    first_login.notified().await;
    let new_secret = ok(send(
        &app,
        Method::POST,
        &admin,
        "/api/v0/api-keys/raced/rotate",
        Some(json!({"grace_period_seconds": 0})),
    )
    .await)
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    rotated.store(true, Ordering::SeqCst);
    let mut refresh_tokens = Vec::new();
    for task in tasks {
        refresh_tokens.extend(task.await.unwrap());
    }
    assert!(!refresh_tokens.is_empty());
    for token in &refresh_tokens {
        let response = app
            .post_json("/api/v0/auth", &json!({"refresh_token": token}))
            .await;
        assert_error(response, 401, "E_UNAUTHORIZED").await;
    }
    // The new secret works, refresh included.
    let pair = app
        .token_pair(key["key"].as_str().unwrap(), &new_secret)
        .await;
    ok(app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": pair["refresh_token"]}),
        )
        .await)
    .await;
}

/// An owner promotes a developer to owner while an admin disables them. Whatever the
/// interleaving, the outcome is one of a serial order's: the admin's disable succeeds only on a
/// developer (and the promotion then still happens), or it is refused on an owner.
async fn an_owner_promotion_raced_by_an_admins_disable_ends_as_some_serial_order(backend: Backend) {
    use keyplane_core::values::UserStatus;
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    accept_bootstrap(&app, &boot).await;
    let owner = app.person_token("owner@example.com", PASSWORD).await;
    let x = invite_and_accept(&app, &admin, None, "x@example.com", "developer").await;
    let x_path = format!("/api/v0/users/{x}");
    let org: keyplane_core::OrganizationId = boot.organization_id.parse().unwrap();
    let x_id: keyplane_core::UserId = x.parse().unwrap();
    for trial in 0..10 {
        let (promote, disable) = tokio::join!(
            call(
                &app,
                Method::PATCH,
                &owner,
                &x_path,
                Some(json!({"role": "owner"}))
            ),
            call(
                &app,
                Method::PATCH,
                &admin,
                &x_path,
                Some(json!({"status": "disabled"}))
            ),
        );
        let stored = app
            .state
            .store()
            .membership(org, x_id)
            .await
            .unwrap()
            .unwrap();
        let outcome = (promote.0, disable.0, stored.role, stored.status);
        let serial = matches!(
            outcome,
            // Promotion first: the admin may not touch an owner.
            (200, 403, Role::Owner, UserStatus::Active)
                // Disable first, then the promotion.
                | (200, 200, Role::Owner, UserStatus::Disabled)
                // One gave up after repeated concurrent changes, the other went through.
                | (200, 409, Role::Owner, UserStatus::Active)
                | (409, 200, Role::Developer, UserStatus::Disabled)
        );
        assert!(
            serial,
            "trial {trial}: promote {promote:?}, disable {disable:?}, stored {:?}/{:?}",
            stored.role, stored.status
        );
        // Back to an active developer for the next trial.
        ok(send(
            &app,
            Method::PATCH,
            &owner,
            &x_path,
            Some(json!({"role": "developer", "status": "active"})),
        )
        .await)
        .await;
    }
}

/// An organization that invites someone who already has an account elsewhere sees the names it
/// gave and the time it invited them: nothing from the person's account.
async fn inviting_a_known_person_shows_only_what_the_invitation_gave(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    accept_bootstrap(&app, &boot).await;
    let before = keyplane_core::time::now_unix();
    for (name, names) in [
        ("Unrelated One", json!({"first_name": "Grace"})),
        ("Unrelated Two", json!({})),
    ] {
        let stranger = app.another_organization(name).create().await.token().await;
        let mut body = names.clone();
        body["email"] = json!("owner@example.com");
        let invited =
            ok(send(&app, Method::POST, &stranger, "/api/v0/users", Some(body)).await).await;
        assert_eq!(invited["_id"], boot.user_id.as_str(), "the same person");
        assert_eq!(invited["status"], "invited");
        assert_eq!(
            invited.get("first_name"),
            names.get("first_name"),
            "{invited}"
        );
        assert_eq!(invited.get("last_name"), None, "{invited}");
        assert!(
            invited["created_at"].as_i64().unwrap() >= before,
            "{invited}: created before the invitation"
        );
        let text = invited.to_string();
        assert!(
            !text.contains("Ada") && !text.contains("Lovelace"),
            "{text}"
        );
        // Read back, alone and in the list: the same.
        let read = ok(app
            .get_as(&stranger, &format!("/api/v0/users/{}", boot.user_id))
            .await)
        .await;
        assert_eq!(read, invited);
        let list = ok(app.get_as(&stranger, "/api/v0/users").await).await;
        assert_eq!(list["data"], json!([invited]));
    }
    // Their own organization still sees their profile.
    let own = ok(app
        .get_as(&token, &format!("/api/v0/users/{}", boot.user_id))
        .await)
    .await;
    assert_eq!(own["first_name"], "Ada");
    assert_eq!(own["last_name"], "Lovelace");
}

/// The pending invitation of an owner (here the bootstrap owner's) is resent or revoked by an
/// owner only: an admin key is refused and changes nothing.
async fn an_owners_invitation_is_the_owners_to_resend_or_revoke(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    let invitations = format!("/api/v0/organizations/{org}/invitations");
    let pending = ok(app.get_as(&admin, &invitations).await).await;
    let invitation = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user_id"] == boot.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(invitation["role"], "owner");
    let id = invitation["_id"].as_str().unwrap();
    for (method, path) in [
        (Method::POST, format!("/api/v0/invitations/{id}/resend")),
        (Method::DELETE, format!("/api/v0/invitations/{id}")),
    ] {
        assert_error(
            send(&app, method, &admin, &path, None).await,
            403,
            "E_FORBIDDEN",
        )
        .await;
    }
    // Nothing changed: the same invitation, same expiry, nothing mailed.
    let still = ok(app.get_as(&admin, &invitations).await).await;
    assert!(
        still["data"].as_array().unwrap().contains(&invitation),
        "{still}"
    );
    assert_eq!(mails_to(&app, "owner@example.com").len(), 0);
    // A second owner (made so in the store) may.
    let second = invite_and_accept(&app, &admin, None, "second@example.com", "developer").await;
    let owner = with_role_in_store(&app, &org, &second, "second@example.com", Role::Owner).await;
    let resent = ok(send(
        &app,
        Method::POST,
        &owner,
        &format!("/api/v0/invitations/{id}/resend"),
        None,
    )
    .await)
    .await;
    assert_eq!(resent["_id"], id);
    assert_eq!(mails_to(&app, "owner@example.com").len(), 1);
    ok(send(
        &app,
        Method::DELETE,
        &owner,
        &format!("/api/v0/invitations/{id}"),
        None,
    )
    .await)
    .await;
    let after = ok(app.get_as(&admin, &invitations).await).await;
    assert!(!after.to_string().contains(id), "{after}");
}

/// Disabling a key or a person and enabling them again revives none of the tokens issued
/// before the disable; new logins work.
async fn re_enabling_a_key_or_a_person_revives_no_token(backend: Backend) {
    let Fixture {
        app, token: admin, ..
    } = Fixture::start(&backend).await;
    // A key.
    let key = plain_key(&app, &admin, "sleeper").await;
    let (public, secret) = (
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    let old = app.token_pair(public, secret).await;
    let old_access = old["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(old_access, "/api/v0/api-keys").await.status(),
        200
    );
    for status in ["disabled", "enabled"] {
        ok(send(
            &app,
            Method::PATCH,
            &admin,
            "/api/v0/api-keys/sleeper",
            Some(json!({"status": status})),
        )
        .await)
        .await;
    }
    assert_error(
        app.get_as(old_access, "/api/v0/api-keys").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_error(
        app.post_json(
            "/api/v0/auth",
            &json!({"refresh_token": old["refresh_token"]}),
        )
        .await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let new = app.token_pair(public, secret).await;
    let new_access = new["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(new_access, "/api/v0/api-keys").await.status(),
        200
    );
    ok(app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": new["refresh_token"]}),
        )
        .await)
    .await;

    // A person.
    let person = invite_and_accept(&app, &admin, None, "sleeper@example.com", "developer").await;
    let old = app.person_pair("sleeper@example.com", PASSWORD).await;
    let old_access = old["access_token"].as_str().unwrap();
    assert_eq!(app.get_as(old_access, "/api/v0/users").await.status(), 200);
    for status in ["disabled", "active"] {
        let changed = ok(send(
            &app,
            Method::PATCH,
            &admin,
            &format!("/api/v0/users/{person}"),
            Some(json!({"status": status})),
        )
        .await)
        .await;
        assert_eq!(changed["status"], status);
    }
    assert_error(
        app.get_as(old_access, "/api/v0/users").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_error(
        app.post_json(
            "/api/v0/auth",
            &json!({"refresh_token": old["refresh_token"]}),
        )
        .await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let new = app.person_pair("sleeper@example.com", PASSWORD).await;
    let new_access = new["access_token"].as_str().unwrap();
    assert_eq!(app.get_as(new_access, "/api/v0/users").await.status(), 200);
    ok(app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": new["refresh_token"]}),
        )
        .await)
    .await;
}

/// A person of a managed organization, whose token this node has just used, is stopped the
/// moment the organization is deleted: 401, not a 500 from acting for an organization that is
/// gone.
async fn a_deleted_organizations_people_stop_at_once(backend: Backend) {
    let Fixture {
        app, token: root, ..
    } = Fixture::start(&backend).await;
    let child = ok(send(
        &app,
        Method::POST,
        &root,
        "/api/v0/organizations",
        Some(venue("Doomed Venue")),
    )
    .await)
    .await;
    let child_id = child["_id"].as_str().unwrap().to_owned();
    invite_and_accept(
        &app,
        &root,
        Some(&child_id),
        "venue-admin@example.com",
        "admin",
    )
    .await;
    let person = app.person_token("venue-admin@example.com", PASSWORD).await;
    // Used once, so this node holds the person's standing.
    assert_eq!(app.get_as(&person, "/api/v0/users").await.status(), 200);
    assert_eq!(
        app.get_as(&person, "/api/v0/organizations").await.status(),
        200
    );
    ok(send(
        &app,
        Method::DELETE,
        &root,
        &format!("/api/v0/organizations/{child_id}"),
        None,
    )
    .await)
    .await;
    assert_error(
        send(
            &app,
            Method::POST,
            &person,
            "/api/v0/organizations",
            Some(venue("Orphan Venue")),
        )
        .await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_error(
        app.get_as(&person, "/api/v0/users").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let organizations = ok(app.get_as(&root, "/api/v0/organizations").await).await;
    assert_eq!(organizations["count"], 1, "{organizations}");
}

/// NUL characters, wherever a caller can put them, are a 400 on both stores: never a 500, and
/// nothing stored.
async fn nul_characters_are_a_400_and_store_nothing(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    let org_id: keyplane_core::OrganizationId = org.parse().unwrap();
    let events_before = app.state.store().audit_events(org_id).await.unwrap().len();
    let keys_before = ok(app.get_as(&token, "/api/v0/api-keys").await).await["count"].clone();

    for body in [
        json!({"api_key": "a\u{0}b", "api_secret": "secret"}),
        json!({"api_key": boot.api_key, "api_secret": "a\u{0}b"}),
        json!({"email": "a\u{0}@example.com", "password": PASSWORD}),
        json!({"email": "owner@example.com\u{0}", "password": PASSWORD}),
    ] {
        let response = app.post_json("/api/v0/auth", &body).await;
        assert_error(response, 400, "E_VALIDATION").await;
    }
    for form in [
        [
            ("grant_type", "client_credentials"),
            ("client_id", "a\u{0}b"),
            ("client_secret", "secret"),
        ],
        [
            ("grant_type", "client_credentials"),
            ("client_id", boot.api_key.as_str()),
            ("client_secret", "a\u{0}b"),
        ],
    ] {
        let response = app.post_form("/oauth2/token", None, &form).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_request", "{error}");
    }
    let raw = app
        .post_raw(
            "/oauth2/token",
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&client_id=a%00b&client_secret=s",
        )
        .await;
    assert_eq!(raw.status(), 400);
    for body in [
        json!({"client_id": "a\u{0}b", "client_secret": "secret"}),
        json!({"client_id": boot.api_key, "client_secret": "a\u{0}b"}),
    ] {
        let response = app.post_json("/v1/token", &body).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["name"], "InvalidRequest", "{error}");
    }
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v0/api-keys/a%00b".to_owned(),
            Some(json!({"kind": "test", "status": "enabled"})),
        ),
        (Method::GET, "/api/v0/api-keys/a%00b".into(), None),
        (
            Method::PATCH,
            "/api/v0/api-keys/a%00b".into(),
            Some(json!({"metadata": {"a": "b"}})),
        ),
        (
            Method::PUT,
            "/api/v0/api-keys/nul".into(),
            Some(json!({"kind": "test", "status": "enabled", "metadata": {"a": "b\u{0}"}})),
        ),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/api-keys"),
            Some(json!({"name": "a\u{0}b", "status": "enabled"})),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/audit-events?actor_id=%00"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/audit-events?action=%00"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/audit-events?action=api_key.created%00"),
            None,
        ),
    ] {
        let response = send(&app, method.clone(), &token, &path, body).await;
        assert_eq!(response.status(), 400, "{method} {path}");
        assert_error(response, 400, "E_VALIDATION").await;
    }

    assert_eq!(
        ok(app.get_as(&token, "/api/v0/api-keys").await).await["count"],
        keys_before,
        "no key stored"
    );
    let events = app.state.store().audit_events(org_id).await.unwrap();
    assert_eq!(events.len(), events_before, "nothing recorded");
    // The server still answers normally.
    assert_eq!(app.get("/healthz").await.status(), 200);
    key_token(
        &app,
        &json!({"key": boot.api_key, "secret": boot.api_secret, "role": "admin"}),
    )
    .await;
}

/// A data directory made beforehand with 0755 is tightened to 0700 when the server starts, and
/// the SQLite database (with its WAL and shared-memory files) is 0600; also on a restart that
/// finds them readable by others.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_private_even_in_a_wider_directory() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::TempDir::new().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let files = |dir: &std::path::Path| {
        ["keyplane.db", "keyplane.db-wal", "keyplane.db-shm"]
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| path.exists())
            .collect::<Vec<_>>()
    };
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&dir)
        .start()
        .await;
    app.bootstrap().await;
    assert_eq!(mode(&dir), 0o700, "the data directory");
    assert!(dir.join("keyplane.db").exists());
    for file in files(&dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    app.stop().await;

    // Loosened while the server was down: tightened again on start.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in files(&dir) {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&dir)
        .start()
        .await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for file in files(&dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    app.stop().await;
}

/// A management chain holds at most 64 organizations, root included: the next one is refused,
/// and every organization that exists is reachable by the root.
async fn management_chains_stop_at_64_organizations(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: root,
    } = Fixture::start(&backend).await;
    let mut manager = boot.organization_id.clone();
    let mut created = Vec::new();
    for level in 2..=64 {
        let mut body = venue(&format!("Level {level}"));
        body["managed_by_organization_id"] = json!(manager);
        let made = ok(send(
            &app,
            Method::POST,
            &root,
            "/api/v0/organizations",
            Some(body),
        )
        .await)
        .await;
        assert_eq!(made["managed_by_organization_id"], manager.as_str());
        manager = made["_id"].as_str().unwrap().to_owned();
        created.push(manager.clone());
    }
    let mut body = venue("Level 65");
    body["managed_by_organization_id"] = json!(manager);
    let error = assert_error(
        send(
            &app,
            Method::POST,
            &root,
            "/api/v0/organizations",
            Some(body),
        )
        .await,
        400,
        "E_VALIDATION",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("managed_by_organization_id"),
        "{error}"
    );
    let list = ok(app.get_as(&root, "/api/v0/organizations?limit=100").await).await;
    assert_eq!(list["count"], 64, "the root and 63 below it");
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 64);
    assert!(!list.to_string().contains("Level 65"));
    for id in &created {
        assert!(listed.contains(&id.as_str()), "{id} is listed");
    }
    for id in listed {
        let response = app
            .get_as(&root, &format!("/api/v0/organizations/{id}"))
            .await;
        assert_eq!(response.status(), 200, "listed {id} is retrievable");
    }
}

/// A managed organization does not give itself LIVE: its manager does.
async fn a_managed_organization_gets_live_from_its_manager_only(backend: Backend) {
    let Fixture {
        app, token: root, ..
    } = Fixture::start(&backend).await;
    let child = ok(send(
        &app,
        Method::POST,
        &root,
        "/api/v0/organizations",
        Some(venue("Venue Milano")),
    )
    .await)
    .await;
    let child_path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
    let key = ok(send(
        &app,
        Method::POST,
        &root,
        &format!("{child_path}/api-keys"),
        Some(json!({"name": "till", "status": "enabled"})),
    )
    .await)
    .await;
    assert_eq!(key["role"], "admin");
    let own = key_token(&app, &key).await;
    assert_error(
        send(
            &app,
            Method::POST,
            &own,
            &format!("{child_path}/enable-env"),
            Some(json!({"env": "LIVE"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    assert_eq!(
        ok(app.get_as(&own, &child_path).await).await["_envs"],
        json!(["TEST"])
    );
    let enabled = ok(send(
        &app,
        Method::POST,
        &root,
        &format!("{child_path}/enable-env"),
        Some(json!({"env": "LIVE"})),
    )
    .await)
    .await;
    assert_eq!(enabled["_envs"], json!(["TEST", "LIVE"]));
}

/// OAuth: revoking a valid access token of an unrelated organization answers like an unknown
/// token (the answer must not tell that it is valid); a client authenticated by HTTP Basic
/// cannot name another client in the body.
async fn oauth_answers_reveal_nothing_of_other_organizations(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: theirs,
    } = Fixture::start(&backend).await;
    let client = app.another_organization("Client").create().await;
    let (client, secret) = (client.key, client.secret);
    let basic = Some((client.as_str(), secret.as_str()));
    let revoke = |token: String| {
        let app = &app;
        async move {
            let response = app
                .post_form("/oauth2/revoke", basic, &[("token", token.as_str())])
                .await;
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let unknown = revoke("not-a-token-at-all".into()).await;
    assert_eq!(unknown.0, 200, "{}", unknown.1);
    let forged = revoke(format!("{}x", &theirs[..theirs.len() - 1])).await;
    assert_eq!(forged, unknown);
    let other = revoke(theirs.clone()).await;
    assert_eq!(other, unknown, "a valid token of another organization");
    // The token still works: nothing was revoked.
    assert_eq!(app.get_as(&theirs, "/api/v0/api-keys").await.status(), 200);
    // The client's own access token is told apart: that is the client's own business.
    let own = app.access_token(&client, &secret).await;
    let (status, body) = revoke(own).await;
    assert_eq!(status, 400);
    assert!(body.contains("unsupported_token_type"), "{body}");

    // HTTP Basic names the client; a different client_id in the body is a contradiction.
    let response = app
        .post_form(
            "/oauth2/token",
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", boot.api_key.as_str()),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "invalid_request", "{error}");
    // The same client_id beside Basic is fine.
    let response = app
        .post_form(
            "/oauth2/token",
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client.as_str()),
            ],
        )
        .await;
    let issued = ok(response).await;
    assert_eq!(
        jwt_claims(issued["access_token"].as_str().unwrap())["sub"],
        app.stored_api_key(&client).await.id.to_string()
    );
}

// ---------------------------------------------------------------------------------------------
// Second review: each test below failed on the main before its fix.

on_both_stores!(
    live_reaches_a_grandchild_only_through_a_manager_that_has_live,
    an_invited_persons_status_cannot_be_changed,
    pending_addresses_are_lower_case_and_people_ids_are_random,
    removing_and_re_inviting_a_person_revives_no_token,
    nul_in_basic_credentials_is_refused_not_a_500,
    an_admins_revoke_raced_by_an_owner_promotion_ends_as_some_serial_order,
);

/// An organization without LIVE cannot hand LIVE on through an organization it creates: the
/// root creates C (TEST only), C creates G, and C may enable LIVE on G only once the root has
/// enabled LIVE on C. Until then G makes no live key.
async fn live_reaches_a_grandchild_only_through_a_manager_that_has_live(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: root,
    } = Fixture::start(&backend).await;
    let root_org = ok(app
        .get_as(
            &root,
            &format!("/api/v0/organizations/{}", boot.organization_id),
        )
        .await)
    .await;
    assert!(
        root_org["_envs"]
            .as_array()
            .unwrap()
            .contains(&json!("LIVE")),
        "the root has LIVE: {root_org}"
    );
    let chain = ok(send(
        &app,
        Method::POST,
        &root,
        "/api/v0/organizations",
        Some(venue("Venue Chain")),
    )
    .await)
    .await;
    assert_eq!(chain["_envs"], json!(["TEST"]), "{chain}");
    let chain_id = chain["_id"].as_str().unwrap().to_owned();
    let chain_path = format!("/api/v0/organizations/{chain_id}");
    let chain_key = ok(send(
        &app,
        Method::POST,
        &root,
        &format!("{chain_path}/api-keys"),
        Some(json!({"name": "chain-admin", "status": "enabled"})),
    )
    .await)
    .await;
    assert_eq!(chain_key["role"], "admin");
    let chain_token = key_token(&app, &chain_key).await;

    let grandchild = ok(send(
        &app,
        Method::POST,
        &chain_token,
        "/api/v0/organizations",
        Some(venue("Venue Grandchild")),
    )
    .await)
    .await;
    assert_eq!(
        grandchild["managed_by_organization_id"],
        chain_id.as_str(),
        "{grandchild}"
    );
    assert_eq!(grandchild["_envs"], json!(["TEST"]), "{grandchild}");
    let grandchild_path = format!(
        "/api/v0/organizations/{}",
        grandchild["_id"].as_str().unwrap()
    );
    let live_key = json!({"name": "live-till", "kind": "live", "status": "enabled"});

    // C has no LIVE: it cannot give LIVE to G.
    let error = assert_error(
        send(
            &app,
            Method::POST,
            &chain_token,
            &format!("{grandchild_path}/enable-env"),
            Some(json!({"env": "LIVE"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("env"),
        "{error}"
    );
    for token in [&chain_token, &root] {
        assert_eq!(
            ok(app.get_as(token, &grandchild_path).await).await["_envs"],
            json!(["TEST"])
        );
    }
    assert_error(
        send(
            &app,
            Method::POST,
            &chain_token,
            &format!("{grandchild_path}/api-keys"),
            Some(live_key.clone()),
        )
        .await,
        403,
        "E_ENV_NOT_ENABLED",
    )
    .await;
    let keys = ok(app
        .get_as(&chain_token, &format!("{grandchild_path}/api-keys"))
        .await)
    .await;
    assert!(!keys.to_string().contains("live-till"), "{keys}");

    // The root gives C LIVE; now C may give it to G, and G makes live keys.
    let enabled = ok(send(
        &app,
        Method::POST,
        &root,
        &format!("{chain_path}/enable-env"),
        Some(json!({"env": "LIVE"})),
    )
    .await)
    .await;
    assert_eq!(enabled["_envs"], json!(["TEST", "LIVE"]));
    let enabled = ok(send(
        &app,
        Method::POST,
        &chain_token,
        &format!("{grandchild_path}/enable-env"),
        Some(json!({"env": "LIVE"})),
    )
    .await)
    .await;
    assert_eq!(enabled["_envs"], json!(["TEST", "LIVE"]));
    let live = ok(send(
        &app,
        Method::POST,
        &chain_token,
        &format!("{grandchild_path}/api-keys"),
        Some(live_key),
    )
    .await)
    .await;
    assert_eq!(live["kind"], "live", "{live}");
}

/// A pending invitee's status is the invitation's: neither disabled nor made active by an
/// organization (400 naming `status`, the membership still `invited`), and the refusal shows
/// nothing of the person's own profile. Before, invited → disabled answered with the person's
/// real names, and disabled → active made them a member who never accepted.
async fn an_invited_persons_status_cannot_be_changed(backend: Backend) {
    use keyplane_core::values::UserStatus;
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    // Ada Lovelace, owner@example.com, with a profile of her own.
    accept_bootstrap(&app, &boot).await;
    let stranger_org = app.another_organization("Unrelated Venue").create().await;
    let stranger = stranger_org.token().await;
    let stranger_org = stranger_org.organization;
    let known = ok(send(
        &app,
        Method::POST,
        &stranger,
        "/api/v0/users",
        Some(json!({"email": "owner@example.com", "role": "developer"})),
    )
    .await)
    .await;
    assert_eq!(known["_id"], boot.user_id.as_str(), "the same person");
    let newcomer = ok(send(
        &app,
        Method::POST,
        &admin,
        "/api/v0/users",
        Some(json!({"email": "newcomer@example.com", "first_name": "Nora", "role": "developer"})),
    )
    .await)
    .await;
    let root_org: keyplane_core::OrganizationId = boot.organization_id.parse().unwrap();
    let cases = [
        (&stranger, stranger_org.id, known["_id"].as_str().unwrap()),
        (&admin, root_org, newcomer["_id"].as_str().unwrap()),
    ];
    for (token, organization, person) in cases {
        let path = format!("/api/v0/users/{person}");
        for body in [
            json!({"status": "disabled"}),
            json!({"status": "active"}),
            json!({"status": "disabled", "role": "admin"}),
            json!({"status": "active"}),
        ] {
            let response = send(&app, Method::PATCH, token, &path, Some(body.clone())).await;
            let error = assert_error(response, 400, "E_VALIDATION").await;
            assert!(
                error["message"].as_str().unwrap().contains("status"),
                "{body}: {error}"
            );
            let text = error.to_string();
            assert!(
                !text.contains("Ada") && !text.contains("Lovelace"),
                "{body}: {text}"
            );
        }
        let read = ok(app.get_as(token, &path).await).await;
        assert_eq!(read["status"], "invited", "{read}");
        assert_eq!(read["role"], "developer", "{read}");
        let text = read.to_string();
        assert!(
            !text.contains("Ada") && !text.contains("Lovelace"),
            "{text}"
        );
        let stored = app
            .state
            .store()
            .membership(organization, person.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, UserStatus::Invited);
        assert_eq!(stored.role, Role::Developer);
    }
    // Accepting is what makes her active there; then the organization may disable her.
    let token = mailed_invitation_token(&app, "owner@example.com");
    ok(app.accept_invitation(&token, PASSWORD, json!({})).await).await;
    let path = format!("/api/v0/users/{}", boot.user_id);
    assert_eq!(
        ok(app.get_as(&stranger, &path).await).await["status"],
        "active"
    );
    let disabled = ok(send(
        &app,
        Method::PATCH,
        &stranger,
        &path,
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    assert_eq!(disabled["status"], "disabled");
}

/// Asserts that a person's id is a random UUID (version 4), not a time-ordered v7 that tells
/// when the person first appeared.
fn assert_random_id(id: &str, what: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("{what}: {id} is a UUID"));
    assert_eq!(id.len(), 36, "{what}: {id} hyphenated");
    assert_eq!(
        id.as_bytes()[14],
        b'4',
        "{what}: {id} is not a version 4 UUID"
    );
    assert_eq!(uuid.get_version_num(), 4, "{what}: {id}");
}

/// An organization that invites an address sees it in lower case, whatever the case it wrote
/// and whatever the spelling an existing account was registered with: exactly as for an
/// address nobody has yet. Every person's id (bootstrap and invitations) is a random v4 UUID.
async fn pending_addresses_are_lower_case_and_people_ids_are_random(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    assert_random_id(&boot.user_id, "the bootstrap owner");
    accept_bootstrap(&app, &boot).await;
    // An account registered with a mixed-case address; while pending, even its own
    // organization sees the address in lower case.
    let invited = ok(send(
        &app,
        Method::POST,
        &admin,
        "/api/v0/users",
        Some(json!({"email": "Mixed.Case@Example.COM", "role": "developer"})),
    )
    .await)
    .await;
    assert_eq!(invited["email"], "mixed.case@example.com", "{invited}");
    let mixed = invited["_id"].as_str().unwrap().to_owned();
    assert_random_id(&mixed, "an invited newcomer");
    let token = mailed_invitation_token(&app, "Mixed.Case@Example.COM");
    ok(app.accept_invitation(&token, PASSWORD, json!({})).await).await;

    let stranger_org = app.another_organization("Unrelated Venue").create().await;
    let stranger = stranger_org.token().await;
    let stranger_org = stranger_org.organization;
    let invitations_path = format!("/api/v0/organizations/{}/invitations", stranger_org.id);
    for (written, shown, existing) in [
        (
            "OWNER@Example.COM",
            "owner@example.com",
            Some(boot.user_id.as_str()),
        ),
        (
            "MIXED.case@example.com",
            "mixed.case@example.com",
            Some(mixed.as_str()),
        ),
        ("Brand.New@Example.COM", "brand.new@example.com", None),
        ("plain@example.com", "plain@example.com", None),
    ] {
        let invited = ok(send(
            &app,
            Method::POST,
            &stranger,
            "/api/v0/users",
            Some(json!({"email": written, "role": "developer"})),
        )
        .await)
        .await;
        let id = invited["_id"].as_str().unwrap().to_owned();
        if let Some(existing) = existing {
            assert_eq!(id, existing, "{written}: the same person");
        }
        assert_random_id(&id, written);
        assert_eq!(invited["status"], "invited", "{invited}");
        assert_eq!(invited["email"], shown, "{written}: {invited}");
        let read = ok(app.get_as(&stranger, &format!("/api/v0/users/{id}")).await).await;
        assert_eq!(read["email"], shown, "{written}: {read}");
        let list = ok(app.get_as(&stranger, "/api/v0/users?limit=100").await).await;
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{written} is listed: {list}"));
        assert_eq!(listed["email"], shown, "{written}: {listed}");
        let pending = ok(app.get_as(&stranger, &invitations_path).await).await;
        let invitation = pending["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|invitation| invitation["user_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{written} has a pending invitation: {pending}"));
        assert_eq!(invitation["email"], shown, "{written}: {invitation}");
        // No spelling of the account shows through anywhere.
        for text in [list.to_string(), pending.to_string()] {
            assert!(
                !text.contains("Mixed.Case") && !text.contains("Example.COM"),
                "{text}"
            );
        }
    }
    // Its own organization, where the person accepted, sees the account as it is.
    let own = ok(app.get_as(&admin, &format!("/api/v0/users/{mixed}")).await).await;
    assert_eq!(own["status"], "active", "{own}");
    assert_random_id(own["_id"].as_str().unwrap(), "an accepted person");
}

/// Removing a person ends their tokens, and inviting them back (even with more rights) revives
/// none of them: the new membership does not restart the count the old tokens were issued
/// under. Their new login works.
async fn removing_and_re_inviting_a_person_revives_no_token(backend: Backend) {
    let Fixture {
        app, token: admin, ..
    } = Fixture::start(&backend).await;
    let person = invite_and_accept(&app, &admin, None, "returning@example.com", "developer").await;
    let old = app.person_pair("returning@example.com", PASSWORD).await;
    let old_access = old["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(old_access)["role"], "developer");
    assert_eq!(app.get_as(old_access, "/api/v0/users").await.status(), 200);
    ok(send(
        &app,
        Method::DELETE,
        &admin,
        &format!("/api/v0/users/{person}"),
        None,
    )
    .await)
    .await;
    assert_error(
        app.get_as(old_access, "/api/v0/users").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;

    for round in 0..2 {
        let again = invite_and_accept(&app, &admin, None, "returning@example.com", "admin").await;
        assert_eq!(again, person, "the same person");
        assert_error(
            app.get_as(old_access, "/api/v0/users").await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
        assert_error(
            app.post_json(
                "/api/v0/auth",
                &json!({"refresh_token": old["refresh_token"]}),
            )
            .await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
        let new = app.person_pair("returning@example.com", PASSWORD).await;
        let new_access = new["access_token"].as_str().unwrap();
        assert_eq!(jwt_claims(new_access)["role"], "admin", "round {round}");
        assert_eq!(app.get_as(new_access, "/api/v0/users").await.status(), 200);
        ok(app
            .post_json(
                "/api/v0/auth",
                &json!({"refresh_token": new["refresh_token"]}),
            )
            .await)
        .await;
        if round == 0 {
            // Removed once more: the tokens of the second membership end too.
            ok(send(
                &app,
                Method::DELETE,
                &admin,
                &format!("/api/v0/users/{person}"),
                None,
            )
            .await)
            .await;
            assert_error(
                app.get_as(new_access, "/api/v0/users").await,
                401,
                "E_UNAUTHORIZED",
            )
            .await;
        }
    }
}

/// A NUL in HTTP Basic client credentials (raw, or form-encoded as `%00`), in the id or the
/// secret, is a refused client on every OAuth endpoint: 401 `invalid_client` or 400
/// `invalid_request`, never a 500 (PostgreSQL refuses NUL in text).
async fn nul_in_basic_credentials_is_refused_not_a_500(backend: Backend) {
    use base64::Engine;
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let credentials = [
        "test_abc\0x:secret".to_owned(),
        "test_abc%00x:secret".to_owned(),
        format!("{}\0:{}", boot.api_key, boot.api_secret),
        format!("{}:{}\0", boot.api_key, boot.api_secret),
        format!("{}:{}%00", boot.api_key, boot.api_secret),
    ];
    let endpoints: [(&str, Vec<(&str, &str)>); 3] = [
        ("/oauth2/token", vec![("grant_type", "client_credentials")]),
        ("/oauth2/introspect", vec![("token", token.as_str())]),
        ("/oauth2/revoke", vec![("token", token.as_str())]),
    ];
    for (path, form) in &endpoints {
        for credential in &credentials {
            let basic = base64::engine::general_purpose::STANDARD.encode(credential);
            let response = app
                .client
                .post(app.url(path))
                .header("authorization", format!("Basic {basic}"))
                .form(form)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            assert!(
                matches!(
                    (status, body["error"].as_str()),
                    (401, Some("invalid_client")) | (400, Some("invalid_request"))
                ),
                "{path} with {credential:?}: {status} {body}"
            );
        }
    }
    // Nothing was revoked, and the key still authenticates by HTTP Basic.
    assert_eq!(app.get_as(&token, "/api/v0/api-keys").await.status(), 200);
    let issued = ok(app
        .post_form(
            "/oauth2/token",
            Some((boot.api_key.as_str(), boot.api_secret.as_str())),
            &[("grant_type", "client_credentials")],
        )
        .await)
    .await;
    assert!(issued["access_token"].is_string(), "{issued}");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// A connection of the test's own to the server's database, to see what is committed.
enum Database {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Database {
    async fn open(app: &TestApp) -> Self {
        match &app.config.store.database_url {
            Some(url) => Database::Postgres(sqlx::PgPool::connect(url).await.unwrap()),
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(app.data_dir().join("keyplane.db"))
                    .read_only(true);
                Database::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    /// Whether the invitation is revoked as committed now. On PostgreSQL the read locks the
    /// row, so it waits for a revocation already written but not yet committed.
    async fn invitation_revoked(&self, id: &str) -> bool {
        let revoked_at: Option<i64> = match self {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT revoked_at FROM invitations WHERE id = ?")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT revoked_at FROM invitations WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
        };
        revoked_at.is_some()
    }
}

/// An owner promotes an invited developer to owner while an admin key revokes the invitation.
/// Whatever the interleaving the outcome is a serial order's: the promotion first, and the
/// admin's revoke is refused (an owner's invitation is the owners'); or the revoke first, which
/// removes the still-invited membership, and the promotion then finds nobody (404). Never a
/// revoke that answers 200 having been written after the person became an owner (before the
/// fix the role was checked, then the invitation revoked unconditionally).
async fn an_admins_revoke_raced_by_an_owner_promotion_ends_as_some_serial_order(backend: Backend) {
    let Fixture {
        app,
        boot,
        token: admin,
    } = Fixture::start(&backend).await;
    accept_bootstrap(&app, &boot).await;
    let owner = app.person_token("owner@example.com", PASSWORD).await;
    let org: keyplane_core::OrganizationId = boot.organization_id.parse().unwrap();
    let invitations_path = format!("/api/v0/organizations/{org}/invitations");
    let database = Database::open(&app).await;
    let mut orders = Vec::new();
    for trial in 0..10 {
        let email = format!("raced-{trial}@example.com");
        let invited = ok(send(
            &app,
            Method::POST,
            &admin,
            "/api/v0/users",
            Some(json!({"email": email, "role": "developer"})),
        )
        .await)
        .await;
        let user = invited["_id"].as_str().unwrap().to_owned();
        let pending = ok(app.get_as(&admin, &invitations_path).await).await;
        let invitation = pending["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["user_id"] == user.as_str())
            .unwrap_or_else(|| panic!("a pending invitation: {pending}"))["_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let user_path = format!("/api/v0/users/{user}");
        let invitation_path = format!("/api/v0/invitations/{invitation}");

        let ((promote, revoked_when_promoted), revoke) = tokio::join!(
            async {
                let promote = call(
                    &app,
                    Method::PATCH,
                    &owner,
                    &user_path,
                    Some(json!({"role": "owner"})),
                )
                .await;
                let revoked = if promote.0 == 200 {
                    Some(database.invitation_revoked(&invitation).await)
                } else {
                    None
                };
                (promote, revoked)
            },
            call(&app, Method::DELETE, &admin, &invitation_path, None),
        );

        let stored = app
            .state
            .store()
            .membership(org, user.parse().unwrap())
            .await
            .unwrap();
        let listed = ok(app.get_as(&admin, &invitations_path).await)
            .await
            .to_string()
            .contains(&invitation);
        let revoked = database.invitation_revoked(&invitation).await;
        assert_eq!(listed, !revoked, "trial {trial}");
        let what = format!(
            "trial {trial}: promote {promote:?}, revoke {revoke:?}, stored {:?}, revoked {revoked}",
            stored.as_ref().map(|m| (m.role, m.status))
        );
        if promote.0 == 200 {
            assert_eq!(
                revoked_when_promoted,
                Some(false),
                "promoted, yet revoked: trial {trial}"
            );
        }
        match (
            promote.0,
            revoke.0,
            stored.map(|m| (m.role, m.status)),
            revoked,
        ) {
            // The promotion first: the admin may not revoke an owner's invitation.
            (200, 403, Some((Role::Owner, keyplane_core::values::UserStatus::Invited)), false) => {
                assert_eq!(revoke.1["code"], "E_FORBIDDEN", "{what}");
                orders.push("promotion first");
            }
            // The revoke first: the invited membership went with it, so there is nobody to
            // promote.
            (404, 200, None, true) => {
                assert_eq!(promote.1["code"], "E_USER_NOT_FOUND", "{what}");
                orders.push("revoke first");
            }
            _ => panic!("{what}: no serial order ends so"),
        }
    }
    eprintln!("orders: {orders:?}");
}

/// Behind a trusted proxy, `/metrics` goes to the client the proxy names: a forwarded client
/// that is no address (`unknown`) is an unknown client, not the proxy itself, and an outside
/// address with a port is that outside client; only an allowed address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_behind_a_trusted_proxy_go_only_to_an_allowed_forwarded_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .configure(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()])
        .start()
        .await;
    // The default allow-list holds the loopback networks (the proxy's own address).
    assert!(
        app.config
            .metrics_allow
            .iter()
            .any(|net| net.contains(&std::net::IpAddr::from([127, 0, 0, 1])))
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], app.port));
    for (forwarded, expected) in [
        ("unknown", 404),
        ("127.0.0.1", 200),
        ("203.0.113.9:51234", 404),
        ("203.0.113.9", 404),
        ("203.0.113.9, 127.0.0.1", 200),
        ("127.0.0.1, unknown", 404),
        ("127.0.0.1, 203.0.113.9:51234", 404),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-For: {forwarded}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("a complete HTTP response");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {expected} ")),
            "X-Forwarded-For: {forwarded}: {head}"
        );
        if expected == 404 {
            assert!(body.contains("E_NOT_FOUND"), "{forwarded}: {body}");
            assert!(!body.contains("keyplane_http_requests_total"), "{body}");
        } else {
            assert!(body.contains("keyplane_"), "{forwarded}: {body}");
        }
    }
}
