//! OAuth 2.0: the token endpoint driven by a standard client library (the `oauth2` crate), and
//! introspection, revocation, metadata and every malformed request driven by hand.

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, TokenResponse, TokenUrl};
use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;

on_both_stores!(
    a_standard_oauth2_client_gets_tokens_with_basic_and_post_authentication,
    the_refresh_token_grant_rotates_and_detects_reuse,
    token_endpoint_errors_follow_rfc_6749,
    introspection_reports_live_tokens_and_nothing_else,
    revocation_ends_a_refresh_token_family,
    metadata_describes_the_endpoints_and_matches_the_tokens,
);

/// The `oauth2` crate's HTTP client interface, served by our reqwest client (which trusts the
/// test server's certificate).
fn http_client(
    client: reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>,
> {
    move |request: oauth2::HttpRequest| {
        let client = client.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut builder = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?.to_vec();
            Ok(builder.body(body).expect("a valid response"))
        })
    }
}

async fn error_body(response: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    body
}

async fn a_standard_oauth2_client_gets_tokens_with_basic_and_post_authentication(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let http = http_client(app.client.clone());
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    for auth_type in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(boot.api_key.clone()))
            .set_client_secret(ClientSecret::new(boot.api_secret.clone()))
            .set_auth_type(auth_type.clone())
            .set_token_uri(TokenUrl::new(app.url("/oauth2/token")).unwrap());
        let token = client
            .exchange_client_credentials()
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("{auth_type:?}: {e:?}"));
        assert_eq!(token.token_type(), &oauth2::basic::BasicTokenType::Bearer);
        assert_eq!(token.expires_in().map(|d| d.as_secs()), Some(300));
        assert!(token.refresh_token().is_none(), "RFC 6749 §4.4.3");
        let (_, claims) = crate::tokens::verify_with_jwks(token.access_token().secret(), &jwks);
        assert_eq!(claims["organization"], boot.organization_id.as_str());
        assert_eq!(claims["type"], "API_KEY");
        // The token works as a bearer token.
        let own = format!("/api/v0/organizations/{}", boot.organization_id);
        assert_eq!(
            app.get_as(token.access_token().secret(), &own)
                .await
                .status(),
            200
        );

        let wrong = BasicClient::new(ClientId::new(boot.api_key.clone()))
            .set_client_secret(ClientSecret::new("wrong".into()))
            .set_auth_type(auth_type)
            .set_token_uri(TokenUrl::new(app.url("/oauth2/token")).unwrap());
        match wrong
            .exchange_client_credentials()
            .request_async(&http)
            .await
        {
            Err(RequestTokenError::ServerResponse(error)) => {
                assert_eq!(error.error(), &BasicErrorResponseType::InvalidClient);
            }
            other => panic!("expected invalid_client, got {other:?}"),
        }
    }
}

async fn the_refresh_token_grant_rotates_and_detects_reuse(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
    let first = pair["refresh_token"].as_str().unwrap();

    // Without client authentication, like /api/v0/auth.
    let response = app
        .post_form(
            "/oauth2/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", first)],
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);

    // With the key's own credentials.
    let response = app
        .post_form(
            "/oauth2/token",
            Some((&boot.api_key, &boot.api_secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", &second)],
        )
        .await;
    assert_eq!(response.status(), 200);
    let third: Value = response.json().await.unwrap();

    // Reusing a spent one is invalid_grant and revokes the family: the newest dies too.
    let reuse = app
        .post_form(
            "/oauth2/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", first)],
        )
        .await;
    error_body(reuse, 400, "invalid_grant").await;
    let newest = app
        .post_form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", third["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    error_body(newest, 400, "invalid_grant").await;
}

async fn token_endpoint_errors_follow_rfc_6749(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let key = boot.api_key.as_str();
    let secret = boot.api_secret.as_str();
    let cc = ("grant_type", "client_credentials");

    error_body(
        app.post_form("/oauth2/token", Some((key, secret)), &[])
            .await,
        400,
        "invalid_request",
    )
    .await;
    error_body(
        app.post_form(
            "/oauth2/token",
            Some((key, secret)),
            &[("grant_type", "password")],
        )
        .await,
        400,
        "unsupported_grant_type",
    )
    .await;
    error_body(
        app.post_form(
            "/oauth2/token",
            Some((key, secret)),
            &[cc, ("scope", "admin")],
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    // Repeated parameters, JSON instead of a form, and two authentication methods at once.
    let repeated = app
        .post_raw(
            "/oauth2/token",
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&grant_type=refresh_token",
        )
        .await;
    error_body(repeated, 400, "invalid_request").await;
    let json = app
        .post_raw(
            "/oauth2/token",
            "application/json",
            r#"{"grant_type":"client_credentials"}"#,
        )
        .await;
    error_body(json, 400, "invalid_request").await;
    let both = app
        .post_form(
            "/oauth2/token",
            Some((key, secret)),
            &[cc, ("client_id", key), ("client_secret", secret)],
        )
        .await;
    error_body(both, 400, "invalid_request").await;
    let oversized = "x".repeat(5000);
    error_body(
        app.post_form(
            "/oauth2/token",
            None,
            &[cc, ("client_id", key), ("client_secret", &oversized)],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    error_body(
        app.post_form("/oauth2/token", None, &[("grant_type", "refresh_token")])
            .await,
        400,
        "invalid_request",
    )
    .await;

    // Client authentication failures: 401 with a Basic challenge, whatever went wrong.
    for (basic, form) in [
        (Some((key, "wrong")), vec![cc]),
        (Some(("test_unknown_key", secret)), vec![cc]),
        (
            None,
            vec![cc, ("client_id", key), ("client_secret", "wrong")],
        ),
        (None, vec![cc, ("client_id", key)]),
        (None, vec![cc]),
    ] {
        let response = app.post_form("/oauth2/token", basic, &form).await;
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        error_body(response, 401, "invalid_client").await;
    }
    let garbage = app
        .client
        .post(app.url("/oauth2/token"))
        .header("authorization", "Basic !!!not-base64")
        .form(&[cc])
        .send()
        .await
        .unwrap();
    error_body(garbage, 401, "invalid_client").await;
}

async fn introspect(app: &TestApp, key: &str, secret: &str, token: &str) -> Value {
    let response = app
        .post_form(
            "/oauth2/introspect",
            Some((key, secret)),
            &[("token", token)],
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn introspection_reports_live_tokens_and_nothing_else(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let (key, secret) = (boot.api_key.as_str(), boot.api_secret.as_str());
    let pair = app.token_pair(key, secret).await;
    let access = pair["access_token"].as_str().unwrap();
    let refresh = pair["refresh_token"].as_str().unwrap();

    let active = introspect(&app, key, secret, access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "Bearer");
    assert_eq!(active["organization"], boot.organization_id.as_str());
    assert_eq!(active["env"], "TEST");
    assert_eq!(active["type"], "API_KEY");
    assert_eq!(active["exp"], pair["access_token_expires_at"]);
    assert_eq!(
        active["sub"],
        app.stored_api_key(key).await.id.to_string().as_str()
    );

    let active = introspect(&app, key, secret, refresh).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "refresh_token");
    assert_eq!(active["exp"], pair["refresh_token_expires_at"]);

    // Spent, garbage, and tampered tokens are simply inactive, with nothing else said.
    app.post_json(
        "/api/v0/auth",
        &serde_json::json!({"refresh_token": refresh}),
    )
    .await;
    let mut tampered = access.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    for token in [refresh, "garbage", tampered.as_str()] {
        assert_eq!(
            introspect(&app, key, secret, token).await,
            serde_json::json!({"active": false})
        );
    }

    // The caller must authenticate, and must send a token.
    let anonymous = app
        .post_form("/oauth2/introspect", None, &[("token", access)])
        .await;
    error_body(anonymous, 401, "invalid_client").await;
    let wrong = app
        .post_form(
            "/oauth2/introspect",
            Some((key, "wrong")),
            &[("token", access)],
        )
        .await;
    error_body(wrong, 401, "invalid_client").await;
    let missing = app
        .post_form("/oauth2/introspect", Some((key, secret)), &[])
        .await;
    error_body(missing, 400, "invalid_request").await;
}

async fn revocation_ends_a_refresh_token_family(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let (key, secret) = (boot.api_key.as_str(), boot.api_secret.as_str());
    let pair = app.token_pair(key, secret).await;
    let refresh = pair["refresh_token"].as_str().unwrap();

    let revoked = app
        .post_form(
            "/oauth2/revoke",
            Some((key, secret)),
            &[("token", refresh), ("token_type_hint", "refresh_token")],
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let reuse = app
        .post_json(
            "/api/v0/auth",
            &serde_json::json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(reuse.status(), 401);
    let organization = boot.organization_id.parse().unwrap();
    let events = app.state.store().audit_events(organization).await.unwrap();
    assert_eq!(events[0].action, "token.revoked");

    // Unknown tokens: 200 and nothing happens (RFC 7009 §2.2). Access tokens: not revocable.
    let unknown = app
        .post_form("/oauth2/revoke", Some((key, secret)), &[("token", "nope")])
        .await;
    assert_eq!(unknown.status(), 200);
    let access = app
        .post_form(
            "/oauth2/revoke",
            Some((key, secret)),
            &[("token", pair["access_token"].as_str().unwrap())],
        )
        .await;
    error_body(access, 400, "unsupported_token_type").await;
    let anonymous = app
        .post_form("/oauth2/revoke", None, &[("token", refresh)])
        .await;
    error_body(anonymous, 401, "invalid_client").await;
}

async fn metadata_describes_the_endpoints_and_matches_the_tokens(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    let metadata: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    let issuer = metadata["issuer"].as_str().unwrap();
    assert_eq!(metadata["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(
        metadata["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json")
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        format!("{issuer}/oauth2/introspect")
    );
    assert_eq!(
        metadata["revocation_endpoint"],
        format!("{issuer}/oauth2/revoke")
    );
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = crate::tokens::verify_with_jwks(&token, &jwks);
    assert_eq!(claims["iss"], issuer);
}
