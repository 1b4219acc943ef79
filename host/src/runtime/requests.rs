//! An instance's outbound HTTP requests in flight. Each is a tokio task that
//! sends the request and puts its answer into the instance's own ordered
//! queue, as a timer does, so the worker thread never waits on a backend.
//! Requests belong to the instance: dropping it cancels those in flight,
//! and ids are unique in the process, so an answer that was already queued
//! when its instance went finds no request of that id in any other. The
//! `outbound` imports are here too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::task::AbortHandle;

use super::bindings::berth::plugin::{outbound, types};
use super::handle::Event;
use super::queue::WeakQueueTx;
use super::store::HostState;
use crate::config::OutboundRules;
use crate::fetch::{Answer, Client, Failure, Outgoing};
use crate::metrics::{OutboundMetrics, RouteMetrics};

/// The next request id; shared by every instance of every route.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What every instance of one route version shares for its requests.
pub(crate) struct RouteRequests {
    pub(crate) rules: OutboundRules,
    /// Requests of the route version's instances in flight together.
    in_flight: AtomicUsize,
    metrics: Arc<RouteMetrics>,
}

impl RouteRequests {
    /// No requests yet, under `rules`, counted in `metrics`.
    pub(crate) fn new(rules: OutboundRules, metrics: Arc<RouteMetrics>) -> Self {
        RouteRequests {
            rules,
            in_flight: AtomicUsize::new(0),
            metrics,
        }
    }

    fn outbound(&self) -> &OutboundMetrics {
        &self.metrics.outbound
    }

    /// Takes a place under `outbound-in-flight-route`, if one is free.
    fn enter(&self) -> bool {
        let max = self.rules.in_flight_route;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a request, as the worker hands it to the plugin.
pub(crate) type Outcome = Result<Answer, Failure>;

/// The bytes an answer holds while it waits in the worker's queue.
pub(crate) fn held_bytes(outcome: &Outcome) -> usize {
    outcome.as_ref().map_or(0, |answer| answer.body.len())
}

/// The requests of one instance.
pub(crate) struct Requests {
    /// Which instance the answers are for (as for timers).
    key: u64,
    route: Arc<RouteRequests>,
    live: FxHashMap<u64, AbortHandle>,
    // Weak: a request in flight must not keep a route's queue open after
    // shutdown.
    queue: WeakQueueTx<Event>,
    runtime: tokio::runtime::Handle,
}

impl Requests {
    /// No requests yet; answers go to `queue`, tagged with `key`.
    pub(crate) fn new(
        key: u64,
        route: Arc<RouteRequests>,
        queue: WeakQueueTx<Event>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Requests {
            key,
            route,
            live: FxHashMap::default(),
            queue,
            runtime,
        }
    }

    /// Checks a plugin's request and starts it; its id, or why it was
    /// refused before anything was sent.
    pub(crate) fn start(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout_ms: Option<u32>,
    ) -> Result<u64, Failure> {
        let rules = &self.route.rules;
        let started = Instant::now();
        let refused = |failure: Failure| {
            self.route.outbound().ended(failure.as_str(), None);
            failure
        };
        let outgoing =
            crate::fetch::prepare(method, url, headers, body, &rules.allowed, rules.body_bytes)
                .map_err(refused)?;
        if self.live.len() >= rules.in_flight || !self.route.enter() {
            return Err(refused(Failure::TooManyRequests));
        }
        let timeout = timeout_ms
            .map(|ms| std::time::Duration::from_millis(u64::from(ms.max(1))))
            .map_or(rules.timeout, |asked| asked.min(rules.timeout));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let task = self.runtime.spawn(deliver(
            self.route.clone(),
            self.queue.clone(),
            self.key,
            id,
            outgoing,
            timeout,
            started,
        ));
        self.live.insert(id, task.abort_handle());
        Ok(id)
    }

    /// Takes request `id` out of flight as its answer reaches the plugin;
    /// false if it is not this instance's or was cancelled meanwhile.
    pub(crate) fn finished(&mut self, id: u64) -> bool {
        let known = self.live.remove(&id).is_some();
        if known {
            self.route.leave();
        }
        known
    }

    /// Abandons request `id`: its answer, even one already queued, never
    /// reaches the plugin. False if it is not in flight.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.live.remove(&id) {
            Some(task) => {
                self.abandon(task);
                true
            }
            None => false,
        }
    }

    fn abandon(&self, task: AbortHandle) {
        // A task that has finished counted its answer already.
        if !task.is_finished() {
            task.abort();
            self.route.outbound().ended("cancelled", None);
        }
        self.route.leave();
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        for (_, task) in std::mem::take(&mut self.live) {
            self.abandon(task);
        }
    }
}

/// Sends one request and queues its answer for instance `key`.
async fn deliver(
    route: Arc<RouteRequests>,
    queue: WeakQueueTx<Event>,
    key: u64,
    id: u64,
    outgoing: Outgoing,
    timeout: std::time::Duration,
    started: Instant,
) {
    let rules = &route.rules;
    let outcome = Client::shared()
        .send(outgoing, &rules.allowed, rules.body_bytes, timeout)
        .await;
    let status = match &outcome {
        Ok(answer) => answer.status.to_string(),
        Err(failure) => failure.as_str().to_string(),
    };
    route.outbound().ended(&status, Some(started.elapsed()));
    let Some(queue) = queue.upgrade() else { return };
    let bytes = held_bytes(&outcome);
    let event = Event::Response {
        key,
        id,
        outcome: Box::new(outcome),
    };
    let _ = queue.send_sized(event, bytes).await;
}

impl From<Failure> for types::OutboundError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NotAllowed => types::OutboundError::NotAllowed,
            Failure::InvalidRequest => types::OutboundError::InvalidRequest,
            Failure::TooManyRequests => types::OutboundError::TooManyRequests,
            Failure::ConnectFailed => types::OutboundError::ConnectFailed,
            Failure::Timeout => types::OutboundError::Timeout,
            Failure::TooLarge => types::OutboundError::TooLarge,
            Failure::Failed => types::OutboundError::Failed,
        }
    }
}

impl outbound::Host for HostState {
    fn fetch(
        &mut self,
        req: outbound::OutboundRequest,
    ) -> wasmtime::Result<Result<u64, types::OutboundError>> {
        let outbound::OutboundRequest {
            method,
            url,
            headers,
            body,
            timeout_ms,
        } = req;
        Ok(self
            .requests
            .start(&method, &url, &headers, body, timeout_ms)
            .map_err(types::OutboundError::from))
    }

    fn cancel(&mut self, id: u64) -> wasmtime::Result<bool> {
        Ok(self.requests.cancel(id))
    }
}
