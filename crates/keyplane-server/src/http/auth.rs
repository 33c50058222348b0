//! Token endpoints: fiskaly's `POST /api/v0/auth`, Fiskil's `POST /v1/token`, and the JWKS that
//! verifies what they issue.

use axum::extract::State;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_types::errors::ErrorBody;
use keyplane_types::tokens::{
    AccessTokenClaimsBody, AuthRequest, AuthResponse, FiskilError, FiskilTokenRequest,
    FiskilTokenResponse, JwksDocument,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::response::{JsonResponse, json_body};
use crate::service::context::RequestContext;
use crate::service::credentials::{self, KeyGrant};
use crate::service::refresh;
use crate::service::tokens::{AuthError, IssuedTokens};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authenticate))
        .routes(routes!(fiskil_token))
        .routes(routes!(jwks))
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidCredentials => ApiError::unauthorized("Invalid credentials"),
            AuthError::Throttled(seconds) => ApiError::rate_limited(seconds),
            AuthError::Busy => ApiError::rate_limited(1),
            AuthError::Store(error) => error.into(),
        }
    }
}

/// Longest credential accepted; anything longer cannot be one of ours.
pub(crate) const MAX_CREDENTIAL_LENGTH: usize = 512;

pub(crate) fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    match value.as_deref() {
        None => Err(ApiError::validation(field, "is required")),
        Some("") => Err(ApiError::validation(field, "must not be empty")),
        Some(v) if v.len() > MAX_CREDENTIAL_LENGTH => {
            Err(ApiError::validation(field, "is too long"))
        }
        Some(v) => Ok(v),
    }
}

/// Obtain an access token and a refresh token. An `Authorization` header is ignored.
#[utoipa::path(post, path = "/api/v0/auth", tag = "auth", request_body = AuthRequest,
    responses(
        (status = 200, description = "A token pair", body = AuthResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
    ))]
pub async fn authenticate(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<AuthRequest>,
) -> Result<JsonResponse<AuthResponse>, ApiError> {
    let issued = if body.refresh_token.is_some() {
        if body.api_key.is_some()
            || body.api_secret.is_some()
            || body.email.is_some()
            || body.password.is_some()
            || body.organization_id.is_some()
        {
            return Err(ApiError::validation(
                "refresh_token",
                "cannot be combined with other credentials",
            ));
        }
        refresh::refresh(
            &state,
            required("refresh_token", &body.refresh_token)?,
            None,
            &context,
        )
        .await?
    } else if body.email.is_some() || body.password.is_some() {
        if body.api_key.is_some() || body.api_secret.is_some() {
            return Err(ApiError::validation(
                "email",
                "cannot be combined with an API key",
            ));
        }
        let email = required("email", &body.email)?;
        let password = required("password", &body.password)?;
        let organization_id = body
            .organization_id
            .as_deref()
            .map(|id| {
                id.parse()
                    .map_err(|_| ApiError::validation("organization_id", "must be a UUID"))
            })
            .transpose()?;
        credentials::authenticate_password(&state, email, password, organization_id, &context)
            .await?
    } else {
        if body.organization_id.is_some() {
            return Err(ApiError::validation(
                "organization_id",
                "only applies to email and password",
            ));
        }
        let key = required("api_key", &body.api_key)?;
        let secret = required("api_secret", &body.api_secret)?;
        credentials::authenticate_api_key(&state, key, secret, KeyGrant::Auth, &context).await?
    };
    Ok(JsonResponse(auth_response(issued)))
}

fn auth_response(issued: IssuedTokens) -> AuthResponse {
    let claims = &issued.claims;
    let (refresh_token, refresh_expires_at) = issued
        .refresh_token
        .expect("the fiskaly flow issues a refresh token");
    AuthResponse {
        access_token: issued.access_token,
        access_token_claims: AccessTokenClaimsBody {
            env: claims.env,
            organization_id: claims.organization.clone(),
        },
        access_token_expires_in: claims.exp - claims.iat,
        access_token_expires_at: claims.exp,
        refresh_token: refresh_token.into_string(),
        refresh_token_expires_in: refresh_expires_at - claims.iat,
        refresh_token_expires_at: refresh_expires_at,
    }
}

fn fiskil_error(status: StatusCode, name: &'static str, message: impl Into<String>) -> Response {
    let body = FiskilError {
        id: format!("err_{}", uuid::Uuid::new_v4()),
        name,
        message: message.into(),
    };
    (status, json_body(&body)).into_response()
}

/// Fiskil-compatible token endpoint: client id and secret for an access token (no refresh token).
#[utoipa::path(post, path = "/v1/token", tag = "auth", request_body = FiskilTokenRequest,
    responses(
        (status = 200, description = "An access token", body = FiskilTokenResponse),
        (status = 400, description = "Malformed request", body = FiskilError),
        (status = 401, description = "Invalid credentials", body = FiskilError),
    ))]
pub async fn fiskil_token(
    State(state): State<AppState>,
    context: RequestContext,
    request: Request,
) -> Response {
    let body = match ApiJson::<FiskilTokenRequest>::from_request(request, &state).await {
        Ok(ApiJson(body)) => body,
        Err(error) => {
            return fiskil_error(error.status(), "InvalidRequest", error.message().to_owned());
        }
    };
    let (client_id, client_secret) = match (
        required("client_id", &body.client_id),
        required("client_secret", &body.client_secret),
    ) {
        (Ok(id), Ok(secret)) => (id, secret),
        (Err(error), _) | (_, Err(error)) => {
            return fiskil_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                error.message().to_owned(),
            );
        }
    };
    match credentials::authenticate_api_key(
        &state,
        client_id,
        client_secret,
        KeyGrant::Fiskil,
        &context,
    )
    .await
    {
        Ok(issued) => json_body(&FiskilTokenResponse {
            expires_in: issued.claims.exp - issued.claims.iat,
            token: issued.access_token,
            token_type: "Bearer",
        }),
        Err(AuthError::InvalidCredentials) => fiskil_error(
            StatusCode::UNAUTHORIZED,
            "InvalidCredentials",
            "Invalid client credentials.",
        ),
        Err(error @ (AuthError::Throttled(_) | AuthError::Busy)) => {
            let mut response = fiskil_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many failed attempts; retry later.",
            );
            if let Some(header) = ApiError::from(error).retry_after_header() {
                response.headers_mut().insert(header::RETRY_AFTER, header);
            }
            response
        }
        Err(AuthError::Store(error)) => {
            let error = ApiError::from(error);
            fiskil_error(
                error.status(),
                "ServiceUnavailable",
                error.message().to_owned(),
            )
        }
    }
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = JwksDocument)))]
pub async fn jwks(State(state): State<AppState>) -> JsonResponse<JwksDocument> {
    JsonResponse(JwksDocument {
        keys: state.signing_keys().current().jwks().to_vec(),
    })
}
