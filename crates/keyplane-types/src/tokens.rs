//! Token endpoints outside OAuth: fiskaly's `POST /api/v0/auth`, Fiskil's `POST /v1/token` (with
//! its own error shape) and the JWKS document.

use keyplane_core::tokens::Jwk;
use keyplane_core::values::Env;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One of the three credential forms of `POST /api/v0/auth`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// With `email`: the organization the token acts for (default: the person's first).
    pub organization_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessTokenClaimsBody {
    pub env: Env,
    pub organization_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    /// EdDSA-signed JWT.
    pub access_token: String,
    pub access_token_claims: AccessTokenClaimsBody,
    pub access_token_expires_in: i64,
    pub access_token_expires_at: i64,
    /// Opaque, single use.
    pub refresh_token: String,
    pub refresh_token_expires_in: i64,
    pub refresh_token_expires_at: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FiskilTokenRequest {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FiskilTokenResponse {
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
}

/// Fiskil's error shape: `{"id": "err_<uuid>", "name", "message"}`.
#[derive(Serialize, ToSchema)]
pub struct FiskilError {
    pub id: String,
    pub name: &'static str,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct JwksDocument {
    pub keys: Vec<Jwk>,
}
