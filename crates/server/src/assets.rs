//! The pages: plain HTML, CSS and JavaScript files of this crate, compiled into the binary so the
//! UI works offline with no front-end build step.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// (URL path, content type, bytes) of every asset.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "/assets/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    ),
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "/assets/form.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/form.js"),
    ),
    (
        "/assets/chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/chart.js"),
    ),
    (
        "/assets/favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
];

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response()
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for &(path, content_type, bytes) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, bytes) }));
    }
    router
}
