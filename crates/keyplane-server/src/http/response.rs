//! Successful JSON answers: the body serialiser with the content type every answer carries, a
//! `200 OK` wrapper, and the answer to a delete.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyplane_types::common::Deleted;
use serde::Serialize;

/// Serialises a value as the JSON body of a response, with the API's content type.
pub fn json_body<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => {
            // The outermost middleware gives this bodiless 500 the error body of its status.
            tracing::error!(%error, "serialising a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The answer to a successful delete or removal: `{"deleted": true}`.
pub fn deleted() -> JsonResponse<Deleted> {
    JsonResponse(Deleted { deleted: true })
}

/// A `200 OK` JSON response.
pub struct JsonResponse<T>(pub T);

impl<T: Serialize> IntoResponse for JsonResponse<T> {
    fn into_response(self) -> Response {
        json_body(&self.0)
    }
}
