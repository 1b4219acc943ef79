//! Objects kept for reuse by whichever session needs one next: output
//! buffers and (de)compressors, whose making costs more than a lock. A
//! session borrows one for a burst or a message and gives it back; the pool
//! keeps at most a fixed number, so it holds no more than the busiest moment
//! needed, within a bound.

use std::sync::{Mutex, MutexGuard};

/// A bounded pool of spare objects.
pub(crate) struct Spares<T> {
    kept: Mutex<Vec<T>>,
    max: usize,
}

impl<T> Spares<T> {
    /// An empty pool that keeps at most `max` objects.
    pub(crate) const fn new(max: usize) -> Self {
        Spares {
            kept: Mutex::new(Vec::new()),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        // Nothing panics while holding the lock; recover the pool regardless.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare, if one is kept.
    pub(crate) fn take(&self) -> Option<T> {
        self.lock().pop()
    }

    /// Keeps `item` for the next taker, unless the pool is full.
    pub(crate) fn give(&self, item: T) {
        let mut kept = self.lock();
        if kept.len() < self.max {
            kept.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_keeps_at_most_its_bound() {
        let spares = Spares::new(2);
        for i in 0..3 {
            spares.give(i);
        }
        assert_eq!(
            (spares.take(), spares.take(), spares.take()),
            (Some(1), Some(0), None)
        );
    }
}
