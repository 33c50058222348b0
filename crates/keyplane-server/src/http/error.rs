//! The one error type of the management API. Every failure, including axum's own rejections,
//! becomes the API's JSON error body:
//! `{"status_code", "error", "code", "message", "request_id"}`.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_core::ValidationError;
use keyplane_store::StoreError;
use keyplane_types::errors::ErrorBody;

use crate::http::request_id;

/// Marks an answer the `Idempotency-Key` layer does not keep whatever its status: the work was
/// not done and the answer invites a retry ([`ApiError::changed_meanwhile`]), so the retry with
/// the same key must run again rather than get this answer back.
#[derive(Clone, Copy, Debug)]
pub struct NotKept;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// Logged with the request id, never rendered.
    internal: Option<String>,
    retry_after: Option<u64>,
    /// RFC 6750 challenge for bearer-token failures.
    challenge: Option<&'static str>,
    /// The work was not done and a retry may succeed: the answer is not kept for an
    /// `Idempotency-Key` ([`NotKept`]).
    retry_invited: bool,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
            retry_after: None,
            challenge: None,
            retry_invited: false,
        }
    }

    /// 400 naming the offending field.
    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "E_VALIDATION",
            format!("{field}: {message}"),
        )
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "E_VALIDATION", message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "E_UNAUTHORIZED", message)
    }

    /// 401 for a missing, malformed, expired or revoked bearer token, with its RFC 6750
    /// `WWW-Authenticate` challenge.
    pub fn invalid_bearer(missing: bool) -> Self {
        let mut error = Self::unauthorized(if missing {
            "A bearer token is required."
        } else {
            "The bearer token is invalid, expired or revoked."
        });
        error.challenge = Some(if missing {
            r#"Bearer realm="keyplane""#
        } else {
            r#"Bearer realm="keyplane", error="invalid_token""#
        });
        error
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "E_FORBIDDEN", message)
    }

    /// 404 with a resource-specific code such as `E_ORGANIZATION_NOT_FOUND`.
    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "E_CONFLICT", message)
    }

    /// 409: `what` changed while the request ran, so nothing was written; the client should
    /// try again. Not kept for an `Idempotency-Key`, so that the retry runs again instead of
    /// getting this answer back.
    pub fn changed_meanwhile(what: &str) -> Self {
        let mut error = Self::conflict(format!(
            "The {what} changed while this request ran; try again."
        ));
        error.retry_invited = true;
        error
    }

    /// 422: the `Idempotency-Key` was used with another method, path or body.
    pub fn idempotency_mismatch() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_IDEMPOTENCY_MISMATCH",
            "Idempotency-Key: this key was used with another method, path or body.",
        )
    }

    /// 409 with `Retry-After: 1`: the first request with this `Idempotency-Key` is still running.
    pub fn idempotency_in_progress() -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "E_IDEMPOTENCY_IN_PROGRESS",
            "Idempotency-Key: a request with this key is still running; retry shortly.",
        );
        error.retry_after = Some(1);
        error
    }

    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "E_RATE_LIMITED",
            "Too many requests; retry later.",
        );
        error.retry_after = Some(retry_after_seconds.max(1));
        error
    }

    /// 503 with `Retry-After: 1`: the store cannot serve now and the server recovers by itself.
    pub fn unavailable() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "E_UNAVAILABLE",
            "The service is temporarily unavailable; retry shortly.",
        );
        error.retry_after = Some(1);
        error
    }

    pub fn https_required() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "E_HTTPS_REQUIRED",
            "This server only speaks HTTPS.",
        )
    }

    /// 500 without detail; `detail` is logged with the request id.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "E_INTERNAL",
            "An internal error occurred.",
        );
        error.internal = Some(detail.to_string());
        error
    }

    /// The generic error for a bare status produced outside our handlers (a tower layer, a
    /// panic, axum's defaults).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("E_NOT_FOUND", "No such route."),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "E_METHOD_NOT_ALLOWED",
                "This method is not allowed on this route.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "E_PAYLOAD_TOO_LARGE",
                "The request body exceeds 1 MiB.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "E_UNSUPPORTED_MEDIA_TYPE",
                "The request body must be JSON (Content-Type: application/json).",
            ),
            StatusCode::REQUEST_TIMEOUT => Self::new(
                status,
                "E_REQUEST_TIMEOUT",
                "The request body did not arrive in time.",
            ),
            StatusCode::SERVICE_UNAVAILABLE => Self::unavailable(),
            StatusCode::INTERNAL_SERVER_ERROR => Self::internal("a layer answered 500"),
            other if other.is_client_error() => {
                Self::new(other, "E_BAD_REQUEST", "The request cannot be served.")
            }
            other => Self::new(other, "E_INTERNAL", "An internal error occurred."),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` value of a 429.
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(HeaderValue::from)
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::validation(&error.field, error.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::from(&error)
    }
}

impl From<&StoreError> for ApiError {
    fn from(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Self::unavailable()
            }
            StoreError::Conflict(_) | StoreError::AlreadyBootstrapped => {
                Self::conflict("The resource conflicts with an existing one.")
            }
            StoreError::ReferenceGone(_) => Self::not_found(
                "E_NOT_FOUND",
                "A resource this request refers to no longer exists.",
            ),
            other => Self::internal(format!("{other}: {:?}", std::error::Error::source(other))),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        if let Some(detail) = &self.internal {
            tracing::error!(request_id = %request_id, code = self.code, detail = %detail, "request failed");
        }
        let body = ErrorBody {
            status_code: self.status.as_u16(),
            error: self.status.canonical_reason().unwrap_or("Error"),
            code: self.code,
            message: self.message.into_owned(),
            request_id,
        };
        let mut response = (self.status, crate::http::response::json_body(&body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.retry_invited {
            response.extensions_mut().insert(NotKept);
        }
        response
    }
}
