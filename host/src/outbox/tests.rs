//! Unit tests of `outbox`.

use super::*;
use std::sync::atomic::AtomicBool;
use std::task::Wake;

struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn text(s: &str) -> WsMessage {
    WsMessage::text(s)
}

fn one(s: &str) -> Outbound {
    Outbound::One(text(s))
}

/// A queue of `messages` and `bytes`, with its gauge.
fn queue(messages: usize, bytes: usize) -> (ConnHandle, Outbox, Gauge) {
    let held = Gauge::default();
    let bounds = Bounds {
        messages,
        bytes,
        held: held.clone(),
    };
    let (handle, outbox) = super::outbox(bounds, &CancellationToken::new());
    (handle, outbox, held)
}

fn bounded(messages: usize, _: &CancellationToken) -> (ConnHandle, Outbox) {
    let (handle, outbox, _) = queue(messages, 1 << 20);
    (handle, outbox)
}

#[test]
fn wakes_are_held_until_the_batch_ends_and_then_sent_once() {
    let (handle, outbox) = bounded(8, &CancellationToken::new());
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut into = VecDeque::new();
    let mut cx = Context::from_waker(&waker);
    assert!(outbox.poll_take(&mut cx, &mut into).is_pending());
    let mut wakes = Wakes::deferred();
    handle.push(text("a"), &mut wakes).unwrap();
    handle.push(text("b"), &mut wakes).unwrap();
    assert!(!flag.0.load(Ordering::SeqCst), "woken inside the batch");
    wakes.wake_all();
    assert!(flag.0.load(Ordering::SeqCst), "not woken after the batch");
    assert_eq!(outbox.poll_take(&mut cx, &mut into), Poll::Ready(true));
    assert_eq!(into, [one("a"), one("b")]);
}

#[test]
fn a_full_queue_stops_the_connection_and_a_closed_one_refuses() {
    let (handle, outbox) = bounded(2, &CancellationToken::new());
    handle.push(text("a"), &mut Wakes::immediate()).unwrap();
    handle.push(text("b"), &mut Wakes::immediate()).unwrap();
    assert_eq!(
        handle.push(text("c"), &mut Wakes::immediate()).err(),
        Some(PushError::Full)
    );
    assert!(outbox.stop().is_cancelled());
    drop(outbox);
    assert_eq!(
        handle.push(text("d"), &mut Wakes::immediate()).err(),
        Some(PushError::Gone)
    );
}

#[test]
fn the_last_handle_gone_ends_the_queue_after_what_it_holds() {
    let (handle, outbox) = bounded(4, &CancellationToken::new());
    let second = handle.clone();
    handle.push(text("a"), &mut Wakes::immediate()).unwrap();
    drop(handle);
    drop(second);
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut into = VecDeque::new();
    assert_eq!(outbox.poll_take(&mut cx, &mut into), Poll::Ready(true));
    assert_eq!(outbox.poll_take(&mut cx, &mut into), Poll::Ready(false));
    assert_eq!(into, [one("a")]);
}

#[test]
fn a_run_is_one_entry_that_counts_its_messages_against_the_capacity() {
    let (handle, outbox) = bounded(4, &CancellationToken::new());
    let run: Published = [text("p1"), text("p2")]
        .into_iter()
        .map(Publish::from)
        .collect();
    handle.push_run(&run, 4, &mut Wakes::immediate()).unwrap();
    handle.push(text("a"), &mut Wakes::immediate()).unwrap();
    handle.push(text("b"), &mut Wakes::immediate()).unwrap();
    assert_eq!(
        handle.push_run(&run, 4, &mut Wakes::immediate()).err(),
        Some(PushError::Full)
    );
    assert!(outbox.stop().is_cancelled());

    let (handle, taken) = bounded(2, &CancellationToken::new());
    handle.push_run(&run, 4, &mut Wakes::immediate()).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut into = VecDeque::new();
    assert_eq!(taken.poll_take(&mut cx, &mut into), Poll::Ready(true));
    assert_eq!(
        into,
        [Outbound::Run {
            messages: run.clone(),
            next: 0
        }]
    );
    // What the session took no longer counts against the message count.
    handle.push_run(&run, 4, &mut Wakes::immediate()).unwrap();
}

#[test]
fn bytes_count_until_the_session_comes_back_for_more() {
    let (handle, outbox, held) = queue(100, 10);
    let mut cx = Context::from_waker(Waker::noop());
    let mut into = VecDeque::new();
    // Larger than the whole bound: refused, and the connection stays.
    assert_eq!(
        handle
            .push(text("elevenbytes"), &mut Wakes::immediate())
            .err(),
        Some(PushError::TooLarge)
    );
    assert!(!outbox.stop().is_cancelled());
    handle
        .push(text("123456"), &mut Wakes::immediate())
        .unwrap();
    assert_eq!(held.get(), 6);
    assert_eq!(outbox.poll_take(&mut cx, &mut into), Poll::Ready(true));
    // Taken but not yet written: still held, still counted.
    assert_eq!(held.get(), 6);
    handle.push(text("1234"), &mut Wakes::immediate()).unwrap();
    assert_eq!(held.get(), 10);
    // The session wrote what it took and comes back: that is released.
    into.clear();
    assert_eq!(outbox.poll_take(&mut cx, &mut into), Poll::Ready(true));
    assert_eq!(held.get(), 4);
    handle
        .push(text("123456"), &mut Wakes::immediate())
        .unwrap();
    assert_eq!(
        handle.push(text("1"), &mut Wakes::immediate()).err(),
        Some(PushError::Full)
    );
    assert!(outbox.stop().is_cancelled());
    drop(outbox);
    assert_eq!(held.get(), 0);
}
