//! The session cookie and the console's guard. One middleware decides, for every console
//! request, what the handlers may assume:
//!
//! - every POST comes from this server's own origin: its `Origin` header must be
//!   `https://` and the `Host` it was sent to (or the public URL's origin). A POST without
//!   `Origin` is refused too: every browser this console supports sends it on POST, so its
//!   absence means a client that is not a browser page of ours;
//! - a page other than the public ones (sign-in, password reset, setup, accepting an
//!   invitation, assets) has a
//!   live session whose person may still act ([`sessions::current`]); without one the answer is
//!   a redirect to the sign-in page, never an error page;
//! - every POST's form is at most [`layout::FORM_LIMIT`] bytes (a 413 page otherwise) and
//!   holds no NUL character (a 400 page): no store holds NUL in text, so no handler ever looks
//!   one up (PostgreSQL would refuse the query, and a sign-in would count a failure);
//! - every POST of a signed-in person carries the session's CSRF token, in the form field
//!   `csrf_token` or (htmx) the `X-CSRF-Token` header, compared in constant time.
//!
//! Refusals are 403 pages saying what to do, and a form or query axum cannot read is a page
//! too. Handlers take the [`Signed`] person from the request's extensions.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::console::layout::{self, CSRF_FIELD, see_other};
use crate::service::sessions::{self, SessionError};
use crate::state::AppState;

pub use crate::service::sessions::Signed;

/// The session cookie's name: `__Host-` makes browsers require Secure and Path=/ and refuse a
/// Domain, so no other host can set or read it.
pub const COOKIE: &str = "__Host-keyplane_session";

/// The header htmx requests carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The `Set-Cookie` value that holds a new session.
pub fn session_cookie(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/"
    ))
    .expect("session ids are cookie-safe")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    ))
    .expect("a valid header")
}

/// The session id a request's cookies carry, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Pages anyone may open, signed in or not.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/console/sign-in"
            | "/console/forgot-password"
            | "/reset-password"
            | "/console/reset-password"
            | "/console/setup"
            | "/accept-invitation"
            | "/console/accept-invitation"
    ) || path.starts_with("/console/assets/")
}

/// Whether a POST's `Origin` is this server's own.
fn same_origin(state: &AppState, headers: &HeaderMap, parts_host: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(parts_host);
    let from_host = host.is_some_and(|host| {
        origin
            .strip_prefix("https://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    });
    from_host || origin.eq_ignore_ascii_case(public_origin(state.public_url()))
}

/// `https://host[:port]` of a URL: what a browser sends as `Origin` for it.
fn public_origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

/// Where a person goes after signing in: `next` when it is a console path of this site,
/// otherwise the console's home. Nothing else can be named, so the sign-in page is no open
/// redirect.
pub fn safe_next(next: Option<&str>) -> String {
    next.filter(|next| {
        next.len() <= 512
            && (*next == "/console"
                || next.starts_with("/console/")
                || next.starts_with("/console?"))
            && !next.contains("//")
            && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
    })
    .unwrap_or("/console")
    .to_owned()
}

/// The sign-in page's address that comes back to `path` afterwards.
fn sign_in_for(path_and_query: &str) -> String {
    let next = safe_next(Some(path_and_query));
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("/console/sign-in?next={encoded}")
}

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_post = request.method() == Method::POST;
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if is_post && !same_origin(&state, request.headers(), authority.as_deref()) {
        return layout::refused(
            StatusCode::FORBIDDEN,
            "This form was not sent from this site. Open the page again here and retry.",
        );
    }
    let (request, form) = if is_post {
        match read_form(request).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        }
    } else {
        (request, Bytes::new())
    };
    let path = request.uri().path();
    if is_public(path) {
        return as_page(next.run(request).await);
    }
    let back_to = if is_post {
        "/console".to_owned()
    } else {
        request
            .uri()
            .path_and_query()
            .map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned())
    };
    let signed = match cookie_value(request.headers()) {
        None => return see_other(&sign_in_for(&back_to)),
        Some(id) => match sessions::current(&state, id).await {
            Ok(signed) => signed,
            Err(SessionError::Absent) => {
                let mut response = see_other(&sign_in_for(&back_to));
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, cleared_cookie());
                return response;
            }
            Err(SessionError::Store(error)) => {
                tracing::warn!(%error, "console session lookup failed");
                return layout::refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Keyplane cannot reach its database just now. Try again in a moment.",
                );
            }
        },
    };
    let mut request = request;
    if is_post {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                form_urlencoded::parse(&form)
                    .find(|(name, _)| name == CSRF_FIELD)
                    .map(|(_, value)| value.into_owned())
            });
        let expected = signed.session.csrf_token.as_bytes();
        let matches = presented.is_some_and(|presented| {
            aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), expected)
                .is_ok()
        });
        if !matches {
            return layout::refused(
                StatusCode::FORBIDDEN,
                "This form has expired. Go back, reload the page and try again.",
            );
        }
    }
    request.extensions_mut().insert(signed);
    as_page(next.run(request).await)
}

/// axum refuses a form, query or path it cannot read (a field given twice, another content
/// type, bytes that are not UTF-8) with a plain-text answer; the console answers with a page,
/// keeping the status.
fn as_page(response: Response) -> Response {
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if response.status().is_client_error() && is_plain {
        return layout::refused(
            response.status(),
            "This request could not be read. Go back, reload the page and send the form from there.",
        );
    }
    response
}

/// Reads a POST's form whole (the outer middleware already bounds how long that takes) and
/// checks it: at most [`layout::FORM_LIMIT`] bytes, no NUL in any name or value. The request
/// with its body put back, and the form's bytes; or the refusal page.
async fn read_form(request: Request) -> Result<(Request, Bytes), Response> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, layout::FORM_LIMIT).await else {
        return Err(layout::refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "This form is too large. Shorten what you typed and try again.",
        ));
    };
    if form_urlencoded::parse(&bytes)
        .any(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        return Err(layout::refused(
            StatusCode::BAD_REQUEST,
            "This form holds a NUL character, which no field may contain. Remove it and try again.",
        ));
    }
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

/// The signed-in person, put there by [`guard`].
pub struct Person(pub Signed);

impl<S: Send + Sync> FromRequestParts<S> for Person {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Signed>()
            .cloned()
            .map(Person)
            .ok_or_else(|| see_other("/console/sign-in"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_console_path_of_this_site_or_the_console_home() {
        assert_eq!(
            safe_next(Some("/console/api-keys?page=2")),
            "/console/api-keys?page=2"
        );
        for hostile in [
            "https://evil.example/console",
            "//evil.example/console",
            "/console//evil",
            "/console/\\evil",
            "/docs",
            "/consolex",
            "/console/a b",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/console", "{hostile}");
        }
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn the_public_origin_is_scheme_host_and_port() {
        assert_eq!(
            public_origin("https://keys.example.com:8443/base"),
            "https://keys.example.com:8443"
        );
        assert_eq!(
            public_origin("https://keys.example.com"),
            "https://keys.example.com"
        );
    }

    #[test]
    fn the_session_cookie_is_host_only_secure_http_only_and_strict() {
        let cookie = session_cookie("abc");
        assert_eq!(
            cookie.to_str().unwrap(),
            "__Host-keyplane_session=abc; Secure; HttpOnly; SameSite=Strict; Path=/"
        );
    }
}
