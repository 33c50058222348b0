//! The outermost layer of every response: assigns the request id (the caller's own when it is a
//! sane token), makes it available to error rendering, adds the security headers the contract
//! asks for, and turns any non-JSON error a lower layer produced into the contract's error body.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or an empty string outside a request.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The request id, also available as an extension to handlers that record it (audit events).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = REQUEST_ID
        .scope(id.clone(), async move {
            let response = next.run(request).await;
            ensure_json_error(response)
        })
        .await;
    let headers = response.headers_mut();
    headers.insert(
        &X_REQUEST_ID,
        HeaderValue::from_str(&id).expect("sane ids are header-safe"),
    );
    add_security_headers(headers);
    response
}

/// Headers on every response, including the plain-HTTP refusal.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Most responses of a management API hold credentials or tenant data; none is cacheable.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// Replaces an error response that is not JSON (axum's defaults, tower layers, panics) with the
/// contract's error body for its status, keeping headers that carry meaning.
fn ensure_json_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let mut replacement = ApiError::from_status(status).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            replacement.headers_mut().insert(name, value.clone());
        }
    }
    replacement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_sane() {
        assert!(is_sane("fdf56a29f4e8955f79c42e69850feaa1"));
        assert!(is_sane("req-1.2_3"));
        assert!(!is_sane(""));
        assert!(!is_sane("has space"));
        assert!(!is_sane("inject\r\nheader"));
        assert!(!is_sane(&"a".repeat(129)));
    }

    #[test]
    fn generated_ids_are_32_lowercase_hex_characters() {
        let id = generate();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
