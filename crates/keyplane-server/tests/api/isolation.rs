//! Organization isolation, everywhere: every endpoint of the API, called with a token of an
//! unrelated organization against another organization's real resources, answers 404 (or is
//! inactive, for OAuth introspection) and carries none of their data. Then the role table:
//! every role against every mutating endpoint, in the caller's own organization.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{self, Backend, Fixture, TestApp, owner_invitation_token};
use crate::on_both_stores;

on_both_stores!(
    an_unrelated_organization_sees_nothing_anywhere,
    every_role_against_every_mutating_endpoint,
);

/// Status and body text of a request.
async fn send(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let response = helpers::send(app, method, token, path, body.cloned()).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn an_unrelated_organization_sees_nothing_anywhere(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    let key_id = app.stored_api_key(&boot.api_key).await.id.to_string();
    let user = boot.user_id.clone();
    let invitations: Value = app
        .get_as(&token, &format!("/api/v0/organizations/{org}/invitations"))
        .await
        .json()
        .await
        .unwrap();
    let invitation = invitations["data"][0]["_id"].as_str().unwrap().to_owned();
    let stranger = app.another_organization("Unrelated").create().await;
    let stranger_org = stranger.organization.id.to_string();
    let stranger = stranger.token().await;

    let patch_key = json!({"status": "disabled"});
    let new_key = json!({"name": "intruder", "status": "enabled"});
    let rotate = json!({"grace_period_seconds": 0});
    let patch_org = json!({"town": "Elsewhere"});
    let env = json!({"env": "LIVE"});
    let invite = json!({"email": "intruder@example.com"});
    let patch_user = json!({"role": "viewer"});
    let endpoints: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::GET, format!("/api/v0/organizations/{org}"), None),
        (
            Method::PATCH,
            format!("/api/v0/organizations/{org}"),
            Some(&patch_org),
        ),
        (Method::DELETE, format!("/api/v0/organizations/{org}"), None),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/enable-env"),
            Some(&env),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/api-keys"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/api-keys"),
            Some(&new_key),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/api-keys/{key_id}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v0/organizations/{org}/api-keys/{key_id}"),
            Some(&patch_key),
        ),
        (
            Method::DELETE,
            format!("/api/v0/organizations/{org}/api-keys/{key_id}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/api-keys/{key_id}/rotate"),
            Some(&rotate),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/users"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v0/organizations/{org}/users"),
            Some(&invite),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/users/{user}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v0/organizations/{org}/users/{user}"),
            Some(&patch_user),
        ),
        (
            Method::DELETE,
            format!("/api/v0/organizations/{org}/users/{user}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/invitations"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v0/invitations/{invitation}/resend"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v0/invitations/{invitation}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{org}/audit-events"),
            None,
        ),
        // The caller's own paths never reach into another organization.
        (Method::GET, "/api/v0/api-keys/bootstrap".into(), None),
        (
            Method::PATCH,
            "/api/v0/api-keys/bootstrap".into(),
            Some(&patch_key),
        ),
        (Method::DELETE, "/api/v0/api-keys/bootstrap".into(), None),
        (
            Method::POST,
            "/api/v0/api-keys/bootstrap/rotate".into(),
            Some(&rotate),
        ),
        (Method::GET, format!("/api/v0/users/{user}"), None),
        (
            Method::PATCH,
            format!("/api/v0/users/{user}"),
            Some(&patch_user),
        ),
        (Method::DELETE, format!("/api/v0/users/{user}"), None),
    ];
    for (method, path, body) in &endpoints {
        let (status, text) = send(&app, method.clone(), &stranger, path, *body).await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert!(
            error["code"].as_str().unwrap().ends_with("_NOT_FOUND"),
            "{method} {path}: {text}"
        );
        for secret in [
            org.as_str(),
            key_id.as_str(),
            user.as_str(),
            boot.api_key.as_str(),
            "owner@example.com",
            "Test Organization",
        ] {
            if path.contains(secret) {
                continue;
            }
            assert!(
                !text.contains(secret),
                "{method} {path} leaks {secret}: {text}"
            );
        }
    }
    // Cursors of our lists: useless to them on our lists (still 404) and on their own (a 400
    // naming `cursor`), and showing nothing of ours either way.
    ok_send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/second",
        json!({"kind": "test", "status": "enabled"}),
    )
    .await;
    ok_send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        json!({"email": "second@example.com"}),
    )
    .await;
    ok_send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        helpers::venue("Second"),
    )
    .await;
    let ours = [
        ("/api/v0/organizations".to_owned(), "/api/v0/organizations"),
        (
            format!("/api/v0/organizations/{org}/api-keys"),
            "/api/v0/api-keys",
        ),
        (
            format!("/api/v0/organizations/{org}/users"),
            "/api/v0/users",
        ),
        (format!("/api/v0/organizations/{org}/invitations"), ""),
        (format!("/api/v0/organizations/{org}/audit-events"), ""),
    ];
    for (list, own) in &ours {
        let (status, text) =
            send(&app, Method::GET, &token, &format!("{list}?limit=1"), None).await;
        assert_eq!(status, 200, "{list}: {text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        let cursor = page["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("{list} has a second page: {text}"));
        let mut attempts = Vec::new();
        if !own.is_empty() {
            attempts.push((format!("{own}?cursor={cursor}"), 400));
        }
        if list.contains(&org) {
            attempts.push((format!("{list}?cursor={cursor}"), 404));
            // The same list of their own organization.
            let theirs = list.replace(&org, &stranger_org);
            attempts.push((format!("{theirs}?cursor={cursor}"), 400));
        }
        for (path, expected) in attempts {
            let (status, text) = send(&app, Method::GET, &stranger, &path, None).await;
            assert_eq!(status, expected, "{path}: {text}");
            if expected == 400 {
                let error: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(error["code"], "E_VALIDATION", "{path}: {text}");
                assert!(
                    error["message"].as_str().unwrap().starts_with("cursor"),
                    "{text}"
                );
            }
            for secret in [
                org.as_str(),
                key_id.as_str(),
                user.as_str(),
                boot.api_key.as_str(),
                "owner@example.com",
                "second",
            ] {
                assert!(!text.contains(secret), "{path} leaks {secret}: {text}");
            }
        }
    }
    // An `Idempotency-Key` of ours: the byte-identical request with it, from them, is their own
    // request (404 here; the same key on their own list is then a mismatch with that record of
    // theirs), never our kept answer.
    let idempotent = |token: &str, path: &str| {
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", "shared-retry-key")
            .header("Content-Type", "application/json")
            .body(r#"{"name":"kept","status":"enabled"}"#)
            .send()
    };
    let ours_path = format!("/api/v0/organizations/{org}/api-keys");
    let kept = idempotent(&token, &ours_path).await.unwrap();
    assert_eq!(kept.status(), 200);
    let kept: Value = kept.json().await.unwrap();
    let kept_secret = kept["secret"].as_str().unwrap().to_owned();
    let theirs_path = format!("/api/v0/organizations/{stranger_org}/api-keys");
    for (path, expected) in [(&ours_path, 404), (&theirs_path, 422)] {
        let response = idempotent(&stranger, path).await.unwrap();
        assert_eq!(response.status(), expected, "{path}");
        assert!(response.headers().get("idempotent-replayed").is_none());
        let text = response.text().await.unwrap();
        for secret in [kept_secret.as_str(), kept["key"].as_str().unwrap(), &org] {
            assert!(!text.contains(secret), "{path} leaks {secret}: {text}");
        }
    }
    // Lists of the caller's own show only its own.
    for path in ["/api/v0/organizations", "/api/v0/api-keys", "/api/v0/users"] {
        let (status, text) = send(&app, Method::GET, &stranger, path, None).await;
        assert_eq!(status, 200);
        assert!(
            !text.contains(&org)
                && !text.contains("owner@example.com")
                && !text.contains(&boot.api_key),
            "{path}: {text}"
        );
    }
    // OAuth: a client of another organization learns nothing about our tokens and revokes nothing.
    let client = app.another_organization("Client").create().await;
    let (client_key, client_secret) = (&client.key, &client.secret);
    let pair = app.token_pair(&boot.api_key, &boot.api_secret).await;
    for token in [&pair["access_token"], &pair["refresh_token"]] {
        let response = app
            .post_form(
                "/oauth2/introspect",
                Some((client_key, client_secret)),
                &[("token", token.as_str().unwrap())],
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"active": false})
        );
    }
    let revoke = app
        .post_form(
            "/oauth2/revoke",
            Some((client_key, client_secret)),
            &[("token", pair["refresh_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(revoke.status(), 200);
    let still = app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(still.status(), 200, "their revoke did nothing to our token");
    // And nothing of ours changed.
    let (_, ours) = send(
        &app,
        Method::GET,
        &token,
        &format!("/api/v0/organizations/{org}"),
        None,
    )
    .await;
    assert!(ours.contains("Test Organization") && !ours.contains("Elsewhere"));
    let (_, keys) = send(&app, Method::GET, &token, "/api/v0/api-keys", None).await;
    assert!(
        keys.contains("\"enabled\"") && !keys.contains("intruder"),
        "{keys}"
    );
}

/// A request that must succeed.
async fn ok_send(app: &TestApp, method: Method, token: &str, path: &str, body: Value) {
    let (status, text) = send(app, method, token, path, Some(&body)).await;
    assert_eq!(status, 200, "{path}: {text}");
}

/// A fresh target for one mutating call: (method, path, body).
type Call = (Method, String, Option<Value>);

async fn every_role_against_every_mutating_endpoint(backend: Backend) {
    use keyplane_core::values::Role;
    let Fixture {
        app,
        boot,
        token: admin_key,
    } = Fixture::start(&backend).await;
    let accepted = app
        .accept_invitation(
            owner_invitation_token(&boot),
            "the owner's passphrase",
            json!({}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let org: keyplane_core::OrganizationId = boot.organization_id.parse().unwrap();
    let person: keyplane_core::UserId = boot.user_id.parse().unwrap();
    let venue = json!({"name": "Venue", "address_line1": "a", "zip": "1", "town": "b", "country_code": "DEU"});
    let mut counter = 0;
    for (role, allowed) in [
        // keys, organizations, people, owners
        (Role::Owner, [true, true, true, true]),
        (Role::Admin, [true, true, true, false]),
        (Role::Developer, [true, false, false, false]),
        (Role::Viewer, [false, false, false, false]),
    ] {
        app.set_role_in_store(org, person, role).await;
        let token = app
            .person_token("owner@example.com", "the owner's passphrase")
            .await;
        // Fresh targets, made with the admin key, so each call acts on something that exists.
        counter += 1;
        let key_name = format!("target-{counter}");
        let made: Value = app
            .client
            .put(app.url(&format!("/api/v0/api-keys/{key_name}")))
            .bearer_auth(&admin_key)
            // A developer's key: a developer manages keys up to their own role.
            .json(&json!({"kind": "test", "status": "enabled", "role": "developer"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key_path = format!(
            "/api/v0/organizations/{org}/api-keys/{}",
            made["_id"].as_str().unwrap()
        );
        let child: Value = app
            .client
            .post(app.url("/api/v0/organizations"))
            .bearer_auth(&admin_key)
            .json(&venue)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let child_path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
        let invited: Value = app
            .client
            .post(app.url("/api/v0/users"))
            .bearer_auth(&admin_key)
            .json(&json!({"email": format!("p{counter}@example.com")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let user_path = format!("/api/v0/users/{}", invited["_id"].as_str().unwrap());
        let pending: Value = app
            .get_as(
                &admin_key,
                &format!("/api/v0/organizations/{org}/invitations"),
            )
            .await
            .json()
            .await
            .unwrap();
        let invitation = pending["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["user_id"] == invited["_id"])
            .unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_owned();

        let groups: [Vec<Call>; 4] = [
            vec![
                (
                    Method::PUT,
                    format!("/api/v0/api-keys/new-{counter}"),
                    Some(json!({"kind": "test", "status": "enabled"})),
                ),
                (
                    Method::PATCH,
                    key_path.clone(),
                    Some(json!({"metadata": {"a": "b"}})),
                ),
                (
                    Method::POST,
                    format!("{key_path}/rotate"),
                    Some(json!({"grace_period_seconds": 0})),
                ),
                (Method::DELETE, key_path.clone(), None),
            ],
            vec![
                (
                    Method::POST,
                    "/api/v0/organizations".into(),
                    Some(venue.clone()),
                ),
                (
                    Method::PATCH,
                    child_path.clone(),
                    Some(json!({"town": "c"})),
                ),
                (
                    Method::POST,
                    format!("{child_path}/enable-env"),
                    Some(json!({"env": "LIVE"})),
                ),
                (Method::DELETE, child_path.clone(), None),
            ],
            vec![
                (
                    Method::POST,
                    "/api/v0/users".into(),
                    Some(json!({"email": format!("q{counter}@example.com")})),
                ),
                (
                    Method::POST,
                    format!("/api/v0/invitations/{invitation}/resend"),
                    None,
                ),
                (
                    Method::PATCH,
                    user_path.clone(),
                    Some(json!({"role": "viewer"})),
                ),
                (Method::DELETE, user_path.clone(), None),
            ],
            vec![(
                Method::POST,
                "/api/v0/users".into(),
                Some(json!({"email": format!("o{counter}@example.com"), "role": "owner"})),
            )],
        ];
        for (group, allowed) in groups.iter().zip(allowed) {
            for (method, path, body) in group {
                let (status, text) = send(&app, method.clone(), &token, path, body.as_ref()).await;
                let expected = if allowed { 200 } else { 403 };
                assert_eq!(status, expected, "{role:?} {method} {path}: {text}");
            }
        }
        // Everyone reads.
        for path in [
            "/api/v0/api-keys".to_owned(),
            "/api/v0/organizations".into(),
            "/api/v0/users".into(),
            format!("/api/v0/organizations/{org}/audit-events"),
            format!("/api/v0/organizations/{org}/invitations"),
        ] {
            let (status, _) = send(&app, Method::GET, &token, &path, None).await;
            assert_eq!(status, 200, "{role:?} reads {path}");
        }
    }
}
