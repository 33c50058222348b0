//! The web console over HTTP, continued: paging and sorting on every list, the audit events of
//! signing out, a new password ending the person's refresh tokens, the console's own 404 page,
//! and the role of an API key.

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    Console, OWNER_PASSWORD, between, invited_console, mailed_reset, owner_console, run_sql,
};
use crate::helpers::{
    Backend, Fixture, TestApp, invitation_token_in, mailed_invitation_token, ok, send,
};
use crate::on_both_stores;

on_both_stores!(
    people_and_invitations_page_and_members_sort,
    organizations_page_and_sort,
    the_audit_log_pages_with_the_shared_pager,
    signing_out_and_everywhere_are_audited,
    a_changed_or_reset_password_ends_the_persons_refresh_tokens,
    unknown_console_addresses_get_the_consoles_html_404,
    a_keys_role_is_shown_given_and_changed_within_the_persons_own,
);

/// The `<tr>` rows of the table inside the element with id `id`.
fn rows_in(html: &str, id: &str) -> usize {
    let section = between(html, &format!(r#"id="{id}""#), "</table>");
    section.matches("<tr>").count() - 1
}

async fn audit_count(fixture: &Fixture, action: &str) -> usize {
    let log = ok(fixture
        .app
        .get_as(
            &fixture.token,
            &format!(
                "/api/v0/organizations/{}/audit-events?action={action}",
                fixture.boot.organization_id
            ),
        )
        .await)
    .await;
    log["data"].as_array().unwrap().len()
}

async fn invite(fixture: &Fixture, email: &str) {
    ok(send(
        &fixture.app,
        Method::POST,
        &fixture.token,
        "/api/v0/users",
        Some(json!({"email": email, "role": "viewer"})),
    )
    .await)
    .await;
}

async fn people_and_invitations_page_and_members_sort(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    let emails: Vec<String> = (0..26).map(|i| format!("p{i:02}@example.com")).collect();
    for email in &emails {
        invite(&fixture, email).await;
    }
    // 26 pending invitations (and perhaps the owner's own, never accepted by the fixture):
    // two pages of 25, by email.
    let first = console.get("/console/people").await.text().await.unwrap();
    assert_eq!(rows_in(&first, "invitations"), 25);
    assert!(first.contains("Page 1 of 2 · 2"), "{first}");
    let next = between(&first, r#"id="invitations""#, "</nav>");
    let next = between(next, r#"<a href=""#, "\"").replace("&amp;", "&");
    assert_eq!(
        next,
        "/console/people?sort=email&order=asc&invitations_page=2"
    );
    let second = console.get(&next).await.text().await.unwrap();
    let invitations = between(&second, r#"id="invitations""#, "</table>");
    assert!(invitations.contains("p25@example.com") && !invitations.contains("p00@example.com"));

    // 27 members (the owner and 26 who accepted): two pages, by email or by when they joined.
    for email in &emails {
        let token = mailed_invitation_token(&fixture.app, email);
        ok(fixture
            .app
            .accept_invitation(&token, "a long enough passphrase", json!({}))
            .await)
        .await;
    }
    let first = console.get("/console/people").await.text().await.unwrap();
    assert_eq!(rows_in(&first, "members"), 25);
    assert!(first.contains("Page 1 of 2 · 27 members"));
    let second = console
        .get("/console/people?sort=email&order=asc&page=2")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows_in(&second, "members"), 2);
    let members = between(&second, r#"id="members""#, "</table>");
    assert!(members.contains("p24@example.com") && members.contains("p25@example.com"));
    assert!(
        !members.contains("owner@example.com"),
        "the owner sorts first"
    );
    // Newest first: the owner, who joined first, is not on the first page; oldest first, it
    // heads it. (Times are whole seconds: the others joined seconds later, as an operator's
    // clock would show.)
    run_sql(
        &fixture.app,
        "UPDATE memberships SET created_at = created_at + $1 \
         WHERE user_id IN (SELECT id FROM users WHERE email LIKE 'p%')",
        10,
    )
    .await;
    let newest = console
        .get("/console/people?sort=created_at&order=desc")
        .await
        .text()
        .await
        .unwrap();
    assert!(newest.contains(r#"aria-sort="descending""#));
    let members = between(&newest, r#"id="members""#, "</table>");
    assert!(!members.contains("owner@example.com"));
    let oldest = console
        .get("/console/people?sort=created_at&order=asc")
        .await
        .text()
        .await
        .unwrap();
    let members = between(&oldest, r#"id="members""#, "</table>");
    let owner_at = members.find("owner@example.com").expect("the owner first");
    assert!(owner_at < members.find("p00@example.com").unwrap_or(usize::MAX));
    // A page out of range, or unreadable, is read leniently.
    for odd in [
        "page=0",
        "page=abc",
        "page=99999999999999999999",
        "sort=bogus",
    ] {
        let response = console.get(&format!("/console/people?{odd}")).await;
        assert_eq!(response.status(), 200, "{odd}");
    }
}

async fn organizations_page_and_sort(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    for i in 0..55 {
        fixture
            .app
            .another_organization(&format!("branch-{i:02}"))
            .managed_by(fixture.boot.organization_id.parse().unwrap())
            .create()
            .await;
    }
    let first = console
        .get("/console/organizations")
        .await
        .text()
        .await
        .unwrap();
    assert!(first.contains("Page 1 of 2 · 56 organizations"), "{first}");
    assert_eq!(first.matches("div class=\"card org\"").count(), 50);
    let second = console
        .get("/console/organizations?sort=name&order=asc&page=2")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(second.matches("div class=\"card org\"").count(), 6);
    assert!(second.contains("branch-54") && !second.contains("branch-00"));
    // Managed organizations whose manager is on another page still show.
    let descending = console
        .get("/console/organizations?sort=name&order=desc")
        .await
        .text()
        .await
        .unwrap();
    let tree = between(&descending, r#"id="organizations""#, "</nav>");
    assert!(tree.find("branch-54").unwrap() < tree.find("branch-53").unwrap());
    assert!(descending.contains(r#"<option value="desc" selected>"#));
}

async fn the_audit_log_pages_with_the_shared_pager(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    for _ in 0..55 {
        fixture
            .app
            .access_token(&fixture.boot.api_key, &fixture.boot.api_secret)
            .await;
    }
    let page = console
        .get("/console/audit-log?action=auth.succeeded")
        .await
        .text()
        .await
        .unwrap();
    let pager = between(&page, r#"<nav class="pager""#, "</nav>");
    assert!(pager.contains(r##"hx-target="#events""##), "{pager}");
    assert!(pager.contains("Page 1 of 2"));
    assert!(pager.contains("/console/audit-log?action=auth.succeeded&amp;page=2"));
}

async fn signing_out_and_everywhere_are_audited(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    assert_eq!(audit_count(&fixture, "user.signed_out").await, 0);
    assert_eq!(console.act("/console/sign-out", &[]).await.status(), 303);
    assert_eq!(audit_count(&fixture, "user.signed_out").await, 1);
    // An ended session signs out no more: nothing is recorded for it.
    let dead = console.post("/console/sign-out", &[]).await;
    assert_eq!(dead.status(), 303);
    assert_eq!(audit_count(&fixture, "user.signed_out").await, 1);

    // Two sign-outs of one session at once (a double click): one deletes it, one event.
    let mut twice = Console::new(&fixture.app);
    twice.sign_in("owner@example.com", OWNER_PASSWORD).await;
    let csrf = twice.csrf().await;
    let form = [("csrf_token", csrf.as_str())];
    let (a, b) = tokio::join!(
        twice.post("/console/sign-out", &form),
        twice.post("/console/sign-out", &form)
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (303, 303));
    assert_eq!(audit_count(&fixture, "user.signed_out").await, 2);

    let mut again = Console::new(&fixture.app);
    again.sign_in("owner@example.com", OWNER_PASSWORD).await;
    let everywhere = again.act("/console/account/sign-out-everywhere", &[]).await;
    assert_eq!(everywhere.status(), 303);
    assert_eq!(audit_count(&fixture, "user.signed_out_everywhere").await, 1);
    let log = ok(fixture
        .app
        .get_as(
            &fixture.token,
            &format!(
                "/api/v0/organizations/{}/audit-events?action=user.signed_out_everywhere",
                fixture.boot.organization_id
            ),
        )
        .await)
    .await;
    let event = &log["data"][0];
    assert_eq!(event["actor"]["type"], "user", "{event}");
    assert_eq!(event["target"]["type"], "user");
    assert_eq!(event["actor"]["id"], event["target"]["id"]);
    assert!(!event.to_string().contains(OWNER_PASSWORD));
}

async fn refresh(app: &TestApp, pair: &Value) -> u16 {
    app.post_json(
        "/api/v0/auth",
        &json!({"refresh_token": pair["refresh_token"]}),
    )
    .await
    .status()
    .as_u16()
}

async fn a_changed_or_reset_password_ends_the_persons_refresh_tokens(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let app = &fixture.app;
    let console = owner_console(&fixture).await;
    let before = app.person_pair("owner@example.com", OWNER_PASSWORD).await;
    let unrelated = app
        .token_pair(&fixture.boot.api_key, &fixture.boot.api_secret)
        .await;
    let changed = console
        .act(
            "/console/account/password",
            &[
                ("current_password", OWNER_PASSWORD),
                ("new_password", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(changed.status(), 303);
    assert_eq!(refresh(app, &before).await, 401, "ended by the change");
    assert_eq!(refresh(app, &unrelated).await, 200, "a key's tokens go on");

    let before = app
        .person_pair("owner@example.com", "a brand new passphrase")
        .await;
    assert_eq!(refresh(app, &before).await, 200, "works until the reset");
    let before = app
        .person_pair("owner@example.com", "a brand new passphrase")
        .await;
    let requested = Console::new(app)
        .post(
            "/console/forgot-password",
            &[("email", "owner@example.com")],
        )
        .await;
    assert_eq!(requested.status(), 303);
    let token = invitation_token_in(&mailed_reset(app, "owner@example.com", 1).await);
    let reset = Console::new(app)
        .post(
            "/console/reset-password",
            &[("token", &token), ("password", "yet another passphrase")],
        )
        .await;
    assert_eq!(reset.status(), 303);
    assert_eq!(refresh(app, &before).await, 401, "ended by the reset");
    let after = app
        .person_pair("owner@example.com", "yet another passphrase")
        .await;
    assert_eq!(refresh(app, &after).await, 200, "new sign-ins work");
}

async fn unknown_console_addresses_get_the_consoles_html_404(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let console = owner_console(&fixture).await;
    for (who, path) in [
        ("signed in", "/console/nothing-here"),
        ("signed in", "/console/api-keys/x/y/z"),
        (
            "signed in",
            "/console/api-keys/00000000-0000-0000-0000-000000000000/edit",
        ),
        ("signed in", "/console/people/not-an-id/remove"),
    ] {
        let response = if path.ends_with("/remove") {
            console.act(path, &[]).await
        } else {
            console.get(path).await
        };
        assert_eq!(response.status(), 404, "{who} {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let html = response.text().await.unwrap();
        assert!(html.contains("<!DOCTYPE html>") && html.contains("Back to the console"));
    }
    let anonymous = Console::new(&fixture.app)
        .get("/console/nothing-here")
        .await;
    assert_eq!(anonymous.status(), 404);
    assert!(anonymous.headers().contains_key("content-security-policy"));
    let wrong_method = fixture
        .app
        .post_json("/console/api-keys/new", &json!({}))
        .await;
    assert_eq!(wrong_method.status(), 405);
    assert!(
        wrong_method.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // The API keeps its JSON body.
    let api = fixture
        .app
        .get_as(&fixture.token, "/api/v0/nothing-here")
        .await;
    assert_eq!(api.status(), 404);
    assert!(
        api.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );
    assert!(!api.headers().contains_key("content-security-policy"));
    assert_eq!(fixture.app.get("/consolex").await.status(), 404);
    assert!(
        fixture.app.get("/consolex").await.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );
}

/// The `<select id="field-role">`'s options.
fn role_options(html: &str) -> Vec<String> {
    let select = between(html, r#"<select id="field-role""#, "</select>");
    select
        .split("<option value=\"")
        .skip(1)
        .map(|o| o[..o.find('"').unwrap()].to_owned())
        .collect()
}

async fn a_keys_role_is_shown_given_and_changed_within_the_persons_own(backend: Backend) {
    let fixture = Fixture::start(&backend).await;
    let app = &fixture.app;
    let owner = owner_console(&fixture).await;
    let form = owner
        .get("/console/api-keys/new")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(role_options(&form), ["admin", "developer", "viewer"]);
    assert!(
        form.contains(r#"<option value="admin" selected>"#),
        "admin by default"
    );
    let made = owner
        .act(
            "/console/api-keys",
            &[("name", "reader"), ("kind", "test"), ("role", "viewer")],
        )
        .await;
    assert_eq!(made.status(), 200);
    let html = made.text().await.unwrap();
    let key = between(&html, r#"<code id="api-key">"#, "<").to_owned();
    assert_eq!(app.stored_api_key(&key).await.role.as_str(), "viewer");
    let list = owner
        .get("/console/api-keys?sort=name&order=asc")
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(">Role</th>"));
    let row = between(&list, "reader", "</tr>");
    assert!(row.contains("<td>viewer</td>"), "{row}");

    // Edited: the form shows the key's role and sets another.
    let stored = app.stored_api_key(&key).await;
    let edit_path = format!("/console/api-keys/{}/edit", stored.id);
    let edit = owner.get(&edit_path).await.text().await.unwrap();
    assert!(edit.contains(r#"<option value="viewer" selected>"#));
    let saved = owner
        .act(
            &edit_path,
            &[("role", "developer"), ("metadata", ""), ("expires_at", "")],
        )
        .await;
    assert_eq!(saved.status(), 303, "{}", saved.text().await.unwrap());
    assert_eq!(app.stored_api_key(&key).await.role.as_str(), "developer");

    // A developer is offered developer and viewer, and a forged higher one is refused.
    let developer = invited_console(&fixture, "dev@example.com", "developer").await;
    let form = developer
        .get("/console/api-keys/new")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(role_options(&form), ["developer", "viewer"]);
    for (role, message) in [
        ("admin", "Role must not be above your own role"),
        ("owner", "Role must be admin, developer or viewer"),
        ("superuser", "Role must be one of"),
    ] {
        let refused = developer
            .act(
                "/console/api-keys",
                &[("name", "climber"), ("kind", "test"), ("role", role)],
            )
            .await;
        assert_eq!(refused.status(), 400, "{role}");
        let html = refused.text().await.unwrap();
        let error = between(&html, r#"id="field-role-error">"#, "</p>");
        assert!(error.starts_with(message), "{role}: {error}");
    }
    let keys = ok(app.get_as(&fixture.token, "/api/v0/api-keys").await).await;
    assert!(!keys.to_string().contains("climber"), "nothing stored");
    // Nor may a developer raise their own key's role.
    let made = developer
        .act("/console/api-keys", &[("name", "mine"), ("kind", "test")])
        .await;
    let html = made.text().await.unwrap();
    let mine = between(&html, r#"<code id="api-key">"#, "<").to_owned();
    let mine = app.stored_api_key(&mine).await;
    assert_eq!(
        mine.role.as_str(),
        "developer",
        "the person's own by default"
    );
    let raised = developer
        .act(
            &format!("/console/api-keys/{}/edit", mine.id),
            &[("role", "admin"), ("metadata", ""), ("expires_at", "")],
        )
        .await;
    assert_eq!(raised.status(), 400);
    assert_eq!(
        app.stored_api_key(&mine.public_key).await.role.as_str(),
        "developer"
    );
}
