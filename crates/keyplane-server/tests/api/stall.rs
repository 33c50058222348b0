//! A PostgreSQL connection that goes silent in the middle of a statement. Neither the
//! database's own timeouts nor the connection's reach the server then (an answer PostgreSQL
//! sends is never delivered), so the server bounds every store operation itself, at
//! `--database-timeout` + 0.5 s: the request gets `503 E_UNAVAILABLE` in about that time instead
//! of waiting for as long as the silence lasts. (`bench/drills`, pg-stall, is the long form.)

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{
    Backend, DatabaseProxy, Fixture, TestAppBuilder, assert_error, fresh_postgres_schema, ok, send,
};

/// The server's `--database-timeout` here: PostgreSQL's `statement_timeout` too.
const DATABASE_TIMEOUT: f64 = 2.0;
/// How long the request may take before the test calls it hanging.
const HANGING: Duration = Duration::from_secs(20);

/// A write blocks inside PostgreSQL on a row lock the test holds; then the network between the
/// server and PostgreSQL goes silent (a proxy stops forwarding, sockets stay open). The request
/// holds its connection by then, so what answers is the server's bound, not the pool's acquire
/// timeout, and not PostgreSQL's statement timeout, whose error cannot cross the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_connection_gone_silent_mid_statement_answers_503_within_the_timeout() {
    let Some(Backend::Postgres(url)) = Backend::postgres() else {
        return;
    };
    let direct = fresh_postgres_schema(&url).await;
    let mut proxy = DatabaseProxy::start(&direct).await;
    let Fixture { app, token, .. } = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .postgres_at(proxy.url(&direct))
        .configure(|c| c.store.database_timeout = DATABASE_TIMEOUT)
        .bootstrapped()
        .await;
    let created = ok(send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/stalled",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await)
    .await;
    let key_id = created["_id"].as_str().unwrap().to_owned();

    // The key's row, locked by a transaction of the test's own, straight to PostgreSQL.
    let mut holder = sqlx::PgConnection::connect(&direct).await.unwrap();
    let mut lock = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(&key_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    let mut observer = sqlx::PgConnection::connect(&direct).await.unwrap();

    let request = {
        let (client, url) = (app.client.clone(), app.url("/api/v0/api-keys/stalled"));
        let token = token.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .patch(url)
                .bearer_auth(token)
                .json(&json!({"metadata": {"note": "stalled"}}))
                .send()
                .await
                .expect("an answer");
            (response, sent.elapsed())
        })
    };
    // Until the server's statement waits for the lock: from then on it holds its connection.
    let started = Instant::now();
    let blocked_pid = loop {
        let blocked: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder_pid)
        .fetch_optional(&mut observer)
        .await
        .unwrap();
        if let Some(pid) = blocked {
            break pid;
        }
        assert!(
            !request.is_finished(),
            "the request was answered before it waited for the lock"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the request never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    proxy.freeze().await;
    let frozen = Instant::now();
    // Still waiting: PostgreSQL has sent nothing for it yet (not even its statement timeout's
    // error), and from here on nothing it sends reaches the server.
    let still_waiting: bool = sqlx::query_scalar("SELECT $1 = ANY(pg_blocking_pids($2))")
        .bind(holder_pid)
        .bind(blocked_pid)
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert!(
        still_waiting,
        "the statement stopped waiting before the freeze"
    );

    let (response, took) = tokio::time::timeout(HANGING, request)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer {HANGING:?} after the database connection went silent: the request \
                 waits for as long as the silence lasts"
            )
        })
        .unwrap();
    let after_freeze = frozen.elapsed();
    eprintln!(
        "answered {} {took:?} after it was sent, {after_freeze:?} after the freeze",
        response.status()
    );
    assert_error(response, 503, "E_UNAVAILABLE").await;
    // About the bound (timeout + 0.5 s from the start of the store operation), with room for a
    // busy machine.
    let bound = Duration::from_secs_f64(DATABASE_TIMEOUT + 0.5);
    assert!(took < bound + Duration::from_secs(4), "took {took:?}");

    // The network comes back and the lock goes: the server recovers by itself.
    proxy.thaw();
    lock.rollback().await.unwrap();
    let patched = ok(send(
        &app,
        Method::PATCH,
        &token,
        "/api/v0/api-keys/stalled",
        Some(json!({"metadata": {"note": "recovered"}})),
    )
    .await)
    .await;
    assert_eq!(patched["metadata"], json!({"note": "recovered"}));
    let read = ok(app.get_as(&token, "/api/v0/api-keys/stalled").await).await;
    assert_eq!(read["metadata"], json!({"note": "recovered"}));
}
