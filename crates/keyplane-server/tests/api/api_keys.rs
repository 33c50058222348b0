//! API keys on both path styles: the lifecycle, every bad input (with nothing stored), listing,
//! rotation, revocation of issued tokens, roles, and the recorded fiskaly traffic replayed.

use serde_json::{Value, json};

use crate::helpers::{Backend, Fixture, TestApp, assert_error, ok, send};
use crate::on_both_stores;

on_both_stores!(
    keys_by_name_live_a_whole_lifecycle,
    keys_by_id_take_fiskalys_bodies,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
    lists_order_filter_page_and_count,
    rotation_keeps_the_old_secret_for_the_grace_period_only,
    rotation_ends_the_refresh_tokens_of_older_secrets,
    concurrent_changes_keep_each_other_and_the_count,
    concurrent_rotations_each_keep_the_secret_before_them_in_grace,
    disabling_or_deleting_a_key_ends_its_tokens,
    unknown_organizations_and_keys_are_not_found,
    viewers_read_but_cannot_manage_keys,
    last_used_at_follows_token_requests,
    replays_recorded_fiskaly_key_creation_and_listing,
    live_keys_need_the_live_env,
    keys_of_other_organizations_are_invisible,
    a_manager_manages_the_keys_of_organizations_it_manages,
    every_list_order_is_an_index_scan,
    created_by_user_credits_the_person_behind_an_api_key,
);

/// The by-id path of the bootstrap organization's keys.
fn org_keys(boot: &keyplane_server::service::bootstrap::BootstrapOutput) -> String {
    format!("/api/v0/organizations/{}/api-keys", boot.organization_id)
}

async fn names(app: &TestApp, token: &str, query: &str) -> (Vec<String>, u64) {
    let list = ok(app.get_as(token, &format!("/api/v0/api-keys{query}")).await).await;
    assert_eq!(list["_type"], "API_KEY_LIST");
    let names = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    (names, list["count"].as_u64().unwrap())
}

async fn keys_by_name_live_a_whole_lifecycle(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let created = ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/pos-berlin",
        Some(json!({"kind": "test", "status": "enabled", "metadata": {"store": "Berlin"}})),
    )
    .await)
    .await;
    assert_eq!(created["_type"], "API_KEY");
    assert_eq!(created["_envs"], json!(["TEST"]));
    assert_eq!(created["name"], "pos-berlin");
    assert_eq!(created["kind"], "test");
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["metadata"], json!({"store": "Berlin"}));
    assert_eq!(created["managed_by_organization_id"], "");
    let key = created["key"].as_str().unwrap();
    assert!(
        key.starts_with("test_") && key.ends_with("_pos-berlin"),
        "{key}"
    );
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.len() >= 43);
    assert!(created.get("expires_at").is_none() && created.get("last_used_at").is_none());

    // The new key works, and is never shown with its secret again.
    app.token_pair(key, secret).await;
    let fetched = ok(app.get_as(&token, "/api/v0/api-keys/pos-berlin").await).await;
    assert!(fetched.get("secret").is_none());
    assert_eq!(fetched["_id"], created["_id"]);

    // Names are unique within the organization.
    let again = send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/pos-berlin",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await;
    assert_error(again, 409, "E_CONFLICT").await;

    let patched = ok(send(
        &app,
        Method::PATCH,
        &token,
        "/api/v0/api-keys/pos-berlin",
        Some(json!({"metadata": {"store": "Mitte"}})),
    )
    .await)
    .await;
    assert_eq!(patched["metadata"], json!({"store": "Mitte"}));
    assert_eq!(patched["status"], "enabled");
    let (listed, count) = names(&app, &token, "").await;
    assert_eq!(
        (listed, count),
        (vec!["bootstrap".to_owned(), "pos-berlin".to_owned()], 2)
    );

    let deleted = ok(send(
        &app,
        Method::DELETE,
        &token,
        "/api/v0/api-keys/pos-berlin",
        None,
    )
    .await)
    .await;
    assert_eq!(deleted, json!({"deleted": true}));
    assert_error(
        app.get_as(&token, "/api/v0/api-keys/pos-berlin").await,
        404,
        "E_API_KEY_NOT_FOUND",
    )
    .await;
    assert_eq!(names(&app, &token, "").await.1, 1);

    // Every change is in the audit log, with the acting key.
    let organization = boot.organization_id.parse().unwrap();
    let actions: Vec<String> = app
        .state
        .store()
        .audit_events(organization)
        .await
        .unwrap()
        .iter()
        .map(|e| e.action.clone())
        .collect();
    for action in ["api_key.created", "api_key.updated", "api_key.deleted"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

async fn keys_by_id_take_fiskalys_bodies(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let path = org_keys(&boot);
    let created = ok(send(
        &app,
        Method::POST,
        &token,
        &path,
        Some(json!({"name": "kasse-1", "status": "enabled", "metadata": {}})),
    )
    .await)
    .await;
    assert_eq!(created["kind"], "test", "kind defaults to test");
    let id = created["_id"].as_str().unwrap();
    let one = format!("{path}/{id}");
    assert_eq!(ok(app.get_as(&token, &one).await).await["name"], "kasse-1");
    let live = ok(send(&app, Method::POST, &token, &path, Some(json!({"name": "kasse-live", "status": "disabled", "kind": "live", "managed_by_organization_id": ""}))).await).await;
    assert_eq!(live["_envs"], json!(["LIVE"]));
    assert!(live["key"].as_str().unwrap().starts_with("live_"));
    let patched = ok(send(
        &app,
        Method::PATCH,
        &token,
        &one,
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    assert_eq!(patched["status"], "disabled");
    // The same key by name: one resource, two addresses.
    assert_eq!(
        ok(app.get_as(&token, "/api/v0/api-keys/kasse-1").await).await["status"],
        "disabled"
    );
    let rotated = ok(send(
        &app,
        Method::POST,
        &token,
        &format!("{one}/rotate"),
        Some(json!({"grace_period_seconds": 0})),
    )
    .await)
    .await;
    assert!(rotated["secret"].as_str().is_some());
    let list = ok(app.get_as(&token, &format!("{path}?status=disabled")).await).await;
    assert_eq!(list["count"], 2);
    assert_eq!(
        ok(send(&app, Method::DELETE, &token, &one, None).await).await,
        json!({"deleted": true})
    );
    assert_error(app.get_as(&token, &one).await, 404, "E_API_KEY_NOT_FOUND").await;
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let too_many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    let put_cases = [
        (
            "/api/v0/api-keys/Upper",
            json!({"kind": "test", "status": "enabled"}),
            "name",
        ),
        (
            "/api/v0/api-keys/ab",
            json!({"kind": "test", "status": "enabled"}),
            "name",
        ),
        (
            &*format!("/api/v0/api-keys/{}", "a".repeat(31)),
            json!({"kind": "test", "status": "enabled"}),
            "name",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"status": "enabled"}),
            "kind",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test"}),
            "status",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "prod", "status": "enabled"}),
            "kind",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "on"}),
            "status",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "colour": "red"}),
            "colour",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": too_many}),
            "metadata",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": {"k".repeat(41): "v"}}),
            "metadata",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": {"note": "x".repeat(501)}}),
            "metadata.note",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": {"n": {"deep": 1}}}),
            "metadata.n",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": []}),
            "metadata",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": {"count": 3}}),
            "metadata.count",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "metadata": {"live": false}}),
            "metadata.live",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "expires_at": 1}),
            "expires_at",
        ),
        (
            "/api/v0/api-keys/good-name",
            json!({"kind": "test", "status": "enabled", "expires_at": "soon"}),
            "expires_at",
        ),
    ];
    for (path, body, field) in put_cases {
        let error = assert_error(
            send(&app, Method::PUT, &token, path, Some(body.clone())).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    let post_cases = [
        (json!({"status": "enabled"}), "name"),
        (json!({"name": "ok-name"}), "status"),
        (json!({"name": "NO", "status": "enabled"}), "name"),
        (
            json!({"name": "ok-name", "status": "enabled", "managed_by_organization_id": uuid::Uuid::now_v7()}),
            "managed_by_organization_id",
        ),
        (
            json!({"name": "ok-name", "status": "enabled", "kind": 5}),
            "kind",
        ),
    ];
    for (body, field) in post_cases {
        let error = assert_error(
            send(
                &app,
                Method::POST,
                &token,
                &org_keys(&boot),
                Some(body.clone()),
            )
            .await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    // Malformed JSON, a body that is not JSON, and an oversized one.
    let malformed = app
        .client
        .put(app.url("/api/v0/api-keys/good-name"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"kind\":")
        .send()
        .await
        .unwrap();
    assert_error(malformed, 400, "E_VALIDATION").await;
    let text = app
        .client
        .put(app.url("/api/v0/api-keys/good-name"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("kind=test")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let huge = app
        .client
        .put(app.url("/api/v0/api-keys/good-name"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    // PATCH and rotate: same rules.
    for (body, field) in [
        (json!({"status": "paused"}), "status"),
        (
            json!({"metadata": {"note": "x".repeat(501)}}),
            "metadata.note",
        ),
        (json!({"name": "renamed"}), "name"),
    ] {
        let error = assert_error(
            send(
                &app,
                Method::PATCH,
                &token,
                "/api/v0/api-keys/bootstrap",
                Some(body.clone()),
            )
            .await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    for grace in [json!(-1), json!(604_801), json!("long")] {
        let error = assert_error(
            send(
                &app,
                Method::POST,
                &token,
                "/api/v0/api-keys/bootstrap/rotate",
                Some(json!({"grace_period_seconds": grace})),
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
                .contains("grace_period_seconds"),
            "{error}"
        );
    }

    // Nothing was stored or changed: one key, as bootstrapped, and its secret still works.
    let (listed, count) = names(&app, &token, "").await;
    assert_eq!((listed, count), (vec!["bootstrap".to_owned()], 1));
    let bootstrap = ok(app.get_as(&token, "/api/v0/api-keys/bootstrap").await).await;
    assert_eq!(bootstrap["status"], "enabled");
    assert_eq!(bootstrap["metadata"], json!({}));
    app.token_pair(&boot.api_key, &boot.api_secret).await;
}

async fn lists_order_filter_page_and_count(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    for (name, kind, status) in [
        ("c-live", "live", "enabled"),
        ("a-test", "test", "disabled"),
        ("d-test", "test", "enabled"),
        ("b-live", "live", "disabled"),
    ] {
        ok(send(
            &app,
            Method::PUT,
            &token,
            &format!("/api/v0/api-keys/{name}"),
            Some(json!({"kind": kind, "status": status})),
        )
        .await)
        .await;
    }
    let all = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        names(&app, &token, "").await,
        (
            all(&["a-test", "b-live", "bootstrap", "c-live", "d-test"]),
            5
        )
    );
    assert_eq!(
        names(&app, &token, "?order=desc&limit=2").await,
        (all(&["d-test", "c-live"]), 5)
    );
    assert_eq!(
        names(&app, &token, "?limit=2&offset=2").await,
        (all(&["bootstrap", "c-live"]), 5)
    );
    assert_eq!(
        names(&app, &token, "?order_by=created_at&order=desc&limit=1").await,
        (all(&["b-live"]), 5)
    );
    assert_eq!(
        names(&app, &token, "?order_by=kind&limit=2").await,
        (all(&["b-live", "c-live"]), 5)
    );
    assert_eq!(
        names(&app, &token, "?order_by=status&limit=2").await,
        (all(&["a-test", "b-live"]), 5)
    );
    assert_eq!(
        names(&app, &token, "?kind=live").await,
        (all(&["b-live", "c-live"]), 2)
    );
    assert_eq!(
        names(&app, &token, "?kind=live&kind=test&status=enabled").await,
        (all(&["bootstrap", "c-live", "d-test"]), 3)
    );
    assert_eq!(
        names(&app, &token, "?kind=live,test&status[]=disabled").await,
        (all(&["a-test", "b-live"]), 2)
    );
    assert_eq!(
        names(&app, &token, "?status=disabled&limit=1").await,
        (all(&["a-test"]), 2),
        "count is the total, not the page"
    );
    assert_eq!(names(&app, &token, "?offset=99").await, (Vec::new(), 5));
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-1", "offset"),
        ("?order_by=secret", "order_by"),
        ("?order=up", "order"),
        ("?kind=test,test", "kind"),
        ("?kind=test&kind=test", "kind"),
        ("?status=enabled,paused", "status"),
        ("?limit=1&limit=2", "limit"),
        ("?colour=red", "colour"),
    ] {
        let error = assert_error(
            app.get_as(&token, &format!("/api/v0/api-keys{query}"))
                .await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{query}: {error}"
        );
    }
}

async fn rotation_keeps_the_old_secret_for_the_grace_period_only(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    let created = ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/rotating",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    let key = created["key"].as_str().unwrap();
    let first = created["secret"].as_str().unwrap();
    let rotated = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/api-keys/rotating/rotate",
        Some(json!({"grace_period_seconds": 3600})),
    )
    .await)
    .await;
    let second = rotated["secret"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(rotated["key"], key, "the public key stays");
    app.token_pair(key, first).await;
    app.token_pair(key, second).await;
    // A rotation without grace ends both older secrets at once.
    let third = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/api-keys/rotating/rotate",
        Some(json!({})),
    )
    .await)
    .await;
    for old in [first, second] {
        let login = app
            .post_json("/api/v0/auth", &json!({"api_key": key, "api_secret": old}))
            .await;
        assert_error(login, 401, "E_UNAUTHORIZED").await;
    }
    app.token_pair(key, third["secret"].as_str().unwrap()).await;
    // A grace period that has run out: the stored expiry is in the past.
    let fourth = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/api-keys/rotating/rotate",
        Some(json!({"grace_period_seconds": 60})),
    )
    .await)
    .await;
    // Its grace period run out: the stored expiry put in the past, straight in the database.
    let stored = app.stored_api_key(key).await;
    let past = keyplane_core::time::now_unix() - 1;
    crate::console::run_sql(
        &app,
        &format!(
            "UPDATE api_keys SET previous_secret_expires_at = $1 WHERE id = '{}'",
            stored.id
        ),
        past,
    )
    .await;
    app.state.subjects().forget_key(&stored).await;
    let expired = app
        .post_json(
            "/api/v0/auth",
            &json!({"api_key": key, "api_secret": third["secret"]}),
        )
        .await;
    assert_error(expired, 401, "E_UNAUTHORIZED").await;
    app.token_pair(key, fourth["secret"].as_str().unwrap())
        .await;
}

async fn rotation_ends_the_refresh_tokens_of_older_secrets(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    let created = ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/leaky",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    let key = created["key"].as_str().unwrap();
    let leaked = created["secret"].as_str().unwrap();
    // Someone holding the leaked secret got a refresh token before the rotation...
    let thief = app.token_pair(key, leaked).await;
    let with_grace = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/api-keys/leaky/rotate",
        Some(json!({"grace_period_seconds": 600})),
    )
    .await)
    .await;
    let now = keyplane_core::time::now_unix();
    // ...which, like anything obtained with the old secret, ends with the grace period, however
    // often it is refreshed.
    let refreshed = ok(app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": thief["refresh_token"]}),
        )
        .await)
    .await;
    let ends = refreshed["refresh_token_expires_at"].as_i64().unwrap();
    assert!(ends <= now + 600 + 1 && ends >= now + 598, "{refreshed}");
    let during_grace = app.token_pair(key, leaked).await;
    assert!(during_grace["refresh_token_expires_at"].as_i64().unwrap() <= now + 601);
    // The new secret's tokens live the full lifetime.
    let owner = app
        .token_pair(key, with_grace["secret"].as_str().unwrap())
        .await;
    assert!(owner["refresh_token_expires_at"].as_i64().unwrap() >= now + 86_000);
    // A rotation without grace ends them at once; the owner's new login is unaffected.
    let fresh = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/api-keys/leaky/rotate",
        Some(json!({"grace_period_seconds": 0})),
    )
    .await)
    .await;
    for pair in [&refreshed, &during_grace, &owner] {
        let refresh = app
            .post_json(
                "/api/v0/auth",
                &json!({"refresh_token": pair["refresh_token"]}),
            )
            .await;
        assert_error(refresh, 401, "E_UNAUTHORIZED").await;
    }
    let after = app.token_pair(key, fresh["secret"].as_str().unwrap()).await;
    ok(app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": after["refresh_token"]}),
        )
        .await)
    .await;
}

async fn disabling_or_deleting_a_key_ends_its_tokens(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    let created = ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/short-lived",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    let pair = app
        .token_pair(
            created["key"].as_str().unwrap(),
            created["secret"].as_str().unwrap(),
        )
        .await;
    let its_token = pair["access_token"].as_str().unwrap();
    assert_eq!(
        app.get_as(its_token, "/api/v0/api-keys").await.status(),
        200
    );
    ok(send(
        &app,
        Method::PATCH,
        &token,
        "/api/v0/api-keys/short-lived",
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    assert_error(
        app.get_as(its_token, "/api/v0/api-keys").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let refresh = app
        .post_json(
            "/api/v0/auth",
            &json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(refresh.status(), 401);
    ok(send(
        &app,
        Method::PATCH,
        &token,
        "/api/v0/api-keys/short-lived",
        Some(json!({"status": "enabled"})),
    )
    .await)
    .await;
    let again = app
        .access_token(
            created["key"].as_str().unwrap(),
            created["secret"].as_str().unwrap(),
        )
        .await;
    assert_eq!(app.get_as(&again, "/api/v0/api-keys").await.status(), 200);
    ok(send(
        &app,
        Method::DELETE,
        &token,
        "/api/v0/api-keys/short-lived",
        None,
    )
    .await)
    .await;
    assert_error(
        app.get_as(&again, "/api/v0/api-keys").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    // A key may delete itself; its own token then stops too.
    let own = ok(send(
        &app,
        Method::DELETE,
        &token,
        "/api/v0/api-keys/bootstrap",
        None,
    )
    .await)
    .await;
    assert_eq!(own, json!({"deleted": true}));
    assert_error(
        app.get_as(&token, "/api/v0/api-keys").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
}

async fn unknown_organizations_and_keys_are_not_found(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let key_id = app.stored_api_key(&boot.api_key).await.id.to_string();
    let stranger = uuid::Uuid::now_v7().to_string();
    for path in [
        format!("/api/v0/organizations/{stranger}/api-keys"),
        format!("/api/v0/organizations/{stranger}/api-keys/{key_id}"),
        "/api/v0/organizations/not-a-uuid/api-keys".to_owned(),
    ] {
        for method in [Method::GET, Method::PATCH, Method::DELETE, Method::POST] {
            let body = Some(if method == Method::POST {
                json!({"status": "disabled", "name": "x-y-z"})
            } else {
                json!({"status": "disabled"})
            });
            let response = send(&app, method.clone(), &token, &path, body).await;
            if response.status() == 405 {
                continue;
            }
            let error = assert_error(response, 404, "E_ORGANIZATION_NOT_FOUND").await;
            assert!(error.get("data").is_none() && error.get("key").is_none());
        }
    }
    for path in [
        format!("{}/{stranger}", org_keys(&boot)),
        format!("{}/not-a-uuid", org_keys(&boot)),
        "/api/v0/api-keys/no-such-key".to_owned(),
    ] {
        assert_error(app.get_as(&token, &path).await, 404, "E_API_KEY_NOT_FOUND").await;
        let patch = send(
            &app,
            Method::PATCH,
            &token,
            &path,
            Some(json!({"status": "disabled"})),
        )
        .await;
        assert_error(patch, 404, "E_API_KEY_NOT_FOUND").await;
    }
    // Without a token, nothing at all.
    let anonymous = app.get(&org_keys(&boot)).await;
    assert_error(anonymous, 401, "E_UNAUTHORIZED").await;
    // Nothing changed.
    assert_eq!(
        ok(app.get_as(&token, "/api/v0/api-keys/bootstrap").await).await["status"],
        "enabled"
    );
}

async fn viewers_read_but_cannot_manage_keys(backend: Backend) {
    let Fixture { app, boot, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    app.activate_owner(&boot, "a long passphrase").await;
    app.set_role_in_store(
        boot.organization_id.parse().unwrap(),
        boot.user_id.parse().unwrap(),
        keyplane_core::values::Role::Viewer,
    )
    .await;
    let viewer = &app
        .person_token("owner@example.com", "a long passphrase")
        .await;
    assert_eq!(names(&app, viewer, "").await.1, 1);
    assert_eq!(
        ok(app.get_as(viewer, "/api/v0/api-keys/bootstrap").await).await["name"],
        "bootstrap"
    );
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v0/api-keys/new-key",
            Some(json!({"kind": "test", "status": "enabled"})),
        ),
        (
            Method::PATCH,
            "/api/v0/api-keys/bootstrap",
            Some(json!({"status": "disabled"})),
        ),
        (
            Method::POST,
            "/api/v0/api-keys/bootstrap/rotate",
            Some(json!({})),
        ),
        (Method::DELETE, "/api/v0/api-keys/bootstrap", None),
    ] {
        assert_error(
            send(&app, method, viewer, path, body).await,
            403,
            "E_FORBIDDEN",
        )
        .await;
    }
    assert_eq!(names(&app, viewer, "").await.1, 1);
}

/// `last_used_at` is noted in memory when a key obtains a token and written by a background
/// flush (every 5 s, README, API keys): a token request alone writes nothing; the flush writes
/// the time of the latest.
async fn last_used_at_follows_token_requests(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    let create = |name: String| {
        let (app, token) = (&app, &token);
        async move {
            ok(send(
                app,
                Method::PUT,
                token,
                &format!("/api/v0/api-keys/{name}"),
                Some(json!({"kind": "test", "status": "enabled"})),
            )
            .await)
            .await
        }
    };
    // The periodic flush may run at any moment. A round counts only if it did not run during
    // it, which a sentinel shows: a use noted for the sentinel before the token request is still
    // unwritten after the reads (a flush writes everything noted).
    let mut round = 0;
    let used = loop {
        assert!(round < 5, "a background flush ran during every round");
        let used = create(format!("used-{round}")).await;
        let sentinel = create(format!("sentinel-{round}")).await;
        let sentinel_key = sentinel["key"].as_str().unwrap();
        let sentinel_id = app.stored_api_key(sentinel_key).await.id;
        app.state
            .usage()
            .record(sentinel_id, keyplane_core::time::now_unix());
        app.token_pair(
            used["key"].as_str().unwrap(),
            used["secret"].as_str().unwrap(),
        )
        .await;
        let path = format!("/api/v0/api-keys/used-{round}");
        let read = ok(app.get_as(&token, &path).await).await;
        let stored = app.stored_api_key(used["key"].as_str().unwrap()).await;
        if app
            .stored_api_key(sentinel_key)
            .await
            .last_used_at
            .is_some()
        {
            round += 1;
            continue;
        }
        // Not yet written: usage is coalesced in memory first.
        assert!(read.get("last_used_at").is_none(), "{read}");
        assert_eq!(stored.last_used_at, None, "written at the token request");
        break path;
    };
    app.state.flush_background_writes().await;
    let now = keyplane_core::time::now_unix();
    // Written by the flush: this key's token request, and the bootstrap key's from the setup.
    for path in [used.as_str(), "/api/v0/api-keys/bootstrap"] {
        let after = ok(app.get_as(&token, path).await).await;
        let at = after["last_used_at"]
            .as_i64()
            .unwrap_or_else(|| panic!("{path}: written after the flush: {after}"));
        assert!((at - now).abs() < 60, "{path}: {after}");
    }
}

/// `created_by_user` is always present: the person who created the key or organization, or,
/// when an API key did, the person credited with that key; `""` when nobody is.
async fn created_by_user_credits_the_person_behind_an_api_key(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    // The bootstrap key is credited to the first owner, and so is the first organization.
    let root = ok(app
        .get_as(
            &token,
            &format!("/api/v0/organizations/{}", boot.organization_id),
        )
        .await)
    .await;
    assert_eq!(root["created_by_user"], boot.user_id.as_str());
    // What that key creates is credited to the owner too, and the credit passes on.
    let key = ok(send(
        &app,
        reqwest::Method::PUT,
        &token,
        "/api/v0/api-keys/made-by-key",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    assert_eq!(key["created_by_user"], boot.user_id.as_str());
    let second = app
        .access_token(
            key["key"].as_str().unwrap(),
            key["secret"].as_str().unwrap(),
        )
        .await;
    let venue = ok(send(
        &app,
        reqwest::Method::POST,
        &second,
        "/api/v0/organizations",
        Some(crate::helpers::venue("Made By Key")),
    )
    .await)
    .await;
    assert_eq!(venue["created_by_user"], boot.user_id.as_str());
    // A key nobody is credited with (made on the server's host) credits nobody, visibly.
    let stranger = app.another_organization("Stranger").create().await;
    let keys = ok(app
        .get_as(&stranger.token().await, "/api/v0/api-keys")
        .await)
    .await;
    assert_eq!(keys["data"][0]["created_by_user"], "");
    let made = ok(send(
        &app,
        reqwest::Method::PUT,
        &stranger.token().await,
        "/api/v0/api-keys/made-by-stranger",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    assert_eq!(made["created_by_user"], "");
}

/// The recorded fiskaly cassettes, replayed: request bodies as recorded, responses compared by
/// their keys and `_type`.
async fn replays_recorded_fiskaly_key_creation_and_listing(backend: Backend) {
    let app = TestApp::start(&backend).await;
    let boot = app.bootstrap().await;
    app.activate_owner(&boot, "a long passphrase").await;
    // fiskaly's dashboard keys are created by people: `created_by_user` is set.
    let token = &app
        .person_token("owner@example.com", "a long passphrase")
        .await;

    let (request, recorded) = interaction("management-org_api_keys_create_ok.yml", 1);
    // As recorded: a key created in an organization managed by the caller's.
    let managed = app
        .another_organization("Venue")
        .managed_by(boot.organization_id.parse().unwrap())
        .create()
        .await
        .organization;
    let body = request.replace(
        "<RSPEC_FISKALY_MANAGED_BY_ORGANIZATION_ID>",
        &boot.organization_id,
    );
    let response = app
        .client
        .post(app.url(&format!("/api/v0/organizations/{}/api-keys", managed.id)))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let created = ok(response).await;
    assert_has_keys(&created, &recorded);
    assert_eq!(created["_type"], recorded["_type"]);
    assert_eq!(
        created["managed_by_organization_id"],
        boot.organization_id.as_str()
    );
    assert_eq!(created["created_by_user"], boot.user_id.as_str());
    ok(send(
        &app,
        reqwest::Method::POST,
        token,
        &org_keys(&boot),
        Some(json!({"name": "second", "status": "enabled"})),
    )
    .await)
    .await;

    let (request, recorded) = interaction("kassensichv-api_key_list_ok.yml", 1);
    assert_eq!(request, "{}", "fiskaly sends {{}} with GET");
    let response = app
        .client
        .get(app.url(&format!("{}?status=enabled", org_keys(&boot))))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .unwrap();
    let list = ok(response).await;
    assert_eq!(list["_type"], recorded["_type"]);
    assert_eq!(list["count"], 2);
    for item in list["data"].as_array().unwrap() {
        assert_has_keys(item, &recorded["data"][0]);
        assert_eq!(item["_type"], recorded["data"][0]["_type"]);
    }
}

/// Request body and parsed response body of the `index`th interaction of a cassette.
pub fn interaction(cassette: &str, index: usize) -> (String, Value) {
    let path = format!(
        "{}/tests/fixtures/fiskaly-recorded/{cassette}",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let item = &yaml["http_interactions"][index];
    let request = item["request"]["body"]["string"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = item["response"]["body"]["string"].as_str().unwrap();
    (request, serde_json::from_str(response).unwrap())
}

/// Every key of the recorded resource is in ours (ours may add more, such as a key's `kind`).
pub fn assert_has_keys(ours: &Value, recorded: &Value) {
    for key in recorded.as_object().unwrap().keys() {
        assert!(ours.get(key).is_some(), "missing {key:?} in {ours}");
    }
}

async fn live_keys_need_the_live_env(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let store = app.state.store();
    let mut organization = store
        .organization(boot.organization_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    organization.envs = vec![keyplane_core::values::Env::Test];
    assert!(
        store
            .update_organization(&organization, None, &[])
            .await
            .unwrap()
    );
    let put = send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/live-one",
        Some(json!({"kind": "live", "status": "enabled"})),
    )
    .await;
    assert_error(put, 403, "E_ENV_NOT_ENABLED").await;
    let post = send(
        &app,
        Method::POST,
        &token,
        &org_keys(&boot),
        Some(json!({"name": "live-two", "kind": "live", "status": "enabled"})),
    )
    .await;
    assert_error(post, 403, "E_ENV_NOT_ENABLED").await;
    assert_eq!(names(&app, &token, "").await.1, 1, "nothing stored");
    ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/test-one",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
}

async fn keys_of_other_organizations_are_invisible(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let other = app.another_organization("Unrelated").create().await;
    let stranger = other.token().await;
    let key_id = app.stored_api_key(&boot.api_key).await.id.to_string();
    let ours = org_keys(&boot);
    let one = format!("{ours}/{key_id}");
    for (method, path, body) in [
        (Method::GET, ours.clone(), None),
        (
            Method::POST,
            ours.clone(),
            Some(json!({"name": "intruder", "status": "enabled"})),
        ),
        (Method::GET, one.clone(), None),
        (
            Method::PATCH,
            one.clone(),
            Some(json!({"status": "disabled"})),
        ),
        (Method::DELETE, one.clone(), None),
        (
            Method::POST,
            format!("{one}/rotate"),
            Some(json!({"grace_period_seconds": 0})),
        ),
        (
            Method::GET,
            format!("/api/v0/organizations/{}", boot.organization_id),
            None,
        ),
    ] {
        let response = send(&app, method.clone(), &stranger, &path, body).await;
        let text = response.text().await.unwrap();
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["status_code"], 404, "{method} {path}: {text}");
        assert!(
            !text.contains(&boot.api_key) && !text.contains("bootstrap"),
            "{text}"
        );
    }
    // By name, each caller only ever sees its own organization's keys.
    assert_error(
        app.get_as(&stranger, "/api/v0/api-keys/bootstrap").await,
        404,
        "E_API_KEY_NOT_FOUND",
    )
    .await;
    assert_eq!(
        names(&app, &stranger, "").await,
        (vec!["main".to_owned()], 1)
    );
    // And the other way round.
    let theirs = format!("/api/v0/organizations/{}/api-keys", other.organization.id);
    assert_error(
        app.get_as(&token, &theirs).await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    // Nothing changed.
    let bootstrap = ok(app.get_as(&token, "/api/v0/api-keys/bootstrap").await).await;
    assert_eq!(bootstrap["status"], "enabled");
    app.token_pair(&boot.api_key, &boot.api_secret).await;
    assert_eq!(names(&app, &token, "").await.1, 1);
}

async fn a_manager_manages_the_keys_of_organizations_it_manages(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    use reqwest::Method;
    let root = boot.organization_id.parse().unwrap();
    let child = app
        .another_organization("Child")
        .managed_by(root)
        .create()
        .await;
    let child_token = child.token().await;
    let child = child.organization;
    let grandchild = app
        .another_organization("Grandchild")
        .managed_by(child.id)
        .create()
        .await
        .organization;
    for organization in [&child, &grandchild] {
        let path = format!("/api/v0/organizations/{}/api-keys", organization.id);
        let list = ok(app.get_as(&token, &path).await).await;
        assert_eq!(list["count"], 1);
        let key = &list["data"][0];
        assert_eq!(key["_type"], "MANAGED_API_KEY");
        assert_eq!(
            key["managed_by_organization_id"],
            organization.managed_by.unwrap().to_string().as_str()
        );
        let created = ok(send(
            &app,
            Method::POST,
            &token,
            &path,
            Some(json!({"name": "from-above", "status": "enabled"})),
        )
        .await)
        .await;
        assert_eq!(created["_type"], "MANAGED_API_KEY");
        let one = format!("{path}/{}", created["_id"].as_str().unwrap());
        ok(send(
            &app,
            Method::PATCH,
            &token,
            &one,
            Some(json!({"status": "disabled"})),
        )
        .await)
        .await;
    }
    // The child sees its own child, but not its manager.
    let below = format!("/api/v0/organizations/{}/api-keys", grandchild.id);
    assert_eq!(ok(app.get_as(&child_token, &below).await).await["count"], 2);
    assert_error(
        app.get_as(&child_token, &org_keys(&boot)).await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
}

/// Every sort order and filter reads its page from an index, at any depth, with the statistics
/// a real table has (20,000 keys loaded and analysed, no planner switches): the offset is
/// skipped in an index alone (no table rows), the page is an index range, and nothing is sorted.
/// (`count` comes from counters, not a scan.)
async fn every_list_order_is_an_index_scan(backend: Backend) {
    use keyplane_core::api_keys::{ApiKeyOrder, ApiKeyQuery};
    use keyplane_core::values::{ApiKeyKind, ApiKeyStatus};
    let Fixture { app, boot, .. } = Fixture::start(&backend).await;
    let organization = boot.organization_id.clone();
    load_keys(&app, &backend, &organization, 20_000).await;
    let mut queries = Vec::new();
    for offset in [0, 1_000, 15_000] {
        for (_, order_by) in ApiKeyOrder::ALL {
            for descending in [false, true] {
                queries.push(ApiKeyQuery {
                    order_by,
                    descending,
                    limit: 100,
                    offset,
                    kinds: vec![],
                    statuses: vec![],
                    after: None,
                });
            }
        }
        queries.push(ApiKeyQuery {
            order_by: ApiKeyOrder::Kind,
            descending: false,
            limit: 100,
            offset,
            kinds: vec![ApiKeyKind::Live],
            statuses: vec![],
            after: None,
        });
        queries.push(ApiKeyQuery {
            order_by: ApiKeyOrder::Status,
            descending: true,
            limit: 100,
            offset,
            kinds: vec![],
            statuses: vec![ApiKeyStatus::Disabled],
            after: None,
        });
    }
    // After a cursor, from the start, the middle and near the end: the same queries with the
    // position of a key instead of an offset.
    let cursor_queries: Vec<ApiKeyQuery> = queries
        .iter()
        .filter(|query| query.offset == 0)
        .flat_map(|query| {
            [1, 10_000, 19_900].map(|n| ApiKeyQuery {
                offset: 0,
                after: Some(position_of_loaded_key(query, n)),
                ..query.clone()
            })
        })
        .collect();
    queries.extend(cursor_queries);
    for query in &queries {
        let sql = keyplane_store::list_api_keys_sql(query);
        let plan = explain(&app, &backend, &organization, &sql, query).await;
        match backend {
            Backend::Sqlite => {
                for (_, _, detail) in &plan {
                    assert!(
                        !detail.contains("TEMP B-TREE"),
                        "{query:?} sorts:\n{plan:#?}"
                    );
                    assert!(
                        !detail.starts_with("SCAN api_keys") || detail.contains("INDEX"),
                        "{query:?} scans the table:\n{plan:#?}"
                    );
                }
                assert!(
                    query.after.is_some()
                        || plan.iter().any(|(_, _, d)| d.contains("COVERING INDEX")),
                    "{query:?} reads the table to skip the offset:\n{plan:#?}"
                );
                if query.after.is_some() {
                    // The position bounds the index range: a search, not a scan from the start.
                    assert!(
                        plan.iter().any(|(_, _, d)| d.starts_with("SEARCH api_keys")
                            && (d.contains(">") || d.contains("<"))),
                        "{query:?} does not start the range at the position:\n{plan:#?}"
                    );
                }
            }
            Backend::Postgres(_) => {
                let lines: Vec<&str> = plan.iter().map(|(_, _, line)| line.as_str()).collect();
                let text = lines.join("\n");
                assert!(
                    !text.contains("Seq Scan"),
                    "{query:?} scans the table:\n{text}"
                );
                assert!(
                    query.after.is_some() || text.contains("Index Only Scan"),
                    "{query:?} reads the table to skip the offset:\n{text}"
                );
                if query.after.is_some() {
                    // The position bounds the index range (an index condition, not a filter).
                    assert!(
                        lines.iter().any(|line| line.contains("Index Cond")
                            && (line.contains(" > ") || line.contains(" < "))),
                        "{query:?} does not start the range at the position:\n{text}"
                    );
                }
                assert!(!text.contains("Sort"), "{query:?} sorts:\n{text}");
            }
        }
    }
}

/// The position of the `n`th key of [`load_keys`] in the list of `query` (its sort key, as the
/// store's `sort_key` picks the columns).
fn position_of_loaded_key(
    query: &keyplane_core::api_keys::ApiKeyQuery,
    n: u32,
) -> keyplane_core::paging::Position {
    use keyplane_core::api_keys::ApiKeyOrder;
    use keyplane_core::paging::{Position, SortValue};
    let columns: &[&str] = match query.order_by {
        ApiKeyOrder::Kind if query.kinds.len() != 1 => &["kind", "name"],
        ApiKeyOrder::Status if query.statuses.len() != 1 => &["status", "name"],
        ApiKeyOrder::CreatedAt => &["created_at", "id"],
        _ => &["name"],
    };
    let kind = if n % 3 == 0 { "LIVE" } else { "TEST" };
    let status = if n % 4 == 0 { "disabled" } else { "enabled" };
    Position(
        columns
            .iter()
            .map(|column| match *column {
                "kind" => SortValue::Text(kind.into()),
                "status" => SortValue::Text(status.into()),
                "created_at" => SortValue::Int(1_700_000_000_000 + i64::from(n)),
                "id" => SortValue::Text(format!("load-{n}")),
                _ => SortValue::Text(format!("key-{n}")),
            })
            .collect(),
    )
}

/// `count` keys of every kind and status straight into the table, then the statistics a
/// production table would have by then (PostgreSQL's autovacuum analyses and vacuums after a
/// load this size).
async fn load_keys(app: &TestApp, backend: &Backend, organization: &str, count: u32) {
    let insert = |series: &str| {
        format!(
            "INSERT INTO api_keys (id, organization_id, name, kind, status, public_key, \
             secret_hash, metadata, created_at) \
             SELECT 'load-' || n, '{organization}', 'key-' || n, \
             CASE WHEN n % 3 = 0 THEN 'LIVE' ELSE 'TEST' END, \
             CASE WHEN n % 4 = 0 THEN 'disabled' ELSE 'enabled' END, \
             'public-' || n, X'00', '{{}}', 1700000000000 + n FROM {series}"
        )
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let series = format!(
                "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g \
                 WHERE n < {count}) SELECT n FROM g)"
            );
            sqlx::query(&insert(&series)).execute(&pool).await.unwrap();
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let series = format!("generate_series(1, {count}) AS g(n)");
            sqlx::query(&insert(&series).replace("X'00'", "'\\x00'::bytea"))
                .execute(&pool)
                .await
                .unwrap();
            // VACUUM marks a page all-visible only once no transaction open in the database
            // (another test's, running alongside) may still not see its rows. Until then an
            // index-only scan looks dearer than it is and the plan is not the one the table
            // gets once autovacuum has caught up: vacuum until every page is marked.
            // (INDEX_CLEANUP ON: otherwise the page with the one dead row version, the
            // bootstrap key's before its usage was written, stays unmarked.)
            let started = std::time::Instant::now();
            loop {
                sqlx::query("VACUUM (ANALYZE, INDEX_CLEANUP ON) api_keys")
                    .execute(&pool)
                    .await
                    .unwrap();
                let (pages, visible): (i32, i32) = sqlx::query_as(
                    "SELECT relpages, relallvisible FROM pg_class \
                     WHERE oid = 'api_keys'::regclass",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                if visible >= pages {
                    break;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "after a minute VACUUM had marked {visible} of {pages} pages all-visible: \
                     is a transaction held open in the test database?"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            pool.close().await;
        }
    }
}

/// The plan of one list query for `organization`: (id, parent, detail) rows on SQLite, one row
/// per line of `EXPLAIN` on PostgreSQL.
async fn explain(
    app: &TestApp,
    backend: &Backend,
    organization: &str,
    sql: &str,
    query: &keyplane_core::api_keys::ApiKeyQuery,
) -> Vec<(i64, i64, String)> {
    let binds = |sql: &str| {
        let mut values = vec![format!("'{organization}'")];
        values.extend(
            query
                .kinds
                .iter()
                .map(|kind| format!("'{}'", kind.as_str())),
        );
        values.extend(query.statuses.iter().map(|s| format!("'{}'", s.as_str())));
        if let Some(after) = &query.after {
            use keyplane_core::paging::SortValue;
            values.extend(after.0.iter().map(|value| match value {
                SortValue::Null => "NULL".to_owned(),
                SortValue::Int(int) => int.to_string(),
                SortValue::Text(text) => format!("'{text}'"),
            }));
            values.push(query.limit.to_string());
        } else {
            values.push(query.limit.to_string());
            values.push(query.offset.to_string());
        }
        // Highest first, so that `$1` does not match the start of `$10`.
        let mut text = sql.to_owned();
        for (n, value) in values.iter().enumerate().rev() {
            text = text.replace(&format!("${}", n + 1), value);
        }
        text
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", binds(sql)))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            rows.into_iter().map(|r| (r.0, r.1, r.3)).collect()
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {}", binds(sql)))
                .fetch_all(&mut connection)
                .await
                .unwrap();
            rows.into_iter().map(|r| (0, 0, r.0)).collect()
        }
    }
}

async fn concurrent_changes_keep_each_other_and_the_count(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    use reqwest::Method;
    for round in 0..5 {
        let name = format!("racy-{round}");
        let path = format!("/api/v0/api-keys/{name}");
        ok(send(
            &app,
            Method::PUT,
            &token,
            &path,
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await)
        .await;
        // A disable and a rotation at once: neither may undo the other.
        let rotate = format!("{path}/rotate");
        let (disabled, rotated) = tokio::join!(
            send(
                &app,
                Method::PATCH,
                &token,
                &path,
                Some(json!({"status": "disabled"}))
            ),
            send(
                &app,
                Method::POST,
                &token,
                &rotate,
                Some(json!({"grace_period_seconds": 0}))
            ),
        );
        ok(disabled).await;
        let secret = ok(rotated).await["secret"].as_str().unwrap().to_owned();
        let current = ok(app.get_as(&token, &path).await).await;
        let stored = app.stored_api_key(current["key"].as_str().unwrap()).await;
        assert_eq!(
            stored.status,
            keyplane_core::values::ApiKeyStatus::Disabled,
            "round {round}"
        );
        assert!(
            app.state.secrets().verify_credential(
                keyplane_core::secrets::CredentialKind::ApiSecret,
                &secret,
                &stored.secret_hash
            ),
            "round {round}: the rotation was undone"
        );
        // Two deletes at once: one succeeds, one finds nothing, and the count stays right.
        let (first, second) = tokio::join!(
            send(&app, Method::DELETE, &token, &path, None),
            send(&app, Method::DELETE, &token, &path, None),
        );
        let mut statuses = [first.status().as_u16(), second.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 404], "round {round}");
    }
    let list = ok(app.get_as(&token, "/api/v0/api-keys").await).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let disabled = ok(app.get_as(&token, "/api/v0/api-keys?status=disabled").await).await;
    assert_eq!(disabled["count"], 0);
}

/// Rotations at once each keep, for the grace period, the secret they replace as the key holds it
/// when they write: the last secret handed out is current and the one handed out before it still
/// works (keeping the secret read before the write would put an older one there and lose the
/// one just handed out).
async fn concurrent_rotations_each_keep_the_secret_before_them_in_grace(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let path = "/api/v0/api-keys/bootstrap/rotate";
    let body = json!({"grace_period_seconds": 600});
    let rotate = || {
        send(
            &app,
            reqwest::Method::POST,
            &token,
            path,
            Some(body.clone()),
        )
    };
    let answers = tokio::join!(rotate(), rotate(), rotate(), rotate(), rotate(), rotate());
    let mut secrets = Vec::new();
    for answer in [
        answers.0, answers.1, answers.2, answers.3, answers.4, answers.5,
    ] {
        let rotated = ok(answer).await;
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    }
    let mut working = 0;
    for secret in &secrets {
        let response = app
            .post_json(
                "/api/v0/auth",
                &json!({"api_key": boot.api_key, "api_secret": secret}),
            )
            .await;
        if response.status() == 200 {
            working += 1;
        }
    }
    assert_eq!(
        working, 2,
        "the current secret and the one handed out before it"
    );
    assert_eq!(
        app.stored_api_key(&boot.api_key).await.secret_generation,
        6,
        "six rotations"
    );
}
