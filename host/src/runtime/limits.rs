//! What one plugin instance may hold, and how much linear memory it holds now.
//!
//! wasmtime's [`StoreLimits`] enforces the caps; this wraps it to keep a
//! running count of the instance's linear memory in its route's
//! `berth_plugin_memory_bytes` gauge, so that an operator sees which tenant's
//! memory grows (and a plugin that keeps what it should free shows up there
//! long before it reaches `max-memory`).

use prometheus_client::metrics::gauge::Gauge;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Core instances, tables and memories one plugin instance may hold: a small
/// Rust component has a handful; language runtimes (JavaScript, Python) a few
/// dozen. Far above that is a component built to exhaust the host.
const MAX_INSTANCES: usize = 100;
const MAX_TABLES: usize = 100;
const MAX_MEMORIES: usize = 16;
/// Elements in one table (function references, mostly).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// One store's resource limits, counting the linear memory they let it grow to.
pub(crate) struct Limits {
    caps: StoreLimits,
    /// Bytes of linear memory the caps have let this instance grow to.
    held: usize,
    /// The route's gauge of the memory its instances hold.
    gauge: Gauge,
}

impl Limits {
    /// Caps an instance at `max_memory` bytes of linear memory, counted in `gauge`.
    pub(crate) fn new(max_memory: u64, gauge: Gauge) -> Self {
        let caps = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(MAX_INSTANCES)
            .tables(MAX_TABLES)
            .memories(MAX_MEMORIES)
            // A failed memory.grow traps at once with the reason, rather than
            // returning -1 to a guest whose allocator then aborts with none.
            .trap_on_grow_failure(true)
            .build();
        Limits {
            caps,
            held: 0,
            gauge,
        }
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.gauge
            .dec_by(i64::try_from(self.held).unwrap_or(i64::MAX));
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            // Called for a memory's first pages too (current 0), so `held`
            // covers every memory of the instance from its start.
            let grown = desired.saturating_sub(current);
            self.held += grown;
            self.gauge.inc_by(i64::try_from(grown).unwrap_or(i64::MAX));
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_follows_growth_and_forgets_a_dropped_instance() {
        let gauge = Gauge::default();
        let mut a = Limits::new(1 << 20, gauge.clone());
        let mut b = Limits::new(1 << 20, gauge.clone());
        assert!(a.memory_growing(0, 65536, None).unwrap());
        assert!(b.memory_growing(0, 65536, None).unwrap());
        assert!(a.memory_growing(65536, 3 * 65536, None).unwrap());
        assert_eq!(gauge.get(), 4 * 65536);
        // Over the cap: a trap, and nothing counted.
        assert!(a.memory_growing(3 * 65536, 2 << 20, None).is_err());
        assert_eq!(gauge.get(), 4 * 65536);
        drop(a);
        assert_eq!(gauge.get(), 65536);
        drop(b);
        assert_eq!(gauge.get(), 0);
    }
}
