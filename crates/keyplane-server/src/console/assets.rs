//! The console's static files, compiled into the binary and served under content-hashed names
//! with a year's immutable caching: a new release changes the names, so no browser keeps a stale
//! copy, and nothing is fetched from any other host.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One static file: its served name (with the hash of its content) and bytes.
pub struct Asset {
    pub name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let hash = hex::encode(&digest.as_ref()[..8]);
        Self {
            name: format!("{stem}-{hash}.{extension}"),
            content_type,
            bytes,
        }
    }

    /// The path a page links to.
    pub fn path(&self) -> String {
        format!("/console/assets/{}", self.name)
    }
}

/// htmx, vendored unmodified (`third_party/htmx`, 0BSD).
pub static HTMX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "htmx",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../../third_party/htmx/htmx.min.js"),
    )
});

pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    )
});

pub static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    )
});

/// `GET /console/assets/{name}`: a file by its hashed name; any other name is a 404.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*HTMX, &*SCRIPT, &*STYLE]
        .into_iter()
        .find(|asset| asset.name == name)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}
