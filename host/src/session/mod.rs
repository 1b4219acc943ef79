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
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::config::RouteConfig;
use crate::extensions::Deflate;
use crate::metrics::{RouteMetrics, Traffic};
use crate::outbox::{Outbound, Outbox};
use crate::runtime::{CloseInfo, PluginHandle};
use gate::Gate;

mod deflate;
mod gate;
mod reader;
mod spares;
mod wire;

use wire::Wire;

/// At most this many inbound messages are handed on per turn of a
/// session's loop.
const BURST: usize = 64;

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

/// What the handshake settled for one connection.
pub(crate) struct Opened {
    /// The connection's id.
    pub(crate) conn: u64,
    /// The permessage-deflate parameters, if the client and route agreed on them.
    pub(crate) deflate: Option<Deflate>,
}

/// Serves one upgraded connection until it ends, then reports `on-close`.
/// `outbox`'s stop signal must be a child of `stops.retired`; the
/// connection's traffic and closes are counted in `metrics`.
pub(crate) async fn run<S>(
    io: S,
    opened: Opened,
    route: Arc<RouteConfig>,
    outbox: Outbox,
    stops: StopSignals,
    report: CloseReport,
    metrics: Arc<RouteMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Made here rather than by the caller: an argument of an async fn is
    // stored in its future beside the callee's copy, and the wire is the
    // largest part of an idle connection's task.
    let Opened { conn, deflate } = opened;
    let compression = deflate.map(|deflate| wire::Compression {
        window_bits: deflate.window_bits,
        threshold: route.compression_threshold,
    });
    let wire = Wire::new(io, route.max_message_size, compression);
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
    .drive(wire, &mut received, &mut sent)
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
pub(crate) struct StopSignals {
    /// The server's shutdown signal.
    pub(crate) shutdown: CancellationToken,
    /// The route version's restart signal.
    pub(crate) retired: CancellationToken,
}

/// Why the outbound side needs the session loop.
enum OutboundEnd {
    /// Took a batch with a close frame, now its last message: what
    /// followed it is dropped.
    Closing,
    /// The outbound queue has ended: nobody can write to it any more.
    Ended,
}

/// What woke the socket's branch of the session loop.
enum SocketEvent {
    /// The outbound side needs the loop, or failed.
    Out(Result<OutboundEnd, WsError>),
    /// A message came in, or the read side ended.
    In(Option<Result<WsMessage, WsError>>),
}

/// The outbound side of a session. Takes the outbound queue whole once the
/// last batch is written (only while `open`), frames and writes it, and
/// takes again; it flushes only when nothing more is waiting, so that a
/// burst leaves in a few large writes. It returns only for what the loop
/// must handle, not per batch: a wake-up costs one pass over the loop's
/// branches. Sent messages reach `metrics` when the queue runs dry.
/// Cancel-safe: every message is in `queue` or in the wire's output until
/// the socket has taken it.
fn poll_outbound<S>(
    wire: &mut Wire<S>,
    queue: &mut VecDeque<Outbound>,
    outbox: &Outbox,
    open: bool,
    sent: &mut Traffic,
    metrics: &RouteMetrics,
    cx: &mut Context<'_>,
) -> Poll<Result<OutboundEnd, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if queue.is_empty() && !wire.has_output() {
            if open {
                match outbox.poll_take(cx, queue) {
                    Poll::Ready(true) => {
                        if let Some(at) = queue.iter().position(Outbound::is_close) {
                            queue.truncate(at + 1);
                            return Poll::Ready(Ok(OutboundEnd::Closing));
                        }
                    }
                    Poll::Ready(false) => return Poll::Ready(Ok(OutboundEnd::Ended)),
                    Poll::Pending => {}
                }
            }
            if queue.is_empty() {
                sent.flush_sent(metrics);
                ready!(wire.poll_flush(cx))?;
                wire.settle();
                return Poll::Pending;
            }
        }
        ready!(wire.poll_write(cx))?;
        wire.frame(queue, sent);
    }
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

impl Session {
    /// Runs the connection until it ends. Its traffic is counted in
    /// `received` and `sent`, which reach the route's counters once per batch:
    /// `sent` when the outbound queue runs dry, and `received` when the
    /// socket has no more frames ready (the task is about to sleep). What is
    /// left at the end is the caller's to add.
    async fn drive<S>(
        self,
        mut wire: Wire<S>,
        received: &mut Traffic,
        sent: &mut Traffic,
    ) -> CloseInfo
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Starts empty and grows with use: an idle connection holds no queue
        // memory. It swaps buffers with the outbound queue, so it is written
        // out whole before more is taken.
        let mut queue: VecDeque<Outbound> = VecDeque::new();
        let interval = self.route.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        let close_timeout = self.route.close_timeout;
        // Set once a close frame is queued: what on-close will say, and when to give up.
        let mut closing: Option<(CloseInfo, Instant)> = None;
        // Data bytes the client may still make us read and drop once our
        // close frame is queued, while we wait for its answer.
        let mut droppable = self.route.write_queue_bytes;
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
        let (stop_gate, ping_gate) = (Gate::new(), Gate::new());

        loop {
            let open = closing.is_none();
            let close_deadline = closing.as_ref().map(|(_, at)| *at);
            tokio::select! {
                biased;
                () = poll_fn(|cx| stop_gate.poll(cx, |cx| stopped.as_mut().poll(cx))), if open => {
                    let (frame, info) = if self.shutdown.is_cancelled() {
                        host_close(CloseCode::Away, "server shutting down")
                    } else if self.retired.is_cancelled() {
                        host_close(CloseCode::Restart, "route reloaded")
                    } else {
                        self.metrics.slow_consumer_closes.inc();
                        host_close(CloseCode::Again, "slow consumer")
                    };
                    queue.push_back(WsMessage::Close(Some(frame)).into());
                    closing = Some((info, Instant::now() + close_timeout));
                }
                // Deadlines come before reads, so a client that floods the
                // socket cannot starve them. Once our close frame is queued
                // only the close deadline counts: on-close reports why we
                // closed, not a ping that went unanswered meanwhile.
                () = sleep_until(pong_deadline), if open && pong_deadline.is_some() => {
                    self.metrics.heartbeat_timeouts.inc();
                    tracing::debug!(conn = self.conn, route = %self.route.path, "no pong in time; dropping the connection");
                    return close_info(1006, "heartbeat timeout");
                }
                () = sleep_until(close_deadline), if close_deadline.is_some() => {
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
                        queue.push_back(WsMessage::Close(Some(frame)).into());
                        closing = Some((info, Instant::now() + close_timeout));
                    }
                }
                // One branch for both directions: each needs the socket.
                // Writing comes first, as a separate branch would.
                io = poll_fn(|cx| {
                    if let Poll::Ready(turn) = poll_outbound(&mut wire, &mut queue, &self.outbound, open, sent, &self.metrics, cx) {
                        return Poll::Ready(SocketEvent::Out(turn));
                    }
                    // Once our close frame is queued, the socket is read only
                    // when everything before it is written, and only so much:
                    // a client that sends without reading what it is sent
                    // would otherwise have us read and drop its data at full
                    // speed until the close deadline. TCP holds it back instead.
                    // A client that keeps sending past `droppable` is left
                    // to the close deadline.
                    if !open && (!queue.is_empty() || wire.has_output() || droppable == 0) {
                        return Poll::Pending;
                    }
                    let frame = wire.poll_read(cx);
                    if frame.is_pending() {
                        // Every branch is polled before the task sleeps, so
                        // this is where a burst of frames read is counted.
                        received.flush_received(&self.metrics);
                    }
                    frame.map(SocketEvent::In)
                }) => match io {
                    SocketEvent::Out(Ok(OutboundEnd::Closing)) => {
                        // A close asked for by the plugin ends what is written.
                        let info = match queue.back() {
                            Some(Outbound::One(WsMessage::Close(Some(frame)))) => close_info(frame.code.into(), &frame.reason),
                            _ => close_info(1005, ""),
                        };
                        closing = Some((info, Instant::now() + close_timeout));
                    }
                    SocketEvent::Out(Ok(OutboundEnd::Ended)) => {
                        // The plugin runtime dropped this connection (its
                        // instance could not be restarted).
                        let (frame, info) = host_close(CloseCode::Error, "plugin unavailable");
                        queue.push_back(WsMessage::Close(Some(frame)).into());
                        closing = Some((info, Instant::now() + close_timeout));
                    }
                    SocketEvent::Out(Err(error)) => {
                        return match closing {
                            Some((info, _)) => info,
                            None => close_info(1006, &format!("write failed: {error}")),
                        };
                    }
                    SocketEvent::In(Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_))))) => {
                        // The messages already read come along in this turn:
                        // a pass over every branch per message cost more than
                        // handing the message on. Bounded, so that deadlines
                        // and the outbound side keep their turns.
                        let mut next = Some(msg);
                        let mut taken = 0;
                        while let Some(msg) = next {
                            received.count(msg.len());
                            // Data that arrives after our close frame is dropped (RFC 6455 5.5.1).
                            if open {
                                if idle_timer.is_some() {
                                    last_data = Instant::now();
                                }
                                self.plugin.message(self.conn, msg).await;
                            } else {
                                droppable = droppable.saturating_sub(msg.len().max(1));
                            }
                            taken += 1;
                            next = if taken < BURST { wire.buffered_data() } else { None };
                        }
                    }
                    // The pong waits in the wire's output.
                    SocketEvent::In(Some(Ok(WsMessage::Ping(_)))) => {}
                    SocketEvent::In(Some(Ok(WsMessage::Pong(_)))) => pong_deadline = None,
                    SocketEvent::In(Some(Ok(WsMessage::Close(frame)))) => {
                        if let Some((info, _)) = closing {
                            // The peer answered our close frame.
                            return info;
                        }
                        // The echo of the client's close frame waits in the
                        // wire's output, after the frames already begun.
                        let _ = tokio::time::timeout(close_timeout, wire.drain(&mut VecDeque::new(), sent)).await;
                        return match frame {
                            Some(frame) => close_info(frame.code.into(), &frame.reason),
                            None => close_info(1005, ""),
                        };
                    }
                    SocketEvent::In(Some(Ok(WsMessage::Frame(_)))) => {}
                    SocketEvent::In(Some(Err(error))) => return self.fail(&mut wire, &mut queue, closing, error, sent).await,
                    SocketEvent::In(None) => {
                        return match closing {
                            Some((info, _)) => info,
                            None => close_info(1006, "connection lost"),
                        };
                    }
                },
                _ = poll_fn(|cx| ping_gate.poll(cx, |cx| ping.poll_tick(cx))), if open => {
                    if queue.is_empty() {
                        // A quiet moment: give back what the last burst grew.
                        queue = VecDeque::new();
                        self.outbound.shrink();
                        wire.shrink();
                    }
                    queue.push_back(WsMessage::Ping(Bytes::new()).into());
                    pong_deadline.get_or_insert(Instant::now() + self.route.pong_timeout);
                }
            }
        }
    }

    /// Ends the connection after a read error, telling the client why when the
    /// error is its own doing.
    async fn fail<S>(
        &self,
        wire: &mut Wire<S>,
        queue: &mut VecDeque<Outbound>,
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
            WsError::Utf8(what) if what == deflate::CORRUPT => {
                (CloseCode::Invalid, "invalid compressed data")
            }
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
            if let Some(at) = queue.iter().position(Outbound::is_close) {
                queue.truncate(at);
            }
            queue.push_back(WsMessage::Close(Some(frame)).into());
            wire.drain(queue, sent).await
        })
        .await;
        info
    }
}
