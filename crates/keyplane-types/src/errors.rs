//! The error body of the management API.

use serde::Serialize;
use utoipa::ToSchema;

/// The error body every management endpoint answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Equals the HTTP status.
    #[schema(example = 404)]
    pub status_code: u16,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub error: &'static str,
    /// Stable machine-readable code.
    #[schema(example = "E_ORGANIZATION_NOT_FOUND")]
    pub code: &'static str,
    /// For people; names the offending field for validation errors.
    #[schema(example = "Organization not found.")]
    pub message: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}
