//! Path to route: the live routing table. Each entry is one version of a
//! route (its settings, its plugin's workers, its tungstenite settings); a
//! reload publishes a whole new table, and a connection keeps the version it
//! was accepted on for its whole life.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::RouteConfig;
use crate::metrics::RouteMetrics;
use crate::runtime::PluginHandle;

/// One version of a route, ready to serve.
pub(crate) struct Route {
    /// The route's settings.
    pub(crate) config: Arc<RouteConfig>,
    /// Where the route's events go.
    pub(crate) plugin: PluginHandle,
    /// Cancelled when this version is replaced under the `restart` policy:
    /// its connections close with 1012. A child of the server's shutdown.
    pub(crate) retired: CancellationToken,
    /// The content hash of the plugin this version runs.
    pub(crate) plugin_hash: blake3::Hash,
    /// The route's metric handles, shared with its workers.
    pub(crate) metrics: Arc<RouteMetrics>,
}

/// Paths the host answers itself, which no route may take.
const RESERVED_PATHS: &[&str] = &["/healthz", "/metrics"];

/// Path prefixes the host answers itself (the publish API), which no route may take.
const RESERVED_PREFIXES: &[&str] = &["/publish/"];

/// Whether berth answers `path` itself, so that no route may take it.
pub(crate) fn is_reserved(path: &str) -> bool {
    RESERVED_PATHS.contains(&path) || RESERVED_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Routes by exact path.
pub(crate) type Table = HashMap<String, Arc<Route>>;

/// The table every new request is routed by.
#[derive(Default)]
pub(crate) struct Router {
    table: RwLock<Table>,
}

impl Router {
    /// The route at exactly `path`.
    pub(crate) fn get(&self, path: &str) -> Option<Arc<Route>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.get(path).cloned()
    }

    /// The routes, as (path, plugin) pairs in path order.
    pub(crate) fn list(&self) -> Vec<(String, String)> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut routes: Vec<(String, String)> = table
            .values()
            .map(|r| (r.config.path.clone(), r.config.plugin.display_name()))
            .collect();
        routes.sort();
        routes
    }

    /// The history and store bounds of `namespace`, if some route serves it.
    pub(crate) fn state_rules(&self, namespace: &str) -> Option<crate::config::StateRules> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .values()
            .find(|r| r.config.namespace == namespace)
            .map(|r| r.config.state)
    }

    /// Whether some route serves topics in `namespace`.
    pub(crate) fn has_namespace(&self, namespace: &str) -> bool {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.values().any(|r| r.config.namespace == namespace)
    }

    /// Replaces the whole table at once: no request sees half a reload.
    pub(crate) fn publish(&self, table: Table) {
        let old = std::mem::replace(
            &mut *self.table.write().unwrap_or_else(|e| e.into_inner()),
            table,
        );
        // The old table (and any route only it held, with its workers) goes
        // outside the lock.
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_api_prefix_is_reserved() {
        assert!(is_reserved("/healthz"));
        assert!(is_reserved("/publish/x"));
        assert!(!is_reserved("/publish"));
        assert!(!is_reserved("/publisher"));
    }
}
