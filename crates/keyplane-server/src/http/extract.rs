//! Extractors whose rejections are the API's JSON errors, naming the offending field.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;
use crate::infra::listener::ClientInfo;
use crate::service::context::RequestContext;

/// The most a request body may hold.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// A JSON request body. Errors name the field (`kind: unknown variant ...`) through
/// serde_path_to_error; unknown fields are rejected by `deny_unknown_fields` on the types.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
                    }
                    _ => ApiError::bad_request("The request body could not be read."),
                })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document into `T`, describing failures by the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    }
    if let Some(path) = nul_escape_path(bytes) {
        return Err(ApiError::validation(
            &path,
            "NUL characters are not allowed",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_eof() || (inner.is_syntax() && path == ".") {
            ApiError::bad_request(format!("The request body is not valid JSON: {inner}"))
        } else if inner.is_syntax() {
            // serde_json reports a value of the wrong type for an enum as a syntax error.
            ApiError::validation(&path, "has an invalid value or type")
        } else if path == "." {
            ApiError::bad_request(describe(&inner))
        } else {
            ApiError::validation(&path, describe(&inner))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Where a JSON document holds a NUL character, if it does: JSON can carry one only as the
/// escape `\u0000` (raw control characters are invalid in strings), which no store accepts
/// (PostgreSQL refuses NUL in text) and no legitimate value needs. The bytes are scanned for the
/// escape first, so documents without one cost a scan; the path is found only for those with.
fn nul_escape_path(bytes: &[u8]) -> Option<String> {
    let escaped = bytes.windows(6).enumerate().any(|(at, window)| {
        window == br"\u0000"
            && bytes[..at]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count()
                % 2
                == 0
    });
    if !escaped {
        return None;
    }
    fn find(value: &serde_json::Value, path: &str) -> Option<String> {
        let join = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        match value {
            serde_json::Value::String(text) if text.contains('\0') => Some(path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| find(item, &join(&i.to_string()))),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(name, field)| {
                if name.contains('\0') {
                    Some(join("(field name)"))
                } else {
                    find(field, &join(name))
                }
            }),
            _ => None,
        }
    }
    // A document that does not parse is reported as such by the caller.
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    find(&value, "").map(|path| if path.is_empty() { ".".into() } else { path })
}

/// serde_json's message without its `at line 1 column 9` suffix, which means nothing to callers.
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

/// The parameters of a path served in both styles: `/api/v0/organizations/{organization_id}/…`
/// names the organization a request acts in, the short style (`/api/v0/api-keys/…`,
/// `/api/v0/users/…`) means the caller's own. It reads only the path, so a handler still
/// parses its body before it looks anything up.
pub struct Scope(HashMap<String, String>);

impl Scope {
    /// The organization the path names; `None` for the caller's own.
    pub fn organization_id(&self) -> Option<&str> {
        self.param("organization_id")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = PathRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) =
            Path::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        Ok(Scope(params))
    }
}

/// Where a request came from, for the audit log: its request id (set by the outermost
/// middleware) and the client address (set by the listener). Never fails.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            request_id: parts
                .extensions
                .get::<crate::http::request_id::RequestId>()
                .map(|id| id.0.clone()),
            ip: parts.extensions.get::<ClientInfo>().map(|client| client.ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        kind: String,
        limit: u8,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = parse_json::<Sample>(br#"{"kind": "test", "limit": 1000}"#).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            format!("{error:?}").contains("limit: invalid value"),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let error =
            parse_json::<Sample>(br#"{"kind": "test", "limit": 1, "extra": 1}"#).unwrap_err();
        assert!(
            format!("{error:?}").contains("unknown field `extra`"),
            "{error:?}"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let error = parse_json::<Sample>(br#"{"limit": 1}"#).unwrap_err();
        assert!(
            format!("{error:?}").contains("missing field `kind`"),
            "{error:?}"
        );
    }

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        let error = parse_json::<Sample>(br#"{"kind": "a\u0000b", "limit": 1}"#).unwrap_err();
        assert!(format!("{error:?}").contains("kind: NUL"), "{error:?}");
        // An escaped backslash before `u0000` is text, not a NUL.
        let sample = parse_json::<Sample>(br#"{"kind": "a\\u0000b", "limit": 1}"#).unwrap();
        assert_eq!(sample.kind, r"a\u0000b");
    }

    #[test]
    fn malformed_and_empty_bodies_are_rejected() {
        assert!(parse_json::<Sample>(b"{not json").is_err());
        assert!(parse_json::<Sample>(b"").is_err());
        assert!(parse_json::<Sample>(br#"{"kind":"t","limit":1} trailing"#).is_err());
    }
}
