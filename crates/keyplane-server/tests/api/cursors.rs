//! Cursor paging on every list: a walk by `cursor` gives exactly the items of a walk by `offset`,
//! in every order and direction and with filters; a walk survives inserts made during it; the
//! last page has no `next_cursor`; and every cursor the list did not give (garbage, cut,
//! altered, another organization's, another list's, other filters or order, or with `offset`)
//! is a 400 naming `cursor` that reveals nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Fixture, TestApp, assert_error, ok, send, venue};
use crate::on_both_stores;

on_both_stores!(
    every_list_walks_by_cursor_as_by_offset,
    a_walk_neither_repeats_nor_skips_while_keys_are_added,
    cursors_of_anything_but_this_list_are_a_400_naming_cursor,
    every_indexed_order_after_a_cursor_is_an_index_range,
);

/// One page: the ids of its items, its count and its `next_cursor`.
async fn page(
    app: &TestApp,
    token: &str,
    path: &str,
    query: &str,
) -> (Vec<String>, u64, Option<String>) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let body = ok(app
        .get_as(token, &format!("{path}{separator}{query}"))
        .await)
    .await;
    let ids = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["_id"].as_str().unwrap().to_owned())
        .collect();
    let next = match body.get("next_cursor") {
        None => None,
        Some(Value::String(cursor)) => Some(cursor.clone()),
        Some(other) => panic!("next_cursor is {other}: {body}"),
    };
    (ids, body["count"].as_u64().unwrap(), next)
}

/// Every item of the list `path` (with its filters and order), read `limit` at a time by
/// offset, checking `next_cursor` on each page; and the total `count`.
async fn walk_by_offset(
    app: &TestApp,
    token: &str,
    path: &str,
    limit: usize,
) -> (Vec<String>, u64) {
    let mut all = Vec::new();
    loop {
        let (ids, count, next) = page(
            app,
            token,
            path,
            &format!("limit={limit}&offset={}", all.len()),
        )
        .await;
        all.extend(ids);
        let more = (all.len() as u64) < count;
        assert_eq!(next.is_some(), more, "{path} at {}: next_cursor", all.len());
        if !more {
            return (all, count);
        }
    }
}

/// Every item of the list `path`, read `limit` at a time by cursor; each page's `count` is
/// `count`, and only the last page lacks `next_cursor`.
async fn walk_by_cursor(
    app: &TestApp,
    token: &str,
    path: &str,
    limit: usize,
    count: u64,
) -> Vec<String> {
    let (mut all, first_count, mut next) = page(app, token, path, &format!("limit={limit}")).await;
    assert_eq!(first_count, count, "{path}");
    while let Some(cursor) = next {
        let (ids, page_count, following) =
            page(app, token, path, &format!("limit={limit}&cursor={cursor}")).await;
        assert_eq!(page_count, count, "{path}: count on every page");
        assert!(
            !ids.is_empty(),
            "{path}: a next_cursor led to an empty page"
        );
        assert!(ids.len() <= limit);
        all.extend(ids);
        next = following;
        assert!(
            all.len() <= count as usize + 1,
            "{path}: the walk does not end"
        );
    }
    all
}

async fn every_list_walks_by_cursor_as_by_offset(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    // Organizations below ours: some with town, zip and display name set (some equal, so ties
    // break by id), some with them unset (they sort last in either direction).
    for (name, town, zip, display) in [
        ("Delta", Some("Milano"), Some("20145"), Some("D")),
        ("Alpha", Some("Berlin"), Some("10115"), None),
        ("Charlie", Some("Milano"), Some("20145"), Some("C")),
        ("Bravo", None, None, Some("B")),
        ("Echo", Some("Aachen"), None, Some("D")),
    ] {
        let mut body = venue(name);
        if let Some(display) = display {
            body["display_name"] = json!(display);
        }
        let created = ok(send(
            &app,
            Method::POST,
            &token,
            "/api/v0/organizations",
            Some(body),
        )
        .await)
        .await;
        let id = created["_id"].as_str().unwrap();
        let mut unset = serde_json::Map::new();
        if town.is_none() {
            unset.insert("town".into(), Value::Null);
        } else {
            unset.insert("town".into(), json!(town));
        }
        if zip.is_none() {
            unset.insert("zip".into(), Value::Null);
        } else {
            unset.insert("zip".into(), json!(zip));
        }
        let _ = send(
            &app,
            Method::PATCH,
            &token,
            &format!("/api/v0/organizations/{id}"),
            Some(Value::Object(unset)),
        )
        .await;
    }
    let root: keyplane_core::OrganizationId = org.parse().unwrap();
    for name in ["Foxtrot", "Golf"] {
        // Straight into the store: no town, zip or display name at all.
        app.another_organization(name)
            .managed_by(root)
            .create()
            .await;
    }
    // Keys of every kind and status.
    for (name, kind, status) in [
        ("pos-3", "test", "enabled"),
        ("pos-1", "live", "disabled"),
        ("pos-2", "test", "disabled"),
        ("pos-5", "live", "enabled"),
        ("pos-4", "test", "enabled"),
        ("pos-6", "live", "enabled"),
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
    // People (invited, so also pending invitations) of several roles.
    for (email, role) in [
        ("c@example.com", "viewer"),
        ("A@example.com", "developer"),
        ("e@example.com", "viewer"),
        ("b@example.com", "admin"),
        ("d@example.com", "viewer"),
    ] {
        ok(send(
            &app,
            Method::POST,
            &token,
            "/api/v0/users",
            Some(json!({"email": email, "role": role})),
        )
        .await)
        .await;
    }

    // Events of logins are written in the background: all of them now, before walking.
    app.state.audit_queue().flush().await;
    let mut lists: Vec<String> = Vec::new();
    for order_by in ["name", "created_at", "town", "zip", "display_name"] {
        for filter in ["", "&env=TEST", "&type=MANAGED_ORGANIZATION"] {
            lists.push(format!("/api/v0/organizations?order_by={order_by}{filter}"));
        }
    }
    for base in [
        "/api/v0/api-keys".to_owned(),
        format!("/api/v0/organizations/{org}/api-keys"),
    ] {
        for order_by in ["name", "kind", "status", "created_at"] {
            for filter in [
                "",
                "&kind=live",
                "&status=enabled",
                "&kind=test,live&status=disabled",
            ] {
                lists.push(format!("{base}?order_by={order_by}{filter}"));
            }
        }
    }
    for base in [
        "/api/v0/users".to_owned(),
        format!("/api/v0/organizations/{org}/users"),
    ] {
        for order_by in ["email", "created_at"] {
            for filter in ["", "&role=viewer", "&status=invited&role=viewer,admin"] {
                lists.push(format!("{base}?order_by={order_by}{filter}"));
            }
        }
    }
    for order_by in ["created_at", "email"] {
        lists.push(format!(
            "/api/v0/organizations/{org}/invitations?order_by={order_by}"
        ));
    }
    for filter in [
        "",
        "&action=api_key.created",
        "&action=user.invited,api_key.created",
    ] {
        lists.push(format!(
            "/api/v0/organizations/{org}/audit-events?order_by=created_at{filter}"
        ));
    }
    for list in &lists {
        for order in ["asc", "desc"] {
            let path = format!("{list}&order={order}");
            let (everything, count) = walk_by_offset(&app, &token, &path, 100).await;
            assert_eq!(everything.len() as u64, count, "{path}");
            for limit in [1, 2, 3] {
                let (by_offset, _) = walk_by_offset(&app, &token, &path, limit).await;
                assert_eq!(by_offset, everything, "{path} by offset, {limit} a page");
                let by_cursor = walk_by_cursor(&app, &token, &path, limit, count).await;
                assert_eq!(by_cursor, everything, "{path} by cursor, {limit} a page");
            }
        }
    }

    // Unset values come last in both directions, and the cursor keeps them there.
    let towns = |body: &Value| -> Vec<Value> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["town"].clone())
            .collect()
    };
    for order in ["asc", "desc"] {
        let all = ok(app
            .get_as(
                &token,
                &format!("/api/v0/organizations?order_by=town&order={order}"),
            )
            .await)
        .await;
        let towns = towns(&all);
        let first_unset = towns.iter().position(|t| t.is_null() || t == "").unwrap();
        assert!(
            towns[first_unset..].iter().all(|t| t.is_null() || t == ""),
            "{order}: {towns:?}"
        );
        assert!(first_unset >= 4, "{order}: {towns:?}");
    }

    // A cursor may be followed with another limit.
    let (first, _, next) = page(&app, &token, "/api/v0/api-keys?order_by=name", "limit=2").await;
    let (rest, _, none) = page(
        &app,
        &token,
        "/api/v0/api-keys?order_by=name",
        &format!("limit=100&cursor={}", next.unwrap()),
    )
    .await;
    assert_eq!(none, None);
    let (everything, _) = walk_by_offset(&app, &token, "/api/v0/api-keys?order_by=name", 100).await;
    assert_eq!([first, rest].concat(), everything);
    // An empty list, and a last page, say nothing of a next one.
    let empty = ok(app
        .get_as(
            &token,
            &format!("/api/v0/organizations/{org}/audit-events?action=no.such"),
        )
        .await)
    .await;
    assert_eq!(empty["count"], 0);
    assert!(empty.get("next_cursor").is_none(), "{empty}");
}

/// Keys added while a client walks the list (before and after where it is) never make it see
/// a key twice or miss one that was there when it started.
async fn a_walk_neither_repeats_nor_skips_while_keys_are_added(backend: Backend) {
    let Fixture { app, token, .. } = Fixture::start(&backend).await;
    for n in 0..20 {
        ok(send(
            &app,
            Method::PUT,
            &token,
            &format!("/api/v0/api-keys/k-{n:03}"),
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await)
        .await;
    }
    for (order_by, order) in [
        ("name", "asc"),
        ("name", "desc"),
        ("created_at", "asc"),
        ("created_at", "desc"),
    ] {
        let path = format!("/api/v0/api-keys?order_by={order_by}&order={order}");
        let before = walk_by_offset(&app, &token, &path, 100).await.0;
        let mut seen: Vec<String> = Vec::new();
        let (ids, _, mut next) = page(&app, &token, &path, "limit=3").await;
        seen.extend(ids);
        let mut added = 0;
        while let Some(cursor) = next {
            // While the first pages are read: one key sorting before everything, one after,
            // one in the middle.
            let label = order_by.replace('_', "-");
            let names = if added < 4 {
                vec![
                    format!("a-{label}-{order}-{added}"),
                    format!("z-{label}-{order}-{added}"),
                    format!("k-{added:03}-{label}-{order}"),
                ]
            } else {
                vec![]
            };
            for name in names {
                ok(send(
                    &app,
                    Method::PUT,
                    &token,
                    &format!("/api/v0/api-keys/{name}"),
                    Some(json!({"kind": "test", "status": "enabled"})),
                )
                .await)
                .await;
            }
            added += 1;
            let (ids, _, following) =
                page(&app, &token, &path, &format!("limit=3&cursor={cursor}")).await;
            seen.extend(ids);
            next = following;
            assert!(seen.len() < 400, "the walk does not end");
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{path}: a key came twice");
        for id in &before {
            assert!(seen.contains(id), "{path}: {id} was skipped");
        }
        // What the walk saw is in the list's order.
        let now = walk_by_offset(&app, &token, &path, 100).await.0;
        let positions: Vec<usize> = seen
            .iter()
            .map(|id| now.iter().position(|x| x == id).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{path}: out of order"
        );
    }
}

/// A 400 `E_VALIDATION` whose message names `cursor` and shows none of `secrets`.
async fn assert_bad_cursor(app: &TestApp, token: &str, path: &str, secrets: &[&str]) {
    let response = app.get_as(token, path).await;
    let body = assert_error(response, 400, "E_VALIDATION").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("cursor"), "{path}: {body}");
    let text = body.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{path} shows {secret}: {text}");
    }
}

async fn cursors_of_anything_but_this_list_are_a_400_naming_cursor(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    // Every list has two items at least.
    ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        Some(json!({"email": "p@example.com"})),
    )
    .await)
    .await;
    ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/organizations",
        Some(venue("Child")),
    )
    .await)
    .await;
    for name in ["secret-a", "secret-b", "secret-c"] {
        ok(send(
            &app,
            Method::PUT,
            &token,
            &format!("/api/v0/api-keys/{name}"),
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await)
        .await;
    }
    let keys = "/api/v0/api-keys?order_by=name&kind=test";
    let (_, _, cursor) = page(&app, &token, keys, "limit=1").await;
    let cursor = cursor.unwrap();
    let secrets = ["secret-a", "secret-b", "bootstrap", &org];
    // The cursor works where it belongs.
    page(&app, &token, keys, &format!("cursor={cursor}")).await;

    let bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
    let mut altered = bytes.clone();
    altered[0] ^= 0x01;
    let mut altered_tag = bytes.clone();
    *altered_tag.last_mut().unwrap() ^= 0x80;
    let mut forged = br#"["secret-z"]"#.to_vec();
    forged.extend_from_slice(&bytes[bytes.len() - 32..]);
    let bad = [
        "garbage!".to_owned(),
        "%FF%FE".to_owned(),
        cursor[..cursor.len() - 1].to_owned(),
        cursor[..cursor.len() / 2].to_owned(),
        URL_SAFE_NO_PAD.encode(altered),
        URL_SAFE_NO_PAD.encode(altered_tag),
        URL_SAFE_NO_PAD.encode(forged),
        URL_SAFE_NO_PAD.encode(b"junk that is no cursor at all, but long enough to hold a tag"),
        URL_SAFE_NO_PAD.encode([0u8; 40]),
        format!("{cursor}A"),
        "A".repeat(1025),
        String::new(),
    ];
    for cursor in &bad {
        assert_bad_cursor(&app, &token, &format!("{keys}&cursor={cursor}"), &secrets).await;
    }
    // Not with offset, not twice.
    for extra in ["offset=0", "offset=1", &format!("cursor={cursor}")] {
        assert_bad_cursor(
            &app,
            &token,
            &format!("{keys}&cursor={cursor}&{extra}"),
            &secrets,
        )
        .await;
    }
    // Other order, direction or filters, or the list unfiltered.
    for other in [
        "/api/v0/api-keys?order_by=created_at&kind=test",
        "/api/v0/api-keys?order_by=name&kind=test&order=desc",
        "/api/v0/api-keys?order_by=name&kind=live",
        "/api/v0/api-keys?order_by=name&kind=test&status=enabled",
        "/api/v0/api-keys?order_by=name",
    ] {
        assert_bad_cursor(&app, &token, &format!("{other}&cursor={cursor}"), &secrets).await;
    }
    // The same list by the other path style is the same list.
    page(
        &app,
        &token,
        &format!("/api/v0/organizations/{org}/api-keys?order_by=name&kind=test"),
        &format!("cursor={cursor}"),
    )
    .await;
    // Another list kind of the same organization.
    for other in [
        "/api/v0/users".to_owned(),
        "/api/v0/organizations".to_owned(),
        format!("/api/v0/organizations/{org}/invitations"),
        format!("/api/v0/organizations/{org}/audit-events"),
    ] {
        let separator = if other.contains('?') { '&' } else { '?' };
        assert_bad_cursor(
            &app,
            &token,
            &format!("{other}{separator}cursor={cursor}"),
            &secrets,
        )
        .await;
    }
    // Another organization's cursor on our list, and ours on theirs: each list has the same
    // query, but a cursor opens only in its own organization.
    let other = app.another_organization("Other").create().await;
    let other_token = other.token().await;
    for name in ["theirs-a", "theirs-b"] {
        ok(send(
            &app,
            Method::PUT,
            &other_token,
            &format!("/api/v0/api-keys/{name}"),
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await)
        .await;
    }
    let (_, _, theirs) = page(&app, &other_token, keys, "limit=1").await;
    let theirs = theirs.unwrap();
    assert_bad_cursor(
        &app,
        &token,
        &format!("{keys}&cursor={theirs}"),
        &["theirs-", &other.organization.id.to_string()],
    )
    .await;
    assert_bad_cursor(
        &app,
        &other_token,
        &format!("{keys}&cursor={cursor}"),
        &secrets,
    )
    .await;
    // Every list refuses a bad cursor, and a cursor with an offset.
    for list in [
        "/api/v0/organizations".to_owned(),
        "/api/v0/users".to_owned(),
        format!("/api/v0/organizations/{org}/users"),
        format!("/api/v0/organizations/{org}/api-keys"),
        format!("/api/v0/organizations/{org}/invitations"),
        format!("/api/v0/organizations/{org}/audit-events"),
    ] {
        assert_bad_cursor(&app, &token, &format!("{list}?cursor=garbage"), &secrets).await;
        let (_, _, next) = page(&app, &token, &list, "limit=1").await;
        let next = next.unwrap_or_else(|| panic!("{list} has more than one item"));
        page(&app, &token, &list, &format!("limit=1&cursor={next}")).await;
        assert_bad_cursor(
            &app,
            &token,
            &format!("{list}?offset=1&cursor={next}"),
            &secrets,
        )
        .await;
        let other_order = if list.ends_with("audit-events") {
            "asc"
        } else {
            "desc"
        };
        assert_bad_cursor(
            &app,
            &token,
            &format!("{list}?order={other_order}&cursor={next}"),
            &secrets,
        )
        .await;
    }
}

/// The audit log (both directions, with and without a filter), people by when they joined and
/// invitations by when they were sent: after a cursor, each page is a range of an index that
/// starts at the position, sorts nothing and scans no table, with 20,000 rows of each loaded and
/// analysed. (API keys: `api_keys::every_list_order_is_an_index_scan`. People and invitations
/// by email, and organizations, are not index-served: README, Cursor paging.)
async fn every_indexed_order_after_a_cursor_is_an_index_range(backend: Backend) {
    use keyplane_core::paging::{Position, SortValue};
    use keyplane_core::records::{AuditQuery, InvitationQuery, UserQuery};
    use keyplane_core::values::{Role, UserStatus};
    let Fixture { app, boot, .. } = Fixture::start(&backend).await;
    let org = boot.organization_id.clone();
    load_people_and_events(&app, &backend, &org, 20_000).await;
    let text = |value: &str| SortValue::Text(value.to_owned());
    let mut plans: Vec<(String, String, Vec<String>)> = Vec::new();
    for descending in [false, true] {
        for n in [1, 10_000, 19_900] {
            let events = AuditQuery {
                limit: 100,
                oldest_first: !descending,
                after: Some(Position(vec![text(&format!("ev-{n:05}"))])),
                ..AuditQuery::default()
            };
            let filtered = AuditQuery {
                actions: vec!["user.invited".into(), "api_key.created".into()],
                ..events.clone()
            };
            for query in [events, filtered] {
                let mut binds = vec![format!("'{org}'")];
                binds.extend(query.actions.iter().map(|a| format!("'{a}'")));
                binds.extend([format!("'ev-{n:05}'"), "101".into(), "0".into()]);
                plans.push((
                    format!("{query:?}"),
                    keyplane_store::list_audit_events_sql(&query),
                    binds,
                ));
            }
            let people = UserQuery {
                by_created_at: true,
                descending,
                limit: 100,
                offset: 0,
                statuses: vec![],
                roles: vec![],
                after: Some(Position(vec![
                    SortValue::Int(1_700_000_000 + n),
                    text(&format!("u-{n:05}")),
                ])),
            };
            let filtered = UserQuery {
                statuses: vec![UserStatus::Invited],
                roles: vec![Role::Viewer, Role::Admin],
                ..people.clone()
            };
            for query in [people, filtered] {
                let mut binds = vec![format!("'{org}'")];
                binds.extend(query.statuses.iter().map(|s| format!("'{}'", s.as_str())));
                binds.extend(query.roles.iter().map(|r| format!("'{}'", r.as_str())));
                binds.extend([
                    format!("{}", 1_700_000_000 + n),
                    format!("'u-{n:05}'"),
                    "101".into(),
                    "0".into(),
                ]);
                plans.push((
                    format!("{query:?}"),
                    keyplane_store::list_users_sql(&query),
                    binds,
                ));
            }
            let invitations = InvitationQuery {
                by_email: false,
                descending,
                limit: 100,
                offset: 0,
                after: Some(Position(vec![
                    SortValue::Int(1_700_000_000 + n),
                    text(&format!("inv-{n:05}")),
                ])),
            };
            plans.push((
                format!("{invitations:?}"),
                keyplane_store::pending_invitations_sql(&invitations),
                vec![
                    format!("'{org}'"),
                    "1700000000".into(),
                    format!("{}", 1_700_000_000 + n),
                    format!("'inv-{n:05}'"),
                    "101".into(),
                    "0".into(),
                ],
            ));
        }
    }
    for (query, sql, binds) in &plans {
        // Highest first, so that `$1` does not match the start of `$10`.
        let mut literal = sql.clone();
        for (n, value) in binds.iter().enumerate().rev() {
            literal = literal.replace(&format!("${}", n + 1), value);
        }
        let plan = explain(&app, &backend, &literal).await;
        let text = plan.join("\n");
        match backend {
            Backend::Sqlite => {
                assert!(!text.contains("TEMP B-TREE"), "{query} sorts:\n{text}");
                for line in &plan {
                    assert!(
                        !line.starts_with("SCAN") || line.contains("INDEX"),
                        "{query} scans a table:\n{text}"
                    );
                }
                assert!(
                    plan.iter().any(|line| line.starts_with("SEARCH")
                        && line.contains("INDEX")
                        && (line.contains(">") || line.contains("<"))),
                    "{query} does not start the range at the position:\n{text}"
                );
            }
            Backend::Postgres(_) => {
                assert!(!text.contains("Seq Scan"), "{query} scans a table:\n{text}");
                assert!(!text.contains("Sort"), "{query} sorts:\n{text}");
                assert!(
                    plan.iter().any(|line| line.contains("Index Cond")
                        && (line.contains(" > ") || line.contains(" < "))),
                    "{query} does not start the range at the position:\n{text}"
                );
            }
        }
    }
}

/// The query plan of `sql` (values written in), one line per step.
async fn explain(app: &TestApp, backend: &Backend, sql: &str) -> Vec<String> {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            rows.into_iter().map(|row| row.3).collect()
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {sql}"))
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            rows.into_iter().map(|row| row.0).collect()
        }
    }
}

/// `count` audit events, and as many people (invited viewers, each with a pending invitation),
/// straight into `organization`'s tables, then the statistics production tables would have.
async fn load_people_and_events(app: &TestApp, backend: &Backend, organization: &str, count: u32) {
    let statements = |series: &str, bytes: &str| {
        let n = "lpad(CAST(n AS TEXT), 5, '0')";
        vec![
            format!(
                "INSERT INTO audit_events (id, organization_id, action, actor_type, target_type, \
                 target_id, created_at) SELECT 'ev-' || {n}, '{organization}', \
                 CASE WHEN n % 2 = 0 THEN 'user.invited' ELSE 'api_key.created' END, \
                 'system', 'user', 'u-' || {n}, 1700000000 + n FROM {series}"
            ),
            format!(
                "INSERT INTO users (id, email, created_at) \
                 SELECT 'u-' || {n}, 'u' || {n} || '@example.com', 1700000000 + n FROM {series}"
            ),
            format!(
                "INSERT INTO memberships (organization_id, user_id, role, status, created_at) \
                 SELECT '{organization}', 'u-' || {n}, \
                 CASE WHEN n % 3 = 0 THEN 'admin' ELSE 'viewer' END, \
                 CASE WHEN n % 5 = 0 THEN 'active' ELSE 'invited' END, \
                 1700000000 + n FROM {series}"
            ),
            format!(
                "INSERT INTO invitations (id, organization_id, user_id, token_hash, created_at, \
                 expires_at) SELECT 'inv-' || {n}, '{organization}', 'u-' || {n}, \
                 {bytes}, 1700000000 + n, 4000000000 FROM {series}"
            ),
        ]
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.sqlite_url()).await.unwrap();
            let series = format!(
                "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g \
                 WHERE n < {count}) SELECT n FROM g)"
            );
            for statement in statements(&series, "CAST('token-' || n AS BLOB)") {
                // SQLite has no lpad: five digits by substr of a padded string.
                let statement = statement.replace(
                    "lpad(CAST(n AS TEXT), 5, '0')",
                    "substr('00000' || n, -5, 5)",
                );
                sqlx::query(&statement).execute(&pool).await.unwrap();
            }
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres(_) => {
            let url = app.config.store.database_url.clone().unwrap();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let series = format!("generate_series(1, {count}) AS g(n)");
            for statement in statements(&series, "convert_to('token-' || n, 'UTF8')") {
                sqlx::query(&statement).execute(&pool).await.unwrap();
            }
            for table in ["audit_events", "users", "memberships", "invitations"] {
                sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }
}
