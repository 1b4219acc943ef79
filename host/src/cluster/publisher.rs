//! The task that sends this node's publishes to Redis: one connection, one
//! pipeline at a time, oldest message first, so that Redis sees every
//! publisher's messages in the order they were made.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError};
use tokio_util::sync::CancellationToken;

use super::{Outbound, Outgoing, PING_EVERY, backoff, publish_connection};

/// The most PUBLISH commands sent in one pipeline (one write, one round trip).
const MAX_PIPELINE: usize = 512;

/// Sends what `outgoing` holds until `stop`, over `connection` (or, without
/// one, over the first that can be made), reconnecting whenever it is lost.
pub(super) async fn run(
    client: Client,
    outgoing: Arc<Outgoing>,
    mut connection: Option<MultiplexedConnection>,
    url: String,
    stop: CancellationToken,
) {
    // The connection made at startup is not news; one made after a failed
    // start ("connected") or after a loss ("reconnected") is.
    let mut had_one = connection.is_some();
    let mut lost = connection.is_none();
    loop {
        let (conn, attempts) = match connection.take() {
            Some(conn) => (conn, 0),
            None => match reconnect(&client, &url, &stop).await {
                Some(reconnected) => reconnected,
                None => return,
            },
        };
        let (overflowed, unsent) = outgoing.set_up(true);
        outgoing.metrics.publish_connected.set(1);
        if lost {
            outgoing.metrics.publish_reconnects.inc();
            tracing::info!(
                url,
                connection = "publish",
                attempts,
                unsent,
                overflowed,
                "redis {}; messages published while it was unreachable reached local subscribers only",
                if had_one { "reconnected" } else { "connected" }
            );
        }
        had_one = true;
        let error = match send(conn, &outgoing, &stop).await {
            Some(error) => error,
            None => return,
        };
        let (overflowed, unsent) = outgoing.set_up(false);
        outgoing.metrics.publish_connected.set(0);
        tracing::warn!(
            url,
            connection = "publish",
            %error,
            unsent,
            overflowed,
            "redis disconnected; reconnecting (until then, publishes reach local subscribers only)"
        );
        lost = true;
    }
}

/// Sends until the connection fails (returns why) or `stop` (returns `None`).
async fn send(
    mut conn: MultiplexedConnection,
    outgoing: &Outgoing,
    stop: &CancellationToken,
) -> Option<RedisError> {
    let mut batch: Vec<Outbound> = Vec::with_capacity(MAX_PIPELINE);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        batch.clear();
        outgoing.take(MAX_PIPELINE, &mut batch);
        if batch.is_empty() {
            // Idle: a lost connection must still be noticed, so that the
            // node reconnects before the next publish rather than lose it.
            tokio::select! {
                () = stop.cancelled() => return None,
                () = outgoing.ready.notified() => continue,
                () = outgoing.probe.notified() => {}
                _ = ping.tick() => {}
            }
            let ping_cmd = redis::cmd("PING");
            let answer = tokio::select! {
                () = stop.cancelled() => return None,
                answer = ping_cmd.query_async::<redis::Value>(&mut conn) => answer,
            };
            if let Err(error) = answer {
                return Some(error);
            }
            continue;
        }
        let mut pipe = redis::pipe();
        for item in &batch {
            pipe.cmd("PUBLISH")
                .arg(&item.channel)
                .arg(&item.payload)
                .ignore();
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            sent = pipe.query_async::<()>(&mut conn) => {
                if let Err(error) = sent {
                    return Some(error);
                }
                outgoing.metrics.sent.inc_by(batch.len() as u64);
            }
        }
        if let Some(dropped) = outgoing.overflow_report() {
            tracing::warn!(
                dropped,
                "redis publish queue full: the oldest messages were not sent to other nodes"
            );
        }
    }
}

/// Makes a new publishing connection, waiting longer after each failure;
/// returns it with the number of attempts it took, or `None` at `stop`.
async fn reconnect(
    client: &Client,
    url: &str,
    stop: &CancellationToken,
) -> Option<(MultiplexedConnection, u32)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if !backoff(attempt, stop).await {
            return None;
        }
        tracing::debug!(url, connection = "publish", attempt, "redis reconnecting");
        match publish_connection(client).await {
            Ok(conn) => return Some((conn, attempt)),
            Err(error) => super::log_failed_attempt(url, "publish", attempt, &error),
        }
    }
}
