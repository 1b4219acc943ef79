//! Plugin timers. Each live timer is a small tokio task that, when due, puts a
//! timer event into the instance's own ordered queue, so `on-timer` calls are
//! ordered with messages and never overlap them. Timers belong to the instance
//! and stop when it is dropped.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::handle::Event;
use super::queue::WeakQueueTx;

/// The most live timers one instance may have.
pub(crate) const MAX_TIMERS: usize = 1024;

struct Timer {
    token: u64,
    repeat: bool,
    task: AbortHandle,
}

/// The live timers of one instance.
pub(crate) struct Timers {
    /// Which instance the events are for (its connection in the connection model, 0 otherwise).
    key: u64,
    next_id: u64,
    live: HashMap<u64, Timer>,
    // Weak: a pending timer must not keep a route's queue open after shutdown.
    queue: WeakQueueTx<Event>,
    runtime: tokio::runtime::Handle,
}

impl Timers {
    /// No timers yet; events will go to `queue`, tagged with `key`.
    pub(crate) fn new(
        key: u64,
        queue: WeakQueueTx<Event>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Timers {
            key,
            next_id: 1,
            live: HashMap::new(),
            queue,
            runtime,
        }
    }

    /// Starts a timer; `None` when the instance has too many.
    pub(crate) fn set(&mut self, delay_ms: u32, repeat: bool, token: u64) -> Option<u64> {
        if self.live.len() >= MAX_TIMERS {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let period = Duration::from_millis(u64::from(delay_ms.max(1)));
        let queue = self.queue.clone();
        let key = self.key;
        let task = self.runtime.spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            // A busy instance gets one late call, not a burst of catch-up calls.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(queue) = queue.upgrade() else { return };
                if queue.send(Event::Timer { key, timer: id }).await.is_err() || !repeat {
                    return;
                }
            }
        });
        self.live.insert(
            id,
            Timer {
                token,
                repeat,
                task: task.abort_handle(),
            },
        );
        Some(id)
    }

    /// Stops a timer; false if it was not live.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.live.remove(&id) {
            Some(timer) => {
                timer.task.abort();
                true
            }
            None => false,
        }
    }

    /// The token for a fired timer, or `None` if it was cancelled meanwhile.
    /// A one-shot timer ends here.
    pub(crate) fn fired(&mut self, id: u64) -> Option<u64> {
        let timer = self.live.get(&id)?;
        let token = timer.token;
        if !timer.repeat {
            self.live.remove(&id);
        }
        Some(token)
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        for timer in self.live.values() {
            timer.task.abort();
        }
    }
}
