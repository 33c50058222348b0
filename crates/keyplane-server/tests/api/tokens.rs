//! `POST /api/v0/auth`, `POST /v1/token` and the JWKS, through the real TLS listener.

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::{Backend, Fixture, TestApp, TestAppBuilder, assert_error};
use crate::on_both_stores;

on_both_stores!(
    issues_a_token_pair_in_fiskalys_shape_verifiable_against_the_jwks,
    unknown_keys_and_wrong_secrets_get_the_same_answer,
    refresh_tokens_are_single_use_and_reuse_revokes_the_family,
    rejects_malformed_and_incomplete_auth_requests,
    fiskil_token_endpoint_speaks_fiskils_shapes,
    fiskil_token_lifetime_is_configurable,
    records_every_authentication_outcome_in_the_audit_log,
    people_log_in_with_email_and_password,
    a_grace_window_lets_a_lost_refresh_response_be_retried,
    a_refresh_token_raced_twice_revokes_the_winners_successor_too,
    concurrent_logins_share_commits_and_each_token_is_stored,
    one_batch_spends_each_parent_once,
    access_tokens_end_with_the_grace_of_the_secret_they_were_obtained_with,
);

async fn login(app: &TestApp, key: &str, secret: &str) -> reqwest::Response {
    app.post_json(
        "/api/v0/auth",
        &json!({"api_key": key, "api_secret": secret}),
    )
    .await
}

/// Verifies a compact JWS with the JWKS using aws-lc-rs directly: independent of the
/// jsonwebtoken code that signed it.
pub fn verify_with_jwks(token: &str, jwks: &Value) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let public_key = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .expect("the signature verifies against the published key");
    (header, claims)
}

async fn issues_a_token_pair_in_fiskalys_shape_verifiable_against_the_jwks(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    // Real fiskaly clients send an empty bearer header to /auth: it is ignored.
    let response = app
        .client
        .post(app.url("/api/v0/auth"))
        .header("authorization", "Bearer ")
        .json(&json!({"api_key": boot.api_key, "api_secret": boot.api_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "access_token",
            "access_token_claims",
            "access_token_expires_at",
            "access_token_expires_in",
            "refresh_token",
            "refresh_token_expires_at",
            "refresh_token_expires_in",
        ]
    );
    assert_eq!(
        body["access_token_claims"],
        json!({"env": "TEST", "organization_id": boot.organization_id})
    );
    assert_eq!(body["access_token_expires_in"], 300);
    assert_eq!(body["refresh_token_expires_in"], 86_400);

    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let (header, claims) = verify_with_jwks(body["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims["organization"], boot.organization_id.as_str());
    assert_eq!(claims["env"], "TEST");
    assert_eq!(claims["type"], "API_KEY");
    assert_eq!(claims["iss"], app.config.public_url.as_str());
    assert_eq!(claims["exp"], body["access_token_expires_at"]);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let key = app.stored_api_key(&boot.api_key).await;
    assert_eq!(claims["sub"], key.id.to_string());
}

async fn unknown_keys_and_wrong_secrets_get_the_same_answer(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let wrong_secret = assert_error(
        login(&app, &boot.api_key, "not-the-secret").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let unknown_key = assert_error(
        login(
            &app,
            "test_000000000000000000000000_nobody",
            &boot.api_secret,
        )
        .await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_eq!(wrong_secret["message"], "Invalid credentials");
    assert_eq!(wrong_secret["message"], unknown_key["message"]);
    assert_eq!(wrong_secret["error"], unknown_key["error"]);
}

async fn refresh_tokens_are_single_use_and_reuse_revokes_the_family(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let first: Value = login(&app, &boot.api_key, &boot.api_secret)
        .await
        .json()
        .await
        .unwrap();
    let refresh = |token: Value| {
        let app = &app;
        async move {
            app.post_json("/api/v0/auth", &json!({"refresh_token": token}))
                .await
        }
    };

    let second = refresh(first["refresh_token"].clone()).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["access_token_claims"], first["access_token_claims"]);

    // The spent token is refused, and its reuse revokes the family: the newer token dies too.
    assert_error(
        refresh(first["refresh_token"].clone()).await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_error(
        refresh(second["refresh_token"].clone()).await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;

    // A new login starts a new family.
    let fresh: Value = login(&app, &boot.api_key, &boot.api_secret)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refresh(fresh["refresh_token"].clone()).await.status(), 200);
    assert_error(refresh(json!("never-issued")).await, 401, "E_UNAUTHORIZED").await;

    // A live token's selector (its id) with any other verifier is refused and spends nothing.
    let live: Value = login(&app, &boot.api_key, &boot.api_secret)
        .await
        .json()
        .await
        .unwrap();
    let live = live["refresh_token"].as_str().unwrap();
    let (selector, verifier) = live.split_once('.').unwrap();
    let hyphenated = uuid::Uuid::try_parse(selector).unwrap().to_string();
    for forged in [
        format!("{selector}.{}", "A".repeat(verifier.len())),
        format!("{selector}."),
        selector.to_owned(),
        format!("{live}A"),
        format!("{hyphenated}.{verifier}"),
        format!(".{verifier}"),
    ] {
        assert_error(refresh(json!(forged)).await, 401, "E_UNAUTHORIZED").await;
    }
    assert_eq!(refresh(json!(live)).await.status(), 200);
}

async fn rejects_malformed_and_incomplete_auth_requests(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let cases = [
        (json!({"api_key": boot.api_key}), "api_secret"),
        (json!({"api_secret": boot.api_secret}), "api_key"),
        (
            json!({"api_key": boot.api_key, "api_secret": ""}),
            "api_secret",
        ),
        (
            json!({"api_key": 42, "api_secret": boot.api_secret}),
            "api_key",
        ),
        (
            json!({"api_key": boot.api_key, "api_secret": "x".repeat(513)}),
            "api_secret",
        ),
        (
            json!({"api_key": boot.api_key, "api_secret": boot.api_secret, "scope": "all"}),
            "scope",
        ),
        (
            json!({"refresh_token": "r", "api_key": boot.api_key}),
            "refresh_token",
        ),
        (json!({"email": "owner@example.com"}), "password"),
        (json!({}), "api_key"),
    ];
    for (body, field) in cases {
        let error = assert_error(
            app.post_json("/api/v0/auth", &body).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body} -> {error}"
        );
    }
    let malformed = app
        .post_raw("/api/v0/auth", "application/json", "{\"api_key\": ")
        .await;
    assert_error(malformed, 400, "E_VALIDATION").await;
    let not_json = app.post_raw("/api/v0/auth", "text/plain", "{}").await;
    assert_error(not_json, 415, "E_UNSUPPORTED_MEDIA_TYPE").await;
    let chunked = reqwest::Body::wrap_stream(futures_stream(vec![b' '; 2 * 1024 * 1024]));
    let chunked_oversized = app
        .post_raw("/api/v0/auth", "application/json", chunked)
        .await;
    assert_error(chunked_oversized, 413, "E_PAYLOAD_TOO_LARGE").await;
    // None of these reached the store: no audit event beyond bootstrap's three.
    let organization = boot.organization_id.parse().unwrap();
    assert_eq!(
        app.state
            .store()
            .audit_events(organization)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// A body without a Content-Length, so only the streaming limit can stop it.
fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

/// `--fiskil-token-ttl` sets the lifetime of `/v1/token`'s tokens, and only theirs.
async fn fiskil_token_lifetime_is_configurable(backend: Backend) {
    let app = TestAppBuilder::new(&backend)
        .await
        .configure(|config| config.fiskil_token_ttl = 120)
        .start()
        .await;
    let boot = app.bootstrap().await;
    let credentials = json!({"client_id": boot.api_key, "client_secret": boot.api_secret});
    let fiskil: Value = app
        .post_json("/v1/token", &credentials)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fiskil["expires_in"], 120);
    let auth = app.token_pair(&boot.api_key, &boot.api_secret).await;
    assert_eq!(auth["access_token_expires_in"], 300);
}

async fn fiskil_token_endpoint_speaks_fiskils_shapes(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let ok = app
        .post_json(
            "/v1/token",
            &json!({"client_id": boot.api_key, "client_secret": boot.api_secret}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    // Fiskil documents 600-second tokens; /api/v0/auth keeps its own lifetime (300 s).
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body.as_object().unwrap().len(), 3);
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = verify_with_jwks(body["token"].as_str().unwrap(), &jwks);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    for (body, status, name) in [
        (
            json!({"client_id": boot.api_key, "client_secret": "wrong"}),
            401,
            "InvalidCredentials",
        ),
        (json!({"client_id": boot.api_key}), 400, "InvalidRequest"),
        (
            json!({"client_id": boot.api_key, "client_secret": boot.api_secret, "x": 1}),
            400,
            "InvalidRequest",
        ),
    ] {
        let response = app.post_json("/v1/token", &body).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["name"], name, "{error}");
        assert!(error["id"].as_str().unwrap().starts_with("err_"), "{error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
}

async fn records_every_authentication_outcome_in_the_audit_log(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    assert_eq!(login(&app, &boot.api_key, "wrong").await.status(), 401);
    let pair: Value = login(&app, &boot.api_key, &boot.api_secret)
        .await
        .json()
        .await
        .unwrap();
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    assert_eq!(app.post_json("/api/v0/auth", &refresh).await.status(), 200);
    assert_eq!(app.post_json("/api/v0/auth", &refresh).await.status(), 401);

    let organization = boot.organization_id.parse().unwrap();
    app.state.audit_queue().flush().await;
    let events = app.state.store().audit_events(organization).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        &actions[..4],
        [
            "token.reuse_detected",
            "token.refreshed",
            "auth.succeeded",
            "auth.failed"
        ],
        "newest first"
    );
    let key = app.stored_api_key(&boot.api_key).await;
    for event in &events[..4] {
        assert_eq!(event.actor_id.as_deref(), Some(key.id.to_string().as_str()));
        assert!(event.request_id.as_deref().is_some_and(|id| id.len() == 32));
        assert_eq!(event.ip.as_deref(), Some("127.0.0.1"));
        let rendered = format!("{event:?}");
        for secret in [
            boot.api_secret.as_str(),
            pair["refresh_token"].as_str().unwrap(),
            pair["access_token"].as_str().unwrap(),
        ] {
            assert!(
                !rendered.contains(secret),
                "a credential leaked into {rendered}"
            );
        }
    }
}

async fn people_log_in_with_email_and_password(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let credentials = json!({"email": "owner@example.com", "password": "a long passphrase"});

    // Invited, with no password yet: refused like any wrong password.
    let response = app.post_json("/api/v0/auth", &credentials).await;
    assert_error(response, 401, "E_UNAUTHORIZED").await;

    app.activate_owner(&boot, "a long passphrase").await;
    // Email addresses match whatever their case.
    let response = app
        .post_json(
            "/api/v0/auth",
            &json!({"email": "Owner@Example.com", "password": "a long passphrase"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let pair: Value = response.json().await.unwrap();
    assert_eq!(
        pair["access_token_claims"]["organization_id"],
        boot.organization_id.as_str()
    );
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = verify_with_jwks(pair["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["type"], "USER");
    assert_eq!(claims["sub"], boot.user_id.as_str());
    let own = format!("/api/v0/organizations/{}", boot.organization_id);
    assert_eq!(
        app.get_as(pair["access_token"].as_str().unwrap(), &own)
            .await
            .status(),
        200
    );
    // The refresh token works for people too.
    let refreshed = app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);

    // Choosing the organization: one the person belongs to, or nothing.
    let chosen = app
        .post_json("/api/v0/auth", &json!({"email": "owner@example.com", "password": "a long passphrase", "organization_id": boot.organization_id}))
        .await;
    assert_eq!(chosen.status(), 200);
    let elsewhere = app
        .post_json("/api/v0/auth", &json!({"email": "owner@example.com", "password": "a long passphrase", "organization_id": uuid::Uuid::now_v7()}))
        .await;
    assert_error(elsewhere, 401, "E_UNAUTHORIZED").await;

    // Wrong password and unknown person: the same answer.
    for body in [
        json!({"email": "owner@example.com", "password": "wrong"}),
        json!({"email": "nobody@example.com", "password": "a long passphrase"}),
    ] {
        let body = assert_error(
            app.post_json("/api/v0/auth", &body).await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
        assert_eq!(body["message"], "Invalid credentials");
    }
    // Malformed: missing half, mixed with a key, a bad organization id.
    for (body, field) in [
        (json!({"email": "owner@example.com"}), "password"),
        (json!({"password": "x"}), "email"),
        (
            json!({"email": "owner@example.com", "password": "x", "api_key": boot.api_key}),
            "email",
        ),
        (
            json!({"email": "owner@example.com", "password": "x", "organization_id": "nope"}),
            "organization_id",
        ),
        (
            json!({"api_key": boot.api_key, "api_secret": boot.api_secret, "organization_id": boot.organization_id}),
            "organization_id",
        ),
        (
            json!({"email": "owner@example.com", "password": "x".repeat(600)}),
            "password",
        ),
    ] {
        let error = assert_error(
            app.post_json("/api/v0/auth", &body).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }

    // A disabled membership ends the person's tokens and logins.
    let store = app.state.store();
    let mut membership = store
        .membership(
            boot.organization_id.parse().unwrap(),
            boot.user_id.parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    membership.status = keyplane_core::values::UserStatus::Disabled;
    assert!(store.update_membership(&membership, &[]).await.unwrap());
    app.state
        .subjects()
        .forget(
            keyplane_core::tokens::SubjectType::User,
            &boot.user_id,
            membership.organization_id,
        )
        .await;
    assert_eq!(
        app.get_as(pair["access_token"].as_str().unwrap(), &own)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_json("/api/v0/auth", &credentials).await.status(),
        401
    );
}

async fn a_grace_window_lets_a_lost_refresh_response_be_retried(backend: Backend) {
    let app = crate::helpers::TestAppBuilder::new(&backend)
        .await
        .configure(|c| c.refresh_token_reuse_grace = 30)
        .start()
        .await;
    let boot = app.bootstrap().await;
    let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    let first: Value = app
        .post_json("/api/v0/auth", &refresh)
        .await
        .json()
        .await
        .unwrap();
    // The response was "lost": the same token again, within the window, gets a new pair and
    // revokes nothing.
    let retry = app.post_json("/api/v0/auth", &refresh).await;
    assert_eq!(retry.status(), 200);
    let second: Value = retry.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    for pair in [&first, &second] {
        let next = app
            .post_json(
                "/api/v0/auth",
                &json!({"refresh_token": pair["refresh_token"]}),
            )
            .await;
        assert_eq!(next.status(), 200, "both successors live");
    }
}

async fn a_refresh_token_raced_twice_revokes_the_winners_successor_too(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    for round in 0..5 {
        let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
        let refresh = json!({"refresh_token": pair["refresh_token"]});
        let (a, b) = tokio::join!(
            app.post_json("/api/v0/auth", &refresh),
            app.post_json("/api/v0/auth", &refresh)
        );
        let mut winners = Vec::new();
        for response in [a, b] {
            match response.status().as_u16() {
                200 => winners.push(response.json::<Value>().await.unwrap()),
                401 => {}
                other => panic!("round {round}: {other}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one spends it: {winners:?}"
        );
        // The other presentation was a reuse: the whole family is gone, successor included.
        let successor = json!({"refresh_token": winners[0]["refresh_token"]});
        let status = app.post_json("/api/v0/auth", &successor).await.status();
        assert_eq!(status, 401, "round {round}");
    }
}

/// Many logins at once go through the group commit: each gets its own durable refresh token,
/// which works exactly once.
async fn concurrent_logins_share_commits_and_each_token_is_stored(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    // Sent at once over separate requests of one client, so they queue for the same commits.
    let post = |body: Value| {
        let request = app
            .client
            .post(format!("{}/api/v0/auth", app.base_url))
            .json(&body);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    let login = json!({"api_key": boot.api_key, "api_secret": boot.api_secret});
    let logins: Vec<_> = (0..40).map(|_| post(login.clone())).collect();
    let mut pairs = Vec::new();
    for login in logins {
        let response = login.await.unwrap();
        assert_eq!(response.status(), 200);
        pairs.push(response.json::<Value>().await.unwrap());
    }
    let refreshes: Vec<_> = pairs
        .iter()
        .map(|pair| post(json!({"refresh_token": pair["refresh_token"]})))
        .collect();
    for refresh in refreshes {
        assert_eq!(refresh.await.unwrap().status(), 200);
    }
    let mut distinct: Vec<&str> = pairs
        .iter()
        .map(|pair| pair["refresh_token"].as_str().unwrap())
        .collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 40);
    // Spent: a second use of any of them is refused.
    let again = json!({"refresh_token": pairs[7]["refresh_token"]});
    assert_eq!(app.post_json("/api/v0/auth", &again).await.status(), 401);
}

/// Two refreshes of one token in one batch: the first spends it, the second stores nothing;
/// an unrelated login in the same batch is stored either way.
async fn one_batch_spends_each_parent_once(backend: Backend) {
    use keyplane_core::records::{AuditEvent, RefreshIssue, RefreshToken};
    use keyplane_core::secrets::CredentialHash;

    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let store = app.state.store();
    let token = |id: &str, family: &str, hash: u8| RefreshToken {
        id: id.into(),
        family_id: family.into(),
        token_hash: CredentialHash([hash; 32]),
        subject_type: keyplane_core::tokens::SubjectType::ApiKey,
        subject_id: "key".into(),
        organization_id: boot.organization_id.parse().unwrap(),
        env: keyplane_core::values::Env::Test,
        created_at: 1,
        expires_at: i64::MAX,
        used_at: None,
        revoked_at: None,
        family_expires_at: None,
        key_generation: None,
        subject_token_version: 0,
    };
    let issue = |token, parent: Option<&str>, events: Vec<AuditEvent>| RefreshIssue {
        token,
        spend_parent: parent.map(str::to_owned),
        events,
    };
    let parent = issue(token("parent", "f", 1), None, vec![]);
    assert!(store.issue_refresh_token(&parent).await.unwrap());
    let event = |action: &str| AuditEvent {
        id: keyplane_core::AuditEventId::new(),
        organization_id: boot.organization_id.parse().unwrap(),
        action: action.into(),
        actor_type: keyplane_core::records::ActorType::ApiKey,
        actor_id: Some("key".into()),
        target_type: "refresh_token".into(),
        target_id: "f".into(),
        request_id: None,
        ip: None,
        created_at: 1,
    };
    let batch = [
        issue(
            token("first", "f", 2),
            Some("parent"),
            vec![event("batch.first")],
        ),
        issue(
            token("second", "f", 3),
            Some("parent"),
            vec![event("batch.second")],
        ),
        issue(token("other", "g", 4), None, vec![event("batch.other")]),
    ];
    assert_eq!(
        store.issue_refresh_tokens(&batch).await.unwrap(),
        [true, false, true]
    );
    let mut stored = Vec::new();
    for id in ["parent", "first", "second", "other"] {
        stored.push(store.refresh_token(id).await.unwrap());
    }
    assert_eq!(stored[0].as_ref().unwrap().used_at, Some(1));
    assert!(stored[1].is_some());
    assert!(stored[2].is_none());
    assert!(stored[3].is_some());
    let actions: Vec<String> = store
        .audit_events(boot.organization_id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.action)
        .filter(|action| action.starts_with("batch."))
        .collect();
    assert_eq!(actions.len(), 2);
    assert!(!actions.contains(&"batch.second".to_owned()), "{actions:?}");
}

/// Before: after a rotation without grace, access tokens obtained with the old secret kept
/// working until they expired (300 s): rotating a leaked secret did not lock its holder out
/// until then. Tokens carry the generation of the secret presented (`gen`).
async fn access_tokens_end_with_the_grace_of_the_secret_they_were_obtained_with(backend: Backend) {
    let Fixture {
        app, token: admin, ..
    } = Fixture::start(&backend).await;
    let created = crate::helpers::ok(
        crate::helpers::send(
            &app,
            reqwest::Method::PUT,
            &admin,
            "/api/v0/api-keys/leaky",
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let rotate = |grace: i64| {
        let (app, admin) = (&app, admin.clone());
        async move {
            let rotated = crate::helpers::ok(
                crate::helpers::send(
                    app,
                    reqwest::Method::POST,
                    &admin,
                    "/api/v0/api-keys/leaky/rotate",
                    Some(json!({"grace_period_seconds": grace})),
                )
                .await,
            )
            .await;
            rotated["secret"].as_str().unwrap().to_owned()
        }
    };
    let works = |token: String| {
        let app = &app;
        async move {
            app.get_as(&token, "/api/v0/api-keys")
                .await
                .status()
                .as_u16()
        }
    };

    let first = app
        .access_token(&key, created["secret"].as_str().unwrap())
        .await;
    assert_eq!(crate::helpers::jwt_claims(&first)["gen"], 0);
    let second_secret = rotate(0).await;
    assert_eq!(works(first).await, 401, "rotated away without grace");

    let second = app.access_token(&key, &second_secret).await;
    assert_eq!(crate::helpers::jwt_claims(&second)["gen"], 1);
    let third_secret = rotate(3_600).await;
    assert_eq!(works(second.clone()).await, 200, "within the grace period");
    let third = app.access_token(&key, &third_secret).await;
    rotate(0).await;
    assert_eq!(works(second).await, 401, "two rotations old");
    assert_eq!(works(third).await, 401, "rotated away without grace");
}
