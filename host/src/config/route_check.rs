//! Checks one `[[route]]` table and fills in its defaults: the path, the
//! plugin file, origins and subprotocols, bounds, grants.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::checks::{Source, nonzero, positive};
use super::outbound::{RawOutbound, outbound_rules};
use super::raw::{Compression, RawRoute};
use super::state::state_rules;
use super::units::ByteSize;
use super::{
    ConfigError, DirGrant, Grants, OriginPolicy, PluginSource, QuarantineRule, RouteConfig,
    defaults,
};
use crate::router::is_reserved;

/// The route a `[[route]]` table asks for. `base` anchors host folders,
/// `plugin_dir` plugin files, and `pool_memory` (the top-level `max-memory`)
/// caps the route's own.
pub(super) fn check_route(
    source: &Source,
    base: &Path,
    plugin_dir: &Path,
    pool_memory: u64,
    raw: RawRoute,
) -> Result<RouteConfig, ConfigError> {
    let path_span = raw.path.span();
    let path = raw.path.into_inner();
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(source.error(
            path_span,
            format!("route path {path:?} must start with '/' and hold no '?', '#' or space"),
        ));
    }
    if is_reserved(&path) {
        return Err(source.error(path_span, format!("{path} is answered by berth itself")));
    }
    let plugin_span = raw.plugin.span();
    let plugin_path = plugin_dir.join(raw.plugin.into_inner());
    if !plugin_path.is_file() {
        return Err(source.error(
            plugin_span,
            format!("plugin file not found: {}", plugin_path.display()),
        ));
    }

    let mut origins = Vec::with_capacity(raw.allowed_origins.len());
    let mut any_origin = false;
    for origin in raw.allowed_origins {
        let span = origin.span();
        let origin = origin.into_inner().to_ascii_lowercase();
        if origin == "*" {
            any_origin = true;
        } else if origin
            .split_once("://")
            .is_none_or(|(_, host)| host.is_empty())
            || origin.ends_with('/')
        {
            return Err(source.error(
                span,
                format!("origin {origin:?} must look like \"https://example.com\" (or be \"*\")"),
            ));
        } else {
            origins.push(origin);
        }
    }

    let mut subprotocols = Vec::with_capacity(raw.subprotocols.len());
    for protocol in raw.subprotocols {
        let span = protocol.span();
        let protocol = protocol.into_inner();
        if protocol.is_empty() || !protocol.bytes().all(is_token_byte) {
            return Err(source.error(
                span,
                format!("subprotocol {protocol:?} must be a non-empty HTTP token"),
            ));
        }
        subprotocols.push(protocol);
    }

    let namespace = match raw.namespace {
        None => path.clone(),
        Some(ns) if ns.get_ref().is_empty() => {
            return Err(source.error(ns.span(), "namespace must not be empty"));
        }
        Some(ns) => ns.into_inner(),
    };

    let max_memory = match raw.max_memory {
        None => pool_memory,
        Some(v) if v.get_ref().0 < 1 << 16 => {
            return Err(source.error(v.span(), "must be at least 64 KiB (one WebAssembly page)"));
        }
        Some(v) if v.get_ref().0 > pool_memory => {
            return Err(source.error(
                v.span(),
                format!("must not exceed the top-level max-memory ({pool_memory} bytes), which sizes every instance slot"),
            ));
        }
        Some(v) => v.into_inner().0,
    };
    let mut dirs = Vec::with_capacity(raw.dirs.len());
    for dir in raw.dirs {
        let guest_span = dir.guest.span();
        let guest = dir.guest.into_inner();
        if !guest.starts_with('/') {
            return Err(source.error(
                guest_span,
                format!("guest path {guest:?} must be absolute, like \"/data\""),
            ));
        }
        let host_span = dir.host.span();
        let host = base.join(dir.host.into_inner());
        if !host.is_dir() {
            return Err(source.error(host_span, format!("folder not found: {}", host.display())));
        }
        dirs.push(DirGrant {
            host,
            guest,
            writable: dir.writable,
        });
    }
    let quarantine = QuarantineRule {
        traps: raw.quarantine_traps.unwrap_or(defaults::QUARANTINE_TRAPS),
        window: nonzero(source, raw.quarantine_window, defaults::QUARANTINE_WINDOW)?,
    };

    let values = match raw.config {
        None => BTreeMap::new(),
        Some(table) => {
            if let Some(key) = table
                .get_ref()
                .keys()
                .find(|k| k.len() > defaults::MAX_CONFIG_KEY)
            {
                return Err(source.error(
                    table.span(),
                    format!(
                        "config key {:?}... is {} bytes; keys may be at most {} bytes",
                        &key[..key.floor_char_boundary(32)],
                        key.len(),
                        defaults::MAX_CONFIG_KEY
                    ),
                ));
            }
            table.into_inner()
        }
    };
    let max_message_size = positive(source, raw.max_message_size, defaults::MAX_MESSAGE_SIZE)?;
    let write_queue_bytes = write_queue_bytes(source, raw.write_queue_bytes, max_message_size)?;
    Ok(RouteConfig {
        max_connections: match raw.max_connections {
            Some(v) if *v.get_ref() == 0 => {
                return Err(
                    source.error(v.span(), "must be at least 1 (leave it out for no limit)")
                );
            }
            v => v.map(Spanned::into_inner),
        },
        idle_timeout: raw
            .idle_timeout
            .map(|v| nonzero(source, Some(v), Duration::ZERO))
            .transpose()?,
        close_timeout: nonzero(source, raw.close_timeout, defaults::CLOSE_TIMEOUT)?,
        max_memory,
        compression: raw.compression == Compression::On,
        compression_threshold: raw
            .compression_threshold
            .map_or(defaults::COMPRESSION_THRESHOLD, |v| {
                usize::try_from(v.into_inner().0).unwrap_or(usize::MAX)
            }),
        quarantine,
        state: state_rules(
            source,
            raw.history_size,
            raw.history_ttl,
            raw.history_topics,
            raw.max_member,
            raw.store_keys,
            raw.store_bytes,
            raw.max_value,
        )?,
        grants: Grants { env: raw.env, dirs },
        outbound: outbound_rules(
            source,
            RawOutbound {
                allowed: raw.allowed_outbound,
                timeout: raw.outbound_timeout,
                body_bytes: raw.outbound_body_bytes,
                in_flight: raw.outbound_in_flight,
                in_flight_route: raw.outbound_in_flight_route,
            },
        )?,
        on_reload: raw.on_reload,
        instance: raw.instance,
        namespace,
        values,
        path,
        plugin: PluginSource::File(plugin_path),
        allowed_origins: if any_origin {
            OriginPolicy::Any
        } else {
            OriginPolicy::List(origins)
        },
        subprotocols,
        max_message_size,
        ping_interval: nonzero(source, raw.ping_interval, defaults::PING_INTERVAL)?,
        pong_timeout: nonzero(source, raw.pong_timeout, defaults::PONG_TIMEOUT)?,
        write_queue: positive(source, raw.write_queue, defaults::WRITE_QUEUE)?,
        write_queue_bytes,
        max_topic_name: match raw.max_topic_name {
            None => defaults::MAX_TOPIC_NAME,
            Some(v) if v.get_ref().0 == 0 => {
                return Err(source.error(v.span(), "must be at least 1 byte"));
            }
            Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
        },
        max_subscriptions_per_connection: positive(
            source,
            raw.max_subscriptions_per_connection,
            defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
        )?,
        max_subscriptions: positive(source, raw.max_subscriptions, defaults::MAX_SUBSCRIPTIONS)?,
        call_timeout: nonzero(source, raw.call_timeout, defaults::CALL_TIMEOUT)?,
    })
}

/// A route's `write-queue-bytes`: at least its `max-message-size`, so that
/// the echo of the largest message a client may send can always be queued.
fn write_queue_bytes(
    source: &Source,
    value: Option<Spanned<ByteSize>>,
    max_message_size: usize,
) -> Result<usize, ConfigError> {
    let Some(value) = value else {
        return Ok(defaults::WRITE_QUEUE_BYTES.max(max_message_size));
    };
    let bytes = usize::try_from(value.get_ref().0).unwrap_or(usize::MAX);
    if bytes < max_message_size {
        return Err(source.error(
            value.span(),
            format!(
                "must be at least the route's max-message-size ({max_message_size} bytes), \
                 or the answer to a largest message could never be queued"
            ),
        ));
    }
    Ok(bytes)
}

/// Whether `b` may appear in an HTTP token (RFC 9110 section 5.6.2).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, parse};

    #[test]
    fn subscription_and_name_bounds_have_defaults_and_refuse_zero_and_long_config_keys() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let load = |text: &str| Config::from_toml(text, Path::new("berth.toml"), dir.path());
        let r = load(&route("")).unwrap().live.routes.remove(0);
        assert_eq!(
            (
                r.max_topic_name,
                r.max_subscriptions_per_connection,
                r.max_subscriptions
            ),
            (256, 1024, 100_000)
        );
        let set = "max-topic-name = \"1KiB\"\nmax-subscriptions-per-connection = 8\nmax-subscriptions = 50";
        let r = load(&route(set)).unwrap().live.routes.remove(0);
        assert_eq!(
            (
                r.max_topic_name,
                r.max_subscriptions_per_connection,
                r.max_subscriptions
            ),
            (1024, 8, 50)
        );
        for zero in [
            "max-topic-name = 0",
            "max-subscriptions-per-connection = 0",
            "max-subscriptions = 0",
        ] {
            let err = load(&route(zero)).unwrap_err().to_string();
            assert!(err.contains("must be at least 1"), "{zero}: {err}");
        }
        let long_key = format!("[route.config]\n{} = \"v\"", "k".repeat(257));
        let err = load(&route(&long_key)).unwrap_err().to_string();
        assert!(err.contains("keys may be at most 256 bytes"), "{err}");
        let fits = format!("[route.config]\n{} = \"v\"", "k".repeat(256));
        assert_eq!(load(&route(&fits)).unwrap().live.routes[0].values.len(), 1);
    }

    #[test]
    fn write_queue_bytes_defaults_to_cover_max_message_size_and_may_not_be_below_it() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let bytes = |text: &str| {
            Config::from_toml(text, Path::new("berth.toml"), dir.path())
                .map(|c| c.live.routes[0].write_queue_bytes)
        };
        assert_eq!(bytes(&route("")).unwrap(), 1 << 20);
        assert_eq!(
            bytes(&route("max-message-size = 4194304")).unwrap(),
            4 << 20
        );
        assert_eq!(
            bytes(&route("write-queue-bytes = \"256KiB\"")).unwrap(),
            256 << 10
        );
        let err = bytes(&route("write-queue-bytes = 1000"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least the route's max-message-size"),
            "{err}"
        );
    }

    #[test]
    fn compression_is_on_by_default_and_its_keys_are_checked() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let compression = |text: &str| {
            Config::from_toml(text, Path::new("berth.toml"), dir.path()).map(|c| {
                (
                    c.live.routes[0].compression,
                    c.live.routes[0].compression_threshold,
                )
            })
        };
        assert_eq!(compression(&route("")).unwrap(), (true, 1024));
        assert_eq!(
            compression(&route(
                "compression = \"off\"\ncompression-threshold = \"4KiB\""
            ))
            .unwrap(),
            (false, 4096)
        );
        assert_eq!(
            compression(&route("compression-threshold = 0")).unwrap(),
            (true, 0)
        );
        let err = compression(&route("compression = \"gzip\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:4:"), "{err}");
        assert!(err.contains("on") && err.contains("off"), "{err}");
    }

    #[test]
    fn missing_plugin_names_its_path() {
        let err = parse("[[route]]\npath = \"/x\"\nplugin = \"nope.wasm\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:3:10:"), "{text}");
        assert!(text.contains("plugins/nope.wasm"), "{text}");
    }

    #[test]
    fn a_route_may_not_take_a_path_berth_answers() {
        let err = parse("[[route]]\npath = \"/publish/x\"\nplugin = \"x.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered by berth itself"), "{err}");
    }
}
