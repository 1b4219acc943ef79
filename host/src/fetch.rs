//! Outbound HTTP for plugins: checks a request against its route's grant,
//! sends it with hyper's pooled client (rustls with the system's roots for
//! `https`), follows redirects only to granted origins, and reads at most
//! the route's body cap, all within one deadline.
//!
//! Redirects are followed here rather than by the client, because each hop
//! must pass the same grant check as the first request: a granted server
//! must not be able to point a plugin at an origin it was not granted.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls;

use crate::config::OutboundGrant;

/// Redirects followed for one request before it fails.
const MAX_REDIRECTS: usize = 5;
/// Idle pooled connections kept per origin.
const POOL_IDLE_PER_HOST: usize = 8;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// The most request headers a plugin may set.
const MAX_HEADERS: usize = 64;
/// The most bytes of response headers handed to the plugin.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Why an outbound request has no response; each is an `outbound-error` case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No grant covers the URL (or a redirect's).
    NotAllowed,
    /// The URL, method, a header or the body is not acceptable.
    InvalidRequest,
    /// The instance's or the route's in-flight cap is reached.
    TooManyRequests,
    /// No connection or TLS session could be made.
    ConnectFailed,
    /// The deadline passed before the whole response arrived.
    Timeout,
    /// The response body is over the cap.
    TooLarge,
    /// The exchange broke, or redirected too often.
    Failed,
}

impl Failure {
    /// The metric label and log word for the failure, as the WIT spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::NotAllowed => "not-allowed",
            Failure::InvalidRequest => "invalid-request",
            Failure::TooManyRequests => "too-many-requests",
            Failure::ConnectFailed => "connect-failed",
            Failure::Timeout => "timeout",
            Failure::TooLarge => "too-large",
            Failure::Failed => "failed",
        }
    }
}

/// A checked request, ready to send.
pub(crate) struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A response, whole.
pub(crate) struct Answer {
    /// The final status, after redirects.
    pub(crate) status: u16,
    /// Header names (lower case) and values (lossy text), in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, at most the cap.
    pub(crate) body: Bytes,
}

/// Checks a plugin's request: an absolute `http(s)` URL that a grant
/// covers, a valid method and headers, a body within `body_cap`.
pub(crate) fn prepare(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    grants: &[OutboundGrant],
    body_cap: usize,
) -> Result<Outgoing, Failure> {
    let uri: Uri = url.parse().map_err(|_| Failure::InvalidRequest)?;
    if uri.host().is_none() || !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(Failure::InvalidRequest);
    }
    if !granted(&uri, grants) {
        return Err(Failure::NotAllowed);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Failure::InvalidRequest)?;
    if body.len() > body_cap || headers.len() > MAX_HEADERS {
        return Err(Failure::InvalidRequest);
    }
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Failure::InvalidRequest)?;
        let value = HeaderValue::from_str(value).map_err(|_| Failure::InvalidRequest)?;
        // The host frames the request itself: these must agree with what
        // it sends, so a plugin's own are dropped.
        if !matches!(
            name,
            header::HOST | header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            map.append(name, value);
        }
    }
    Ok(Outgoing {
        method,
        uri,
        headers: map,
        body: body.into(),
    })
}

/// Whether a grant covers `uri`'s scheme, host and port.
fn granted(uri: &Uri, grants: &[OutboundGrant]) -> bool {
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return false;
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = host.to_ascii_lowercase();
    grants.iter().any(|g| g.allows(scheme, &host, port))
}

/// The HTTP client every route's requests share; its pool keeps
/// connections per origin, so routes granted the same origin share them.
#[derive(Clone)]
pub(crate) struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// The process's client, made at its first use: reading the system's
    /// root certificates costs milliseconds that a server whose plugins
    /// make no requests need not pay.
    pub(crate) fn shared() -> Client {
        static CLIENT: OnceLock<Client> = OnceLock::new();
        CLIENT.get_or_init(Client::new).clone()
    }

    fn new() -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "no system root certificates: plugins' https requests will fail to connect"
                );
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let mut http = HttpConnector::new();
        // The TLS layer above makes https connections over it.
        http.enforce_http(false);
        // A request's head and body may go in separate writes; Nagle would
        // hold the second for the first's acknowledgement.
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Client { inner }
    }

    /// Sends `request`, following granted redirects, and reads the whole
    /// response, all within `timeout`.
    pub(crate) async fn send(
        &self,
        request: Outgoing,
        grants: &[OutboundGrant],
        body_cap: usize,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        tokio::time::timeout(timeout, self.exchange(request, grants, body_cap))
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    async fn exchange(
        &self,
        mut request: Outgoing,
        grants: &[OutboundGrant],
        body_cap: usize,
    ) -> Result<Answer, Failure> {
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::new(Full::new(request.body.clone()));
            *req.method_mut() = request.method.clone();
            *req.uri_mut() = request.uri.clone();
            *req.headers_mut() = request.headers.clone();
            let response = self.inner.request(req).await.map_err(|error| {
                tracing::debug!(%error, uri = %request.uri, "outbound request failed");
                if error.is_connect() {
                    Failure::ConnectFailed
                } else {
                    Failure::Failed
                }
            })?;
            let status = response.status();
            if let Some(next) = redirect(&request, status, response.headers())? {
                if !granted(&next.uri, grants) {
                    return Err(Failure::NotAllowed);
                }
                request = next;
                continue;
            }
            let declared = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > body_cap as u64) {
                return Err(Failure::TooLarge);
            }
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, body_cap)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        Failure::TooLarge
                    } else {
                        Failure::Failed
                    }
                })?
                .to_bytes();
            return Ok(Answer {
                status: status.as_u16(),
                headers: head(&parts.headers),
                body,
            });
        }
        Err(Failure::Failed)
    }
}

/// The request a redirect answer asks for, if `status` is one; the method
/// and body follow the rules browsers keep (RFC 9110 section 15.4).
fn redirect(
    current: &Outgoing,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Option<Outgoing>, Failure> {
    let keeps_method = match status {
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => false,
        _ => return Ok(None),
    };
    let Some(location) = headers.get(header::LOCATION) else {
        return Ok(None);
    };
    let location = location.to_str().map_err(|_| Failure::Failed)?;
    let uri = resolve(&current.uri, location).ok_or(Failure::Failed)?;
    let mut headers = current.headers.clone();
    let same_origin =
        uri.scheme() == current.uri.scheme() && uri.authority() == current.uri.authority();
    if !same_origin {
        // Credentials meant for one origin are not handed to another.
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::COOKIE);
        headers.remove(header::PROXY_AUTHORIZATION);
    }
    let (method, body) =
        if keeps_method || current.method == Method::GET || current.method == Method::HEAD {
            (current.method.clone(), current.body.clone())
        } else {
            headers.remove(header::CONTENT_TYPE);
            (Method::GET, Bytes::new())
        };
    Ok(Some(Outgoing {
        method,
        uri,
        headers,
        body,
    }))
}

/// `location` resolved against `base` (RFC 3986 section 5.2, for the forms
/// servers send: absolute, scheme-relative, absolute-path and relative).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let authority = base.authority()?;
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// Response headers as the plugin gets them, up to `MAX_HEAD_BYTES`.
fn head(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut total = 0;
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .take_while(|(name, value)| {
            total += name.len() + value.len();
            total <= MAX_HEAD_BYTES
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "http://a.test:8080/x/y?q=1".parse().unwrap();
        let cases = [
            ("https://b.test/z", "https://b.test/z"),
            ("//c.test/z", "http://c.test/z"),
            ("/z?k=v", "http://a.test:8080/z?k=v"),
            ("z", "http://a.test:8080/x/z"),
        ];
        for (location, want) in cases {
            assert_eq!(resolve(&base, location).unwrap().to_string(), want);
        }
    }

    #[test]
    fn only_granted_origins_pass() {
        let grants = [OutboundGrant::parse("http://127.0.0.1:8080").unwrap()];
        let ok = prepare("GET", "http://127.0.0.1:8080/v", &[], vec![], &grants, 10);
        assert!(ok.is_ok());
        for (url, want) in [
            ("http://127.0.0.1:8081/v", Failure::NotAllowed),
            ("https://127.0.0.1:8080/v", Failure::NotAllowed),
            ("http://localhost:8080/v", Failure::NotAllowed),
            ("/relative", Failure::InvalidRequest),
            ("ftp://127.0.0.1:8080/", Failure::InvalidRequest),
        ] {
            let got = prepare("GET", url, &[], vec![], &grants, 10).err();
            assert_eq!(got, Some(want), "{url}");
        }
        let big = prepare(
            "POST",
            "http://127.0.0.1:8080/",
            &[],
            vec![0; 11],
            &grants,
            10,
        );
        assert_eq!(big.err(), Some(Failure::InvalidRequest));
    }
}
