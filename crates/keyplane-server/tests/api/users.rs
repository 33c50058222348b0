//! People and invitations: the flow end to end (invite, read the outbox, accept, log in, act
//! within the role, be refused outside it), resend and revoke, the last-owner rule, bad input,
//! several organizations, and isolation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Fixture, TestApp, TestAppBuilder, assert_error, decode_quoted_printable,
    invitation_token_in, mailed_invitation_token, mails_to, ok, owner_invitation_token, send,
};
use crate::on_both_stores;

on_both_stores!(
    an_invited_person_accepts_logs_in_and_acts_within_the_role,
    invitations_can_be_listed_resent_and_revoked,
    pending_invitations_page_like_every_list,
    an_organization_keeps_an_owner,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
    one_person_in_several_organizations,
    people_of_other_organizations_are_not_found,
    invitations_go_out_by_smtp_when_configured,
);

/// A minimal SMTP server for one message, answering as a relay would.
struct SmtpSink {
    port: u16,
    /// The message, once received.
    received: tokio::sync::oneshot::Receiver<String>,
}

async fn smtp_sink() -> SmtpSink {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, received) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push_str("\r\n");
                }
                continue;
            }
            let reply: &[u8] = match line
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_uppercase()
                .as_str()
            {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 OK\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
        let _ = done.send(data);
    });
    SmtpSink { port, received }
}

/// Accepts an invitation as Ada.
async fn accept(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.accept_invitation(token, password, json!({"first_name": "Ada"}))
        .await
}

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    organization: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"email": email, "password": password});
    if let Some(id) = organization {
        body["organization_id"] = json!(id);
    }
    app.post_json("/api/v0/auth", &body).await
}

async fn an_invited_person_accepts_logs_in_and_acts_within_the_role(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let invited = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        Some(json!({"email": "dev@example.com", "last_name": "Lovelace"})),
    )
    .await)
    .await;
    assert_eq!(invited["_type"], "USER");
    assert_eq!(invited["status"], "invited");
    assert_eq!(invited["role"], "developer", "the default role");
    assert_eq!(invited["_envs"], json!(["TEST", "LIVE"]));
    assert!(invited.get("first_name").is_none());
    // Not yet able to log in.
    assert_eq!(
        login(&app, "dev@example.com", "a strong passphrase", None)
            .await
            .status(),
        401
    );

    let mail = mails_to(&app, "dev@example.com");
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Test Organization"));
    let invitation = mailed_invitation_token(&app, "dev@example.com");
    let accepted = ok(accept(&app, &invitation, "a strong passphrase").await).await;
    assert_eq!(accepted["status"], "active");
    assert_eq!(accepted["first_name"], "Ada");
    assert_eq!(accepted["last_name"], "Lovelace");
    // Single use.
    let again = assert_error(
        accept(&app, &invitation, "another passphrase").await,
        400,
        "E_VALIDATION",
    )
    .await;
    assert!(again["message"].as_str().unwrap().starts_with("token"));

    let pair = ok(login(&app, "dev@example.com", "a strong passphrase", None).await).await;
    let person = pair["access_token"].as_str().unwrap();
    // A developer manages API keys and reads the rest...
    ok(send(
        &app,
        Method::PUT,
        person,
        "/api/v0/api-keys/dev-key",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    ok(app.get_as(person, "/api/v0/users").await).await;
    ok(app
        .get_as(
            person,
            &format!(
                "/api/v0/organizations/{}/audit-events",
                boot.organization_id
            ),
        )
        .await)
    .await;
    // ...and nothing else.
    assert_error(
        send(
            &app,
            Method::POST,
            person,
            "/api/v0/users",
            Some(json!({"email": "x@example.com"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    assert_error(send(&app, Method::POST, person, "/api/v0/organizations", Some(json!({"name": "Nope", "address_line1": "a", "zip": "1", "town": "b", "country_code": "DEU"}))).await, 403, "E_FORBIDDEN").await;
    let me = format!("/api/v0/users/{}", invited["_id"].as_str().unwrap());
    assert_error(
        send(
            &app,
            Method::PATCH,
            person,
            &me,
            Some(json!({"role": "admin"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;

    // Disabled by an admin (the API key): the person's token and login stop.
    let disabled = ok(send(
        &app,
        Method::PATCH,
        &token,
        &me,
        Some(json!({"status": "disabled"})),
    )
    .await)
    .await;
    assert_eq!(disabled["status"], "disabled");
    assert_error(
        app.get_as(person, "/api/v0/users").await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
    assert_eq!(
        login(&app, "dev@example.com", "a strong passphrase", None)
            .await
            .status(),
        401
    );
    // No password, token or secret in the mail log lines or the audit log.
    app.state.flush_background_writes().await;
    let log = ok(app
        .get_as(
            &token,
            &format!(
                "/api/v0/organizations/{}/audit-events",
                boot.organization_id
            ),
        )
        .await)
    .await
    .to_string();
    assert!(!log.contains("a strong passphrase") && !log.contains(&invitation));
    for action in ["user.invited", "invitation.accepted", "user.updated"] {
        assert!(log.contains(action), "{action}");
    }
}

/// The invitation list pages, orders and counts like every list: `limit`, `offset`,
/// `order_by` (`created_at`, `email`), `order`, and `count` of all pending; bad parameters are
/// a 400 naming them.
async fn pending_invitations_page_like_every_list(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    for email in ["c@example.com", "A@example.com", "b@example.com"] {
        ok(send(
            &app,
            Method::POST,
            &token,
            "/api/v0/users",
            Some(json!({"email": email, "role": "viewer"})),
        )
        .await)
        .await;
    }
    let path = format!("/api/v0/organizations/{}/invitations", boot.organization_id);
    let emails = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["email"].as_str().unwrap().to_owned())
            .collect()
    };
    // The bootstrap owner's invitation came first.
    let all = ok(app.get_as(&token, &path).await).await;
    assert_eq!(all["count"], 4);
    assert_eq!(
        emails(&all),
        [
            "owner@example.com",
            "c@example.com",
            "a@example.com",
            "b@example.com"
        ]
    );
    let page = ok(app.get_as(&token, &format!("{path}?limit=2")).await).await;
    assert_eq!(page["count"], 4, "count is of all pending");
    assert_eq!(emails(&page), ["owner@example.com", "c@example.com"]);
    let page = ok(app
        .get_as(&token, &format!("{path}?limit=2&offset=2"))
        .await)
    .await;
    assert_eq!(emails(&page), ["a@example.com", "b@example.com"]);
    let page = ok(app
        .get_as(&token, &format!("{path}?order=desc&limit=1"))
        .await)
    .await;
    assert_eq!(emails(&page), ["b@example.com"]);
    let page = ok(app.get_as(&token, &format!("{path}?order_by=email")).await).await;
    assert_eq!(
        emails(&page),
        [
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "owner@example.com"
        ]
    );
    let page = ok(app.get_as(&token, &format!("{path}?offset=10")).await).await;
    assert_eq!(emails(&page), Vec::<String>::new());
    assert_eq!(page["count"], 4);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=%2B1", "limit"),
        ("limit=01", "limit"),
        ("offset=9223372036854775808", "offset"),
        ("order_by=role", "order_by"),
        ("order=sideways", "order"),
        ("colour=red", "colour"),
    ] {
        let error = assert_error(
            app.get_as(&token, &format!("{path}?{query}")).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{query}: {error}"
        );
    }
}

async fn invitations_can_be_listed_resent_and_revoked(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        Some(json!({"email": "a@example.com", "role": "viewer"})),
    )
    .await)
    .await;
    let list_path = format!("/api/v0/organizations/{}/invitations", boot.organization_id);
    let pending = ok(app.get_as(&token, &list_path).await).await;
    assert_eq!(pending["_type"], "INVITATION_LIST");
    let emails: Vec<&str> = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails.len(),
        2,
        "the bootstrap owner's and this one: {emails:?}"
    );
    let invitation = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == "a@example.com")
        .unwrap()
        .clone();
    assert_eq!(invitation["role"], "viewer");
    let first = mailed_invitation_token(&app, "a@example.com");

    let id = invitation["_id"].as_str().unwrap();
    ok(send(
        &app,
        Method::POST,
        &token,
        &format!("/api/v0/invitations/{id}/resend"),
        None,
    )
    .await)
    .await;
    assert_eq!(mails_to(&app, "a@example.com").len(), 2);
    let second = mailed_invitation_token(&app, "a@example.com");
    assert_ne!(first, second);
    assert_error(
        accept(&app, &first, "a strong passphrase").await,
        400,
        "E_VALIDATION",
    )
    .await;

    ok(send(
        &app,
        Method::DELETE,
        &token,
        &format!("/api/v0/invitations/{id}"),
        None,
    )
    .await)
    .await;
    assert_error(
        accept(&app, &second, "a strong passphrase").await,
        400,
        "E_VALIDATION",
    )
    .await;
    assert_error(
        send(
            &app,
            Method::DELETE,
            &token,
            &format!("/api/v0/invitations/{id}"),
            None,
        )
        .await,
        404,
        "E_INVITATION_NOT_FOUND",
    )
    .await;
    assert_error(
        send(
            &app,
            Method::POST,
            &token,
            &format!("/api/v0/invitations/{}/resend", uuid::Uuid::now_v7()),
            None,
        )
        .await,
        404,
        "E_INVITATION_NOT_FOUND",
    )
    .await;
    for path in [
        "/api/v0/invitations/not-a-uuid/resend",
        "/api/v0/invitations/not-a-uuid",
    ] {
        let method = if path.ends_with("resend") {
            Method::POST
        } else {
            Method::DELETE
        };
        let response = send(&app, method, &token, path, None).await;
        assert_error(response, 404, "E_INVITATION_NOT_FOUND").await;
    }
    let pending = ok(app.get_as(&token, &list_path).await).await;
    assert_eq!(pending["count"], 1);
}

async fn an_organization_keeps_an_owner(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let owner_path = format!("/api/v0/users/{}", boot.user_id);
    // Admins (API keys) do not change owners.
    assert_error(
        send(
            &app,
            Method::PATCH,
            &token,
            &owner_path,
            Some(json!({"role": "admin"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    assert_error(
        send(&app, Method::DELETE, &token, &owner_path, None).await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    assert_error(
        send(
            &app,
            Method::POST,
            &token,
            "/api/v0/users",
            Some(json!({"email": "o2@example.com", "role": "owner"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    // The owner accepts the bootstrap invitation and logs in.
    let bootstrap_token = owner_invitation_token(&boot);
    ok(accept(&app, bootstrap_token, "the owner's passphrase").await).await;
    let owner = ok(login(&app, "owner@example.com", "the owner's passphrase", None).await).await;
    let owner = owner["access_token"].as_str().unwrap();
    // The last owner can be neither demoted, disabled nor removed.
    for (method, body) in [
        (Method::PATCH, Some(json!({"role": "admin"}))),
        (Method::PATCH, Some(json!({"status": "disabled"}))),
        (Method::DELETE, None),
    ] {
        assert_error(
            send(&app, method, owner, &owner_path, body).await,
            409,
            "E_CONFLICT",
        )
        .await;
    }
    // With a second owner, the first may step down.
    ok(send(
        &app,
        Method::POST,
        owner,
        "/api/v0/users",
        Some(json!({"email": "o2@example.com", "role": "owner"})),
    )
    .await)
    .await;
    ok(accept(
        &app,
        &mailed_invitation_token(&app, "o2@example.com"),
        "second owner phrase",
    )
    .await)
    .await;
    let demoted = ok(send(
        &app,
        Method::PATCH,
        owner,
        &owner_path,
        Some(json!({"role": "admin"})),
    )
    .await)
    .await;
    assert_eq!(demoted["role"], "admin");
    let owners = ok(app.get_as(&token, "/api/v0/users?role=owner").await).await;
    assert_eq!(owners["count"], 1);
    assert_eq!(owners["data"][0]["email"], "o2@example.com");
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    for (body, field) in [
        (json!({}), "email"),
        (json!({"email": "not-an-address"}), "email"),
        (json!({"email": "a@example.com", "role": "god"}), "role"),
        (
            json!({"email": "a@example.com", "first_name": "x".repeat(101)}),
            "first_name",
        ),
        (
            json!({"email": "a@example.com", "first_name": ""}),
            "first_name",
        ),
        (json!({"email": "a@example.com", "colour": "red"}), "colour"),
        (json!({"email": 7}), "email"),
    ] {
        let error = assert_error(
            send(
                &app,
                Method::POST,
                &token,
                "/api/v0/users",
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
    // Already a member: 409, nothing more stored.
    assert_error(
        send(
            &app,
            Method::POST,
            &token,
            "/api/v0/users",
            Some(json!({"email": "OWNER@example.com"})),
        )
        .await,
        409,
        "E_CONFLICT",
    )
    .await;
    let developer = ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        Some(json!({"email": "dev@example.com"})),
    )
    .await)
    .await;
    let developer_path = format!("/api/v0/users/{}", developer["_id"].as_str().unwrap());
    for (body, field) in [
        (json!({"status": "invited"}), "status"),
        (json!({"status": "active"}), "status"),
        (json!({"role": "boss"}), "role"),
        (json!({"email": "x@example.com"}), "email"),
    ] {
        let error = assert_error(
            send(
                &app,
                Method::PATCH,
                &token,
                &developer_path,
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
    let bootstrap_token = owner_invitation_token(&boot);
    for (body, field) in [
        (
            json!({"token": bootstrap_token, "password": "short"}),
            "password",
        ),
        (json!({"token": bootstrap_token}), "password"),
        (json!({"password": "a strong passphrase"}), "token"),
        (
            json!({"token": "wrong", "password": "a strong passphrase"}),
            "token",
        ),
        (
            json!({"token": bootstrap_token, "password": "a strong passphrase", "first_name": "x".repeat(101)}),
            "first_name",
        ),
    ] {
        let error = assert_error(
            app.post_json("/api/v0/invitations/accept", &body).await,
            400,
            "E_VALIDATION",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    for query in [
        "?status=gone",
        "?role=owner,owner",
        "?order_by=name",
        "?limit=0",
    ] {
        assert_error(
            app.get_as(&token, &format!("/api/v0/users{query}")).await,
            400,
            "E_VALIDATION",
        )
        .await;
    }
    // The two people, both still invited, and unchanged; the owner's invitation still works.
    let people = ok(app.get_as(&token, "/api/v0/users").await).await;
    assert_eq!(people["count"], 2);
    assert!(
        people["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "invited")
    );
    assert_eq!(
        ok(app.get_as(&token, &developer_path).await).await["role"],
        "developer"
    );
    ok(accept(&app, bootstrap_token, "a strong passphrase").await).await;
}

async fn one_person_in_several_organizations(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let child = app
        .another_organization("Child")
        .managed_by(boot.organization_id.parse().unwrap())
        .create()
        .await
        .organization;
    let bootstrap_token = owner_invitation_token(&boot);
    ok(accept(&app, bootstrap_token, "a strong passphrase").await).await;
    // The owner of the root is invited into the child as a viewer: the same person.
    let invited = ok(send(
        &app,
        Method::POST,
        &token,
        &format!("/api/v0/organizations/{}/users", child.id),
        Some(json!({"email": "owner@example.com", "role": "viewer"})),
    )
    .await)
    .await;
    assert_eq!(invited["_id"], boot.user_id.as_str());
    ok(accept(
        &app,
        &mailed_invitation_token(&app, "owner@example.com"),
        "a strong passphrase",
    )
    .await)
    .await;
    let child_id = child.id.to_string();
    let in_child = ok(login(
        &app,
        "owner@example.com",
        "a strong passphrase",
        Some(&child_id),
    )
    .await)
    .await;
    assert_eq!(
        in_child["access_token_claims"]["organization_id"],
        child_id.as_str()
    );
    let viewer = in_child["access_token"].as_str().unwrap();
    assert_error(
        send(
            &app,
            Method::PUT,
            viewer,
            "/api/v0/api-keys/nope",
            Some(json!({"kind": "test", "status": "enabled"})),
        )
        .await,
        403,
        "E_FORBIDDEN",
    )
    .await;
    let in_root = ok(login(&app, "owner@example.com", "a strong passphrase", None).await).await;
    assert_eq!(
        in_root["access_token_claims"]["organization_id"],
        boot.organization_id.as_str(),
        "the oldest membership"
    );
    let owner = in_root["access_token"].as_str().unwrap();
    ok(send(
        &app,
        Method::PUT,
        owner,
        "/api/v0/api-keys/yes",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    let people = ok(app
        .get_as(&token, &format!("/api/v0/organizations/{}/users", child.id))
        .await)
    .await;
    assert_eq!(people["data"][0]["role"], "viewer");
}

async fn people_of_other_organizations_are_not_found(backend: Backend) {
    let Fixture { app, boot, token } = Fixture::start(&backend).await;
    let stranger = app
        .another_organization("Unrelated")
        .create()
        .await
        .token()
        .await;
    let ours = format!("/api/v0/organizations/{}/users", boot.organization_id);
    let someone = format!("{ours}/{}", boot.user_id);
    for (method, path, body) in [
        (Method::GET, ours.clone(), None),
        (
            Method::POST,
            ours.clone(),
            Some(json!({"email": "intruder@example.com"})),
        ),
        (Method::GET, someone.clone(), None),
        (
            Method::PATCH,
            someone.clone(),
            Some(json!({"role": "viewer"})),
        ),
        (Method::DELETE, someone.clone(), None),
        (
            Method::GET,
            format!("/api/v0/organizations/{}/invitations", boot.organization_id),
            None,
        ),
    ] {
        let response = send(&app, method.clone(), &stranger, &path, body).await;
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["code"], "E_ORGANIZATION_NOT_FOUND", "{method} {path}");
        assert!(!text.contains("owner@example.com"));
    }
    // By the caller's own path, our person is simply not theirs.
    let mine = format!("/api/v0/users/{}", boot.user_id);
    assert_error(app.get_as(&stranger, &mine).await, 404, "E_USER_NOT_FOUND").await;
    // Invitations of ours cannot be touched by them.
    let pending = ok(app
        .get_as(
            &token,
            &format!("/api/v0/organizations/{}/invitations", boot.organization_id),
        )
        .await)
    .await;
    let id = pending["data"][0]["_id"].as_str().unwrap();
    assert_error(
        send(
            &app,
            Method::POST,
            &stranger,
            &format!("/api/v0/invitations/{id}/resend"),
            None,
        )
        .await,
        404,
        "E_INVITATION_NOT_FOUND",
    )
    .await;
    assert_error(
        send(
            &app,
            Method::DELETE,
            &stranger,
            &format!("/api/v0/invitations/{id}"),
            None,
        )
        .await,
        404,
        "E_INVITATION_NOT_FOUND",
    )
    .await;
    assert_eq!(
        ok(app.get_as(&token, "/api/v0/users").await).await["count"],
        1
    );
}

async fn invitations_go_out_by_smtp_when_configured(backend: Backend) {
    let SmtpSink { port, received } = smtp_sink().await;
    let Fixture { app, token, .. } = TestAppBuilder::new(&backend)
        .await
        .configure(|c| {
            c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
            c.mail_from = "Platform <noreply@example.com>".into();
        })
        .bootstrapped()
        .await;
    ok(send(
        &app,
        Method::POST,
        &token,
        "/api/v0/users",
        Some(json!({"email": "smtp@example.com"})),
    )
    .await)
    .await;
    let message = decode_quoted_printable(
        &tokio::time::timeout(std::time::Duration::from_secs(10), received)
            .await
            .unwrap()
            .unwrap(),
    );
    assert!(
        message.contains("From: Platform <noreply@example.com>"),
        "{message}"
    );
    assert!(message.contains("To: smtp@example.com"), "{message}");
    let invitation = invitation_token_in(&message);
    ok(accept(&app, &invitation, "a strong passphrase").await).await;
    assert!(
        !app.data_dir().join("outbox").exists(),
        "nothing went to the outbox"
    );
}
