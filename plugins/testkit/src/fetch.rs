//! Testkit's outbound HTTP commands. Each answers at once with `fetching`
//! or, when the host refused the request before sending it, `refused KIND`;
//! the answer arrives later as `response STATUS x-test=VALUE BODY` (VALUE:
//! the response's `x-test` header, `-` without one) or `response error
//! KIND`, sent to the connection that asked.
//!
//! - `fetch URL`: a GET.
//! - `fetch-post URL BODY`: a POST of BODY.
//! - `fetch-within MS URL`: a GET that waits at most MS milliseconds.
//! - `fetch-cancel URL`: a GET, cancelled at once; answers `cancelled BOOL`.
//! - `time-fetch N URL`: N GETs one after another, each started by the
//!   previous one's callback, each timed from `fetch` to its callback with
//!   the WASI monotonic clock; answers `timed N P50_NS P99_NS` after the
//!   last, or `error KIND` at the first failure. This is what a request
//!   costs a plugin, berth's queueing and calls included, for a benchmark
//!   to set beside a direct client's.

use std::time::{Duration, Instant};

use berth_plugin::outbound::{self, Request, Response};
use berth_plugin::{ConnectionId, OutboundError};

use crate::reply;

/// The answer to `command`, if it is one of these.
pub(crate) fn answer(conn: ConnectionId, command: &str, rest: &str) -> Option<String> {
    let request = match command {
        "fetch" => Request::get(rest),
        "fetch-post" => {
            let (url, body) = rest.split_once(' ').unwrap_or((rest, ""));
            Request::post(url, body)
        }
        "fetch-within" => {
            let (ms, url) = rest.split_once(' ')?;
            Request::get(url).timeout(Duration::from_millis(ms.parse().ok()?))
        }
        "time-fetch" => {
            let (count, url) = rest.split_once(' ')?;
            let count = count.parse::<usize>().ok()?.clamp(1, MAX_TIMED);
            return time_fetch(conn, url.to_string(), count, Vec::with_capacity(count))
                .err()
                .or_else(|| Some("timing".into()));
        }
        "fetch-cancel" => {
            return Some(match outbound::fetch(&Request::get(rest), |_| {}) {
                Ok(id) => format!("cancelled {}", outbound::cancel(id)),
                Err(error) => format!("refused {}", error.name()),
            });
        }
        _ => return None,
    };
    Some(
        match outbound::fetch(&request, move |answer| reply(conn, describe(answer))) {
            Ok(_) => "fetching".into(),
            Err(error) => format!("refused {}", error.name()),
        },
    )
}

/// The most requests `time-fetch` times.
const MAX_TIMED: usize = 100_000;

/// Starts the next timed GET of `url`; its callback records it and starts
/// the one after, until `count` are done.
fn time_fetch(
    conn: ConnectionId,
    url: String,
    count: usize,
    samples: Vec<u64>,
) -> Result<(), String> {
    let started = Instant::now();
    let request = Request::get(&url);
    let then = move |answer: Result<Response, OutboundError>| {
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut samples = samples;
        match answer {
            Ok(_) => samples.push(took),
            Err(error) => return reply(conn, format!("error {}", error.name())),
        }
        if samples.len() == count {
            reply(conn, crate::store::summary(samples));
        } else if let Err(error) = time_fetch(conn, url, count, samples) {
            reply(conn, error);
        }
    };
    outbound::fetch(&request, then)
        .map(drop)
        .map_err(|error| format!("error {}", error.name()))
}

fn describe(answer: Result<Response, OutboundError>) -> String {
    match answer {
        Ok(response) => format!(
            "response {} x-test={} {}",
            response.status,
            response.header("x-test").unwrap_or("-"),
            response.text()
        ),
        Err(error) => format!("response error {}", error.name()),
    }
}
