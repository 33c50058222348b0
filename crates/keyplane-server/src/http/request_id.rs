//! The request id: the caller's own when it is a sane token, else a new one; available to error
//! rendering and logs through a task-local while the request is served
//! ([`crate::http::middleware::assign_request_id`] sets it).

use axum::http::HeaderName;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    pub(crate) static REQUEST_ID: String;
}

/// The id of the request being served, or an empty string outside a request.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The request id, also available as an extension to handlers that record it (audit events).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub(crate) fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
