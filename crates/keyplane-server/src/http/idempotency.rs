//! The `Idempotency-Key` layer (contract §12), one middleware on every write of the management
//! API: it validates the header, finds the caller, and runs the request through
//! [`crate::service::idempotency`]: the work once, its answer replayed to retries with
//! `Idempotent-Replayed: true`, 422 for the key reused on another request, 409 while the first
//! still runs.
//!
//! The caller is the API key or person of the bearer token, verified by the one bearer check
//! ([`bearer::verify`], which the handler then does not repeat); a request without a valid token
//! passes through untouched (the handler answers 401, which is not kept). The unauthenticated
//! invitation accept is keyed to the holder of the invitation token in its body.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use keyplane_core::idempotency::{HEADER, IdempotencyKey, RENEW_SECONDS};

use crate::http::bearer::{self, Verified};
use crate::http::error::{ApiError, NotKept};
use crate::http::extract::BODY_LIMIT_BYTES;
use crate::http::request_id::{self, REQUEST_ID};
use crate::service::idempotency::{self as service, Begun, Claimed, Replay};
use crate::state::AppState;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The one write of the management API without a bearer token.
const ACCEPT_ROUTE: &str = "/api/v0/invitations/accept";

/// Largest answer kept; the API's answers to writes are single resources, far below it.
const MAX_KEPT_BODY: usize = BODY_LIMIT_BYTES;

/// Whether a request of `method` to the route `template` takes an `Idempotency-Key`: the
/// writes (POST, PUT, PATCH, DELETE) of the management API, `/api/v0/…`. Not `/api/v0/auth`,
/// `/v1/token` or `/oauth2/…`: they issue or revoke tokens, which is not a management write
/// (a lost answer there is retried by logging in again).
pub fn takes_idempotency_key(method: &Method, template: &str) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && template.starts_with("/api/v0/")
        && template != "/api/v0/auth"
}

pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(template) = request
        .extensions()
        .get::<MatchedPath>()
        .filter(|path| takes_idempotency_key(request.method(), path.as_str()))
        .map(|path| path.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let mut values = request.headers().get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return next.run(request).await;
    };
    if values.next().is_some() {
        return ApiError::validation(HEADER, "must be sent once").into_response();
    }
    let key = match IdempotencyKey::parse(value.as_bytes()) {
        Ok(key) => key,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let (mut parts, body) = request.into_parts();
    // The body is already in memory (read, bounded, by `read_body_in_time`).
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT_BYTES).await else {
        return ApiError::bad_request("The request body could not be read.").into_response();
    };
    let caller = caller(&state, &template, &mut parts, &body).await;
    let Some(caller) = caller else {
        // Nobody to keep an answer for: the handler refuses the request, and that is not kept.
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |target| target.as_str())
        .to_owned();
    // From the claim on, on a task of its own: a client hanging up while the claim is being
    // written would otherwise leave it written and held by nobody (retries then get 409 until
    // its lease ends), or cancel the work half-way.
    let task = REQUEST_ID.scope(request_id::current(), async move {
        let begun =
            service::begin(&state, caller, &key, parts.method.as_str(), &target, &body).await;
        match begun {
            Ok(Begun::Run(claimed)) => {
                run(
                    state,
                    claimed,
                    Request::from_parts(parts, Body::from(body)),
                    next,
                )
                .await
            }
            Ok(Begun::Replay(replay)) => replayed(replay),
            Ok(Begun::InProgress) => ApiError::idempotency_in_progress().into_response(),
            Ok(Begun::Mismatch) => ApiError::idempotency_mismatch().into_response(),
            Err(error) => ApiError::from(error).into_response(),
        }
    });
    match tokio::spawn(task).await {
        Ok(response) => response,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => ApiError::internal(error).into_response(),
    }
}

/// Whose records the request uses: the bearer token's caller (then handed on to the handler's
/// `Bearer`, verified) or, for the invitation accept, the invitation's holder. `None` when there
/// is none: no valid token, or no token in the accept's body.
async fn caller(
    state: &AppState,
    template: &str,
    parts: &mut axum::http::request::Parts,
    body: &[u8],
) -> Option<String> {
    if template == ACCEPT_ROUTE {
        return invitation_token(body).map(|token| service::caller_of_invitation(state, &token));
    }
    let actor = bearer::verify(&parts.headers, state).await.ok()?;
    let caller = service::caller_of(&actor);
    parts.extensions.insert(Verified(actor));
    Some(caller)
}

/// The token of an invitation accept's body; `None` when there is none (the handler refuses it).
fn invitation_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Accept {
        token: String,
    }
    serde_json::from_slice::<Accept>(body)
        .ok()
        .map(|accept| accept.token)
        .filter(|token| !token.is_empty())
}

/// Runs the claimed request (on the task [`idempotency`] spawned, so that a client hanging up
/// cannot cancel the work half-way: the work finishes and its answer is kept for the retry).
/// The claim is renewed while the work runs; a panic releases it and goes on to the panic
/// layer.
async fn run(state: AppState, claimed: Box<Claimed>, request: Request, next: Next) -> Response {
    let mut guard = ReleaseOnDrop {
        state: state.clone(),
        claimed: Some(claimed),
    };
    let work = next.run(request);
    tokio::pin!(work);
    let every = Duration::from_secs(RENEW_SECONDS);
    let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let response = loop {
        tokio::select! {
            response = &mut work => break response,
            _ = renewals.tick() => {
                let claimed = guard.claimed.as_deref().expect("the claim is held");
                service::renew(&state, claimed).await;
            }
        }
    };
    let (parts, body) = response.into_parts();
    let claimed = guard.claimed.take().expect("the claim is held until now");
    match axum::body::to_bytes(body, MAX_KEPT_BODY).await {
        Ok(bytes) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let status = parts.status.as_u16();
            if parts.extensions.get::<NotKept>().is_some() {
                service::release(&state, claimed).await;
            } else {
                service::finish(&state, claimed, status, content_type, &bytes).await;
            }
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(error) => {
            service::release(&state, claimed).await;
            ApiError::internal(format!("an answer could not be kept: {error}")).into_response()
        }
    }
}

/// Releases a claim whose work ended without an answer (a panic), so a retry runs again.
struct ReleaseOnDrop {
    state: AppState,
    claimed: Option<Box<Claimed>>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(claimed) = self.claimed.take() {
            let state = self.state.clone();
            tokio::spawn(async move { service::release(&state, claimed).await });
        }
    }
}

/// A kept answer again: its status, content type and body, marked as a replay.
fn replayed(replay: Replay) -> Response {
    let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, replay.body).into_response();
    let headers = response.headers_mut();
    match replay
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        Some(content_type) => headers.insert(header::CONTENT_TYPE, content_type),
        None => headers.remove(header::CONTENT_TYPE),
    };
    headers.insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}
