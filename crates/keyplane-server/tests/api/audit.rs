//! The audit log endpoint: shape, order, filters, paging, visibility, and no secrets.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Fixture, TestApp, assert_error, ok};
use crate::on_both_stores;

on_both_stores!(
    the_audit_log_records_every_change_and_outcome_newest_first,
    audit_filters_and_paging,
    the_audit_log_is_read_only_and_private,
);

fn actions(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// A bootstrapped app where a wrong secret was tried, a key was created and then disabled.
struct Busy {
    fixture: Fixture,
    /// The created key, as its creation answered (with its secret).
    created: Value,
}

async fn busy_app(backend: &Backend) -> Busy {
    // The failure first, then the login: the order the first test reads back.
    let app = TestApp::start(backend).await;
    let boot = app.bootstrap().await;
    let wrong = app
        .post_json(
            "/api/v0/auth",
            &json!({"api_key": boot.api_key, "api_secret": "not-the-secret"}),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    let created: Value = app
        .client
        .put(app.url("/api/v0/api-keys/audited"))
        .bearer_auth(&token)
        .json(&json!({"kind": "test", "status": "enabled"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let disabled = app
        .client
        .patch(app.url("/api/v0/api-keys/audited"))
        .bearer_auth(&token)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    app.state.flush_background_writes().await;
    Busy {
        fixture: Fixture { app, boot, token },
        created,
    }
}

async fn the_audit_log_records_every_change_and_outcome_newest_first(backend: Backend) {
    let Busy {
        fixture: Fixture { app, boot, token },
        created,
    } = busy_app(&backend).await;
    let path = format!(
        "/api/v0/organizations/{}/audit-events",
        boot.organization_id
    );
    let list = ok(app.get_as(&token, &path).await).await;
    assert_eq!(list["_type"], "AUDIT_EVENT_LIST");
    // Newest first, down to what bootstrap recorded.
    let all = actions(&list);
    assert_eq!(
        &all[..4],
        [
            "api_key.disabled",
            "api_key.created",
            "auth.succeeded",
            "auth.failed"
        ]
    );
    let mut bootstrap = all[4..].to_vec();
    bootstrap.sort();
    assert_eq!(
        bootstrap,
        ["api_key.created", "organization.created", "user.invited"]
    );
    assert_eq!(
        list["count"].as_u64().unwrap() as usize,
        list["data"].as_array().unwrap().len()
    );
    let key_id = app.stored_api_key(&boot.api_key).await.id.to_string();
    let newest = &list["data"][0];
    assert_eq!(newest["_type"], "AUDIT_EVENT");
    assert_eq!(newest["_envs"], json!(["TEST", "LIVE"]));
    assert_eq!(newest["actor"], json!({"type": "api_key", "id": key_id}));
    assert_eq!(
        newest["target"],
        json!({"type": "api_key", "id": created["_id"]})
    );
    assert_eq!(newest["organization_id"], boot.organization_id.as_str());
    assert_eq!(newest["ip"], "127.0.0.1");
    assert!(
        newest["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32)
    );
    // No secret or token anywhere in the log.
    let text = list.to_string();
    for secret in [
        boot.api_secret.as_str(),
        created["secret"].as_str().unwrap(),
        token.as_str(),
        "not-the-secret",
    ] {
        assert!(!text.contains(secret), "a credential is in the audit log");
    }
}

async fn audit_filters_and_paging(backend: Backend) {
    let Fixture { app, boot, token } = busy_app(&backend).await.fixture;
    let path = format!(
        "/api/v0/organizations/{}/audit-events",
        boot.organization_id
    );
    let get = |query: &str| {
        let url = format!("{path}{query}");
        let (app, token) = (&app, &token);
        async move { app.get_as(token, &url).await }
    };
    let all = ok(get("").await).await;
    let total = all["count"].as_u64().unwrap();
    let failed = ok(get("?action=auth.failed").await).await;
    assert_eq!(
        (actions(&failed), failed["count"].as_u64()),
        (vec!["auth.failed".to_owned()], Some(1))
    );
    let two = ok(get("?action=auth.failed,auth.succeeded").await).await;
    assert_eq!(actions(&two), ["auth.succeeded", "auth.failed"]);
    let repeated = ok(get("?action=auth.failed&action=auth.succeeded").await).await;
    assert_eq!(actions(&repeated), actions(&two));
    let key_id = app.stored_api_key(&boot.api_key).await.id.to_string();
    let by_key = ok(get(&format!("?actor_id={key_id}")).await).await;
    assert!(
        by_key["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"]["id"] == key_id.as_str())
    );
    assert!(by_key["count"].as_u64().unwrap() >= 4);
    let page = ok(get("?limit=2&offset=1").await).await;
    assert_eq!(actions(&page), actions(&all)[1..3]);
    assert_eq!(page["count"].as_u64(), Some(total), "count is the total");
    let oldest = ok(get("?order=asc&limit=1").await).await;
    assert_eq!(actions(&oldest), [actions(&all).last().unwrap().clone()]);
    let now = keyplane_core::time::now_unix();
    assert_eq!(
        ok(get(&format!("?since={}", now + 10)).await).await["count"],
        0
    );
    assert_eq!(
        ok(get(&format!("?until={}", now + 10)).await).await["count"].as_u64(),
        Some(total)
    );
    assert_eq!(
        ok(get(&format!("?since=0&until={}", now - 100_000)).await).await["count"],
        0
    );
    for (query, field) in [
        ("?since=-1", "since"),
        ("?until=soon", "until"),
        ("?since=20&until=10", "since"),
        ("?action=a,a", "action"),
        (&*format!("?action={}", "x".repeat(65)), "action"),
        ("?limit=101", "limit"),
        ("?actor_id=a&actor_id=b", "actor_id"),
        ("?secret=1", "secret"),
    ] {
        let error = assert_error(get(query).await, 400, "E_VALIDATION").await;
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{query}: {error}"
        );
    }
}

async fn the_audit_log_is_read_only_and_private(backend: Backend) {
    let Fixture { app, boot, token } = busy_app(&backend).await.fixture;
    let path = format!(
        "/api/v0/organizations/{}/audit-events",
        boot.organization_id
    );
    let before = ok(app.get_as(&token, &path).await).await["count"].clone();
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let response = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    // Another organization sees nothing of ours; a managing one sees its children's.
    let other = app.another_organization("Unrelated").create().await;
    let stranger = other.token().await;
    let response = app.get_as(&stranger, &path).await;
    let body = assert_error(response, 404, "E_ORGANIZATION_NOT_FOUND").await;
    assert!(body.get("data").is_none());
    let theirs = format!(
        "/api/v0/organizations/{}/audit-events",
        other.organization.id
    );
    assert_error(
        app.get_as(&token, &theirs).await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    let child = app
        .another_organization("Child")
        .managed_by(boot.organization_id.parse().unwrap())
        .create()
        .await;
    // The child's one event: its key's login.
    child.token().await;
    let child_path = format!(
        "/api/v0/organizations/{}/audit-events",
        child.organization.id
    );
    let child_log = ok(app.get_as(&token, &child_path).await).await;
    assert_eq!(actions(&child_log), ["auth.succeeded"]);
    assert_eq!(
        ok(app.get_as(&token, &path).await).await["count"],
        before,
        "reading changes nothing"
    );
}
