//! The host's checks on a WebSocket upgrade request (RFC 6455 section 4.2.1),
//! made before the plugin is asked: upgrade headers, version, key, Origin
//! policy and subprotocols.

use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Version};

use crate::config::{OriginPolicy, RouteConfig};

/// Why the host refuses an upgrade request, and the HTTP answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a WebSocket upgrade at all: 426 with `Upgrade: websocket`.
    NotUpgrade,
    /// An upgrade with a method other than GET, or over HTTP/1.0: 400.
    BadRequestLine,
    /// `Sec-WebSocket-Version` is not 13: 426 with `Sec-WebSocket-Version: 13`.
    BadVersion,
    /// `Sec-WebSocket-Key` is missing or not 16 bytes in base64: 400.
    BadKey,
    /// The browser's Origin is not allowed on this route: 403.
    OriginDenied,
    /// The route already has its `max-connections` open: 503. Not made by
    /// [`check`]: the count lives with the server's connections.
    RouteFull,
    /// The handshake deadline passed before the plugin could be asked: 408.
    TooSlow,
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::NotUpgrade | Refusal::BadVersion => StatusCode::UPGRADE_REQUIRED,
            Refusal::BadRequestLine | Refusal::BadKey => StatusCode::BAD_REQUEST,
            Refusal::OriginDenied => StatusCode::FORBIDDEN,
            Refusal::RouteFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A short explanation for the response body.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NotUpgrade => "this path serves WebSocket connections only",
            Refusal::BadRequestLine => "a WebSocket upgrade needs GET over HTTP/1.1",
            Refusal::BadVersion => "only WebSocket version 13 is supported",
            Refusal::BadKey => "missing or malformed Sec-WebSocket-Key",
            Refusal::OriginDenied => "origin not allowed",
            Refusal::RouteFull => "too many connections on this route",
            Refusal::TooSlow => "the handshake took too long",
        }
    }
}

/// A request that passed the host's checks.
#[derive(Debug)]
pub(crate) struct Offer {
    /// The client's `Sec-WebSocket-Key`, to derive `Sec-WebSocket-Accept` from.
    pub(crate) key: Vec<u8>,
    /// Offered subprotocols that the route allows, in the client's order.
    pub(crate) subprotocols: Vec<String>,
}

/// Whether header `name` lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `key` is 16 bytes in base64: 22 base64 digits then "==".
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Whether a browser on `origin` may connect to a server reached as `host`.
fn origin_allowed(policy: &OriginPolicy, origin: &str, host: Option<&str>) -> bool {
    let origin = origin.to_ascii_lowercase();
    let same_origin = match (origin.split_once("://"), host) {
        (Some((_, authority)), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    };
    same_origin
        || match policy {
            OriginPolicy::Any => true,
            OriginPolicy::List(allowed) => allowed.contains(&origin),
        }
}

/// Checks an upgrade request against the protocol and the route's policy.
pub(crate) fn check<B>(req: &Request<B>, route: &RouteConfig) -> Result<Offer, Refusal> {
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(Refusal::NotUpgrade);
    }
    if req.method() != Method::GET || req.version() < Version::HTTP_11 {
        return Err(Refusal::BadRequestLine);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::BadVersion);
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid_key(key.as_bytes()) => key.as_bytes().to_vec(),
        _ => return Err(Refusal::BadKey),
    };
    // A request without Origin comes from a non-browser client, which could
    // send any Origin it liked: the check protects browsers only.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| origin_allowed(&route.allowed_origins, origin, host));
        if !allowed {
            return Err(Refusal::OriginDenied);
        }
    }
    let mut subprotocols: Vec<String> = Vec::new();
    for offered in headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if route.subprotocols.iter().any(|p| p == offered)
            && !subprotocols.iter().any(|p| p == offered)
        {
            subprotocols.push(offered.to_string());
        }
    }
    Ok(Offer { key, subprotocols })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
    }

    #[test]
    fn origins() {
        let list = OriginPolicy::List(vec!["https://example.com".into()]);
        assert!(origin_allowed(
            &list,
            "https://example.com",
            Some("berth.test")
        ));
        assert!(origin_allowed(
            &list,
            "HTTPS://Example.com",
            Some("berth.test")
        ));
        assert!(origin_allowed(
            &list,
            "http://berth.test:8080",
            Some("berth.test:8080")
        ));
        assert!(!origin_allowed(
            &list,
            "https://evil.test",
            Some("berth.test")
        ));
        assert!(!origin_allowed(&list, "null", Some("berth.test")));
        assert!(origin_allowed(
            &OriginPolicy::Any,
            "https://evil.test",
            None
        ));
    }
}
