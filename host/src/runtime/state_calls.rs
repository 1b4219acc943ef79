//! The plugin's `state` imports: history reads, members and the key-value
//! store of the route's namespace. Names and values are bounded here, before
//! the store sees them; the store bounds the namespace's totals.

use super::bindings::berth::plugin::{state, types};
use super::store::HostState;
use crate::config::defaults::MAX_KEY;
use crate::metrics::Limit;
use crate::state::{self as store, StateError};

/// The most members one `members` call lists.
const MAX_MEMBERS: u32 = 1000;

fn state_error(error: StateError) -> state::StateError {
    match error {
        StateError::StoreKeys | StateError::StoreBytes | StateError::HistoryTopics => {
            state::StateError::Quota
        }
        StateError::NotANumber => state::StateError::NotANumber,
        StateError::Lost | StateError::Unavailable => state::StateError::Unavailable,
    }
}

impl HostState {
    /// Refuses a key longer than any the store keeps.
    fn check_key(&self, key: &str) -> Result<(), state::StateError> {
        if key.len() > MAX_KEY {
            self.route().metrics.limit_hit(Limit::MaxKey);
            return Err(state::StateError::TooLarge);
        }
        Ok(())
    }

    fn check_value(&self, value: Option<&[u8]>) -> Result<(), state::StateError> {
        if value.is_some_and(|v| v.len() > self.route().rules.max_value) {
            self.route().metrics.limit_hit(Limit::MaxValue);
            return Err(state::StateError::TooLarge);
        }
        Ok(())
    }

    fn check_topic(&self, topic: &str) -> bool {
        let fits = topic.len() <= self.route().max_topic_name;
        if !fits {
            self.route().metrics.limit_hit(Limit::TopicName);
        }
        fits
    }

    /// Counts a quota refusal under the bound that made it.
    fn quota(&self, error: StateError) -> state::StateError {
        match error {
            StateError::StoreKeys => self.route().metrics.limit_hit(Limit::StoreKeys),
            StateError::StoreBytes => self.route().metrics.limit_hit(Limit::StoreBytes),
            _ => {}
        }
        state_error(error)
    }
}

impl state::Host for HostState {
    fn history(
        &mut self,
        topic: String,
        since: Option<types::Position>,
        limit: u32,
    ) -> wasmtime::Result<Result<state::HistoryPage, state::HistoryError>> {
        let route = self.route();
        if route.rules.history_size == 0 {
            return Ok(Err(state::HistoryError::Disabled));
        }
        if !self.check_topic(&topic) {
            return Ok(Err(state::HistoryError::TooLarge));
        }
        let since = since.map(|p| store::Position {
            epoch: p.epoch,
            seq: p.seq,
        });
        let page = match route
            .state
            .store()
            .history(&route.namespace, &topic, since, limit)
        {
            Ok(page) => page,
            Err(StateError::Lost) => return Ok(Err(state::HistoryError::Lost)),
            Err(_) => return Ok(Err(state::HistoryError::Unavailable)),
        };
        Ok(Ok(state::HistoryPage {
            epoch: page.epoch,
            last: page.last,
            messages: page
                .messages
                .into_iter()
                .map(|kept| state::Kept {
                    seq: kept.seq,
                    kind: if kept.text {
                        types::MessageKind::Text
                    } else {
                        types::MessageKind::Binary
                    },
                    data: kept.data,
                })
                .collect(),
        }))
    }

    fn members(
        &mut self,
        topic: String,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<state::Member>, state::StateError>> {
        if !self.check_topic(&topic) {
            return Ok(Err(state::StateError::TooLarge));
        }
        let route = self.route();
        let limit = limit.min(MAX_MEMBERS) as usize;
        let members = match route.state.members(&route.namespace, &topic, limit) {
            Ok(members) => members,
            Err(e) => return Ok(Err(state_error(e))),
        };
        Ok(Ok(members
            .into_iter()
            .map(|m| state::Member {
                conn: m.conn,
                node: m.node.to_string(),
                info: m.info.to_string(),
            })
            .collect()))
    }

    fn count_members(&mut self, topic: String) -> wasmtime::Result<Result<u32, state::StateError>> {
        if !self.check_topic(&topic) {
            return Ok(Err(state::StateError::TooLarge));
        }
        let route = self.route();
        let count = route.state.count_members(&route.namespace, &topic);
        Ok(count
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(state_error))
    }

    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, state::StateError>> {
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        let route = self.route();
        let store = route.state.store();
        Ok(store.get(&route.namespace, &key).map_err(state_error))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), state::StateError>> {
        if let Err(e) = self.check_key(&key).and(self.check_value(Some(&value))) {
            return Ok(Err(e));
        }
        let route = self.route();
        let store = route.state.store();
        let result = store.set(&route.namespace, &key, &value, ttl_ms, &route.rules);
        Ok(result.map_err(|e| self.quota(e)))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, state::StateError>> {
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        let route = self.route();
        let store = route.state.store();
        Ok(store.delete(&route.namespace, &key).map_err(state_error))
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, state::StateError>> {
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        let route = self.route();
        let store = route.state.store();
        let result = store.increment(&route.namespace, &key, delta, &route.rules);
        Ok(result.map_err(|e| self.quota(e)))
    }

    fn compare_and_set(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, state::StateError>> {
        if let Err(e) = self.check_key(&key).and(self.check_value(value.as_deref())) {
            return Ok(Err(e));
        }
        let route = self.route();
        let result = route.state.store().compare_and_set(
            &route.namespace,
            &key,
            expected.as_deref(),
            value.as_deref(),
            ttl_ms,
            &route.rules,
        );
        Ok(result.map_err(|e| self.quota(e)))
    }
}
