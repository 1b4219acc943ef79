//! The state store's settings: where it lives and how long callers wait for
//! it (server-wide), and what each route may keep in it (per namespace).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::checks::{Source, nonzero, positive};
use super::units::{ByteSize, HumanDuration};
use super::{ConfigError, RouteConfig, defaults};

/// What a route keeps in the state store, and how much: history per topic,
/// members' descriptions, and its namespace's key-value quota. Routes that
/// share a namespace must agree on these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRules {
    /// Messages kept per topic (`history-size`); 0 keeps none.
    pub history_size: u32,
    /// A topic's history is dropped when nothing was published to it for
    /// this long (`history-ttl`).
    pub history_ttl: Duration,
    /// Topics with history the namespace may keep at once (`history-topics`).
    pub history_topics: u32,
    /// Longest member description `subscribe` takes (`max-member`).
    pub max_member: usize,
    /// Keys the namespace's store may hold (`store-keys`).
    pub store_keys: u64,
    /// Bytes of keys and values the namespace's store may hold (`store-bytes`).
    pub store_bytes: u64,
    /// Longest value `set` takes (`max-value`).
    pub max_value: usize,
}

impl Default for StateRules {
    fn default() -> Self {
        StateRules {
            history_size: 0,
            history_ttl: defaults::HISTORY_TTL,
            history_topics: defaults::HISTORY_TOPICS,
            max_member: defaults::MAX_MEMBER,
            store_keys: defaults::STORE_KEYS,
            store_bytes: defaults::STORE_BYTES,
            max_value: defaults::MAX_VALUE,
        }
    }
}

/// Where the state store lives and how long its callers wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// The embedded store's folder (`state-dir`); unused with a `[broker]`.
    pub dir: PathBuf,
    /// The longest a plugin's state call waits for the store (`state-timeout`).
    pub timeout: Duration,
    /// How long a node's members outlive its last refresh in Redis
    /// (`presence-ttl`): a node that dies leaves no members after this.
    pub presence_ttl: Duration,
}

impl StateConfig {
    /// The defaults, with the store in `dir`.
    pub fn in_dir(dir: PathBuf) -> StateConfig {
        StateConfig {
            dir,
            timeout: defaults::STATE_TIMEOUT,
            presence_ttl: defaults::PRESENCE_TTL,
        }
    }
}

/// A route's state keys, each at its default when left out.
#[allow(clippy::too_many_arguments)]
pub(super) fn state_rules(
    source: &Source,
    history_size: Option<u32>,
    history_ttl: Option<Spanned<HumanDuration>>,
    history_topics: Option<Spanned<usize>>,
    max_member: Option<Spanned<ByteSize>>,
    store_keys: Option<Spanned<usize>>,
    store_bytes: Option<Spanned<ByteSize>>,
    max_value: Option<Spanned<ByteSize>>,
) -> Result<StateRules, ConfigError> {
    let bytes = |value: Option<Spanned<ByteSize>>, default: u64| match value {
        None => Ok(default),
        Some(v) if v.get_ref().0 == 0 => Err(source.error(v.span(), "must be at least 1 byte")),
        Some(v) => Ok(v.into_inner().0),
    };
    let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(StateRules {
        history_size: history_size.unwrap_or(0),
        history_ttl: nonzero(source, history_ttl, defaults::HISTORY_TTL)?,
        history_topics: u32::try_from(positive(
            source,
            history_topics,
            defaults::HISTORY_TOPICS as usize,
        )?)
        .unwrap_or(u32::MAX),
        max_member: clamp(bytes(max_member, defaults::MAX_MEMBER as u64)?),
        store_keys: positive(source, store_keys, defaults::STORE_KEYS as usize)? as u64,
        store_bytes: bytes(store_bytes, defaults::STORE_BYTES)?,
        max_value: clamp(bytes(max_value, defaults::MAX_VALUE as u64)?),
    })
}

/// Routes that share a namespace share its history and store, so they must
/// bound them alike; the second route to differ is the error.
pub(super) fn same_state_per_namespace(
    source: &Source,
    routes: &[RouteConfig],
    spans: &[Range<usize>],
) -> Result<(), ConfigError> {
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = routes[..i]
            .iter()
            .find(|r| r.namespace == route.namespace && r.state != route.state)
        {
            return Err(source.error(
                spans[i].clone(),
                format!(
                    "route {} shares namespace {:?} with route {} but sets other history or \
                     store keys (history-size, history-ttl, history-topics, max-member, \
                     store-keys, store-bytes, max-value); routes of one namespace must agree",
                    route.path, route.namespace, first.path
                ),
            ));
        }
    }
    Ok(())
}
