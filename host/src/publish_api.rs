//! The backend publish API: `POST /publish/NAMESPACE/TOPIC` with
//! `Authorization: Bearer TOKEN` publishes the request body to a topic, as a
//! plugin's `publish` would: to this node's subscribers at once, and through
//! the topics to every other node's.
//!
//! The two path segments are percent-decoded. NAMESPACE names a namespace
//! exactly if some route has that namespace, else the namespace with a `/`
//! put in front: a route path's namespace `/chat` is written `chat` (and
//! `%2Fchat` names it too), `/a/b` is `a%2Fb`. TOPIC is the rest of the path.
//!
//! The body is a text message for `text/*` and JSON content types (it must
//! be UTF-8) and a binary one otherwise. The answer is 202 with
//! `{"local_subscribers":N}`, the subscribers on this node it was queued for.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

use crate::config::PublishApiConfig;
use crate::pubsub::{Held, Topics};
use crate::router::Router;
use crate::state::{Entry, State};

/// Where the API's paths start; config keeps routes out of it.
const PREFIX: &str = "/publish/";

/// The API as configured, with what it publishes through.
pub(crate) struct PublishApi {
    /// BLAKE3 hashes of the tokens: comparing fixed-size digests in constant
    /// time reveals neither a token's bytes nor its length.
    tokens: Vec<blake3::Hash>,
    max_body: usize,
    router: Arc<Router>,
    topics: Arc<Topics>,
    state: Arc<State>,
}

type Body = Full<Bytes>;

fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    answer(status, "text/plain; charset=utf-8", text)
}

/// The token a request presents, if it has exactly one `Authorization:
/// Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(space);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Whether the body is text: `text/*` and JSON (`application/json`, `*/*+json`).
fn is_text(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/") || mime == "application/json" || mime.ends_with("+json")
}

/// Why a path names no topic.
enum BadTarget {
    /// No topic, or no route has the namespace.
    NotFound,
    /// A segment's percent-encoding is not UTF-8.
    NotUtf8,
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    TooSlow,
    Failed,
}

impl PublishApi {
    /// The API for `config`, or `None` when it has no tokens (the API is off).
    pub(crate) fn new(
        config: &PublishApiConfig,
        router: Arc<Router>,
        topics: Arc<Topics>,
        state: Arc<State>,
    ) -> Option<PublishApi> {
        (!config.tokens.is_empty()).then(|| PublishApi {
            tokens: config
                .tokens
                .iter()
                .map(|t| blake3::hash(t.as_bytes()))
                .collect(),
            max_body: config.max_body,
            router,
            topics,
            state,
        })
    }

    /// Whether `path` belongs to the API.
    pub(crate) fn claims(path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    /// Whether `token` is one of the configured tokens, in time that depends
    /// on neither.
    fn knows(&self, token: &[u8]) -> bool {
        let presented = blake3::hash(token);
        let mut known = subtle::Choice::from(0);
        for expected in &self.tokens {
            known |= expected.as_bytes().ct_eq(presented.as_bytes());
        }
        known.into()
    }

    /// The namespace and topic a path names.
    fn target(&self, path: &str) -> Result<(Arc<str>, String), BadTarget> {
        let rest = path.strip_prefix(PREFIX).unwrap_or_default();
        let (namespace, topic) = rest.split_once('/').ok_or(BadTarget::NotFound)?;
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| BadTarget::NotUtf8)
        };
        let (namespace, topic) = (decode(namespace)?, decode(topic)?);
        if namespace.is_empty() || topic.is_empty() {
            return Err(BadTarget::NotFound);
        }
        let namespace = if self.router.has_namespace(&namespace) {
            namespace
        } else {
            let slashed = format!("/{namespace}");
            if !self.router.has_namespace(&slashed) {
                return Err(BadTarget::NotFound);
            }
            slashed
        };
        Ok((namespace.into(), topic))
    }

    /// Answers one request on the API's paths; the body must arrive by `deadline`.
    pub(crate) async fn handle(&self, req: Request<Incoming>, deadline: Instant) -> Response<Body> {
        if req.method() != Method::POST {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        // Before anything else about the request, so that a caller without
        // a token learns nothing, not even which namespaces exist.
        let challenge = match bearer(req.headers()) {
            Some(token) if self.knows(token) => None,
            Some(_) => Some("Bearer realm=\"berth\", error=\"invalid_token\""),
            None => Some("Bearer realm=\"berth\""),
        };
        if let Some(challenge) = challenge {
            let mut response = plain(StatusCode::UNAUTHORIZED, "a valid bearer token is needed\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            return response;
        }
        let (namespace, topic) = match self.target(req.uri().path()) {
            Ok(target) => target,
            Err(BadTarget::NotFound) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    "no route has this namespace; the path is /publish/NAMESPACE/TOPIC\n",
                );
            }
            Err(BadTarget::NotUtf8) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "the path's percent-encoding is not UTF-8\n",
                );
            }
        };
        let text = is_text(req.headers());
        let body = match self.read_body(req, deadline).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                let mut response = plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the body is larger than [publish-api] max-body\n",
                );
                // The rest of the body is never read: the socket cannot
                // carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            Err(BodyError::TooSlow) => {
                return plain(StatusCode::REQUEST_TIMEOUT, "the body came too slowly\n");
            }
            Err(BodyError::Failed) => {
                return plain(StatusCode::BAD_REQUEST, "the body could not be read\n");
            }
        };
        let msg = if text {
            match Utf8Bytes::try_from(body) {
                Ok(text) => WsMessage::Text(text),
                Err(_) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "a text or JSON body must be UTF-8\n",
                    );
                }
            }
        } else {
            WsMessage::Binary(body)
        };
        // Stored before anyone gets it, as a plugin's publish is; the store
        // writes to disk, so not on an async worker.
        let rules = self.router.state_rules(&namespace).unwrap_or_default();
        let position = if rules.history_size > 0 {
            let (state, ns, name, stored) = (
                self.state.clone(),
                namespace.clone(),
                topic.clone(),
                msg.clone(),
            );
            let appended = tokio::task::spawn_blocking(move || {
                let entry = Entry {
                    text: stored.is_text(),
                    data: &stored.clone().into_data(),
                    position_at: None,
                };
                state.store().append(&ns, &name, entry, &rules)
            })
            .await;
            match appended {
                Ok(Ok((p, _))) => format!(",\"position\":\"{p}\""),
                _ => {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the topic keeps history and the message could not be stored; it reached nobody\n",
                    );
                }
            }
        } else {
            String::new()
        };
        let count = self
            .topics
            .publish(&namespace, &topic, msg, None, &mut Held::immediate());
        tracing::debug!(%namespace, topic, local_subscribers = count, "published through the API");
        answer(
            StatusCode::ACCEPTED,
            "application/json",
            format!("{{\"local_subscribers\":{count}{position}}}\n"),
        )
    }

    /// Reads the body, stopping as soon as it is known to pass `max_body`: at
    /// once from its `Content-Length`, or at the first frame past the limit.
    async fn read_body(
        &self,
        req: Request<Incoming>,
        deadline: Instant,
    ) -> Result<Bytes, BodyError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_body as u64) {
            return Err(BodyError::TooLarge);
        }
        let mut body = req.into_body();
        let mut read = BytesMut::new();
        let reading = async {
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(|_| BodyError::Failed)?.into_data() else {
                    continue;
                };
                if read.len() + data.len() > self.max_body {
                    return Err(BodyError::TooLarge);
                }
                read.extend_from_slice(&data);
            }
            Ok(())
        };
        match tokio::time::timeout_at(deadline, reading).await {
            Ok(Ok(())) => Ok(read.freeze()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BodyError::TooSlow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_addr::headers;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let token = |pairs: &[(&str, &str)]| bearer(&headers(pairs)).map(<[u8]>::to_vec);
        assert_eq!(
            token(&[("authorization", "Bearer abc")]),
            Some(b"abc".to_vec())
        );
        assert_eq!(
            token(&[("authorization", "bearer  abc ")]),
            Some(b"abc".to_vec())
        );
        assert_eq!(token(&[("authorization", "Basic abc")]), None);
        assert_eq!(token(&[("authorization", "Bearer")]), None);
        assert_eq!(token(&[("authorization", "Bearer ")]), None);
        assert_eq!(
            token(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            None
        );
        assert_eq!(token(&[]), None);
    }

    #[test]
    fn text_content_types() {
        for text in [
            "text/plain",
            "text/plain; charset=utf-8",
            "Text/Markdown",
            "application/json",
            "application/ld+json",
        ] {
            assert!(is_text(&headers(&[("content-type", text)])), "{text}");
        }
        for binary in ["application/octet-stream", "image/png", "application/jsonx"] {
            assert!(!is_text(&headers(&[("content-type", binary)])), "{binary}");
        }
        assert!(!is_text(&headers(&[])));
    }
}
