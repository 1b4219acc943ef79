//! Topics across berth nodes through Redis pub/sub (`[broker]` in the config).
//!
//! The topics of `pubsub` stay the only place subscribers live. This module
//! is its `Remote`: every publish made on this node is also put in a
//! bounded queue that one task sends to Redis over one connection, in order
//! (so each publisher's order holds everywhere); and this node SUBSCRIBEs, on
//! a second connection, only to the channels of topics that have subscribers
//! here. What arrives there goes to the local subscribers, except this node's
//! own publishes, which it delivered at once when they were made (each
//! message carries its node's id, see `envelope`).
//!
//! Redis pub/sub keeps nothing: a message published while a node cannot
//! reach Redis reaches that node's subscribers only. Both connections come
//! back by themselves with capped exponential backoff, and the subscriber
//! connection subscribes again to every channel this node needs.
//!
//! Nothing here waits on Redis in a route worker or a session: the hooks only
//! queue, and the tasks do the waiting.

mod envelope;
mod publisher;
mod subscriber;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::BrokerConfig;
use crate::metrics::BrokerMetrics;
use crate::pubsub::{Remote, Topics};

/// Why the Redis broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis did not answer at startup, and `[broker] required` is on.
    #[error(
        "cannot reach Redis at {url} ([broker] url): {reason}; start it, or set [broker] required = false to start without it"
    )]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// What the client said.
        reason: String,
    },
}

/// The most messages waiting to be sent to Redis. A burst beyond what one
/// round trip clears, or a Redis that has stopped answering, drops the
/// oldest ones (counted and logged); local delivery never waits for them.
const QUEUE_MESSAGES: usize = 8192;
/// The most bytes waiting to be sent to Redis, whatever the count.
const QUEUE_BYTES: usize = 32 << 20;
/// The longest a connection attempt, or an answer to a command, may take
/// before the connection counts as lost.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection is checked with a PING: a connection can
/// die without a word (a host gone, a cable pulled).
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first wait before reconnecting; doubled after each failed attempt...
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The least time between two warnings about a full publish queue.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A running Redis link; stops its tasks when dropped.
pub(crate) struct Cluster {
    _stop: DropGuard,
}

/// This node's side of the topics' hooks: what they need to queue work.
struct RedisRemote {
    /// This process's random id, carried in every envelope it sends.
    node: u64,
    prefix: Box<str>,
    outgoing: Arc<Outgoing>,
    changes: mpsc::UnboundedSender<subscriber::Change>,
}

impl Remote for RedisRemote {
    fn opened(&self, namespace: &Arc<str>, topic: &str) {
        let _ = self.changes.send(subscriber::Change::Open {
            channel: channel_name(&self.prefix, namespace, topic),
            namespace: namespace.clone(),
            topic: topic.into(),
        });
    }

    fn closed(&self, namespace: &str, topic: &str) {
        let _ = self.changes.send(subscriber::Change::Close {
            channel: channel_name(&self.prefix, namespace, topic),
        });
    }

    fn publish(&self, namespace: &str, topic: &str, msg: &WsMessage) {
        if let Some(payload) = envelope::encode(self.node, msg) {
            let channel = channel_name(&self.prefix, namespace, topic);
            self.outgoing.push(channel, payload);
        }
    }
}

/// The Redis channel of `topic` in `namespace`: the prefix, the namespace
/// with `%` and `:` percent-encoded, `:`, then the topic as it is. The first
/// `:` after the prefix therefore always ends the namespace, so no two
/// (namespace, topic) pairs share a channel, and common names read plainly
/// (`berth:/chat:lobby`).
pub(crate) fn channel_name(prefix: &str, namespace: &str, topic: &str) -> String {
    let mut channel = String::with_capacity(prefix.len() + namespace.len() + topic.len() + 1);
    channel.push_str(prefix);
    for c in namespace.chars() {
        match c {
            '%' => channel.push_str("%25"),
            ':' => channel.push_str("%3A"),
            c => channel.push(c),
        }
    }
    channel.push(':');
    channel.push_str(topic);
    channel
}

/// Starts the Redis link for `config`: returns the broker whose topics it
/// extends, and the link, whose tasks run until it is dropped. With
/// `required`, fails unless Redis answers now; otherwise starts either way
/// and keeps trying in the background.
pub(crate) async fn start(
    config: &BrokerConfig,
    metrics: BrokerMetrics,
) -> Result<(Arc<Topics>, Cluster), ClusterError> {
    let url = config.shown_url();
    let unreachable = |error: RedisError| ClusterError::Unreachable {
        url: url.clone(),
        reason: error.to_string(),
    };
    let client = Client::open(config.url.as_str()).map_err(unreachable)?;
    let connected = tokio::try_join!(publish_connection(&client), subscribe_connection(&client));
    let (publish, subscribe) = match connected {
        Ok((publish, subscribe)) => (Some(publish), Some(subscribe)),
        Err(error) if config.required => return Err(unreachable(error)),
        Err(error) => {
            tracing::warn!(
                url,
                %error,
                "cannot reach Redis; serving local topics only, and reconnecting"
            );
            (None, None)
        }
    };
    // Random, not derived from the address: two nodes behind one NAT, or a
    // node restarted on the same port, must never share an id.
    let node = getrandom::u64().unwrap_or_else(|_| {
        // No system randomness at all: the time and pid still differ
        // between any two nodes started apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    if publish.is_some() {
        tracing::info!(url, node = %format!("{node:016x}"), prefix = %config.channel_prefix, "topics shared through Redis");
    }
    if publish.is_some() {
        metrics.publish_connected.set(1);
        metrics.subscribe_connected.set(1);
    }
    let outgoing = Arc::new(Outgoing::new(publish.is_some(), metrics.clone()));
    let (changes, changes_rx) = mpsc::unbounded_channel();
    let link = Arc::new(RedisRemote {
        node,
        prefix: config.channel_prefix.as_str().into(),
        outgoing: outgoing.clone(),
        changes,
    });
    let topics = Arc::new(Topics::with_remote(link));
    let stop = CancellationToken::new();
    tokio::spawn(publisher::run(
        client.clone(),
        outgoing.clone(),
        publish,
        url.clone(),
        stop.clone(),
    ));
    tokio::spawn(
        subscriber::Subscriber::new(
            client,
            topics.clone(),
            node,
            changes_rx,
            url,
            outgoing,
            metrics,
        )
        .run(subscribe, stop.clone()),
    );
    Ok((
        topics,
        Cluster {
            _stop: stop.drop_guard(),
        },
    ))
}

/// The settings both connections are made with.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT))
}

/// Opens the connection publishes are sent on.
async fn publish_connection(client: &Client) -> Result<MultiplexedConnection, RedisError> {
    client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
}

/// Opens the connection this node subscribes on.
async fn subscribe_connection(client: &Client) -> Result<PubSub, RedisError> {
    match tokio::time::timeout(IO_TIMEOUT, client.get_async_pubsub()).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

/// The error for a Redis command that got no answer in [`IO_TIMEOUT`].
fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

/// The error for a connection that Redis (or the network) closed.
fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the connection to Redis closed",
    ))
}

/// Logs a failed reconnection attempt: the first and every tenth as a
/// warning, so that a long outage is visible without a line per attempt.
fn log_failed_attempt(url: &str, connection: &str, attempt: u32, error: &RedisError) {
    if attempt == 1 || attempt.is_multiple_of(10) {
        tracing::warn!(url, connection, attempt, %error, "redis reconnecting: attempt failed");
    } else {
        tracing::debug!(url, connection, attempt, %error, "redis reconnecting: attempt failed");
    }
}

/// Waits out attempt `attempt`'s backoff (1 for the first retry): capped
/// exponential, less up to a quarter at random, so that nodes that lost
/// Redis together do not all come back in the same instant. False if
/// `stop` came first.
async fn backoff(attempt: u32, stop: &CancellationToken) -> bool {
    let full = BACKOFF_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let spread = getrandom::u32().unwrap_or(0) % 1024;
    let wait = full - full / 4 * spread / 1024;
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// One message on its way to Redis.
struct Outbound {
    channel: String,
    payload: Vec<u8>,
}

/// The queue between the publish hook and the publishing task.
struct Outgoing {
    queue: Mutex<Queue>,
    /// Wakes the task when the queue stops being empty.
    ready: Notify,
    /// Rung by the subscriber task when its connection drops: the publishing
    /// connection, to the same Redis, has most likely dropped too, and an
    /// idle one would otherwise only find out at its next PING.
    probe: Notify,
    /// Counts what is sent and what is not.
    metrics: BrokerMetrics,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    bytes: usize,
    /// Whether the publishing connection is up: while it is not, there is
    /// nobody to send to, and queueing would only send stale messages later.
    up: bool,
    /// Dropped because the queue was full, since the task last reported.
    overflowed: u64,
    /// Not sent because Redis was unreachable, since the task last reported.
    unsent: u64,
    /// When a full queue was last reported.
    reported: Option<Instant>,
}

impl Outgoing {
    fn new(up: bool, metrics: BrokerMetrics) -> Outgoing {
        Outgoing {
            queue: Mutex::new(Queue {
                up,
                ..Queue::default()
            }),
            ready: Notify::new(),
            probe: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock; recover the queue regardless.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one message for Redis, dropping the oldest beyond the bounds.
    fn push(&self, channel: String, payload: Vec<u8>) {
        let mut queue = self.lock();
        if !queue.up {
            queue.unsent += 1;
            self.metrics.unreachable.inc();
            return;
        }
        let was_empty = queue.items.is_empty();
        queue.bytes += channel.len() + payload.len();
        queue.items.push_back(Outbound { channel, payload });
        while queue.items.len() > QUEUE_MESSAGES || queue.bytes > QUEUE_BYTES {
            let Some(old) = queue.items.pop_front() else {
                break;
            };
            queue.bytes -= old.channel.len() + old.payload.len();
            queue.overflowed += 1;
            self.metrics.queue_full.inc();
        }
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Takes up to `max` messages, oldest first.
    fn take(&self, max: usize, into: &mut Vec<Outbound>) {
        let mut queue = self.lock();
        let queue = &mut *queue;
        let n = queue.items.len().min(max);
        for item in queue.items.drain(..n) {
            queue.bytes -= item.channel.len() + item.payload.len();
            into.push(item);
        }
    }

    /// Marks the connection up or down; going down drops what is queued
    /// (counted as unsent). Returns and resets the counts of dropped messages.
    fn set_up(&self, up: bool) -> (u64, u64) {
        let mut queue = self.lock();
        queue.up = up;
        if !up {
            queue.unsent += queue.items.len() as u64;
            self.metrics.unreachable.inc_by(queue.items.len() as u64);
            queue.items.clear();
            queue.bytes = 0;
        }
        (
            std::mem::take(&mut queue.overflowed),
            std::mem::take(&mut queue.unsent),
        )
    }

    /// The messages dropped for a full queue since the last report, if there
    /// are any and the last report is [`REPORT_EVERY`] old: a queue that
    /// keeps overflowing is told about, not logged per message.
    fn overflow_report(&self) -> Option<u64> {
        let mut queue = self.lock();
        if queue.overflowed == 0 || queue.reported.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return None;
        }
        queue.reported = Some(Instant::now());
        Some(std::mem::take(&mut queue.overflowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_unambiguous_and_plain_for_plain_names() {
        assert_eq!(
            channel_name("berth:", "/chat", "lobby"),
            "berth:/chat:lobby"
        );
        assert_eq!(channel_name("", "ns", ""), "ns:");
        // Without the encoding, both would be "p:a:b:c".
        assert_eq!(channel_name("p:", "a:b", "c"), "p:a%3Ab:c");
        assert_eq!(channel_name("p:", "a", "b:c"), "p:a:b:c");
        assert_eq!(channel_name("p:", "100%", "x"), "p:100%25:x");
        assert_ne!(
            channel_name("p:", "a%3Ab", "c"),
            channel_name("p:", "a:b", "c")
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_a_down_one_queues_nothing() {
        let outgoing = Outgoing::new(true, crate::metrics::Metrics::new().register_broker());
        for n in 0..QUEUE_MESSAGES + 3 {
            outgoing.push("c".into(), n.to_string().into_bytes());
        }
        let mut taken = Vec::new();
        outgoing.take(usize::MAX, &mut taken);
        assert_eq!(taken.len(), QUEUE_MESSAGES);
        assert_eq!(taken[0].payload, b"3");
        assert_eq!(outgoing.overflow_report(), Some(3));
        outgoing.push("c".into(), b"x".to_vec());
        outgoing.lock().overflowed = 1;
        assert_eq!(outgoing.overflow_report(), None, "reported just now");
        taken.clear();
        outgoing.take(usize::MAX, &mut taken);

        outgoing.push("c".into(), b"queued".to_vec());
        assert_eq!(outgoing.set_up(false), (1, 1), "queued copies are unsent");
        outgoing.push("c".into(), b"while down".to_vec());
        assert_eq!(outgoing.set_up(true), (0, 1));
        taken.clear();
        outgoing.take(usize::MAX, &mut taken);
        assert!(taken.is_empty());
        assert_eq!(outgoing.lock().bytes, 0);
    }
}
