//! A route's outbound HTTP grant (`allowed-outbound`) and the bounds on its
//! requests. Nothing is granted by default: a plugin reaches only the
//! origins its route names.

use std::fmt;
use std::time::Duration;

use toml::Spanned;

use super::checks::{Source, nonzero, positive};
use super::units::ByteSize;
use super::units::HumanDuration;
use super::{ConfigError, defaults};

/// One `allowed-outbound` entry: a scheme, a host and a port, where the host
/// may be `*` (any) or start with `*.` (any subdomain, not the domain
/// itself) and the port may be `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundGrant {
    /// `http` or `https`.
    pub scheme: String,
    /// A lower-case host name or address; `*` or `*.suffix` as patterns.
    pub host: String,
    /// The port; `None` for any.
    pub port: Option<u16>,
}

impl OutboundGrant {
    /// Reads `scheme://host[:port]` (a path is not allowed: grants are per
    /// origin); a missing port is the scheme's default.
    pub fn parse(text: &str) -> Result<OutboundGrant, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("must look like \"https://api.example.com\" or \"http://127.0.0.1:*\"")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("scheme {scheme:?} is not http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err("names an origin only: no path, query or user".into());
        }
        // An IPv6 address sits in brackets, and its colons are not a port's.
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port {port:?} is not 1-65535 or *"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        if host.is_empty() || (host != "*" && (name.is_empty() || name.contains('*'))) {
            return Err(format!(
                "host {host:?} is not a name, an address, `*` or `*.domain`"
            ));
        }
        Ok(OutboundGrant { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` falls under this grant;
    /// `host` must be lower case (as URLs normalise it).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_matches = if self.host == "*" {
            true
        } else if let Some(suffix) = self.host.strip_prefix("*.") {
            host.strip_suffix(suffix)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            self.host == host
        };
        self.scheme == scheme && host_matches && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for OutboundGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}://{}:{port}", self.scheme, self.host),
            None => write!(f, "{}://{}:*", self.scheme, self.host),
        }
    }
}

/// What a route's plugin may reach over HTTP, and how much of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRules {
    /// The origins requests may go to (`allowed-outbound`); empty: none.
    pub allowed: Vec<OutboundGrant>,
    /// The longest a request may take, redirects and body included
    /// (`outbound-timeout`); a plugin may ask for less.
    pub timeout: Duration,
    /// The largest request or response body (`outbound-body-bytes`).
    pub body_bytes: usize,
    /// Requests one instance may have waiting for answers (`outbound-in-flight`).
    pub in_flight: usize,
    /// Requests the route's instances may have waiting together
    /// (`outbound-in-flight-route`).
    pub in_flight_route: usize,
}

impl Default for OutboundRules {
    fn default() -> Self {
        OutboundRules {
            allowed: Vec::new(),
            timeout: defaults::OUTBOUND_TIMEOUT,
            body_bytes: defaults::OUTBOUND_BODY_BYTES,
            in_flight: defaults::OUTBOUND_IN_FLIGHT,
            in_flight_route: defaults::OUTBOUND_IN_FLIGHT_ROUTE,
        }
    }
}

/// The outbound keys of a `[[route]]` table, as written.
pub(super) struct RawOutbound {
    pub(super) allowed: Vec<Spanned<String>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) body_bytes: Option<Spanned<ByteSize>>,
    pub(super) in_flight: Option<Spanned<usize>>,
    pub(super) in_flight_route: Option<Spanned<usize>>,
}

/// A route's outbound rules, each key at its default when left out.
pub(super) fn outbound_rules(
    source: &Source,
    raw: RawOutbound,
) -> Result<OutboundRules, ConfigError> {
    let allowed = raw
        .allowed
        .iter()
        .map(|entry| {
            OutboundGrant::parse(entry.get_ref()).map_err(|why| {
                source.error(
                    entry.span(),
                    format!("allowed-outbound entry {:?} {why}", entry.get_ref()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body_bytes = match raw.body_bytes {
        None => defaults::OUTBOUND_BODY_BYTES,
        Some(v) if v.get_ref().0 == 0 => {
            return Err(source.error(v.span(), "must be at least 1 byte"));
        }
        // A body travels in one event's payload, whose spans are 32-bit.
        Some(v) => usize::try_from(v.get_ref().0.min(u64::from(u32::MAX))).unwrap_or(usize::MAX),
    };
    Ok(OutboundRules {
        allowed,
        timeout: nonzero(source, raw.timeout, defaults::OUTBOUND_TIMEOUT)?,
        body_bytes,
        in_flight: positive(source, raw.in_flight, defaults::OUTBOUND_IN_FLIGHT)?,
        in_flight_route: positive(
            source,
            raw.in_flight_route,
            defaults::OUTBOUND_IN_FLIGHT_ROUTE,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_scheme_host_and_port() {
        let exact = OutboundGrant::parse("https://API.example.com").unwrap();
        assert!(exact.allows("https", "api.example.com", 443));
        assert!(!exact.allows("http", "api.example.com", 443));
        assert!(!exact.allows("https", "api.example.com", 8443));
        assert!(!exact.allows("https", "evil-api.example.com", 443));

        let any_port = OutboundGrant::parse("http://127.0.0.1:*").unwrap();
        assert!(any_port.allows("http", "127.0.0.1", 9));
        assert!(!any_port.allows("http", "127.0.0.2", 9));

        let subdomains = OutboundGrant::parse("https://*.example.com").unwrap();
        assert!(subdomains.allows("https", "a.example.com", 443));
        assert!(subdomains.allows("https", "a.b.example.com", 443));
        assert!(!subdomains.allows("https", "example.com", 443));
        assert!(!subdomains.allows("https", "badexample.com", 443));

        let v6 = OutboundGrant::parse("http://[::1]:8080").unwrap();
        assert!(v6.allows("http", "[::1]", 8080));
        assert_eq!(v6.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn malformed_grants_are_refused() {
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://ex*ample.com",
            "https://*.",
            "https://example.com:0",
            "https://example.com:99999",
            "https://",
        ] {
            assert!(OutboundGrant::parse(bad).is_err(), "{bad}");
        }
    }
}
