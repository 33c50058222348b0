//! Bearer authentication of management endpoints: what a token must be to be accepted, how fast
//! a disabled or deleted key stops working (on this node and on another node sharing the
//! database), signing-key rotation, and a second JWT library agreeing with ours.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt, TimeOptions, UntrustedToken};
use keyplane_core::records::ApiKeyChanges;
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{AccessClaims, KEY_PROPAGATION_SECONDS, SigningKey, TokenKeys};
use keyplane_core::values::ApiKeyStatus;
use keyplane_server::service::access::SUBJECT_STATE_TTL;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestAppBuilder, assert_error};
use crate::on_both_stores;

on_both_stores!(
    a_valid_token_reads_its_own_organization,
    missing_malformed_forged_and_expired_tokens_are_refused,
    other_organizations_are_not_found,
    a_disabled_or_deleted_key_loses_its_tokens,
    an_independent_jwt_library_verifies_tokens_against_the_jwks,
    rotation_keeps_live_tokens_and_publishes_the_new_key_first,
);

fn organization_path(id: &str) -> String {
    format!("/api/v0/organizations/{id}")
}

async fn a_valid_token_reads_its_own_organization(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    // Real fiskaly clients send `{}` with GET: ignored.
    let response = app
        .client
        .get(app.url(&organization_path(&boot.organization_id)))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["_id"], boot.organization_id.as_str());
    assert_eq!(body["_type"], "ORGANIZATION");
    assert_eq!(body["_envs"], json!(["TEST", "LIVE"]));
    assert_eq!(body["name"], "Test Organization");
    assert!(
        body.get("managed_by_organization_id").is_none(),
        "unset fields are omitted"
    );
    assert!(body.get("display_name").is_none());
    // The scheme is case-insensitive (RFC 7235).
    let lower = app
        .client
        .get(app.url(&organization_path(&boot.organization_id)))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
}

/// A token with the given claims, signed by this server's current key.
fn sign(app: &TestApp, change: impl FnOnce(&mut AccessClaims)) -> String {
    let keys = app.state.signing_keys().current();
    let now = now_unix();
    let mut claims = AccessClaims {
        iss: keys.issuer().to_owned(),
        sub: String::new(),
        organization: String::new(),
        env: keyplane_core::values::Env::Test,
        subject_type: keyplane_core::tokens::SubjectType::ApiKey,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "test".into(),
        role: None,
        token_version: 0,
        key_generation: None,
    };
    change(&mut claims);
    keys.sign(&claims)
}

async fn assert_refused(app: &TestApp, path: &str, authorization: Option<&str>) {
    let mut request = app.client.get(app.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm="),
        "{authorization:?}: {challenge:?}"
    );
    let body = assert_error(response, 401, "E_UNAUTHORIZED").await;
    assert!(body.get("_id").is_none());
}

async fn missing_malformed_forged_and_expired_tokens_are_refused(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let path = organization_path(&boot.organization_id);
    let good = app.access_token(&boot.api_key, &boot.api_secret).await;
    let key = app.stored_api_key(&boot.api_key).await;
    let parts: Vec<&str> = good.split('.').collect();

    // Tampered payload: same signature, another organization.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["env"] = json!("LIVE");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // `alg: none`, unsigned.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    // Algorithm confusion: HS256 keyed with the public key everyone can fetch.
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap();
    let hs_header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).to_string());
    let signing_input = format!("{hs_header}.{}", parts[1]);
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_x.as_bytes()),
        signing_input.as_bytes(),
    );
    let confused = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    // Signed by us, but expired, not yet valid, or from another issuer.
    let subject = |claims: &mut AccessClaims| {
        claims.sub = key.id.to_string();
        claims.organization = boot.organization_id.clone();
    };
    let expired = sign(&app, |c| {
        subject(c);
        c.iat -= 600;
        c.nbf -= 600;
        c.exp = now_unix() - 1;
    });
    let early = sign(&app, |c| {
        subject(c);
        c.nbf = now_unix() + 60;
    });
    let foreign = sign(&app, |c| {
        subject(c);
        c.iss = "https://elsewhere.example".into();
    });
    // Signed by a key this server never published.
    let stranger = TokenKeys::new(
        app.state.issuer(),
        &[SigningKey::generate(0)],
        now_unix(),
        300,
    )
    .unwrap()
    .sign(&AccessClaims {
        iss: app.state.issuer(),
        ..serde_json::from_value(claims.clone()).unwrap()
    });

    assert_refused(&app, &path, None).await;
    for value in [
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
        format!("Basic {good}"),
        "Bearer not.a.jwt".into(),
        format!("Bearer {}", "x".repeat(5000)),
        format!("Bearer {tampered}"),
        format!("Bearer {unsigned}"),
        format!("Bearer {confused}"),
        format!("Bearer {expired}"),
        format!("Bearer {early}"),
        format!("Bearer {foreign}"),
        format!("Bearer {stranger}"),
    ] {
        assert_refused(&app, &path, Some(&value)).await;
    }
    // A well-signed token for a subject that never existed.
    let ghost = sign(&app, |c| {
        c.sub = uuid::Uuid::now_v7().to_string();
        c.organization = boot.organization_id.clone();
    });
    assert_refused(&app, &path, Some(&format!("Bearer {ghost}"))).await;
    // The good one still works.
    assert_eq!(app.get_as(&good, &path).await.status(), 200);
}

async fn other_organizations_are_not_found(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".into(),
        "0".repeat(300),
    ] {
        let response = app.get_as(&token, &organization_path(&id)).await;
        let body = assert_error(response, 404, "E_ORGANIZATION_NOT_FOUND").await;
        assert!(body.get("name").is_none());
    }
}

/// Polls `path` with `token` until it is refused, and returns how long that took after `since`.
async fn refused_after(app: &TestApp, token: &str, path: &str, since: Instant) -> Duration {
    // Other nodes stop a token within SUBJECT_STATE_TTL plus one query (README, Tokens: 0.5 s);
    // callers assert a second, and polling goes on a little longer so that a miss shows how
    // late it was.
    let deadline = since + Duration::from_secs(1) + SUBJECT_STATE_TTL;
    loop {
        let status = app.get_as(token, path).await.status();
        if status == 401 {
            return since.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "the token still works {:?} after the change",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(status: ApiKeyStatus) -> ApiKeyChanges {
    ApiKeyChanges {
        status: Some(status),
        ..Default::default()
    }
}

/// Changes a key straight in the store, as another node would.
async fn change(app: &TestApp, key: &keyplane_core::records::ApiKey, changes: ApiKeyChanges) {
    let changed = app
        .state
        .store()
        .update_api_key(key.id, &changes, &[])
        .await
        .unwrap();
    assert!(changed.is_some(), "the key exists");
}

/// What the node that changed a key does: drop its cached state and secrets.
async fn forget(app: &TestApp, key: &keyplane_core::records::ApiKey) {
    app.state.subjects().forget_key(key).await;
}

async fn a_disabled_or_deleted_key_loses_its_tokens(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let path = organization_path(&boot.organization_id);
    let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
    let token = pair["access_token"].as_str().unwrap();
    assert_eq!(app.get_as(token, &path).await.status(), 200);

    // Disabled by another node (straight in the store: this node's cache is not told).
    let key = app.stored_api_key(&boot.api_key).await;
    let changed = Instant::now();
    change(&app, &key, status(ApiKeyStatus::Disabled)).await;
    let took = refused_after(&app, token, &path, changed).await;
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    // Its refresh token is refused too, and so is a new login.
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    assert_eq!(app.post_json("/api/v0/auth", &refresh).await.status(), 401);
    let login = json!({"api_key": boot.api_key, "api_secret": boot.api_secret});
    assert_eq!(app.post_json("/api/v0/auth", &login).await.status(), 401);

    // Enabled again, tokens work; expired, they stop.
    change(&app, &key, status(ApiKeyStatus::Enabled)).await;
    forget(&app, &key).await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    assert_eq!(app.get_as(&token, &path).await.status(), 200);
    let expiry = |at| ApiKeyChanges {
        expires_at: Some(at),
        ..Default::default()
    };
    change(&app, &key, expiry(Some(now_unix() - 1))).await;
    forget(&app, &key).await;
    assert_eq!(app.get_as(&token, &path).await.status(), 401);
    assert_eq!(app.post_json("/api/v0/auth", &login).await.status(), 401);

    // Deleted, they stop at once on the node that deleted it.
    change(&app, &key, expiry(None)).await;
    forget(&app, &key).await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    assert_eq!(app.get_as(&token, &path).await.status(), 200);
    assert!(
        app.state
            .store()
            .delete_api_key(key.id, None, &[])
            .await
            .unwrap()
    );
    forget(&app, &key).await;
    assert_eq!(app.get_as(&token, &path).await.status(), 401);
    assert_eq!(app.post_json("/api/v0/auth", &login).await.status(), 401);
}

async fn an_independent_jwt_library_verifies_tokens_against_the_jwks(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
    let token = pair["access_token"].as_str().unwrap();
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();

    let untrusted = UntrustedToken::new(token).expect("a compact JWS");
    assert_eq!(untrusted.algorithm(), "EdDSA");
    let kid = untrusted.header().key_id.clone().expect("a kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let public_key = ed25519_compact::PublicKey::from_slice(&x).unwrap();
    let verified = Ed25519
        .validator::<Value>(&public_key)
        .validate(&untrusted)
        .expect("jwt-compact accepts the signature");
    let claims = verified.claims();
    claims
        .validate_expiration(&TimeOptions::default())
        .expect("not expired");
    assert_eq!(
        claims.expiration.map(|t| t.timestamp()),
        pair["access_token_expires_at"].as_i64()
    );
    assert_eq!(claims.custom["organization"], boot.organization_id.as_str());
    assert_eq!(claims.custom["env"], "TEST");

    // And it refuses what ours refuses: one flipped signature bit.
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let flipped = UntrustedToken::new(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert!(
        Ed25519
            .validator::<Value>(&public_key)
            .validate(&flipped)
            .is_err()
    );
}

async fn rotation_keeps_live_tokens_and_publishes_the_new_key_first(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let path = organization_path(&boot.organization_id);
    let old_token = app.access_token(&boot.api_key, &boot.api_secret).await;
    let old_kid = app.state.signing_keys().current().current_kid().to_owned();

    let new_kid = keyplane_server::infra::signing::rotate(app.state.store(), app.state.secrets())
        .await
        .unwrap()
        .expect("rotated");
    // A token signed by the new key before this node reloaded (as another node would sign once
    // the propagation delay has passed): the unknown kid makes this node reload, and accept it.
    let stored = app.state.store().signing_keys().await.unwrap();
    let opened: Vec<SigningKey> = stored
        .iter()
        .map(|k| SigningKey::open(k, app.state.secrets()).unwrap())
        .collect();
    let later = TokenKeys::new(
        app.state.issuer(),
        &opened,
        now_unix() + KEY_PROPAGATION_SECONDS,
        300,
    )
    .unwrap();
    assert_eq!(later.current_kid(), new_kid);
    let key = app.stored_api_key(&boot.api_key).await;
    let now = now_unix();
    let new_token = later.sign(&AccessClaims {
        iss: app.state.issuer(),
        sub: key.id.to_string(),
        organization: boot.organization_id.clone(),
        env: keyplane_core::values::Env::Test,
        subject_type: keyplane_core::tokens::SubjectType::ApiKey,
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "rotated".into(),
        role: None,
        token_version: 0,
        key_generation: None,
    });
    assert_eq!(app.get_as(&new_token, &path).await.status(), 200);

    // Both keys are published; the old one still signs until the new one has propagated; old
    // tokens keep working.
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    assert_eq!(app.state.signing_keys().current().current_kid(), old_kid);
    assert_eq!(app.get_as(&old_token, &path).await.status(), 200);
    let fresh = app.access_token(&boot.api_key, &boot.api_secret).await;
    assert_eq!(app.get_as(&fresh, &path).await.status(), 200);
}

/// Two servers on one PostgreSQL database: tokens of one are good on the other, and a key
/// disabled through one is refused by the other within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_share_tokens_and_revocations() {
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
    let path = organization_path(&boot.organization_id);

    let token = a.access_token(&boot.api_key, &boot.api_secret).await;
    assert_eq!(
        b.get_as(&token, &path).await.status(),
        200,
        "node B accepts node A's token"
    );
    let from_b = b.access_token(&boot.api_key, &boot.api_secret).await;
    assert_eq!(
        a.get_as(&from_b, &path).await.status(),
        200,
        "and the other way round"
    );
    assert_eq!(
        a.get("/.well-known/jwks.json").await.text().await.unwrap(),
        b.get("/.well-known/jwks.json").await.text().await.unwrap(),
    );

    let key = a.stored_api_key(&boot.api_key).await;
    let changed = Instant::now();
    change(&a, &key, status(ApiKeyStatus::Disabled)).await;
    a.state
        .subjects()
        .forget(
            keyplane_core::tokens::SubjectType::ApiKey,
            &key.id.to_string(),
            key.organization_id,
        )
        .await;
    assert_eq!(
        a.get_as(&token, &path).await.status(),
        401,
        "at once on the node that changed it"
    );
    let took = refused_after(&b, &token, &path, changed).await;
    assert!(took <= Duration::from_secs(1), "node B took {took:?}");
}
