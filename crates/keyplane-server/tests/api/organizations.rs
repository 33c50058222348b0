//! Organizations: the lifecycle, the rules, depth, isolation, roles, and the recorded fiskaly
//! traffic replayed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_keys::{assert_has_keys, interaction};
use crate::helpers::{Backend, Fixture, TestApp, assert_error, ok, send, venue};
use crate::on_both_stores;

on_both_stores!(
    a_managed_organization_lives_a_whole_lifecycle,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
    deletion_rules,
    lists_reach_every_depth_filter_and_order,
    only_owners_and_admins_change_organizations,
    replays_recorded_fiskaly_organization_create_and_retrieve,
    a_patch_and_an_enable_env_at_once_both_take_effect,
);

async fn count(app: &TestApp, token: &str) -> u64 {
    ok(app.get_as(token, "/api/v0/organizations").await).await["count"]
        .as_u64()
        .unwrap()
}

async fn a_managed_organization_lives_a_whole_lifecycle(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let mut body = venue("Venue Milano");
    body["display_name"] = json!("Milano");
    body["metadata"] = json!({"region": "north"});
    let created = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(body),
    )
    .await)
    .await;
    assert_eq!(created["_type"], "MANAGED_ORGANIZATION");
    assert_eq!(created["_envs"], json!(["TEST"]));
    assert_eq!(
        created["managed_by_organization_id"],
        boot.organization_id.as_str()
    );
    assert_eq!(created["country_code"], "ITA");
    assert_eq!(created["metadata"], json!({"region": "north"}));
    assert!(
        created.get("vat_id").is_none() && created.get("state").is_none(),
        "unset fields are omitted"
    );
    let path = format!("/api/v0/organizations/{}", created["_id"].as_str().unwrap());
    assert_eq!(ok(app.get_as(&token, &path).await).await, created);

    let patched = ok(send(
        &app,
        Method::PATCH,
        &token,
        &path,
        Some(json!({"town": "Roma", "display_name": null, "vat_id": "IT123"})),
    )
    .await)
    .await;
    assert_eq!(patched["town"], "Roma");
    assert_eq!(patched["vat_id"], "IT123");
    assert!(patched.get("display_name").is_none());
    assert_eq!(patched["name"], "Venue Milano");

    // LIVE keys need the env.
    let keys = format!("{path}/api-keys");
    let live = json!({"name": "till", "kind": "live", "status": "enabled"});
    assert_error(
        send(&app, Method::POST, &token, &keys, Some(live.clone())).await,
        403,
        "E_ENV_NOT_ENABLED",
    )
    .await;
    let enabled = ok(send(
        &app,
        Method::POST,
        &token,
        &format!("{path}/enable-env"),
        Some(json!({"env": "LIVE"})),
    )
    .await)
    .await;
    assert_eq!(enabled["_envs"], json!(["TEST", "LIVE"]));
    let key = ok(send(&app, Method::POST, &token, &keys, Some(live)).await).await;
    let key_token = app
        .access_token(
            key["key"].as_str().unwrap(),
            key["secret"].as_str().unwrap(),
        )
        .await;
    assert_eq!(app.get_as(&key_token, &path).await.status(), 200);

    // Deleted: gone, and its keys stop working.
    assert_eq!(
        ok(send(&app, Method::DELETE, &token, &path, None).await).await,
        json!({"deleted": true})
    );
    assert_error(
        app.get_as(&token, &path).await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    assert_error(
        app.get_as(&key_token, "/api/v0/api-keys").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    let login = app
        .post_json(
            "/api/v0/auth",
            &json!({"api_key": key["key"], "api_secret": key["secret"]}),
        )
        .await;
    assert_eq!(login.status(), 401);
    assert_eq!(count(&app, &token).await, 1);

    // Every change is in the organization's audit log, which outlives it.
    let child = created["_id"].as_str().unwrap().parse().unwrap();
    let mut actions: Vec<String> = app
        .state
        .store()
        .audit_events(child)
        .await
        .unwrap()
        .iter()
        .map(|e| e.action.clone())
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "api_key.created",
            "auth.succeeded",
            "organization.created",
            "organization.deleted",
            "organization.env_enabled",
            "organization.updated"
        ]
    );
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    let mut cases = Vec::new();
    for field in ["name", "address_line1", "zip", "town", "country_code"] {
        let mut body = venue("Venue");
        body.as_object_mut().unwrap().remove(field);
        cases.push((body, field));
    }
    for (field, value) in [
        ("country_code", json!("XXX")),
        ("country_code", json!("ita")),
        ("country_code", json!("IT")),
        ("name", json!("ab")),
        ("name", json!("x".repeat(101))),
        ("zip", json!("")),
        ("town", json!("Mi\u{7}lano")),
        ("vat_id", json!("x".repeat(51))),
        ("name", json!(7)),
        ("name", json!(null)),
        ("colour", json!("red")),
        ("metadata", json!({"k": [1]})),
    ] {
        let mut body = venue("Venue");
        body[field] = value;
        cases.push((body, field));
    }
    // Metadata values are strings: a number is refused naming its key.
    let mut numeric = venue("Venue");
    numeric["metadata"] = json!({"k": 1});
    cases.push((numeric, "metadata.k"));
    // An unknown or invisible manager is a 404, as fiskaly answers (the recorded traffic).
    let mut orphan = venue("Venue");
    orphan["managed_by_organization_id"] = json!(uuid::Uuid::now_v7().to_string());
    assert_error(
        send(
            &app,
            Method::POST,
            &token,
            "/api/v0/organizations",
            Some(orphan),
        )
        .await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    for (body, field) in cases {
        let error = assert_error(
            send(
                &app,
                Method::POST,
                &token,
                "/api/v0/organizations",
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
    let created = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(venue("Venue")),
    )
    .await)
    .await;
    let path = format!("/api/v0/organizations/{}", created["_id"].as_str().unwrap());
    for (body, field) in [
        (json!({"name": null}), "name"),
        (json!({"country_code": "ZZZ"}), "country_code"),
        (
            json!({"managed_by_organization_id": created["_id"]}),
            "managed_by_organization_id",
        ),
        (json!({"town": "x".repeat(101)}), "town"),
    ] {
        let error = assert_error(
            send(&app, Method::PATCH, &token, &path, Some(body.clone())).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    for body in [
        json!({"env": "PROD"}),
        json!({}),
        json!({"env": "LIVE", "also": 1}),
    ] {
        assert_error(
            send(
                &app,
                Method::POST,
                &token,
                &format!("{path}/enable-env"),
                Some(body),
            )
            .await,
            400,
            "E_VALIDATION",
        )
        .await;
    }
    for query in [
        "?limit=0",
        "?order_by=secret",
        "?type=OTHER",
        "?env=PROD",
        "?managed_by_organization_id=x",
        "?colour=red",
        "?env=TEST&env=LIVE",
    ] {
        assert_error(
            app.get_as(&token, &format!("/api/v0/organizations{query}"))
                .await,
            400,
            "E_VALIDATION",
        )
        .await;
    }
    // Only the one good organization was stored, unchanged.
    assert_eq!(count(&app, &token).await, 2);
    assert_eq!(ok(app.get_as(&token, &path).await).await, created);
}

async fn deletion_rules(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let child = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(venue("Child")),
    )
    .await)
    .await;
    let mut below = venue("Grandchild");
    below["managed_by_organization_id"] = child["_id"].clone();
    let grandchild = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(below),
    )
    .await)
    .await;
    let child_path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
    assert_error(
        send(&app, Method::DELETE, &token, &child_path, None).await,
        409,
        "E_CONFLICT",
    )
    .await;
    let own = format!("/api/v0/organizations/{}", boot.organization_id);
    assert_error(
        send(&app, Method::DELETE, &token, &own, None).await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    let stranger = format!("/api/v0/organizations/{}", uuid::Uuid::now_v7());
    assert_error(
        send(&app, Method::DELETE, &token, &stranger, None).await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    assert_eq!(count(&app, &token).await, 3, "nothing deleted");
    let grandchild_path = format!(
        "/api/v0/organizations/{}",
        grandchild["_id"].as_str().unwrap()
    );
    ok(send(&app, Method::DELETE, &token, &grandchild_path, None).await).await;
    ok(send(&app, Method::DELETE, &token, &child_path, None).await).await;
    assert_eq!(count(&app, &token).await, 1);
}

async fn lists_reach_every_depth_filter_and_order(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let a = ok(send(&app, Method::POST, &token, "/api/v0/organizations", Some(json!({"name": "Alpha", "address_line1": "x", "zip": "2", "town": "Bonn", "country_code": "DEU"}))).await).await;
    let mut below = json!({"name": "Beta", "address_line1": "x", "zip": "1", "town": "Aachen", "country_code": "DEU", "managed_by_organization_id": a["_id"]});
    let b = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(below.clone()),
    )
    .await)
    .await;
    below["name"] = json!("Gamma");
    below["managed_by_organization_id"] = b["_id"].clone();
    below["town"] = json!("Celle");
    ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(below),
    )
    .await)
    .await;
    let names = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = ok(app.get_as(&token, "/api/v0/organizations").await).await;
    assert_eq!(list["_type"], "ORGANIZATION_LIST");
    assert_eq!(
        names(&list),
        ["Alpha", "Beta", "Gamma", "Test Organization"]
    );
    assert_eq!(list["count"], 4);
    // Unset towns sort last either way round.
    let by_town = ok(app
        .get_as(&token, "/api/v0/organizations?order_by=town")
        .await)
    .await;
    assert_eq!(
        names(&by_town),
        ["Beta", "Alpha", "Gamma", "Test Organization"]
    );
    let by_town_desc = ok(app
        .get_as(
            &token,
            "/api/v0/organizations?order_by=town&order=desc&limit=2",
        )
        .await)
    .await;
    assert_eq!(
        (names(&by_town_desc), by_town_desc["count"].as_u64()),
        (vec!["Gamma".to_owned(), "Alpha".to_owned()], Some(4))
    );
    let root_only = ok(app
        .get_as(&token, "/api/v0/organizations?type=ORGANIZATION")
        .await)
    .await;
    assert_eq!(names(&root_only), ["Test Organization"]);
    let under_a = ok(app
        .get_as(
            &token,
            &format!(
                "/api/v0/organizations?managed_by_organization_id={}",
                a["_id"].as_str().unwrap()
            ),
        )
        .await)
    .await;
    assert_eq!(names(&under_a), ["Beta"]);
    let live = ok(app.get_as(&token, "/api/v0/organizations?env=LIVE").await).await;
    assert_eq!(names(&live), ["Test Organization"]);
    // From the middle of the tree: itself and below, never above.
    let b_id: keyplane_core::OrganizationId = b["_id"].as_str().unwrap().parse().unwrap();
    let key = {
        use keyplane_core::api_keys::{NewApiKey, create};
        let (key, secret) = create(
            NewApiKey {
                organization_id: b_id,
                name: keyplane_core::values::KeyName::parse("b-key").unwrap(),
                kind: keyplane_core::values::ApiKeyKind::Test,
                status: keyplane_core::values::ApiKeyStatus::Enabled,
                role: keyplane_core::values::Role::Admin,
                metadata: Default::default(),
                expires_at: None,
                created_by_user: None,
            },
            app.state.secrets(),
            keyplane_core::time::now_unix(),
        );
        app.state.store().create_api_key(&key, &[]).await.unwrap();
        app.access_token(&key.public_key, secret.expose()).await
    };
    let from_b = ok(app.get_as(&key, "/api/v0/organizations").await).await;
    assert_eq!(names(&from_b), ["Beta", "Gamma"]);
    assert_error(
        app.get_as(
            &key,
            &format!("/api/v0/organizations/{}", boot.organization_id),
        )
        .await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
    assert_error(
        app.get_as(
            &key,
            &format!("/api/v0/organizations/{}", a["_id"].as_str().unwrap()),
        )
        .await,
        404,
        "E_ORGANIZATION_NOT_FOUND",
    )
    .await;
}

async fn only_owners_and_admins_change_organizations(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let child = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(venue("Child")),
    )
    .await)
    .await;
    let path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
    app.activate_owner(&boot, "a long passphrase").await;
    for role in [
        keyplane_core::values::Role::Developer,
        keyplane_core::values::Role::Viewer,
    ] {
        app.set_role_in_store(
            boot.organization_id.parse().unwrap(),
            boot.user_id.parse().unwrap(),
            role,
        )
        .await;
        let person = &app
            .person_token("owner@example.com", "a long passphrase")
            .await;
        assert_eq!(
            crate::helpers::jwt_claims(person)["role"],
            format!("{role:?}").to_lowercase()
        );
        assert_eq!(count(&app, person).await, 2, "{role:?} reads");
        for (method, target, body) in [
            (
                Method::POST,
                "/api/v0/organizations".to_owned(),
                Some(venue("Nope")),
            ),
            (Method::PATCH, path.clone(), Some(json!({"town": "Roma"}))),
            (Method::DELETE, path.clone(), None),
            (
                Method::POST,
                format!("{path}/enable-env"),
                Some(json!({"env": "LIVE"})),
            ),
        ] {
            assert_error(
                send(&app, method, person, &target, body).await,
                403,
                "E_FORBIDDEN",
            )
            .await;
        }
    }
    assert_eq!(
        ok(app.get_as(&token, &path).await).await,
        child,
        "nothing changed"
    );
}

async fn replays_recorded_fiskaly_organization_create_and_retrieve(backend: Backend) {
    let Fixture { app, boot, .. } = Fixture::start(&backend).await;
    app.activate_owner(&boot, "a long passphrase").await;
    let token = &app
        .person_token("owner@example.com", "a long passphrase")
        .await;
    let (request, recorded) = interaction("management-organizations_create_ok.yml", 1);
    let body = request.replace(
        "<RSPEC_FISKALY_MANAGED_BY_ORGANIZATION_ID>",
        &boot.organization_id,
    );
    let response = app
        .client
        .post(app.url("/api/v0/organizations"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let created = ok(response).await;
    assert_has_keys(&created, &recorded);
    assert_eq!(created["_type"], recorded["_type"]);
    assert_eq!(created["_envs"], recorded["_envs"]);

    let (request, recorded) = interaction("kassensichv-organization_retrieve_ok.yml", 1);
    let path = format!("/api/v0/organizations/{}", created["_id"].as_str().unwrap());
    let patch = json!({"state": "Germany", "tax_number": "IT123456789"});
    ok(send(&app, Method::PATCH, token, &path, Some(patch)).await).await;
    let response = app
        .client
        .get(app.url(&path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .unwrap();
    let retrieved = ok(response).await;
    assert_has_keys(&retrieved, &recorded);
    assert_eq!(retrieved["_type"], recorded["_type"]);
}

/// Before: both read the organization and wrote the whole row back, so an `enable-env` that
/// answered 200 with LIVE could be overwritten by a `PATCH` made from an older copy (and the
/// other way round). Each now writes only while the row is the one it read.
async fn a_patch_and_an_enable_env_at_once_both_take_effect(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    for round in 0..4 {
        let child = ok(send(
            &app,
            Method::POST,
            &token,
            "/api/v0/organizations",
            Some(venue(&format!("Venue {round}"))),
        )
        .await)
        .await;
        let path = format!("/api/v0/organizations/{}", child["_id"].as_str().unwrap());
        let patches = async {
            let mut last = None;
            for n in 0..8 {
                let name = format!("display {round}-{n}");
                let response = send(
                    &app,
                    Method::PATCH,
                    &token,
                    &path,
                    Some(json!({"display_name": name})),
                )
                .await;
                match response.status().as_u16() {
                    200 => last = Some(name),
                    409 => {}
                    other => panic!("PATCH answered {other}"),
                }
            }
            last
        };
        let enable_path = format!("{path}/enable-env");
        let enable = send(
            &app,
            Method::POST,
            &token,
            &enable_path,
            Some(json!({"env": "LIVE"})),
        );
        let (last_patch, enabled) = tokio::join!(patches, enable);
        let enabled = ok(enabled).await;
        assert_eq!(enabled["_envs"], json!(["TEST", "LIVE"]));
        let stored = ok(app.get_as(&token, &path).await).await;
        assert_eq!(
            stored["_envs"],
            json!(["TEST", "LIVE"]),
            "round {round}: {stored}"
        );
        if let Some(name) = last_patch {
            assert_eq!(stored["display_name"], name.as_str(), "round {round}");
        }
    }
}
