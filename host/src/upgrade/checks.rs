//! The host's checks on a WebSocket upgrade request (RFC 6455 section 4.2.1),
//! made before the plugin is asked: upgrade headers, version, key, Origin
//! policy and subprotocols.

use crate::extensions::Deflate;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Version};

use crate::config::{OriginPolicy, RouteConfig};

/// Why the host refuses an upgrade request, and the HTTP answer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a WebSocket upgrade at all (or a HEAD, which never upgrades): 426
    /// with `Upgrade: websocket`.
    NotUpgrade,
    /// A method other than GET or HEAD: 405 with `Allow: GET, HEAD`.
    MethodNotAllowed,
    /// An upgrade asked for over HTTP/1.0, which has no upgrade mechanism
    /// (RFC 9110 section 7.8): 400, and the connection closes.
    OldHttp,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13: 426 with
    /// `Sec-WebSocket-Version: 13`.
    BadVersion,
    /// `Sec-WebSocket-Key` is missing, repeated or not 16 bytes in base64: 400.
    BadKey,
    /// The browser's Origin is not allowed on this route: 403.
    OriginDenied,
    /// The route already has its `max-connections` open: 503. Not made by
    /// [`check`]: the count is kept by `admission.rs`.
    RouteFull,
    /// The handshake deadline passed before the plugin could be asked: 408.
    TooSlow,
}

impl Refusal {
    /// Every refusal, in the order of their metric series.
    pub(crate) const ALL: [Refusal; 8] = [
        Refusal::NotUpgrade,
        Refusal::MethodNotAllowed,
        Refusal::OldHttp,
        Refusal::BadVersion,
        Refusal::BadKey,
        Refusal::OriginDenied,
        Refusal::RouteFull,
        Refusal::TooSlow,
    ];

    /// The value of the `reason` label of `berth_handshake_rejections_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::NotUpgrade => "not_upgrade",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::OldHttp => "old_http",
            Refusal::BadVersion => "bad_version",
            Refusal::BadKey => "bad_key",
            Refusal::OriginDenied => "origin_denied",
            Refusal::RouteFull => "route_full",
            Refusal::TooSlow => "too_slow",
        }
    }

    /// The HTTP status for this refusal.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::NotUpgrade | Refusal::BadVersion => StatusCode::UPGRADE_REQUIRED,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::OldHttp | Refusal::BadKey => StatusCode::BAD_REQUEST,
            Refusal::OriginDenied => StatusCode::FORBIDDEN,
            Refusal::RouteFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooSlow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A short explanation for the response body.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NotUpgrade => "this path serves WebSocket connections only",
            Refusal::MethodNotAllowed => "a WebSocket upgrade is a GET request",
            Refusal::OldHttp => "a WebSocket upgrade needs HTTP/1.1",
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
    /// The permessage-deflate offer accepted, if the route compresses.
    pub(crate) deflate: Option<Deflate>,
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

/// Whether `key` is 16 bytes in base64 (RFC 6455 section 4.1): 22 base64
/// digits then "==". 16 bytes are 128 bits and 22 digits hold 132, so the
/// last digit's low four bits must be zero (it is one of `AQgw`): any other
/// is not the encoding of 16 bytes, only something a lenient decoder accepts.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..21]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && matches!(key[21], b'A' | b'Q' | b'g' | b'w')
}

/// The value of header `name` if the request has it exactly once: RFC 6455
/// section 11.3 allows `Sec-WebSocket-Key` and `Sec-WebSocket-Version` only
/// once in a request, so two are as wrong as none.
fn single(headers: &HeaderMap, name: header::HeaderName) -> Option<&[u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
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
    // The method first: a route serves GET and HEAD whatever else the request
    // says. HEAD asks for the headers a GET would get, which cannot include a
    // switch of protocols, so it gets the plain GET's answer.
    if req.method() == Method::HEAD {
        return Err(Refusal::NotUpgrade);
    }
    if req.method() != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    let wants_websocket = has_token(headers, header::UPGRADE, "websocket");
    if req.version() < Version::HTTP_11 {
        // RFC 9110 section 7.8: a server ignores Upgrade in an HTTP/1.0
        // request, so no switch can follow. Saying why (400) helps the client
        // more than the plain GET's 426, and the answer closes the socket.
        return Err(if wants_websocket {
            Refusal::OldHttp
        } else {
            Refusal::NotUpgrade
        });
    }
    if !wants_websocket || !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refusal::NotUpgrade);
    }
    if single(headers, header::SEC_WEBSOCKET_VERSION) != Some(b"13") {
        return Err(Refusal::BadVersion);
    }
    let key = match single(headers, header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid_key(key) => key.to_vec(),
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
    let deflate = if route.compression {
        Deflate::negotiate(
            headers
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(|v| v.as_bytes()),
        )
    } else {
        None
    };
    Ok(Offer {
        key,
        subprotocols,
        deflate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_key(b"/////////////////////w=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
        // Bits past the 128th: no 16 bytes encode to this.
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        // 15 and 17 bytes.
        assert!(!valid_key(b"AAAAAAAAAAAAAAAAAAAA"));
        assert!(!valid_key(b"AAAAAAAAAAAAAAAAAAAAAAA="));
    }

    /// A route config with the defaults, for [`check`].
    fn route() -> RouteConfig {
        // The config checks that the plugin file exists.
        let text = format!(
            "plugin-dir = {:?}\n[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n",
            crate::demo::BUILT_PLUGIN_DIR
        );
        let mut config = crate::config::Config::from_toml(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
        )
        .expect("valid config");
        config.live.routes.remove(0)
    }

    /// The refusal of a request with `method`, `version` and header lines.
    fn verdict(method: Method, version: Version, headers: &[(&str, &str)]) -> Option<Refusal> {
        let mut builder = Request::builder().method(method).version(version).uri("/r");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        check(&builder.body(()).expect("valid request"), &route()).err()
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn requests() {
        use Version as V;
        assert_eq!(verdict(Method::GET, V::HTTP_11, &UPGRADE), None);
        assert_eq!(
            verdict(Method::GET, V::HTTP_11, &[]),
            Some(Refusal::NotUpgrade)
        );
        assert_eq!(
            verdict(Method::HEAD, V::HTTP_11, &UPGRADE),
            Some(Refusal::NotUpgrade)
        );
        for method in [Method::POST, Method::PUT, Method::OPTIONS, Method::CONNECT] {
            assert_eq!(
                verdict(method, V::HTTP_11, &UPGRADE),
                Some(Refusal::MethodNotAllowed)
            );
        }
        assert_eq!(
            verdict(Method::GET, V::HTTP_10, &UPGRADE),
            Some(Refusal::OldHttp)
        );
        assert_eq!(
            verdict(Method::GET, V::HTTP_10, &[]),
            Some(Refusal::NotUpgrade)
        );
        let mut twice = UPGRADE.to_vec();
        twice.push(("sec-websocket-key", "AQIDBAUGBwgJCgsMDQ4PEA=="));
        assert_eq!(
            verdict(Method::GET, V::HTTP_11, &twice),
            Some(Refusal::BadKey)
        );
        let mut twice = UPGRADE.to_vec();
        twice.push(("sec-websocket-version", "13"));
        assert_eq!(
            verdict(Method::GET, V::HTTP_11, &twice),
            Some(Refusal::BadVersion)
        );
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
