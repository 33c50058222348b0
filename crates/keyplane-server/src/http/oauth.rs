//! OAuth 2.0: the token endpoint (RFC 6749 §4.4 client credentials, §6 refresh), introspection
//! (RFC 7662), revocation (RFC 7009) and the server's metadata (RFC 8414). API keys are the
//! clients: `client_id` is the key, `client_secret` its secret, sent by HTTP Basic or in the
//! form body. Errors use RFC 6749 §5.2's shape, not the management API's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyplane_core::OrganizationId;
use keyplane_core::records::{ActorType, ApiKey};
use keyplane_types::oauth::{
    IntrospectionResponse, OAuthErrorBody, OAuthTokenResponse, ServerMetadata,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::MAX_CREDENTIAL_LENGTH;
use crate::http::error::ApiError;
use crate::http::response::json_body;
use crate::service::access::{self, AccessError};
use crate::service::context::RequestContext;
use crate::service::credentials::{self, KeyGrant};
use crate::service::refresh;
use crate::service::tokens::AuthError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(introspect))
        .routes(routes!(revoke))
        .routes(routes!(metadata))
}

/// An OAuth error response.
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<HeaderValue>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        )
    }

    fn invalid_grant() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The refresh token is invalid, expired, revoked or was issued to another client.",
        )
    }

    /// Maps a failed client authentication.
    fn from_client_auth(error: AuthError) -> Self {
        match error {
            AuthError::InvalidCredentials => Self::invalid_client(),
            other => Self::from_auth(other),
        }
    }

    fn from_auth(error: AuthError) -> Self {
        match error {
            AuthError::InvalidCredentials => Self::invalid_grant(),
            AuthError::Throttled(_) | AuthError::Busy => {
                let retry_after = ApiError::from(error).retry_after_header();
                Self {
                    retry_after,
                    ..Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "slow_down",
                        "Too many failed attempts; retry later.",
                    )
                }
            }
            AuthError::Store(error) => Self::from_api(ApiError::from(error)),
        }
    }

    fn from_api(error: ApiError) -> Self {
        let error_code = if error.status() == StatusCode::SERVICE_UNAVAILABLE {
            "temporarily_unavailable"
        } else {
            "server_error"
        };
        Self::new(error.status(), error_code, error.message().to_owned())
    }
}

impl From<keyplane_store::StoreError> for OAuthError {
    fn from(error: keyplane_store::StoreError) -> Self {
        Self::from_api(ApiError::from(error))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.error,
            error_description: self.description,
        };
        let mut response = (self.status, json_body(&body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="keyplane", charset="UTF-8""#),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

/// Longest form parameter read: room for an access token, far below the body limit.
const MAX_PARAMETER_LENGTH: usize = 4096;

/// A form body: `application/x-www-form-urlencoded`, each parameter at most once (RFC 6749 §3.2).
struct Form(HashMap<String, String>);

impl Form {
    fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Self, OAuthError> {
        let form_encoded = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_encoded {
            return Err(OAuthError::invalid_request(
                "The body must be application/x-www-form-urlencoded.",
            ));
        }
        let mut parameters = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if name.contains('\0') || value.contains('\0') {
                return Err(OAuthError::invalid_request(format!(
                    "{}: NUL characters are not allowed",
                    if name.contains('\0') {
                        "parameter name"
                    } else {
                        &name
                    }
                )));
            }
            if parameters
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::invalid_request(format!(
                    "{name}: must not be repeated"
                )));
            }
        }
        Ok(Self(parameters))
    }

    /// A parameter; empty values count as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(value) if value.len() > MAX_PARAMETER_LENGTH => {
                Err(OAuthError::invalid_request(format!("{name}: is too long")))
            }
            Some(value) => Ok(Some(value)),
        }
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("{name}: is required")))
    }
}

/// The client credentials a request presents, by HTTP Basic (RFC 6749 §2.3.1, each half
/// form-urlencoded) or in the body; never both.
fn client_credentials(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<(String, String)>, OAuthError> {
    let basic = match headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default())
    {
        Some(value) if value.len() > 6 && value[..6].eq_ignore_ascii_case("basic ") => {
            Some(parse_basic(&value[6..]).ok_or_else(OAuthError::invalid_client)?)
        }
        // Other schemes carry no client credentials here.
        _ => None,
    };
    let posted = match (form.get("client_id")?, form.get("client_secret")?) {
        (Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned())),
        (None, None) => None,
        // A client may name itself in the body beside Basic, but only as itself.
        (Some(id), None) => match &basic {
            Some((basic_id, _)) if basic_id == id => None,
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "client_id: differs from the client authenticated by HTTP Basic",
                ));
            }
            None => return Err(OAuthError::invalid_client()),
        },
        _ => return Err(OAuthError::invalid_client()),
    };
    match (basic, posted) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "Use one client authentication method, not two.",
        )),
        (basic, posted) => Ok(basic.or(posted)),
    }
}

fn parse_basic(encoded: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |part: &str| {
        percent_encoding::percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let (id, secret) = (unescape(id)?, unescape(secret)?);
    // No credential holds a NUL, and PostgreSQL refuses one in text.
    (!id.is_empty()
        && !secret.is_empty()
        && !id.contains('\0')
        && !secret.contains('\0')
        && id.len() <= MAX_CREDENTIAL_LENGTH
        && secret.len() <= MAX_CREDENTIAL_LENGTH)
        .then_some((id, secret))
}

/// Authenticates the calling client; required by introspection and revocation.
async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &Form,
    context: &RequestContext,
) -> Result<Arc<ApiKey>, OAuthError> {
    let (id, secret) = client_credentials(headers, form)?.ok_or_else(OAuthError::invalid_client)?;
    credentials::verify_client(state, &id, &secret, context)
        .await
        .map_err(OAuthError::from_client_auth)
}

/// OAuth 2.0 token endpoint: `grant_type=client_credentials` (client by HTTP Basic or in the
/// body) or `grant_type=refresh_token`.
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth2",
    request_body(content_type = "application/x-www-form-urlencoded", content = String,
        description = "grant_type, client_id/client_secret (or HTTP Basic), refresh_token"),
    responses(
        (status = 200, description = "An access token", body = OAuthTokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, unsupported_grant_type, invalid_scope", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 429, description = "slow_down, with Retry-After", body = OAuthErrorBody),
    ))]
pub async fn token(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    let grant_type = form.require("grant_type")?;
    if form.get("scope")?.is_some() {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Keyplane defines no scopes: a token carries its key's rights.",
        ));
    }
    let credentials = client_credentials(&headers, &form)?;
    let issued = match grant_type {
        "client_credentials" => {
            let (id, secret) = credentials.ok_or_else(OAuthError::invalid_client)?;
            credentials::authenticate_api_key(
                &state,
                &id,
                &secret,
                KeyGrant::ClientCredentials,
                &context,
            )
            .await
            .map_err(OAuthError::from_client_auth)?
        }
        "refresh_token" => {
            let refresh_token = form.require("refresh_token")?;
            let client = match credentials {
                Some((id, secret)) => Some(
                    credentials::verify_client(&state, &id, &secret, &context)
                        .await
                        .map_err(OAuthError::from_client_auth)?,
                ),
                None => None,
            };
            refresh::refresh(&state, refresh_token, client.as_deref(), &context)
                .await
                .map_err(OAuthError::from_auth)?
        }
        other => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type: {other:?} is not supported"),
            ));
        }
    };
    let mut response = json_body(&OAuthTokenResponse {
        expires_in: issued.claims.exp - issued.claims.iat,
        access_token: issued.access_token,
        token_type: "Bearer",
        refresh_token: issued.refresh_token.map(|(token, _)| token.into_string()),
    });
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Whether the calling key may learn about a token of `organization_id`.
async fn visible(
    state: &AppState,
    caller: &ApiKey,
    organization_id: OrganizationId,
) -> Result<bool, OAuthError> {
    Ok(
        access::visible_organization(state, caller.organization_id, organization_id)
            .await?
            .is_some(),
    )
}

/// RFC 7662 token introspection, for access and refresh tokens of the calling key's organization
/// and those it manages; anything else is reported inactive.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth2",
    request_body(content_type = "application/x-www-form-urlencoded", content = String,
        description = "token, token_type_hint?; client by HTTP Basic or client_id/client_secret"),
    responses(
        (status = 200, description = "The token's state", body = IntrospectionResponse),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    let caller = authenticated_client(&state, &headers, &form, &context).await?;
    let presented = form.require("token")?;
    let inactive = || Ok(json_body(&IntrospectionResponse::default()));
    match access::verify_access_token(&state, presented).await {
        Ok(actor) => {
            if !visible(&state, &caller, actor.organization_id).await? {
                return inactive();
            }
            let claims = actor.claims;
            return Ok(json_body(&IntrospectionResponse {
                active: true,
                token_type: Some("Bearer"),
                sub: Some(claims.sub),
                iss: Some(claims.iss),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                nbf: Some(claims.nbf),
                jti: Some(claims.jti),
                organization: Some(claims.organization),
                env: Some(claims.env),
                subject_type: Some(claims.subject_type.as_str()),
            }));
        }
        Err(AccessError::Store(error)) => {
            return Err(OAuthError::from_api(ApiError::from(&*error)));
        }
        Err(AccessError::Invalid(_)) => {}
    }
    let Some(token) = refresh::find_refresh_token(&state, presented).await? else {
        return inactive();
    };
    if !visible(&state, &caller, token.organization_id).await?
        || !refresh::refresh_token_is_active(&state, &token).await?
    {
        return inactive();
    }
    Ok(json_body(&IntrospectionResponse {
        active: true,
        token_type: Some("refresh_token"),
        sub: Some(token.subject_id),
        iss: Some(state.issuer()),
        exp: Some(token.expires_at),
        iat: Some(token.created_at),
        organization: Some(token.organization_id.to_string()),
        env: Some(token.env),
        subject_type: Some(token.subject_type.as_str()),
        ..Default::default()
    }))
}

/// RFC 7009 revocation of refresh tokens (the whole family). Unknown tokens, and tokens the
/// caller cannot see, answer 200 as the RFC requires; access tokens cannot be revoked one by one
/// (they live minutes; disable the key to stop them) and answer `unsupported_token_type`.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth2",
    request_body(content_type = "application/x-www-form-urlencoded", content = String,
        description = "token, token_type_hint?; client by HTTP Basic or client_id/client_secret"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "invalid_request, unsupported_token_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = Form::parse(&headers, &body)?;
    let caller = authenticated_client(&state, &headers, &form, &context).await?;
    let presented = form.require("token")?;
    if let Some(token) = refresh::find_refresh_token(&state, presented).await? {
        if visible(&state, &caller, token.organization_id).await? {
            let caller_id = caller.id.to_string();
            refresh::revoke_refresh_token(
                &state,
                &token,
                (ActorType::ApiKey, &caller_id),
                &context,
            )
            .await?;
        }
        return Ok(json_body(&serde_json::json!({})));
    }
    // An access token of an organization the caller cannot see is answered like an unknown
    // token: the answer must not tell whether it is valid.
    let verified = state.signing_keys().current().verify(presented).ok();
    let own = match verified.and_then(|claims| claims.organization.parse().ok()) {
        Some(organization) => visible(&state, &caller, organization).await?,
        None => false,
    };
    if own {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            "Access tokens expire on their own; disable the API key to stop them at once.",
        ));
    }
    Ok(json_body(&serde_json::json!({})))
}

/// OAuth 2.0 authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth2",
    responses((status = 200, description = "Server metadata", body = ServerMetadata)))]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = state.issuer();
    let methods = || vec!["client_secret_basic", "client_secret_post"];
    json_body(&ServerMetadata {
        token_endpoint: format!("{issuer}/oauth2/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        introspection_endpoint: format!("{issuer}/oauth2/introspect"),
        revocation_endpoint: format!("{issuer}/oauth2/revoke"),
        grant_types_supported: vec!["client_credentials", "refresh_token"],
        response_types_supported: Vec::new(),
        token_endpoint_auth_methods_supported: methods(),
        introspection_endpoint_auth_methods_supported: methods(),
        revocation_endpoint_auth_methods_supported: methods(),
        scopes_supported: Vec::new(),
        issuer,
    })
}
