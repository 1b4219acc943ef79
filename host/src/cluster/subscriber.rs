//! The task that holds this node's Redis subscriptions and hands what
//! arrives on them to the local subscribers. It alone knows which channels
//! this node needs (the topics's opens and closes, in order), so after a lost
//! connection it can subscribe to all of them again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use redis::{Client, Msg, RedisError};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::envelope;
use super::{Outgoing, PING_EVERY, backoff, subscribe_connection, timed_out};
use crate::metrics::BrokerMetrics;
use crate::outbox::Wakes;
use crate::pubsub::Topics;

/// A change in the topics that have subscribers on this node.
pub(super) enum Change {
    /// A topic got its first local subscriber.
    Open {
        channel: String,
        namespace: Arc<str>,
        topic: Box<str>,
    },
    /// A topic lost its last local subscriber.
    Close { channel: String },
}

/// The most messages taken from Redis before they are delivered: consecutive
/// ones to one topic then go to each subscriber in one push.
const MAX_BATCH: usize = 256;
/// The most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const MAX_CHANNELS_PER_COMMAND: usize = 1024;
/// The least time between two warnings about payloads that are not envelopes.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The subscriber task's state.
pub(super) struct Subscriber {
    client: Client,
    topics: Arc<Topics>,
    node: u64,
    url: String,
    changes: mpsc::UnboundedReceiver<Change>,
    /// The channels this node needs, with the topic each one carries.
    wanted: HashMap<String, (Arc<str>, Box<str>)>,
    /// The channels the current connection is subscribed to.
    subscribed: HashSet<String>,
    /// Channels changed since they were last brought in line with Redis.
    dirty: HashSet<String>,
    /// Wake-ups of sessions, held while a batch is delivered.
    wakes: Wakes,
    /// Payloads that were not envelopes, since they were last reported.
    foreign: u64,
    reported: Option<Instant>,
    /// The publishing side, told when this connection drops.
    outgoing: Arc<Outgoing>,
    metrics: BrokerMetrics,
}

/// Why the connection loop ended.
enum Ended {
    Stopped,
    Lost(RedisError),
}

impl Subscriber {
    pub(super) fn new(
        client: Client,
        topics: Arc<Topics>,
        node: u64,
        changes: mpsc::UnboundedReceiver<Change>,
        url: String,
        outgoing: Arc<Outgoing>,
        metrics: BrokerMetrics,
    ) -> Subscriber {
        Subscriber {
            client,
            topics,
            node,
            url,
            changes,
            wanted: HashMap::new(),
            subscribed: HashSet::new(),
            dirty: HashSet::new(),
            wakes: Wakes::deferred(),
            foreign: 0,
            reported: None,
            outgoing,
            metrics,
        }
    }

    /// Subscribes and delivers until `stop`, over `connection` (or, without
    /// one, over the first that can be made), reconnecting whenever it is lost.
    pub(super) async fn run(mut self, mut connection: Option<PubSub>, stop: CancellationToken) {
        // As for the publishing connection: only a connection that was
        // missing at startup, or lost since, is news.
        let mut had_one = connection.is_some();
        let mut lost = connection.is_none();
        loop {
            let (pubsub, attempts) = match connection.take() {
                Some(pubsub) => (pubsub, 0),
                None => match self.reconnect(&stop).await {
                    Some(reconnected) => reconnected,
                    None => return,
                },
            };
            let (mut sink, stream) = pubsub.split();
            self.subscribed.clear();
            let channels = self.wanted.len();
            // Everything wanted now, whatever changed while disconnected.
            self.dirty = self.wanted.keys().cloned().collect();
            let ended = match self.sync(&mut sink).await {
                Ok(()) => {
                    self.metrics.subscribe_connected.set(1);
                    if lost {
                        self.metrics.subscribe_reconnects.inc();
                        tracing::info!(
                            url = self.url,
                            connection = "subscribe",
                            attempts,
                            channels,
                            "redis {}; resubscribed to {channels} channels",
                            if had_one { "reconnected" } else { "connected" }
                        );
                    }
                    had_one = true;
                    self.serve(sink, stream, &stop).await
                }
                Err(error) => Ended::Lost(error),
            };
            match ended {
                Ended::Stopped => return,
                Ended::Lost(error) => {
                    self.metrics.subscribe_connected.set(0);
                    self.outgoing.probe.notify_one();
                    tracing::warn!(
                        url = self.url,
                        connection = "subscribe",
                        %error,
                        "redis disconnected; reconnecting (until then, only this node's publishes reach its subscribers)"
                    );
                }
            }
            lost = true;
        }
    }

    /// Makes a new connection, waiting longer after each failure and keeping
    /// up with subscription changes meanwhile; `None` at `stop`.
    async fn reconnect(&mut self, stop: &CancellationToken) -> Option<(PubSub, u32)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let waited = tokio::select! {
                waited = backoff(attempt, stop) => waited,
                // Changes are taken as they come, so that the queue of them
                // stays short however long the outage.
                () = async {
                    while let Some(change) = self.changes.recv().await {
                        self.note(change);
                    }
                    std::future::pending::<()>().await
                } => unreachable!("pending never completes"),
            };
            if !waited {
                return None;
            }
            tracing::debug!(
                url = self.url,
                connection = "subscribe",
                attempt,
                "redis reconnecting"
            );
            match subscribe_connection(&self.client).await {
                Ok(pubsub) => return Some((pubsub, attempt)),
                Err(error) => super::log_failed_attempt(&self.url, "subscribe", attempt, &error),
            }
        }
    }

    /// Delivers and follows subscription changes until the connection fails.
    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        stop: &CancellationToken,
    ) -> Ended {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ended::Stopped,
                change = self.changes.recv() => {
                    let Some(change) = change else { return Ended::Stopped };
                    self.note(change);
                    while let Ok(change) = self.changes.try_recv() {
                        self.note(change);
                    }
                    if let Err(error) = self.sync(&mut sink).await {
                        return Ended::Lost(error);
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { return Ended::Lost(super::closed()) };
                    batch.push(msg);
                    // What has already arrived goes out together.
                    let mut open = true;
                    while batch.len() < MAX_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(msg)) => batch.push(msg),
                            Some(None) => {
                                open = false;
                                break;
                            }
                            None => break,
                        }
                    }
                    self.deliver(&mut batch);
                    if !open {
                        return Ended::Lost(super::closed());
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        super::IO_TIMEOUT,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    match answered {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Ended::Lost(error),
                        Err(_) => return Ended::Lost(timed_out()),
                    }
                }
            }
        }
    }

    /// Records a change; Redis hears of it at the next [`sync`](Self::sync).
    fn note(&mut self, change: Change) {
        match change {
            Change::Open {
                channel,
                namespace,
                topic,
            } => {
                self.dirty.insert(channel.clone());
                self.wanted.insert(channel, (namespace, topic));
            }
            Change::Close { channel } => {
                self.wanted.remove(&channel);
                self.dirty.insert(channel);
            }
        }
    }

    /// Subscribes to the changed channels now wanted and unsubscribes from
    /// the ones no longer wanted. A topic opened and closed again before this
    /// runs costs Redis nothing.
    async fn sync(&mut self, sink: &mut PubSubSink) -> Result<(), RedisError> {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for channel in self.dirty.drain() {
            match (
                self.wanted.contains_key(&channel),
                self.subscribed.contains(&channel),
            ) {
                (true, false) => subscribe.push(channel),
                (false, true) => unsubscribe.push(channel),
                _ => {}
            }
        }
        for chunk in subscribe.chunks(MAX_CHANNELS_PER_COMMAND) {
            within_timeout(sink.subscribe(chunk)).await?;
            self.subscribed.extend(chunk.iter().cloned());
        }
        for chunk in unsubscribe.chunks(MAX_CHANNELS_PER_COMMAND) {
            within_timeout(sink.unsubscribe(chunk)).await?;
            for channel in chunk {
                self.subscribed.remove(channel);
            }
        }
        Ok(())
    }

    /// Hands `batch` to the local subscribers, consecutive messages to one
    /// topic in one go, and empties it.
    fn deliver(&mut self, batch: &mut Vec<Msg>) {
        let mut run: Vec<(WsMessage, Option<u64>)> = Vec::new();
        let mut run_channel: Option<&str> = None;
        let Subscriber {
            topics,
            wanted,
            wakes,
            node,
            foreign,
            metrics,
            ..
        } = self;
        let mut flush = |channel: Option<&str>, run: &mut Vec<(WsMessage, Option<u64>)>| {
            if let Some((namespace, topic)) = channel.and_then(|c| wanted.get(c))
                && !run.is_empty()
            {
                topics.deliver(namespace, topic, run, wakes);
                metrics.received.inc_by(run.len() as u64);
            }
            run.clear();
        };
        for msg in batch.iter() {
            let channel = msg.get_channel_name();
            if run_channel != Some(channel) {
                flush(run_channel, &mut run);
                run_channel = Some(channel);
            }
            let payload = msg.get_payload_bytes();
            // This node delivered its own publishes when they were made.
            if envelope::node_of(payload) == Some(*node) {
                continue;
            }
            match envelope::decode(payload) {
                Ok((_, msg)) => run.push((msg, None)),
                Err(error) => {
                    *foreign += 1;
                    metrics.foreign.inc();
                    tracing::debug!(channel, %error, "not a berth message; dropped");
                }
            }
        }
        flush(run_channel, &mut run);
        wakes.wake_all();
        batch.clear();
        if self.foreign > 0 && self.reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            tracing::warn!(
                dropped = self.foreign,
                "messages on berth's Redis channels that berth did not write were dropped \
                 (another program, or a berth of another version, publishes there)"
            );
            self.foreign = 0;
            self.reported = Some(Instant::now());
        }
    }
}

/// `command`, failed if Redis does not answer within the I/O timeout.
async fn within_timeout(
    command: impl Future<Output = Result<(), RedisError>>,
) -> Result<(), RedisError> {
    tokio::time::timeout(super::IO_TIMEOUT, command)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}
