//! Failed authentication is slowed, then refused with 429 and `Retry-After`, per credential and
//! per client address; the rightful owner of an API key is never locked out.

use std::time::Duration;

use keyplane_server::config::ThrottlePolicies;
use keyplane_server::infra::throttle::ThrottlePolicy;
use serde_json::json;

use crate::helpers::{Backend, TestApp, TestAppBuilder, assert_error, owner_invitation_token};
use crate::on_both_stores;

on_both_stores!(
    a_flooded_key_answers_429_but_its_owner_still_gets_in,
    a_flooding_address_is_refused_before_any_lookup,
    a_flooded_account_is_refused_before_its_password_is_checked,
);

/// Tight throttles so a test needs a handful of failures, not dozens.
fn policy(free: u32, max: u32) -> ThrottlePolicy {
    ThrottlePolicy {
        free_failures: free,
        max_failures: max,
        forgive_every: Duration::from_secs(60),
        delay_step: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        capacity: 1000,
    }
}

async fn start(
    backend: &Backend,
    by_address: ThrottlePolicy,
    by_credential: ThrottlePolicy,
) -> TestApp {
    TestAppBuilder::new(backend)
        .await
        .configure(|c| {
            c.throttles = ThrottlePolicies {
                by_address,
                by_credential,
            }
        })
        .start()
        .await
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn a_flooded_key_answers_429_but_its_owner_still_gets_in(backend: Backend) {
    let app = start(&backend, policy(100, 1000), policy(1, 3)).await;
    let boot = app.bootstrap().await;
    let wrong = json!({"api_key": boot.api_key, "api_secret": "wrong"});
    for _ in 0..3 {
        assert_error(
            app.post_json("/api/v0/auth", &wrong).await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
    }
    let response = app.post_json("/api/v0/auth", &wrong).await;
    let seconds = retry_after(&response);
    assert!((1..=60).contains(&seconds), "{seconds}");
    assert_error(response, 429, "E_RATE_LIMITED").await;
    // The same flood through the other token endpoints: their own 429 shapes.
    let fiskil = app
        .post_json(
            "/v1/token",
            &json!({"client_id": boot.api_key, "client_secret": "wrong"}),
        )
        .await;
    assert_eq!(fiskil.status(), 429);
    assert!(retry_after(&fiskil) >= 1);
    let body: serde_json::Value = fiskil.json().await.unwrap();
    assert_eq!(body["name"], "TooManyRequests");
    let oauth = app
        .post_form(
            "/oauth2/token",
            Some((&boot.api_key, "wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(oauth.status(), 429);
    assert!(retry_after(&oauth) >= 1);
    let body: serde_json::Value = oauth.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");

    // The right secret still works: a flood cannot lock the owner out.
    app.token_pair(&boot.api_key, &boot.api_secret).await;
    // Other keys are unaffected by this key's failures.
    let other = json!({"api_key": "test_000000000000000000000000_other", "api_secret": "x"});
    assert_error(
        app.post_json("/api/v0/auth", &other).await,
        401,
        "E_UNAUTHORIZED",
    )
    .await;
}

async fn a_flooding_address_is_refused_before_any_lookup(backend: Backend) {
    let app = start(&backend, policy(1, 3), policy(100, 1000)).await;
    let boot = app.bootstrap().await;
    // Different unknown keys each time: only the address ties them together.
    for i in 0..3 {
        let guess = json!({"api_key": format!("test_{i:024}_guess"), "api_secret": "x"});
        assert_error(
            app.post_json("/api/v0/auth", &guess).await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
    }
    // Now even a good credential from this address waits out the Retry-After.
    let good = json!({"api_key": boot.api_key, "api_secret": boot.api_secret});
    let response = app.post_json("/api/v0/auth", &good).await;
    assert!(retry_after(&response) >= 1);
    assert_error(response, 429, "E_RATE_LIMITED").await;
}

async fn a_flooded_account_is_refused_before_its_password_is_checked(backend: Backend) {
    let app = start(&backend, policy(100, 1000), policy(1, 2)).await;
    let boot = app.bootstrap().await;
    app.activate_owner(&boot, "a long passphrase").await;
    let wrong = json!({"email": "owner@example.com", "password": "guess"});
    for _ in 0..2 {
        assert_error(
            app.post_json("/api/v0/auth", &wrong).await,
            401,
            "E_UNAUTHORIZED",
        )
        .await;
    }
    // Passwords can be guessed: the account is refused, right password or not, until the
    // failures drain, as Retry-After says.
    let right = json!({"email": "OWNER@example.com", "password": "a long passphrase"});
    let response = app.post_json("/api/v0/auth", &right).await;
    assert!(retry_after(&response) >= 1);
    assert_error(response, 429, "E_RATE_LIMITED").await;
    // API keys of the organization are not affected.
    app.token_pair(&boot.api_key, &boot.api_secret).await;
}

/// Before: one Argon2 slot and 64 waiters, and made-up emails were hashed like real ones, so
/// clients posting made-up emails from many addresses kept the owner at 429 for as long as they
/// went on. Unknown accounts now take no hashing slot and each client has only a share of the
/// queue: the owner signs in during the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_emails_from_many_addresses_does_not_keep_the_owner_out() {
    the_owner_signs_in_during_a_flood(|address, sender, n| {
        format!("nobody-{address}-{sender}-{n}@example.com")
    })
    .await;
}

/// Wrong passwords for the owner's own address from thirty addresses used to fill the password
/// queue (first-come, first-served) and the owner got 429 throughout. Slots now go round the
/// waiting clients in turn, a client new to the queue may join it beyond its bound, and
/// addresses that failed for the account share two places: the owner signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_for_the_owners_address_does_not_keep_the_owner_out() {
    the_owner_signs_in_during_a_flood(|_, _, _| "owner@example.com".to_owned()).await;
}

/// Thirty addresses (the loopback network is all ours), three senders each, post `email` with
/// wrong passwords while the owner signs in five times from an address of their own.
async fn the_owner_signs_in_during_a_flood(email: fn(u8, u8, u32) -> String) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let app = TestApp::start(&Backend::Sqlite).await;
    let boot = app.bootstrap().await;
    let password = "the owner's passphrase";
    let accepted = app
        .accept_invitation(owner_invitation_token(&boot), password, json!({}))
        .await;
    assert_eq!(accepted.status(), 200);

    let root = reqwest::Certificate::from_der(app.certificate.chain[0].as_ref()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    // 30 addresses (the loopback network is all ours), 3 concurrent senders each.
    for address in 2..32u8 {
        let client = reqwest::Client::builder()
            .tls_certs_only([root.clone()])
            .local_address(std::net::IpAddr::from([127, 0, 0, address]))
            .build()
            .unwrap();
        for sender in 0..3 {
            let (client, url, done, attempts) = (
                client.clone(),
                app.url("/api/v0/auth"),
                done.clone(),
                attempts.clone(),
            );
            flood.push(tokio::spawn(async move {
                for n in 0..400 {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    let email = email(address, sender, n);
                    let _ = client
                        .post(&url)
                        .json(&json!({"email": email, "password": "guess guess guess"}))
                        .send()
                        .await;
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    // Let the flood build up before the owner arrives.
    while attempts.load(Ordering::Relaxed) < 200 {
        tokio::task::yield_now().await;
    }
    let mut answers = Vec::new();
    for _ in 0..5 {
        let response = app
            .post_json(
                "/api/v0/auth",
                &json!({"email": "owner@example.com", "password": password}),
            )
            .await;
        let status = response.status().as_u16();
        if status != 200 {
            eprintln!("owner: {status} {}", response.text().await.unwrap());
        }
        answers.push(status);
    }
    done.store(true, Ordering::Release);
    for sender in flood {
        sender.await.unwrap();
    }
    assert_eq!(answers, [200; 5], "the owner's sign-ins during the flood");
}
