//! Reading a config file: serde parses the text into raw values, then each
//! section is checked and the top-level keys are given their defaults.

use std::path::{Path, PathBuf};

use toml::Spanned;
use tracing::level_filters::LevelFilter;

use super::broker::{broker, publish_api};
use super::checks::{Source, nonzero, positive};
use super::listen::listeners;
use super::raw::RawConfig;
use super::route_check::check_route;
use super::state::same_state_per_namespace;
use super::{
    Config, ConfigError, LiveConfig, OriginPolicy, PublishApiConfig, RouteConfig, StartupConfig,
    StateConfig, defaults,
};
use crate::folders::default_cache_dir;

impl Config {
    /// Reads and validates the config file at `path`; relative paths in it are
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, path, base)
    }

    /// Validates TOML `text`; `file` names it in errors and `base` anchors relative paths.
    pub fn from_toml(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let source = Source { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            source.error(e.span().unwrap_or(0..0), message)
        })?;
        let plugin_dir = base.join(
            raw.plugin_dir
                .unwrap_or_else(|| PathBuf::from(defaults::PLUGIN_DIR)),
        );

        let max_memory = match raw.max_memory {
            None => defaults::MAX_MEMORY,
            Some(v) if v.get_ref().0 < 1 << 16 => {
                return Err(
                    source.error(v.span(), "must be at least 64 KiB (one WebAssembly page)")
                );
            }
            Some(v) => v.into_inner().0,
        };
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
        let mut route_spans = Vec::with_capacity(raw.routes.len());
        for route in raw.routes {
            route_spans.push(route.path.span());
            let checked = check_route(&source, base, &plugin_dir, max_memory, route)?;
            routes.push(checked);
        }
        let max_connections = positive(&source, raw.max_connections, defaults::MAX_CONNECTIONS)?;
        let handshake_timeout =
            nonzero(&source, raw.handshake_timeout, defaults::HANDSHAKE_TIMEOUT)?;
        let max_instances = positive(&source, raw.max_instances, defaults::MAX_INSTANCES as usize)?;
        let max_instances = u32::try_from(max_instances).unwrap_or(u32::MAX);
        let max_connections_per_ip = match raw.max_connections_per_ip {
            Some(v) if *v.get_ref() == 0 => {
                return Err(
                    source.error(v.span(), "must be at least 1 (leave it out for no limit)")
                );
            }
            v => v.map(Spanned::into_inner),
        };
        let cache_dir = match raw.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(base.join(dir)),
            None => default_cache_dir(),
        };
        let listeners = listeners(&source, base, raw.listen, raw.listeners)?;
        if let Some(admin) = &raw.admin_listen
            && admin.get_ref().port() != 0
            && listeners.iter().any(|l| l.address == *admin.get_ref())
        {
            return Err(source.error(
                admin.span(),
                "admin-listen must be an address of its own, not one of the listeners",
            ));
        }
        let log_level = match raw.log_level {
            None => LevelFilter::INFO,
            Some(level) => parse_level(level.get_ref()).ok_or_else(|| {
                source.error(
                    level.span(),
                    format!(
                        "log-level {:?} must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\" or \"off\"",
                        level.get_ref()
                    ),
                )
            })?,
        };
        same_state_per_namespace(&source, &routes, &route_spans)?;
        let state = StateConfig {
            dir: raw
                .state_dir
                .map(|dir| base.join(dir))
                .unwrap_or_else(|| base.join(defaults::STATE_DIR)),
            timeout: nonzero(&source, raw.state_timeout, defaults::STATE_TIMEOUT)?,
            presence_ttl: nonzero(&source, raw.presence_ttl, defaults::PRESENCE_TTL)?,
        };
        let broker = raw.broker.map(|b| broker(&source, b)).transpose()?;
        let publish_api = match raw.publish_api {
            None => PublishApiConfig::default(),
            Some(api) => publish_api(&source, api)?,
        };
        Ok(Config {
            startup: StartupConfig {
                listeners,
                max_connections,
                max_connections_per_ip,
                handshake_timeout,
                max_instances,
                max_memory,
                cache_dir,
                demo_page: false,
                admin_listen: raw.admin_listen.map(Spanned::into_inner),
                log_level,
                broker,
                publish_api,
                state,
            },
            live: LiveConfig {
                routes,
                plugin_dir,
                auto_routes: raw.auto_routes,
                auto_route_origins: OriginPolicy::List(Vec::new()),
            },
        })
    }
}

/// A log level by its name, as `RUST_LOG` spells it (any case).
fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_LISTEN, parse};

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("listen = \"127.0.0.1:1\"\nlisten-on = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:2:1:"), "{text}");
        assert!(text.contains("listen-on"), "{text}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.startup.listeners.len(), 1);
        assert_eq!(
            config.startup.listeners[0].address.to_string(),
            DEFAULT_LISTEN
        );
        assert!(config.live.routes.is_empty());
        assert_eq!(config.startup.max_connections, defaults::MAX_CONNECTIONS);
        assert_eq!(config.startup.admin_listen, None);
        assert_eq!(config.startup.log_level, LevelFilter::INFO);
    }

    #[test]
    fn the_default_config_is_an_empty_file() {
        let empty = Config::from_toml("", Path::new("berth.toml"), Path::new("")).unwrap();
        let default = Config::default();
        assert_eq!(empty.startup, default.startup);
        assert_eq!(empty.live, default.live);
    }

    #[test]
    fn admin_listen_and_log_level() {
        let config = parse("admin-listen = \"127.0.0.1:9100\"\nlog-level = \"Debug\"\n").unwrap();
        assert_eq!(
            config.startup.admin_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(config.startup.log_level, LevelFilter::DEBUG);
        let err = parse("log-level = \"loud\"\n").unwrap_err().to_string();
        assert!(err.starts_with("berth.toml:1:13:"), "{err}");
        let err = parse("[[route]]\npath = \"/metrics\"\nplugin = \"x.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered by berth itself"), "{err}");
    }
}
