//! Wake-up gates for the session loop's branches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, waker};

/// Polls one branch of the session loop only after that branch's own waker
/// has fired.
///
/// The loop runs once per outbound wake-up, when the other branches usually
/// have nothing for it, and polling a branch that was not woken is not free:
/// a read attempt zero-fills the free read buffer even when it finds no
/// data, and a cancellation token takes a lock to say it is not cancelled.
pub(crate) struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Gate {
    fn wake_by_ref(gate: &Arc<Self>) {
        gate.woken.store(true, Ordering::Release);
        gate.task.wake();
    }
}

impl Gate {
    /// A gate whose first poll goes through.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Gate {
            // The first turn polls: the branch may be ready already.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        })
    }

    /// Runs `poll` with this gate's waker if the branch has woken since it
    /// last returned `Pending`.
    pub(crate) fn poll<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.task.register(cx.waker());
        if !self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = waker(self.clone());
        let result = poll(&mut Context::from_waker(&waker));
        if result.is_ready() {
            // A ready branch may be ready again at once (more buffered frames).
            self.woken.store(true, Ordering::Release);
        }
        result
    }
}
