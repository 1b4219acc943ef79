//! One WebSocket connection after the 101 answer: a single task whose loop
//! selects over inbound frames, the bounded outbound queue, the ping tick, the
//! pong deadline and the stop signal. Pings and pongs stay here; data messages
//! go to the route's plugin, and the plugin's answers come back through the
//! outbound queue. The plugin's `on-close` is reported exactly once, whatever
//! ended the connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::task::{ArcWake, AtomicWaker, waker};
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::config::RouteConfig;
use crate::metrics::{RouteMetrics, Traffic};
use crate::outbox::Outbox;
use crate::runtime::{CloseInfo, PluginHandle};

/// Reports `on-close` exactly once: explicitly at the end of a session, or from
/// `Drop` if the session never ran or was cut short.
pub(crate) struct CloseReport {
    conn: u64,
    plugin: PluginHandle,
    armed: bool,
}

impl CloseReport {
    /// Arms the report for an accepted connection.
    pub(crate) fn new(conn: u64, plugin: PluginHandle) -> Self {
        CloseReport {
            conn,
            plugin,
            armed: true,
        }
    }

    /// Reports `info` now.
    pub(crate) async fn report(mut self, info: CloseInfo) {
        self.armed = false;
        self.plugin.close(self.conn, info).await;
    }
}

impl Drop for CloseReport {
    fn drop(&mut self) {
        if self.armed {
            self.plugin
                .close_soon(self.conn, close_info(1006, "connection ended abnormally"));
        }
    }
}

fn close_info(code: u16, reason: &str) -> CloseInfo {
    CloseInfo {
        code,
        reason: reason.to_string(),
    }
}

/// Sets up tungstenite for a route: small buffers (a server holds many
/// connections; the read buffer is the bulk of an idle connection's memory,
/// and a larger one does not read small messages faster) and the route's
/// message limit.
pub(crate) fn ws_config(
    route: &RouteConfig,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        // Writes wait for the socket before each message is added, so the
        // buffer never holds more than one message past `write_buffer_size`.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(route.max_message_size))
        .max_frame_size(Some(route.max_message_size))
}

/// Serves one accepted connection until it ends, then reports `on-close`.
/// `outbox`'s stop signal must be a child of `stops.retired`; the
/// connection's traffic and closes are counted in `metrics`.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    conn: u64,
    route: Arc<RouteConfig>,
    outbox: Outbox,
    stops: Stops,
    report: CloseReport,
    metrics: Arc<RouteMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let plugin = report.plugin.clone();
    let mut received = Traffic::default();
    let mut sent = Traffic::default();
    let info = Session {
        conn,
        route: route.clone(),
        plugin,
        outbound: outbox,
        shutdown: stops.shutdown,
        retired: stops.retired,
        metrics: metrics.clone(),
    }
    .drive(ws, &mut received, &mut sent)
    .await;
    received.flush_received(&metrics);
    sent.flush_sent(&metrics);
    tracing::debug!(conn, route = %route.path, code = info.code, reason = %info.reason, "connection closed");
    report.report(info).await;
}

struct Session {
    conn: u64,
    route: Arc<RouteConfig>,
    plugin: PluginHandle,
    outbound: Outbox,
    shutdown: CancellationToken,
    retired: CancellationToken,
    metrics: Arc<RouteMetrics>,
}

/// Why a session may be told to stop, besides its own slow-consumer signal
/// (a child of both): the server shuts down (1001), or the route's version it
/// opened on is retired under the restart policy (1012).
pub(crate) struct Stops {
    /// The server's shutdown signal.
    pub(crate) shutdown: CancellationToken,
    /// The route version's restart signal.
    pub(crate) retired: CancellationToken,
}

/// What one turn of the outbound side did.
enum Turn {
    /// Took what the outbound queue held.
    Taken,
    /// The outbound queue has ended: nobody can write to it any more.
    Ended,
    /// Wrote the taken messages, and flushed them unless more were waiting.
    Written,
}

/// The outbound side of a session: takes the outbound queue whole when the
/// last batch is written (only while `open`), then writes it and flushes,
/// unless more is already waiting: that is written first, so that a burst
/// leaves in a few large writes. Cancel-safe: a message leaves `queue` only
/// once the socket has taken it, and is counted in `sent` then.
fn poll_outbound<S>(
    sink: &mut SplitSink<WebSocketStream<S>, WsMessage>,
    queue: &mut VecDeque<WsMessage>,
    outbox: &Outbox,
    open: bool,
    unflushed: &mut bool,
    sent: &mut Traffic,
    cx: &mut Context<'_>,
) -> Poll<Result<Turn, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if open && queue.is_empty() {
        match outbox.poll_take(cx, queue) {
            Poll::Ready(true) => return Poll::Ready(Ok(Turn::Taken)),
            Poll::Ready(false) => return Poll::Ready(Ok(Turn::Ended)),
            Poll::Pending if !*unflushed => return Poll::Pending,
            Poll::Pending => {}
        }
    }
    while !queue.is_empty() {
        ready!(sink.poll_ready_unpin(cx))?;
        let msg = queue.pop_front().expect("checked non-empty");
        if let WsMessage::Text(_) | WsMessage::Binary(_) = &msg {
            sent.count(msg.len());
        }
        Pin::new(&mut *sink).start_send(msg)?;
        // Remembered across a `Pending` flush below: the next wake-up must
        // go on flushing even when the outbound queue is empty.
        *unflushed = true;
    }
    if open && !outbox.is_empty() {
        return Poll::Ready(Ok(Turn::Written));
    }
    ready!(sink.poll_flush_unpin(cx))?;
    *unflushed = false;
    Poll::Ready(Ok(Turn::Written))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for `timer` to fire, or forever if there is none.
async fn fired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A close frame the host itself sends, and what `on-close` will be told.
fn host_close(code: CloseCode, reason: &str) -> (CloseFrame, CloseInfo) {
    (
        CloseFrame {
            code,
            reason: reason.to_string().into(),
        },
        close_info(code.into(), reason),
    )
}

/// Polls a branch of the session loop only after that branch has woken the task.
///
/// The loop runs once per outbound wake-up, when the socket usually has
/// nothing to read. Polling the reader anyway is not free: tungstenite
/// zero-fills its free read buffer on every read attempt, even one that finds
/// no data (perf: the top symbol of a fan-out). The gate remembers whether
/// the reader's own waker has fired, and skips the poll when it has not.
struct Gate {
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
    fn new() -> Arc<Self> {
        Arc::new(Gate {
            // The first turn polls: the branch may be ready already.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        })
    }

    /// Runs `poll` with this gate's waker if the branch has woken since it
    /// last returned `Pending`.
    fn poll<T>(
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

impl Session {
    /// Runs the connection until it ends. Its traffic is counted in
    /// `received` and `sent`, which reach the route's counters once per batch:
    /// `sent` when a batch taken from the outbound queue is written, and
    /// `received` when the socket has no more frames ready (the task is about
    /// to sleep). What is left at the end is the caller's to add.
    async fn drive<S>(
        self,
        ws: WebSocketStream<S>,
        received: &mut Traffic,
        sent: &mut Traffic,
    ) -> CloseInfo
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        let read_gate = Gate::new();
        // Starts empty and grows with use: an idle connection holds no queue
        // memory. It swaps buffers with the outbound queue, so it is written
        // out whole before more is taken.
        let mut queue: VecDeque<WsMessage> = VecDeque::new();
        let mut unflushed = false;
        let interval = self.route.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        let close_timeout = self.route.close_timeout;
        // Set once a close frame is queued: what on-close will say, and when to give up.
        let mut closing: Option<(CloseInfo, Instant)> = None;
        // One timer for the connection's life, moved on only when it fires:
        // resetting it at every message would touch the timer wheel per
        // message. Boxed, so that a route without the limit pays one pointer
        // of session memory for it rather than a whole timer entry.
        let idle_timeout = self.route.idle_timeout;
        let mut idle_timer = idle_timeout.map(|idle| Box::pin(tokio::time::sleep(idle)));
        let mut last_data = Instant::now();
        // Made once: a fresh wait per turn would lock the token's waiter list twice a message.
        let stopped = self.outbound.stop().clone().cancelled_owned();
        tokio::pin!(stopped);

        loop {
            let open = closing.is_none();
            let close_deadline = closing.as_ref().map(|(_, at)| *at);
            tokio::select! {
                biased;
                () = &mut stopped, if open => {
                    let (frame, info) = if self.shutdown.is_cancelled() {
                        host_close(CloseCode::Away, "server shutting down")
                    } else if self.retired.is_cancelled() {
                        host_close(CloseCode::Restart, "route reloaded")
                    } else {
                        self.metrics.slow_consumer_closes.inc();
                        host_close(CloseCode::Again, "slow consumer")
                    };
                    queue.push_back(WsMessage::Close(Some(frame)));
                    closing = Some((info, Instant::now() + close_timeout));
                }
                // Deadlines come before reads, so a client that floods the
                // socket cannot starve them. Once our close frame is queued
                // only the close deadline counts: on-close reports why we
                // closed, not a ping that went unanswered meanwhile.
                () = sleep_until(pong_deadline), if open => {
                    self.metrics.heartbeat_timeouts.inc();
                    tracing::debug!(conn = self.conn, route = %self.route.path, "no pong in time; dropping the connection");
                    return close_info(1006, "heartbeat timeout");
                }
                () = sleep_until(close_deadline) => {
                    tracing::debug!(conn = self.conn, route = %self.route.path, "no close frame in answer; dropping the connection");
                    return closing.map(|(info, _)| info).expect("deadline implies closing");
                }
                () = fired(&mut idle_timer), if open => {
                    let idle = idle_timeout.expect("a timer implies a timeout");
                    let due = last_data + idle;
                    if Instant::now() < due {
                        if let Some(timer) = idle_timer.as_mut() {
                            timer.as_mut().reset(due);
                        }
                    } else {
                        tracing::debug!(conn = self.conn, route = %self.route.path, "no data message in time; closing the connection");
                        let (frame, info) = host_close(CloseCode::Normal, "idle timeout");
                        queue.push_back(WsMessage::Close(Some(frame)));
                        closing = Some((info, Instant::now() + close_timeout));
                    }
                }
                turn = poll_fn(|cx| poll_outbound(&mut sink, &mut queue, &self.outbound, open, &mut unflushed, sent, cx)), if open || !queue.is_empty() || unflushed => match turn {
                    Ok(Turn::Taken) => {
                        // A close asked for by the plugin ends what is written.
                        if let Some(at) = queue.iter().position(WsMessage::is_close) {
                            queue.truncate(at + 1);
                            let info = match queue.back() {
                                Some(WsMessage::Close(Some(frame))) => close_info(frame.code.into(), &frame.reason),
                                _ => close_info(1005, ""),
                            };
                            closing = Some((info, Instant::now() + close_timeout));
                        }
                    }
                    Ok(Turn::Ended) => {
                        // The plugin runtime dropped this connection (its
                        // instance could not be restarted).
                        let (frame, info) = host_close(CloseCode::Error, "plugin unavailable");
                        queue.push_back(WsMessage::Close(Some(frame)));
                        closing = Some((info, Instant::now() + close_timeout));
                    }
                    Ok(Turn::Written) => sent.flush_sent(&self.metrics),
                    Err(error) => {
                        return match closing {
                            Some((info, _)) => info,
                            None => close_info(1006, &format!("write failed: {error}")),
                        };
                    }
                },
                frame = poll_fn(|cx| {
                    let frame = read_gate.poll(cx, |cx| stream.poll_next_unpin(cx));
                    if frame.is_pending() {
                        // Every branch is polled before the task sleeps, so
                        // this is where a burst of frames read is counted.
                        received.flush_received(&self.metrics);
                    }
                    frame
                }) => match frame {
                    Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                        received.count(msg.len());
                        // Data that arrives after our close frame is dropped (RFC 6455 5.5.1).
                        if open {
                            if idle_timer.is_some() {
                                last_data = Instant::now();
                            }
                            self.plugin.message(self.conn, msg).await;
                        }
                    }
                    // tungstenite queued the pong; it goes out with the next flush.
                    Some(Ok(WsMessage::Ping(_))) => unflushed = true,
                    Some(Ok(WsMessage::Pong(_))) => pong_deadline = None,
                    Some(Ok(WsMessage::Close(frame))) => {
                        if let Some((info, _)) = closing {
                            // The peer answered our close frame.
                            return info;
                        }
                        // tungstenite queued the echo of the client's close frame.
                        let _ = tokio::time::timeout(close_timeout, sink.flush()).await;
                        return match frame {
                            Some(frame) => close_info(frame.code.into(), &frame.reason),
                            None => close_info(1005, ""),
                        };
                    }
                    Some(Ok(WsMessage::Frame(_))) => {}
                    Some(Err(error)) => return self.fail(&mut sink, &mut queue, closing, error, sent).await,
                    None => {
                        return match closing {
                            Some((info, _)) => info,
                            None => close_info(1006, "connection lost"),
                        };
                    }
                },
                _ = ping.tick(), if open => {
                    if queue.is_empty() {
                        // A quiet moment: give back what the last burst grew.
                        queue = VecDeque::new();
                        self.outbound.shrink();
                    }
                    queue.push_back(WsMessage::Ping(Bytes::new()));
                    pong_deadline.get_or_insert(Instant::now() + self.route.pong_timeout);
                }
            }
        }
    }

    /// Ends the connection after a read error, telling the client why when the
    /// error is its own doing.
    async fn fail<S>(
        &self,
        sink: &mut SplitSink<WebSocketStream<S>, WsMessage>,
        queue: &mut VecDeque<WsMessage>,
        closing: Option<(CloseInfo, Instant)>,
        error: WsError,
        sent: &mut Traffic,
    ) -> CloseInfo
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some((info, _)) = closing {
            return info;
        }
        let (code, reason) = match &error {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                (CloseCode::Size, "message too big")
            }
            WsError::Capacity(_) => (CloseCode::Size, "frame too big"),
            WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Io(_) => {
                return close_info(1006, &format!("connection lost: {error}"));
            }
            WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
            _ => (CloseCode::Error, "internal error"),
        };
        tracing::debug!(conn = self.conn, route = %self.route.path, %error, "closing the connection");
        let (frame, info) = host_close(code, reason);
        let _ = tokio::time::timeout(self.route.close_timeout, async {
            // What the client sent before the bad frame is the plugin's still:
            // let it answer, and send those answers before the close frame.
            self.plugin.settled(self.conn).await;
            poll_fn(|cx| {
                let _ = self.outbound.poll_take(cx, queue);
                Poll::Ready(())
            })
            .await;
            if let Some(at) = queue.iter().position(WsMessage::is_close) {
                queue.truncate(at);
            }
            for msg in queue.drain(..) {
                if let WsMessage::Text(_) | WsMessage::Binary(_) = &msg {
                    sent.count(msg.len());
                }
                sink.feed(msg).await?;
            }
            sink.send(WsMessage::Close(Some(frame))).await
        })
        .await;
        info
    }
}
