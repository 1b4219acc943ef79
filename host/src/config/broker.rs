//! Settings that reach beyond this process: `[broker]` (topics shared
//! through Redis) and `[publish-api]` (backends publishing over HTTP), with
//! the secrets they hold kept out of logs.

use super::ConfigError;
use super::checks::Source;
use super::defaults;
use super::raw::{RawBroker, RawPublishApi};

/// `[broker]`: topics shared by every berth node that names the same Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The Redis server, as `redis://[:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// Put before every channel name, so that several deployments can share one Redis.
    pub channel_prefix: String,
    /// Whether startup fails when Redis cannot be reached (otherwise the node
    /// serves local topics and keeps trying).
    pub required: bool,
}

impl BrokerConfig {
    /// The URL without its password, for logs and errors.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }
}

// By hand: the URL may hold a password, and a config may be debug-printed.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.shown_url())
            .field("channel_prefix", &self.channel_prefix)
            .field("required", &self.required)
            .finish()
    }
}

/// `url` with the user-info part (`user:password@`) replaced by `***@`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `[publish-api]`: who may publish to topics over HTTP, and how much.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishApiConfig {
    /// Bearer tokens that may publish; none turns the API off (404).
    pub tokens: Vec<String>,
    /// The largest request body, in bytes; more is answered 413.
    pub max_body: usize,
}

impl Default for PublishApiConfig {
    fn default() -> Self {
        PublishApiConfig {
            tokens: Vec::new(),
            max_body: defaults::MAX_PUBLISH_BODY,
        }
    }
}

// By hand: the tokens are secrets, and a config may be debug-printed.
impl std::fmt::Debug for PublishApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishApiConfig")
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Checks `[broker]`.
pub(super) fn broker(source: &Source, raw: RawBroker) -> Result<BrokerConfig, ConfigError> {
    let span = raw.url.span();
    let url = raw.url.into_inner();
    // The client's own parser, so that what passes here is what it can dial.
    if let Err(error) = redis::Client::open(url.as_str()) {
        return Err(source.error(
            span,
            format!(
                "{:?} is not a Redis URL like \"redis://127.0.0.1:6379\": {error}",
                redact_url(&url)
            ),
        ));
    }
    Ok(BrokerConfig {
        url,
        channel_prefix: raw
            .channel_prefix
            .unwrap_or_else(|| defaults::CHANNEL_PREFIX.to_string()),
        required: raw.required.unwrap_or(true),
    })
}

/// The fewest characters a publish API token may have: a short token could
/// be guessed by simply trying.
const MIN_TOKEN_LEN: usize = 16;

/// Checks `[publish-api]`.
pub(super) fn publish_api(
    source: &Source,
    raw: RawPublishApi,
) -> Result<PublishApiConfig, ConfigError> {
    let mut tokens = Vec::with_capacity(raw.tokens.len());
    for token in raw.tokens {
        let span = token.span();
        let token = token.into_inner();
        // RFC 6750's b64token, so that every token can be sent as written.
        let body = token.trim_end_matches('=');
        let valid = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if !valid {
            return Err(source.error(
                span,
                "a token may hold only letters, digits and -._~+/ (then '=' padding)",
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(source.error(
                span,
                format!("a token must be at least {MIN_TOKEN_LEN} characters long"),
            ));
        }
        tokens.push(token);
    }
    let max_body = match raw.max_body {
        None => defaults::MAX_PUBLISH_BODY,
        Some(v) if v.get_ref().0 == 0 => {
            return Err(source.error(v.span(), "must be at least 1 byte"));
        }
        Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
    };
    Ok(PublishApiConfig { tokens, max_body })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn broker_and_publish_api() {
        let config = parse(
            "[broker]\nurl = \"redis://:secret@127.0.0.1:6379/2\"\n\
             [publish-api]\ntokens = [\"0123456789abcdef\"]\nmax-body = \"1KiB\"\n",
        )
        .unwrap();
        let broker = config.startup.broker.expect("a broker");
        assert_eq!(broker.channel_prefix, "berth:");
        assert!(broker.required);
        assert_eq!(broker.shown_url(), "redis://***@127.0.0.1:6379/2");
        assert!(!format!("{broker:?}").contains("secret"));
        assert_eq!(config.startup.publish_api.max_body, 1024);
        assert!(!format!("{:?}", config.startup.publish_api).contains("0123456789abcdef"));

        let config =
            parse("[broker]\nurl = \"redis://h:1\"\nchannel-prefix = \"a/\"\nrequired = false\n")
                .unwrap();
        let broker = config.startup.broker.unwrap();
        assert_eq!(
            (broker.channel_prefix.as_str(), broker.required),
            ("a/", false)
        );
        assert!(
            config.startup.publish_api.tokens.is_empty(),
            "the API is off by default"
        );

        let err = parse("[broker]\nurl = \"http://h:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:2:7:"), "{err}");
        let err = parse("[publish-api]\ntokens = [\"short\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let err = parse("[publish-api]\ntokens = [\"has a space in it, too long\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:2:11:"), "{err}");
    }
}
