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

#[cfg(test)]
mod tests {
    use super::*;

    /// The form's field paths (`path: ...` in form.js), as schema keys of wanlora-config.
    fn form_keys() -> Vec<String> {
        let form = include_str!("../assets/form.js");
        let start = form
            .find("const JOB_PANELS = [")
            .expect("form.js defines JOB_PANELS");
        let end = start + form[start..].find("\n];").expect("JOB_PANELS ends");
        let form = &form[start..end];
        let mut keys = Vec::new();
        let mut list_prefix = String::new();
        for line in form.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("list: `${P}.") {
                // Fields after `list:` are relative to one item of that list.
                let list = rest.split('`').next().unwrap_or("");
                list_prefix = format!("config.process[0].{list}[].");
                continue;
            }
            let Some(at) = line.find("{ path: ") else {
                continue;
            };
            let value = &line[at + 8..];
            let quote = value.chars().next().unwrap_or(' ');
            if quote != '\'' && quote != '`' {
                continue;
            }
            let Some(path) = value[1..].split(quote).next() else {
                continue;
            };
            if path == "@gpu" {
                continue;
            }
            let key = if let Some(rest) = path.strip_prefix("${P}.") {
                format!("config.process[0].{rest}")
            } else if path.starts_with("config.") {
                path.to_string()
            } else {
                format!("{list_prefix}{path}")
            };
            keys.push(key);
        }
        keys
    }

    #[test]
    fn every_form_field_is_a_key_the_job_format_knows() {
        let known: Vec<String> = wanlora_config::known_keys()
            .into_iter()
            .map(|k| k.key)
            .collect();
        let keys = form_keys();
        assert!(keys.len() > 50, "{keys:?}");
        let unknown: Vec<&String> = keys.iter().filter(|k| !known.contains(k)).collect();
        assert!(
            unknown.is_empty(),
            "form fields the config crate does not know: {unknown:?}"
        );
    }

    #[test]
    fn pages_reference_only_embedded_assets() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        for src in html
            .split("src=\"")
            .skip(1)
            .chain(html.split("href=\"").skip(1))
        {
            let url = src.split('"').next().unwrap();
            if url.starts_with('#') {
                continue;
            }
            assert!(
                ASSETS.iter().any(|(path, _, _)| *path == url),
                "index.html refers to {url}, which is not embedded"
            );
        }
        for (path, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains("http://") && !text.contains("https://")
                    || *path == "/assets/favicon.svg",
                "{path} loads something from the network"
            );
        }
    }
}
