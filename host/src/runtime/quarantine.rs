//! A route version's quarantine: its traps counted within a window, and
//! whether too many have tripped it, so that new connections get 503 until
//! its file changes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::QuarantineRule;

/// Counts a route version's traps; too many within the window quarantine it.
pub(crate) struct Quarantine {
    rule: QuarantineRule,
    traps: Mutex<VecDeque<Instant>>,
    tripped: AtomicBool,
}

impl Quarantine {
    /// A clean record under `rule`.
    pub(crate) fn new(rule: QuarantineRule) -> Self {
        Quarantine {
            rule,
            traps: Mutex::new(VecDeque::new()),
            tripped: AtomicBool::new(false),
        }
    }

    /// Notes a trap; true if this one put the route in quarantine.
    pub(crate) fn record_trap(&self) -> bool {
        if self.rule.traps == 0 || self.is_tripped() {
            return false;
        }
        let now = Instant::now();
        let mut traps = self.traps.lock().unwrap_or_else(|e| e.into_inner());
        while traps
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.rule.window)
        {
            traps.pop_front();
        }
        traps.push_back(now);
        if traps.len() >= self.rule.traps as usize {
            self.tripped.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether new connections are refused.
    pub(crate) fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// The rule, for messages.
    pub(crate) fn rule(&self) -> QuarantineRule {
        self.rule
    }
}
