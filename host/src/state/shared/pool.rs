//! Connections to Redis: a small pool reused across calls, each call bounded
//! by `state-timeout`, and a moment of answering `unavailable` at once after
//! a failed connect.

use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};

use super::Store;
use crate::state::StateError;

/// How long the store answers `unavailable` at once after a failed connect.
pub(super) const BACKOFF: Duration = Duration::from_secs(1);
/// Connections kept for reuse; more are opened when calls overlap, and closed after.
const POOL: usize = 8;

impl Store {
    /// Runs `call` on a pooled connection, within `state-timeout`.
    pub(super) fn with<T>(
        &self,
        call: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StateError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        match call(&mut conn) {
            Ok(value) => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < POOL {
                    pool.push(conn);
                }
                Ok(value)
            }
            Err(error) => {
                // The connection may hold half an answer: it is not reused.
                tracing::warn!(%error, "state store call failed");
                Err(StateError::Unavailable)
            }
        }
    }

    /// A new connection with `state-timeout` on each read and write; after a
    /// failed connect, none for [`BACKOFF`].
    fn connect(&self) -> Result<Connection, StateError> {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some_and(|until| Instant::now() < until) {
            return Err(StateError::Unavailable);
        }
        let opened = self
            .client
            .get_connection_with_timeout(self.timeout)
            .and_then(|conn| {
                conn.set_read_timeout(Some(self.timeout))?;
                conn.set_write_timeout(Some(self.timeout))?;
                Ok(conn)
            });
        match opened {
            Ok(conn) => {
                *down = None;
                Ok(conn)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach Redis for the state store");
                *down = Some(Instant::now() + BACKOFF);
                Err(StateError::Unavailable)
            }
        }
    }
}
