//! The queue from sessions to a route worker thread, with coalesced wake-ups,
//! bounded in items and in the bytes of the messages it holds.
//!
//! A worker sleeping on a plain channel is woken by every send, and on a busy
//! core the woken thread runs at once: it handles one event, sleeps, and is
//! woken again by the next, paying two thread switches per message. Here a
//! send only notes that the worker has work; a small tokio task wakes the
//! thread after every session that was ready to run has run, so the worker
//! takes all their events in one wake-up. The cost is one scheduler turn of
//! latency, and only when the runtime has other work queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use tokio::sync::{Notify, Semaphore, mpsc};

/// The worker's side of the wake-up.
struct ThreadWake {
    /// Set by sends; the waker task waits on it.
    pending: Notify,
    /// Every sender is gone: the waker task ends after one last wake-up.
    closed: AtomicBool,
    /// The worker thread sleeps on this flag.
    awake: Mutex<bool>,
    signal: Condvar,
}

impl ThreadWake {
    fn wake_thread(&self) {
        *self.awake.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.signal.notify_one();
    }

    fn sleep_thread(&self) {
        let mut awake = self.awake.lock().unwrap_or_else(|e| e.into_inner());
        while !*awake {
            awake = self.signal.wait(awake).unwrap_or_else(|e| e.into_inner());
        }
        *awake = false;
    }
}

struct SendSide<T> {
    tx: Option<mpsc::Sender<T>>,
    poke: Arc<ThreadWake>,
    bytes: Arc<Budget>,
}

/// The bytes an item may hold while it waits in the queue, so that a count of
/// large messages cannot add up to more than this: senders wait for room,
/// and their sockets fill instead of our memory.
struct Budget {
    room: Semaphore,
    total: usize,
}

impl Budget {
    /// What an item of `bytes` takes: all of the budget at most, so that one
    /// item larger than the whole budget still goes through, alone.
    fn share(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX)
    }
}

impl<T> Drop for SendSide<T> {
    fn drop(&mut self) {
        // The channel must be closed before the worker looks again, or it
        // would find it empty but open and sleep for good.
        drop(self.tx.take());
        self.poke.closed.store(true, Ordering::Release);
        self.poke.pending.notify_one();
        self.poke.wake_thread();
    }
}

/// The sending side of a worker's queue; cheap to clone.
pub(crate) struct QueueTx<T> {
    link: Arc<SendSide<T>>,
}

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        QueueTx {
            link: self.link.clone(),
        }
    }
}

/// A sender that does not keep the queue open, for timers.
pub(crate) struct WeakQueueTx<T> {
    link: Weak<SendSide<T>>,
}

impl<T> Clone for WeakQueueTx<T> {
    fn clone(&self) -> Self {
        WeakQueueTx {
            link: self.link.clone(),
        }
    }
}

impl<T> WeakQueueTx<T> {
    /// The sender, if the queue is still open.
    pub(crate) fn upgrade(&self) -> Option<QueueTx<T>> {
        self.link.upgrade().map(|link| QueueTx { link })
    }
}

/// The queue has closed: the worker is gone.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub(crate) T);

impl<T> QueueTx<T> {
    fn tx(&self) -> &mpsc::Sender<T> {
        self.link.tx.as_ref().expect("set until the link drops")
    }

    /// Queues `item`, waiting while the queue is full.
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed<T>> {
        self.tx().send(item).await.map_err(|e| Closed(e.0))?;
        self.link.poke.pending.notify_one();
        Ok(())
    }

    /// Queues `item`, which holds `bytes` until the worker takes it (and
    /// calls [`QueueRx::release`]), waiting while the queue is full in items
    /// or in bytes.
    pub(crate) async fn send_sized(&self, item: T, bytes: usize) -> Result<(), Closed<T>> {
        let budget = &self.link.bytes;
        let share = budget.share(bytes);
        match budget.room.acquire_many(share).await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(Closed(item)),
        }
        let sent = self.send(item).await;
        if sent.is_err() {
            budget.room.add_permits(share as usize);
        }
        sent
    }

    /// Queues `item` if there is room now.
    pub(crate) fn try_send(&self, item: T) -> Result<(), mpsc::error::TrySendError<T>> {
        self.tx().try_send(item)?;
        self.link.poke.pending.notify_one();
        Ok(())
    }

    /// A sender that does not keep the queue open.
    pub(crate) fn downgrade(&self) -> WeakQueueTx<T> {
        WeakQueueTx {
            link: Arc::downgrade(&self.link),
        }
    }
}

/// The worker thread's side of the queue.
pub(crate) struct QueueRx<T> {
    rx: mpsc::Receiver<T>,
    poke: Arc<ThreadWake>,
    bytes: Arc<Budget>,
}

impl<T> QueueRx<T> {
    /// The room an item of `bytes` sent with [`QueueTx::send_sized`] took.
    pub(crate) fn room(&self, bytes: usize) -> usize {
        self.bytes.share(bytes) as usize
    }

    /// Gives back `room`, the sum of [`Self::room`] of items taken: once
    /// per batch, since each call takes the semaphore's lock.
    pub(crate) fn release(&self, room: usize) {
        if room > 0 {
            self.bytes.room.add_permits(room);
        }
    }

    /// Blocks until there are items, then moves up to `limit` of them into
    /// `into`. Returns 0 once every sender is gone and the queue is empty.
    pub(crate) fn blocking_recv_many(&mut self, into: &mut Vec<T>, limit: usize) -> usize {
        loop {
            let mut closed = false;
            while into.len() < limit {
                match self.rx.try_recv() {
                    Ok(item) => into.push(item),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if !into.is_empty() || closed {
                return into.len();
            }
            self.poke.sleep_thread();
        }
    }
}

/// Makes a worker queue holding up to `capacity` items and `bytes` of
/// messages, and spawns on `runtime` the task that wakes the worker thread.
pub(crate) fn queue<T>(
    capacity: usize,
    bytes: usize,
    runtime: &tokio::runtime::Handle,
) -> (QueueTx<T>, QueueRx<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let poke = Arc::new(ThreadWake {
        pending: Notify::new(),
        closed: AtomicBool::new(false),
        awake: Mutex::new(false),
        signal: Condvar::new(),
    });
    runtime.spawn(wake_worker(poke.clone()));
    let budget = Arc::new(Budget {
        room: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)),
        total: bytes.min(Semaphore::MAX_PERMITS),
    });
    let link = Arc::new(SendSide {
        tx: Some(tx),
        poke: poke.clone(),
        bytes: budget.clone(),
    });
    (
        QueueTx { link },
        QueueRx {
            rx,
            poke,
            bytes: budget,
        },
    )
}

async fn wake_worker(poke: Arc<ThreadWake>) {
    loop {
        poke.pending.notified().await;
        // Sessions woken alongside this task run first; their events then
        // reach the worker in the same wake-up as the one that woke us.
        tokio::task::yield_now().await;
        poke.wake_thread();
        if poke.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::queue;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_worker_gets_every_item_then_sees_the_queue_close() {
        let (tx, mut rx) = queue::<u32>(4, 1024, &tokio::runtime::Handle::current());
        let worker = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut batch = Vec::new();
            while rx.blocking_recv_many(&mut batch, 3) > 0 {
                got.append(&mut batch);
            }
            got
        });
        let weak = tx.downgrade();
        for i in 0..100 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        assert!(weak.upgrade().is_none());
        let got = tokio::task::spawn_blocking(move || worker.join().unwrap())
            .await
            .unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn senders_wait_for_room_in_bytes_until_the_worker_releases_it() {
        let (tx, mut rx) = queue::<usize>(100, 10, &tokio::runtime::Handle::current());
        tx.send_sized(6, 6).await.unwrap();
        // 6 + 6 > 10: the second waits.
        let second = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_sized(6, 6).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        let mut got = Vec::new();
        assert_eq!(rx.blocking_recv_many(&mut got, 10), 1);
        rx.release(rx.room(got[0]));
        second.await.unwrap();
        // Larger than the whole budget: it goes alone.
        rx.release(rx.room(6));
        tx.send_sized(1000, 1000).await.unwrap();
    }
}
