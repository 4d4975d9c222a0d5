//! Who may call the API.
//!
//! With a token configured, every `/api/` route except `/api/auth` and `/api/login` needs it,
//! either as `Authorization: Bearer <token>` or as the HttpOnly `wanlora_token` cookie that
//! `/api/login` sets (so `<video>`, `<img>` and EventSource, which cannot send headers, work).
//! Independently of the token, requests that change things must not come from another site
//! (their `Origin` must match `Host`), and a UI bound to loopback answers only to loopback host
//! names, which defeats DNS rebinding.

use crate::login_limit::LoginLimiter;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const COOKIE: &str = "wanlora_token";

/// The access rules of one server.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<String>,
    /// Only loopback host names are answered (the server is bound to loopback).
    loopback_only: bool,
    /// Wrong tokens per client address at `/api/login`.
    pub login_limit: Arc<LoginLimiter>,
}

impl Access {
    pub fn new(token: Option<String>, loopback_only: bool) -> Self {
        Access {
            token: token.filter(|t| !t.is_empty()),
            loopback_only,
            login_limit: Arc::default(),
        }
    }

    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// Constant-time check of a presented token (both sides hashed, so length leaks nothing).
    pub fn token_matches(&self, presented: &str) -> bool {
        match &self.token {
            None => true,
            Some(expected) => constant_time_eq(
                &Sha256::digest(expected.as_bytes()),
                &Sha256::digest(presented.as_bytes()),
            ),
        }
    }

    /// The request carries the token (header or cookie), or none is needed.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(t) = bearer {
            return self.token_matches(t.trim());
        }
        cookie_value(headers, COOKIE).is_some_and(|t| self.token_matches(&t))
    }
}

/// Compares two byte strings without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if the request has one.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8675
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn is_loopback_name(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message, "findings": [] })),
    )
        .into_response()
}

/// Host and origin checks for every request; the token check for `/api/` routes.
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if access.loopback_only && !is_loopback_name(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this UI listens on loopback and answers only to localhost / 127.0.0.1 / [::1]",
        );
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if !origin_host.eq_ignore_ascii_case(host) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "cross-site request refused: the Origin does not match this UI",
                );
            }
        }
    }
    let path = request.uri().path();
    let open = matches!(path, "/api/auth" | "/api/login");
    if path.starts_with("/api/") && !open && !access.authorized(headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this UI needs its access token: send `Authorization: Bearer <token>` or log in",
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn header_or_cookie_carries_the_token() {
        let access = Access::new(Some("s3cret".into()), false);
        let mut h = HeaderMap::new();
        assert!(!access.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(access.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!access.authorized(&h));
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wanlora_token=s3cret"),
        );
        assert!(access.authorized(&c));
        assert!(Access::new(None, true).authorized(&HeaderMap::new()));
        assert!(!Access::new(Some("x".into()), true).token_matches(""));
    }

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost:8675",
            "127.0.0.1:1",
            "[::1]:8675",
            "LOCALHOST",
            "127.1.2.3",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in ["evil.example:8675", "10.0.0.1:8675", "", "[fe80::1]:1"] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }
}
