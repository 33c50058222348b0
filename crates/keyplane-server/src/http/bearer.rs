//! The bearer-token extractor every management endpoint takes: it verifies the token and yields
//! the [`Actor`], or answers 401 with an RFC 6750 challenge. See [`crate::service::access`] for how
//! revocation reaches every node.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::http::error::ApiError;
use crate::service::access::{self, AccessError, Actor};
use crate::state::AppState;

/// Longest bearer token read; ours are a few hundred bytes.
const MAX_TOKEN_LENGTH: usize = 4096;

/// The authenticated caller of a management endpoint.
pub struct Bearer(pub Actor);

/// A caller a middleware already verified for this request with [`verify`] (the idempotency
/// layer does), so the extractor does not verify the token twice.
#[derive(Clone)]
pub(crate) struct Verified(pub Actor);

/// The one bearer-token check: the `Authorization` header's token, verified.
pub async fn verify(headers: &HeaderMap, state: &AppState) -> Result<Actor, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::invalid_bearer(true));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LENGTH)
        .ok_or_else(|| ApiError::invalid_bearer(true))?;
    match access::verify_access_token(state, token).await {
        Ok(actor) => Ok(actor),
        Err(AccessError::Invalid(_)) => Err(ApiError::invalid_bearer(false)),
        Err(AccessError::Store(error)) => Err(ApiError::from(&*error)),
    }
}

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Verified(actor)) = parts.extensions.remove::<Verified>() {
            return Ok(Bearer(actor));
        }
        verify(&parts.headers, state).await.map(Bearer)
    }
}
