//! OAuth 2.0 bodies: the RFC 6749 error and token responses, RFC 7662 introspection and RFC 8414
//! server metadata.

use serde::Serialize;
use utoipa::ToSchema;

/// RFC 6749 §5.2 error body.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_client", "error_description": "Invalid client credentials."}))]
pub struct OAuthErrorBody {
    #[schema(example = "invalid_client")]
    pub error: &'static str,
    pub error_description: String,
}

/// RFC 6749 §5.1 token response.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "access_token": "<EdDSA-signed JWT>",
    "token_type": "Bearer",
    "expires_in": 300,
    "refresh_token": "<single-use refresh token>"
}))]
pub struct OAuthTokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
    /// Only for the `refresh_token` grant: the next refresh token (single use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// RFC 7662 introspection response. Inactive tokens answer `{"active": false}` only.
#[derive(Serialize, ToSchema, Default)]
#[schema(example = json!({
    "active": true,
    "token_type": "Bearer",
    "sub": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92",
    "iss": "https://keyplane.example.com",
    "exp": 1764547500,
    "iat": 1764547200,
    "nbf": 1764547200,
    "jti": "0190c8e6-3e4f-7a5b-8c6d-1e2f3a4b5c6d",
    "organization": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
    "env": "TEST",
    "type": "API_KEY"
}))]
pub struct IntrospectionResponse {
    pub active: bool,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The organization the token acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<keyplane_core::values::Env>,
    /// `API_KEY` or `USER`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub subject_type: Option<&'static str>,
}

/// RFC 8414 authorization server metadata.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "issuer": "https://keyplane.example.com",
    "token_endpoint": "https://keyplane.example.com/oauth2/token",
    "jwks_uri": "https://keyplane.example.com/.well-known/jwks.json",
    "introspection_endpoint": "https://keyplane.example.com/oauth2/introspect",
    "revocation_endpoint": "https://keyplane.example.com/oauth2/revoke",
    "grant_types_supported": ["client_credentials", "refresh_token"],
    "response_types_supported": [],
    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    "scopes_supported": []
}))]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    /// No authorization endpoint: there is no response type.
    pub response_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    pub scopes_supported: Vec<&'static str>,
}
