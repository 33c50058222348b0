//! Token endpoints outside OAuth: fiskaly's `POST /api/v0/auth`, Fiskil's `POST /v1/token` (with
//! its own error shape) and the JWKS document.

use keyplane_core::tokens::Jwk;
use keyplane_core::values::Env;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One of the three credential forms of `POST /api/v0/auth`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"api_key": "test_3fk2m9q8w1x7z5v4c6b2n8m1_pos-1", "api_secret": "<API key secret>"}))]
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
#[schema(example = json!({"env": "TEST", "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70"}))]
pub struct AccessTokenClaimsBody {
    pub env: Env,
    pub organization_id: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "access_token": "<EdDSA-signed JWT>",
    "access_token_claims": {"env": "TEST", "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70"},
    "access_token_expires_in": 300,
    "access_token_expires_at": 1764547500,
    "refresh_token": "<single-use refresh token>",
    "refresh_token_expires_in": 86400,
    "refresh_token_expires_at": 1764633600
}))]
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
#[schema(example = json!({"client_id": "test_3fk2m9q8w1x7z5v4c6b2n8m1_pos-1", "client_secret": "<API key secret>"}))]
pub struct FiskilTokenRequest {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"token": "<EdDSA-signed JWT>", "token_type": "Bearer", "expires_in": 600}))]
pub struct FiskilTokenResponse {
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
}

/// Fiskil's error shape: `{"id": "err_<uuid>", "name", "message"}`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "err_3b9f1c2e-7a4d-4e8b-9c1f-5d2a6e8b0c34", "name": "InvalidCredentials", "message": "Invalid client credentials."}))]
pub struct FiskilError {
    pub id: String,
    pub name: &'static str,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"keys": [{
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    "kid": "0190c8e0a1b27c3d8e4f5a6b7c8d9e0f",
    "alg": "EdDSA",
    "use": "sig"
}]}))]
pub struct JwksDocument {
    pub keys: Vec<Jwk>,
}
