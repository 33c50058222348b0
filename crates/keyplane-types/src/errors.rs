//! The error body of the management API.

use serde::Serialize;
use utoipa::ToSchema;

/// The error body every management endpoint answers with.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "status_code": 404,
    "error": "Not Found",
    "code": "E_API_KEY_NOT_FOUND",
    "message": "API key not found.",
    "request_id": "0190c8e2-5a1d-7c3e-8f4b-6d2a9e1b3c57"
}))]
pub struct ErrorBody {
    /// Equals the HTTP status.
    #[schema(example = 404)]
    pub status_code: u16,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub error: &'static str,
    /// Stable machine-readable code, one of:
    ///
    /// - `E_VALIDATION` (400): the body, path or query is invalid; `message` names the field.
    /// - `E_HTTPS_REQUIRED` (400): the request came over plain HTTP; use HTTPS.
    /// - `E_BAD_REQUEST` (4xx): another client error without a more specific code.
    /// - `E_UNAUTHORIZED` (401): credentials or bearer token missing, invalid, expired or
    ///   revoked.
    /// - `E_FORBIDDEN` (403): the caller's role or organization does not allow this.
    /// - `E_ENV_NOT_ENABLED` (403): a live API key needs the organization's `LIVE` env.
    /// - `E_NOT_FOUND` (404): no such route, or a resource the request refers to is gone.
    /// - `E_ORGANIZATION_NOT_FOUND` (404): no such organization visible to the caller.
    /// - `E_API_KEY_NOT_FOUND` (404): no such API key in the organization.
    /// - `E_USER_NOT_FOUND` (404): no such person in the organization.
    /// - `E_INVITATION_NOT_FOUND` (404): no such invitation in the organization.
    /// - `E_METHOD_NOT_ALLOWED` (405): the route does not accept this method.
    /// - `E_REQUEST_TIMEOUT` (408): the request body did not arrive in time.
    /// - `E_CONFLICT` (409): clashes with an existing resource (such as a taken name) or
    ///   changed concurrently; retry.
    /// - `E_IDEMPOTENCY_IN_PROGRESS` (409): a request with this `Idempotency-Key` is still
    ///   running; retry after `Retry-After`.
    /// - `E_PAYLOAD_TOO_LARGE` (413): the request body exceeds 1 MiB.
    /// - `E_UNSUPPORTED_MEDIA_TYPE` (415): the body is not `application/json`.
    /// - `E_IDEMPOTENCY_MISMATCH` (422): the `Idempotency-Key` was used with another method,
    ///   path or body.
    /// - `E_RATE_LIMITED` (429): too many requests or failed attempts; wait `Retry-After`.
    /// - `E_INTERNAL` (500): an unexpected server error, logged with the `request_id`.
    /// - `E_UNAVAILABLE` (503): the database cannot serve now; retry after `Retry-After`.
    #[schema(example = "E_ORGANIZATION_NOT_FOUND")]
    pub code: &'static str,
    /// For people; names the offending field for validation errors.
    #[schema(example = "Organization not found.")]
    pub message: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}
