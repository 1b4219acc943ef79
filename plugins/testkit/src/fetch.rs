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

use std::time::Duration;

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
