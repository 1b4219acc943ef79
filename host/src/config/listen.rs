//! The sockets berth listens on: `listen` or `[[listener]]` tables, each
//! plain or TLS, maybe behind a proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ConfigError;
use super::checks::Source;
use super::raw::RawListener;

/// The address berth listens on when neither the config nor the command line names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// One socket berth listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The address and port.
    pub address: SocketAddr,
    /// The certificate and key for wss://, or `None` for plain ws://.
    pub tls: Option<TlsFiles>,
    /// Whether every connection starts with a PROXY protocol (v1 or v2)
    /// header naming the real client (a TCP load balancer in front).
    pub proxy_protocol: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed (HTTP
    /// load balancers in front); from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ListenerConfig {
    /// A plain ws:// listener on `address` with no proxy in front.
    pub fn plain(address: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            address,
            tls: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// PEM files for a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The listeners: `[[listener]]` tables, or the single plain `listen`
/// address (the default when there is neither).
pub(super) fn listeners(
    source: &Source,
    base: &Path,
    listen: Option<Spanned<SocketAddr>>,
    raw: Vec<RawListener>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if let Some(listen) = &listen
        && !raw.is_empty()
    {
        return Err(source.error(
            listen.span(),
            "use either listen or [[listener]] tables, not both",
        ));
    }
    if raw.is_empty() {
        let address = listen.map_or_else(
            || DEFAULT_LISTEN.parse().expect("a valid default"),
            Spanned::into_inner,
        );
        return Ok(vec![ListenerConfig::plain(address)]);
    }
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.len());
    for listener in raw {
        let span = listener.address.span();
        let address = listener.address.into_inner();
        // Port 0 asks the system for any free port: several may.
        if address.port() != 0 && listeners.iter().any(|l| l.address == address) {
            return Err(source.error(span, format!("{address} is listed twice")));
        }
        let tls = match (listener.tls_cert, listener.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: base.join(cert.into_inner()),
                key: base.join(key.into_inner()),
            }),
            (Some(one), None) | (None, Some(one)) => {
                return Err(
                    source.error(one.span(), "a TLS listener needs both tls-cert and tls-key")
                );
            }
        };
        let mut trusted_proxies = Vec::with_capacity(listener.trusted_proxies.len());
        for proxy in listener.trusted_proxies {
            let span = proxy.span();
            let text = proxy.into_inner();
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    source.error(
                        span,
                        format!("{text:?} is not an IP address or CIDR block like \"10.0.0.0/8\""),
                    )
                })?;
            trusted_proxies.push(net);
        }
        listeners.push(ListenerConfig {
            address,
            tls,
            proxy_protocol: listener.proxy_protocol,
            trusted_proxies,
        });
    }
    Ok(listeners)
}
