//! Micro-benchmarks of the token hot path: API-secret verification, access-token signing and
//! verification, and the full bearer check every management request pays.
//!
//! `cargo bench -p keyplane-server --bench hot_path` (add `-- <filter>` to pick benchmarks).

use std::hint::black_box;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Request, header};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keyplane_core::secrets::{CredentialKind, MasterKey, PlainCredential};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::{
    AccessClaims, KEY_PROPAGATION_SECONDS, SigningKey, SubjectType, TokenKeys,
};
use keyplane_core::values::Env;
use keyplane_server::http::bearer::Bearer;
use keyplane_server::service::access::verify_access_token;
use keyplane_server::startup::open_store;
use keyplane_server::{AppState, ServeConfig};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const ISSUER: &str = "https://keyplane.bench";
const ACCESS_TTL: i64 = 300;
/// Lifetime of the benchmarked tokens: long enough to outlast any run.
const BENCH_TOKEN_TTL: i64 = 24 * 3600;

fn claims(issuer: &str, sub: String, organization: String, env: Env) -> AccessClaims {
    let now = now_unix();
    AccessClaims {
        iss: issuer.to_owned(),
        sub,
        organization,
        env,
        subject_type: SubjectType::ApiKey,
        iat: now,
        nbf: now,
        exp: now + BENCH_TOKEN_TTL,
        jti: uuid::Uuid::now_v7().simple().to_string(),
        role: None,
        token_version: 0,
        key_generation: None,
    }
}

fn secret_verification(c: &mut Criterion) {
    let secrets = MasterKey::generate().derive();
    let secret = PlainCredential::generate();
    let other = PlainCredential::generate();
    let hash = secrets.hash_credential(CredentialKind::ApiSecret, secret.expose());
    assert!(secrets.verify_credential(CredentialKind::ApiSecret, secret.expose(), &hash));
    assert!(!secrets.verify_credential(CredentialKind::ApiSecret, other.expose(), &hash));

    let mut group = c.benchmark_group("secret_verification");
    group.bench_function("matching", |b| {
        b.iter(|| {
            secrets.verify_credential(
                CredentialKind::ApiSecret,
                black_box(secret.expose()),
                black_box(&hash),
            )
        })
    });
    group.bench_function("non_matching", |b| {
        b.iter(|| {
            secrets.verify_credential(
                CredentialKind::ApiSecret,
                black_box(other.expose()),
                black_box(&hash),
            )
        })
    });
    group.finish();
}

fn token_keys() -> TokenKeys {
    let now = now_unix();
    // Older than the propagation delay, so it is the signer by the normal rule.
    let key = SigningKey::generate(now - 10 * KEY_PROPAGATION_SECONDS);
    TokenKeys::new(ISSUER.to_owned(), &[key], now, ACCESS_TTL).expect("a usable signing key")
}

fn tokens(c: &mut Criterion) {
    let keys = token_keys();
    let claims = claims(
        ISSUER,
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
        Env::Test,
    );
    let token = keys.sign(&claims);
    assert_eq!(keys.verify(&token).expect("the token verifies"), claims);
    // Same header and claims, signature of another key: fails only at the signature check.
    let forged = {
        let (signed_part, _) = token.rsplit_once('.').expect("a JWT");
        let other_token = token_keys().sign(&claims);
        let (_, other_signature) = other_token.rsplit_once('.').expect("a JWT");
        format!("{signed_part}.{other_signature}")
    };
    assert!(keys.verify(&forged).is_err());

    let mut group = c.benchmark_group("token");
    group.bench_function("sign", |b| b.iter(|| keys.sign(black_box(&claims))));
    group.bench_function("verify", |b| b.iter(|| keys.verify(black_box(&token))));
    group.bench_function("verify_forged", |b| {
        b.iter(|| keys.verify(black_box(&forged)))
    });
    group.finish();
}

/// A server state on a fresh SQLite store, with a bootstrapped organization and an access token
/// of its API key signed by the server's own keys.
struct Server {
    state: AppState,
    token: String,
    _data_dir: TempDir,
}

async fn server() -> Server {
    let data_dir = TempDir::new().expect("a temporary directory");
    let config = ServeConfig::for_data_dir(data_dir.path());
    let (store, secrets) = open_store(&config.store).await.expect("the store opens");
    let state = AppState::new(store, secrets, &config)
        .await
        .expect("the state builds");
    let created = keyplane_server::service::bootstrap::bootstrap(
        state.store(),
        state.secrets(),
        "Bench Organization",
        "owner@example.com",
        Default::default(),
        state.public_url(),
    )
    .await
    .expect("bootstrap succeeds");
    let key = state
        .store()
        .api_key_by_public_key(&created.api_key)
        .await
        .expect("the store answers")
        .expect("the bootstrapped key exists");
    let keys = state.signing_keys().current();
    let token = keys.sign(&claims(
        keys.issuer(),
        key.id.to_string(),
        key.organization_id.to_string(),
        key.kind.env(),
    ));
    Server {
        state,
        token,
        _data_dir: data_dir,
    }
}

fn request_parts(token: &str) -> Parts {
    Request::builder()
        .method("GET")
        .uri("/api/v0/organizations")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .expect("a valid request")
        .into_parts()
        .0
}

fn bearer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let Server {
        state,
        token,
        _data_dir,
    } = rt.block_on(server());
    warm_up(&rt, &state, &token);

    let mut group = c.benchmark_group("bearer");
    group.bench_function("verify_access_token", |b| {
        b.to_async(&rt)
            .iter(|| verify_access_token(&state, black_box(&token)))
    });
    group.bench_function("extractor", |b| {
        b.to_async(&rt).iter_batched(
            || request_parts(&token),
            |mut parts| {
                let state = &state;
                async move { Bearer::from_request_parts(&mut parts, state).await }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    // Let the state's background tasks end with the runtime before the data directory goes.
    drop(state);
    drop(rt);
}

/// Fills the subject cache (and checks the token is accepted) before measuring.
fn warm_up(rt: &Runtime, state: &AppState, token: &str) {
    rt.block_on(async {
        let actor = verify_access_token(state, token)
            .await
            .expect("the token is accepted");
        assert_eq!(actor.subject_type, SubjectType::ApiKey);
        let mut parts = request_parts(token);
        assert!(
            Bearer::from_request_parts(&mut parts, state).await.is_ok(),
            "the extractor accepts the token"
        );
    });
}

criterion_group!(benches, secret_verification, tokens, bearer);
criterion_main!(benches);
