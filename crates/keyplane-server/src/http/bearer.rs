//! The bearer-token extractor every management endpoint takes: it verifies the token and yields
//! the [`Actor`], or answers 401 with an RFC 6750 challenge. See [`crate::service::access`] for how
//! revocation reaches every node.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::http::error::ApiError;
use crate::service::access::{self, AccessError, Actor};
use crate::state::AppState;

/// Longest bearer token read; ours are a few hundred bytes.
const MAX_TOKEN_LENGTH: usize = 4096;

/// The authenticated caller of a management endpoint.
pub struct Bearer(pub Actor);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
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
            Ok(actor) => Ok(Bearer(actor)),
            Err(AccessError::Invalid(_)) => Err(ApiError::invalid_bearer(false)),
            Err(AccessError::Store(error)) => Err(ApiError::from(&*error)),
        }
    }
}
