//! Path to route: each route's settings, its plugin's actor, and its
//! tungstenite settings, looked up once per upgrade request.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::RouteConfig;
use crate::runtime::PluginHandle;

/// A route ready to serve.
pub(crate) struct Route {
    /// The route's settings.
    pub(crate) config: Arc<RouteConfig>,
    /// Where the route's events go.
    pub(crate) plugin: PluginHandle,
    /// tungstenite settings derived from the route's limits.
    pub(crate) ws_config: WebSocketConfig,
}

/// Every route, by exact path.
#[derive(Default)]
pub(crate) struct Router {
    routes: HashMap<String, Arc<Route>>,
}

impl Router {
    /// Adds a route.
    pub(crate) fn insert(&mut self, route: Route) {
        self.routes
            .insert(route.config.path.clone(), Arc::new(route));
    }

    /// The route at exactly `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.get(path)
    }
}
