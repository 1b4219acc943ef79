//! Metrics and structured logs, as a scraper and a log collector meet them:
//! `/metrics` fetched over a real socket and parsed strictly as Prometheus
//! text, its counters checked against exactly what the test did, and the
//! binary's JSON log parsed line by line.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::raw::http_get;
use crate::support::{
    Client, Site, TestServer, WAIT, berth_command, connect, echoes, eventually, kit_client,
    plugin_bytes, recv, refusal, request, send_text,
};

/// What `/metrics` must say it is.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample's labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One scrape: every sample's value by metric name and labels.
pub(crate) struct Scrape {
    samples: HashMap<(String, Labels), f64>,
}

impl Scrape {
    /// The value of the sample `name{labels}`; the test fails if there is none.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
    }

    /// The value of the sample `name{labels}`, if the scrape has it (a
    /// series whose labels take values not known in advance appears at its
    /// first count).
    pub(crate) fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        key.sort();
        self.samples.get(&(name.to_string(), key)).copied()
    }

    /// The value of a per-route series.
    fn route(&self, name: &str, route: &str) -> f64 {
        self.value(name, &[("route", route)])
    }

    /// How many calls into `export` of `route` were timed.
    fn calls(&self, route: &str, export: &str) -> f64 {
        self.value(
            "berth_plugin_call_duration_seconds_count",
            &[("route", route), ("export", export)],
        )
    }

    /// How many events of `kind` (message, close, timer) `route`'s plugin was handed.
    fn events(&self, route: &str, kind: &str) -> f64 {
        self.value(
            "berth_plugin_events_total",
            &[("route", route), ("kind", kind)],
        )
    }

    /// The rejections counted for `reason`.
    fn rejections(&self, reason: &str) -> f64 {
        self.value("berth_handshake_rejections_total", &[("reason", reason)])
    }

    /// Every rejection count, by reason.
    fn all_rejections(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|((name, _), _)| name == "berth_handshake_rejections_total")
            .map(|((_, labels), value)| (labels[0].1.clone(), *value))
            .collect()
    }

    /// The reloads counted with `result`.
    fn reloads(&self, result: &str) -> f64 {
        self.value("berth_reloads_total", &[("result", result)])
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value as the text format writes it.
fn sample_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse()
                .map_err(|_| format!("{text:?} is not a number"))
        }
        _ => Err(format!("{text:?} is not a number")),
    }
}

/// One sample line: `name{labels} value` or `name value`, no timestamp.
fn sample_line(line: &str) -> Result<(String, Labels, f64), String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[end..];
    let mut labels: Labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without '='")?;
            let key = &rest[..eq];
            if !valid_label_name(key) {
                return Err(format!("{key:?} is not a label name"));
            }
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("label {key} twice"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err("a label value without its closing quote".into()),
                    Some((at, '"')) => break at,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("an unknown escape in a label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            rest = &rest[close + 1..];
            labels.push((key.to_string(), value));
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
                if rest.starts_with('}') {
                    return Err("a comma before '}'".into());
                }
            } else if !rest.starts_with('}') {
                return Err("labels not separated by commas".into());
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    let value = sample_value(value)?;
    labels.sort();
    Ok((name.to_string(), labels, value))
}

/// Parses the Prometheus text format strictly: only `# HELP` and `# TYPE`
/// comments, a `# TYPE` before every metric's samples, counters named
/// `_total`, histograms only as `_bucket` (with `le`), `_sum` and `_count`,
/// no series twice, and every histogram's buckets cumulative up to `+Inf`,
/// which equals its count.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples: HashMap<(String, Labels), f64> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", index + 1);
        if line.is_empty() {
            return Err(at("an empty line"));
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if valid_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("an unknown type"));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter whose name does not end in _total"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a second TYPE for one metric"));
                    }
                }
                _ => return Err(at("a comment that is neither HELP nor TYPE")),
            }
            continue;
        }
        let (name, labels, value) = sample_line(line).map_err(|e| at(&e))?;
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            name.strip_suffix(suffix)
                .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
        });
        match (types.get(&name).map(String::as_str), histogram) {
            (Some("histogram"), _) => return Err(at("a histogram sample without a suffix")),
            (Some(_), _) => {}
            (None, Some(_)) => {
                if name.ends_with("_bucket") != labels.iter().any(|(k, _)| k == "le") {
                    return Err(at(
                        "le on a histogram sample other than _bucket, or not on one",
                    ));
                }
            }
            (None, None) => return Err(at("a sample whose metric has no TYPE")),
        }
        if samples.insert((name, labels), value).is_some() {
            return Err(at("a series given twice"));
        }
    }
    // Every histogram series: its buckets in order of `le`, and its count.
    let mut buckets: HashMap<(String, Labels), Vec<(f64, f64)>> = HashMap::new();
    for ((name, labels), value) in &samples {
        if let Some(base) = name.strip_suffix("_bucket")
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            let le = labels.iter().find(|(k, _)| k == "le").expect("checked");
            let bound = sample_value(&le.1)?;
            let rest: Labels = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            buckets
                .entry((base.to_string(), rest))
                .or_default()
                .push((bound, *value));
        }
    }
    for ((base, labels), mut series) in buckets {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !series.windows(2).all(|w| w[0].1 <= w[1].1) {
            return Err(format!("{base}{labels:?}: buckets not cumulative"));
        }
        let (last_bound, last_count) = *series.last().expect("at least one bucket");
        let count = samples.get(&(format!("{base}_count"), labels.clone()));
        if last_bound != f64::INFINITY || count != Some(&last_count) {
            return Err(format!(
                "{base}{labels:?}: the +Inf bucket is missing or differs from the count"
            ));
        }
        if !samples.contains_key(&(format!("{base}_sum"), labels.clone())) {
            return Err(format!("{base}{labels:?}: no _sum"));
        }
    }
    Ok(Scrape { samples })
}

/// Fetches `/metrics` from `addr` over a new socket and parses it.
pub(crate) async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, answer) = http_get(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .expect("a content-type");
    assert_eq!(content_type, PROMETHEUS_TEXT);
    let scrape = parse(body).unwrap_or_else(|error| panic!("{error}\nin:\n{body}"));
    for (name, _) in scrape.samples.keys() {
        assert!(name.starts_with("berth_"), "{name} is not berth's");
    }
    scrape
}

/// Scrapes until `ready` holds (bounded): counts that sessions add once per
/// batch reach the counters a moment after the client has its answer.
pub(crate) async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&Scrape) -> bool,
) -> Scrape {
    eventually(WAIT, &format!("the metrics show {what}"), async || {
        let scrape = scrape(addr).await;
        if ready(&scrape) {
            Ok(scrape)
        } else {
            Err("not yet".to_string())
        }
    })
    .await
}

const ECHO: &str = r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"
"#;

#[tokio::test]
async fn echo_traffic_is_counted_exactly_in_messages_bytes_connections_and_calls() {
    let server = TestServer::start(ECHO).await;
    let addr = server.addr;
    let before = scrape(addr).await;
    for name in [
        "berth_connections_open",
        "berth_connections_total",
        "berth_messages_received_total",
        "berth_messages_sent_total",
        "berth_received_bytes_total",
        "berth_sent_bytes_total",
    ] {
        assert_eq!(
            before.route(name, "/echo"),
            0.0,
            "{name} before any traffic"
        );
    }

    let mut client = connect(&server.url("/echo")).await;
    // Bytes, not characters: "é" is two.
    let messages = [
        Message::text("a"),
        Message::text("bb"),
        Message::text("é"),
        Message::text(""),
        Message::binary(vec![1u8, 2, 3, 4, 5]),
        Message::text("x".repeat(1000)),
    ];
    let bytes: usize = messages.iter().map(Message::len).sum();
    assert_eq!(bytes, 1 + 2 + 2 + 5 + 1000);
    for message in &messages {
        client.send(message.clone()).await.unwrap();
        assert_eq!(&recv(&mut client).await, message);
    }
    let count = messages.len() as f64;
    let after = scrape_until(addr, "six messages each way", |s| {
        s.route("berth_messages_received_total", "/echo") >= count
            && s.route("berth_messages_sent_total", "/echo") >= count
    })
    .await;
    assert_eq!(after.route("berth_messages_received_total", "/echo"), count);
    assert_eq!(after.route("berth_messages_sent_total", "/echo"), count);
    assert_eq!(
        after.route("berth_received_bytes_total", "/echo"),
        bytes as f64
    );
    assert_eq!(after.route("berth_sent_bytes_total", "/echo"), bytes as f64);
    assert_eq!(after.route("berth_connections_total", "/echo"), 1.0);
    assert_eq!(after.route("berth_connections_open", "/echo"), 1.0);
    assert_eq!(after.calls("/echo", "on_connect"), 1.0);
    assert_eq!(after.events("/echo", "message"), count);
    assert_eq!(after.events("/echo", "close"), 0.0);

    // A second connection, then both gone: open goes back to 0, and each
    // close was one on-close call.
    let mut second = connect(&server.url("/echo")).await;
    echoes(&mut second, "again").await;
    client.close(None).await.unwrap();
    second.close(None).await.unwrap();
    let closed = scrape_until(addr, "both connections closed", |s| {
        s.route("berth_connections_open", "/echo") == 0.0 && s.events("/echo", "close") >= 2.0
    })
    .await;
    assert_eq!(closed.route("berth_connections_total", "/echo"), 2.0);
    assert_eq!(closed.calls("/echo", "on_connect"), 2.0);
    assert_eq!(closed.events("/echo", "message"), count + 1.0);
    assert_eq!(closed.events("/echo", "close"), 2.0);
    assert_eq!(
        closed.route("berth_messages_received_total", "/echo"),
        count + 1.0
    );
    assert_eq!(
        closed.route("berth_sent_bytes_total", "/echo"),
        (bytes + "again".len()) as f64
    );
    // Nothing in all this was a rejection.
    assert!(
        closed.all_rejections().values().all(|&n| n == 0.0),
        "{:?}",
        closed.all_rejections()
    );
    server.stop().await;
}

#[tokio::test]
async fn each_rejected_handshake_counts_once_under_its_reason() {
    let server = TestServer::start(ECHO).await;
    let addr = server.addr;
    let url = server.url("/echo");
    let upgrade = [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ];
    let big = format!("X-Filler: {}", "f".repeat(20 * 1024));
    let mut bad_key = upgrade.to_vec();
    bad_key.push("Sec-WebSocket-Key: not-a-key");

    let mut expected = scrape(addr).await.all_rejections();
    assert!(expected.values().all(|&n| n == 0.0), "{expected:?}");
    assert!(expected.len() >= 20, "every reason is there from the start");

    // Each of these is counted before its answer is written, except the
    // 431, which hyper answers itself and berth counts when the socket ends.
    let cases: Vec<(&str, u16)> = vec![
        ("no_route", 404),
        ("origin_denied", 403),
        ("not_upgrade", 426),
        ("bad_key", 400),
        ("head_too_large", 431),
    ];
    for (reason, status) in cases {
        let got = match reason {
            "no_route" => refusal(request(&server.url("/nowhere"), &[])).await,
            "origin_denied" => refusal(request(&url, &[("Origin", "https://evil.test")])).await,
            "not_upgrade" => Some(http_get(addr, "/echo", &[]).await.0),
            "bad_key" => Some(http_get(addr, "/echo", &bad_key).await.0),
            "head_too_large" => Some(http_get(addr, "/echo", &[big.as_str()]).await.0),
            _ => unreachable!(),
        };
        assert_eq!(got, Some(status), "{reason}");
        *expected.get_mut(reason).expect("a known reason") += 1.0;
        let after = scrape_until(addr, &format!("one more {reason}"), |s| {
            s.rejections(reason) >= expected[reason]
        })
        .await;
        assert_eq!(after.all_rejections(), expected, "after {reason}");
    }
    server.stop().await;
}

/// The testkit with a tiny write queue and a quick quarantine, and echo with
/// a heartbeat a client can miss quickly.
const FAULTS: &str = r#"
[[route]]
path = "/kit"
plugin = "testkit.wasm"
write-queue = 4
quarantine-traps = 2

[[route]]
path = "/beat"
plugin = "echo.wasm"
ping-interval = "100ms"
pong-timeout = "100ms"
"#;

/// Reads past data messages to the close frame and returns its code.
async fn close_code(client: &mut Client) -> u16 {
    for _ in 0..100 {
        if let Message::Close(frame) = recv(client).await {
            return frame.map_or(1005, |f| f.code.into());
        }
    }
    panic!("no close frame after 100 messages");
}

#[tokio::test]
async fn slow_consumers_traps_quarantines_and_heartbeat_timeouts_are_counted() {
    let server = TestServer::start(FAULTS).await;
    let addr = server.addr;
    let kit = server.url("/kit");

    // A plugin that sends far more than the write queue holds, in one call.
    let mut flooded = connect(&kit).await;
    send_text(&mut flooded, "flood 1000 16").await;
    assert_eq!(close_code(&mut flooded).await, 1013);
    let after = scrape_until(addr, "a slow-consumer close", |s| {
        s.route("berth_slow_consumer_closes_total", "/kit") >= 1.0
    })
    .await;
    assert_eq!(after.route("berth_slow_consumer_closes_total", "/kit"), 1.0);
    assert_eq!(after.route("berth_plugin_traps_total", "/kit"), 0.0);

    // Two traps: the second quarantines the route (quarantine-traps = 2).
    let (mut trapper, _) = kit_client(&kit).await;
    send_text(&mut trapper, "panic").await;
    let after = scrape_until(addr, "a trap", |s| {
        s.route("berth_plugin_traps_total", "/kit") >= 1.0
    })
    .await;
    assert_eq!(after.route("berth_plugin_traps_total", "/kit"), 1.0);
    assert_eq!(after.route("berth_quarantines_total", "/kit"), 0.0);
    send_text(&mut trapper, "panic").await;
    let after = scrape_until(addr, "a quarantine", |s| {
        s.route("berth_quarantines_total", "/kit") >= 1.0
    })
    .await;
    assert_eq!(after.route("berth_plugin_traps_total", "/kit"), 2.0);
    assert_eq!(after.route("berth_quarantines_total", "/kit"), 1.0);
    // Failed calls count too: flood, whoami, two panics.
    assert_eq!(after.events("/kit", "message"), 4.0);
    assert_eq!(refusal(request(&kit, &[])).await, Some(503));
    assert_eq!(scrape(addr).await.rejections("quarantined"), 1.0);

    // A client that never reads never answers a ping.
    let silent = connect(&server.url("/beat")).await;
    let after = scrape_until(addr, "a heartbeat timeout", |s| {
        s.route("berth_heartbeat_timeouts_total", "/beat") >= 1.0
    })
    .await;
    assert_eq!(after.route("berth_heartbeat_timeouts_total", "/beat"), 1.0);
    assert_eq!(after.route("berth_heartbeat_timeouts_total", "/kit"), 0.0);
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn with_admin_listen_metrics_are_served_there_and_not_on_the_public_listener() {
    let server = TestServer::start(&format!("admin-listen = \"127.0.0.1:0\"\n{ECHO}")).await;
    let admin = server.admin.expect("an admin address");
    assert_ne!(admin, server.addr);

    let (status, _) = http_get(server.addr, "/metrics", &[]).await;
    assert_eq!(status, 404, "/metrics on the public listener");
    let (status, answer) = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = http_get(admin, "/healthz", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = http_get(admin, "/echo", &[]).await;
    assert_eq!(status, 404, "the admin listener serves no routes");

    let mut client = connect(&server.url("/echo")).await;
    echoes(&mut client, "hi").await;
    let scrape = scrape_until(admin, "the echo", |s| {
        s.route("berth_messages_sent_total", "/echo") >= 1.0
    })
    .await;
    assert_eq!(scrape.route("berth_messages_received_total", "/echo"), 1.0);
    // The public /metrics was a request for a path without a route.
    assert_eq!(scrape.rejections("no_route"), 1.0);
    server.stop().await;
}

/// A site serving the testkit at `/kit`, with drop-in routes on.
fn kit_site() -> Site {
    let site = Site::new();
    site.install("testkit.wasm", &plugin_bytes("testkit.wasm"));
    site
}

/// The config of a [`kit_site`]: `rest` (top-level keys), then `/kit`.
fn kit_config(rest: &str) -> String {
    format!("auto-routes = true\n{rest}\n[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n")
}

#[tokio::test]
async fn a_reloaded_plugin_counts_ok_and_a_garbage_file_counts_failed() {
    let site = kit_site();
    site.write_config(&kit_config(""));
    let berth = site.start_with_log(Some("info"), &[]);
    let start = scrape(berth.addr).await;
    // Loading /kit at startup is not a reload.
    assert_eq!(start.reloads("ok"), 0.0);
    assert_eq!(start.reloads("failed"), 0.0);

    site.install("app.wasm", &plugin_bytes("echo.wasm"));
    let loaded = scrape_until(berth.addr, "a reload", |s| s.reloads("ok") >= 1.0).await;
    assert_eq!(loaded.reloads("ok"), 1.0);
    assert_eq!(loaded.reloads("failed"), 0.0);
    let mut client = connect(&berth.url("/app")).await;
    echoes(&mut client, "new").await;

    site.install("bad.wasm", b"this is not a component");
    let failed = scrape_until(berth.addr, "a failed reload", |s| {
        s.reloads("failed") >= 1.0
    })
    .await;
    assert_eq!(failed.reloads("failed"), 1.0);
    assert_eq!(failed.reloads("ok"), 1.0);
    // The new route's traffic is counted under its own name.
    assert_eq!(failed.route("berth_messages_received_total", "/app"), 1.0);
}

/// Parses every line of a JSON log; returns the objects.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
            assert!(
                value["timestamp"].as_str().is_some_and(|t| !t.is_empty()),
                "no timestamp: {line}"
            );
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&value["level"].as_str().unwrap_or("")),
                "no level: {line}"
            );
            assert!(
                value["fields"]["message"].is_string(),
                "no fields.message: {line}"
            );
            value
        })
        .collect()
}

/// The first event whose message is `message` and whose fields include
/// every one of `fields`.
fn event<'a>(
    events: &'a [serde_json::Value],
    message: &str,
    fields: &[(&str, serde_json::Value)],
) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| {
            e["fields"]["message"].as_str() == Some(message)
                && fields.iter().all(|(k, v)| e["fields"][k] == *v)
        })
        .unwrap_or_else(|| panic!("no event {message:?} with {fields:?}"))
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_connection_events_name_their_connection() {
    let site = kit_site();
    site.write_config(&kit_config(""));
    // berth's own debug events: connections open and close at debug level.
    let berth = site.start_with_log(Some("info,berth=debug"), &["--log-format", "json"]);
    berth.wait_log(&["plugin loaded", "/kit"]).await;

    let (mut client, id) = kit_client(&berth.url("/kit")).await;
    let conn: u64 = id.parse().unwrap();
    send_text(&mut client, "print hello from the plugin").await;
    berth.wait_log(&["hello from the plugin"]).await;
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    client.close(Some(bye)).await.unwrap();
    berth.wait_log(&["connection closed"]).await;
    berth.wait_log(&[&format!("on-close conn={conn}")]).await;

    site.install("app.wasm", &plugin_bytes("echo.wasm"));
    berth.wait_log(&["plugin loaded", "/app"]).await;

    let events = json_lines(&berth.log());
    let startup = event(&events, "plugin loaded", &[("route", "/kit".into())]);
    assert_eq!(startup["target"], "berth::reload");
    assert_eq!(startup["level"], "INFO");
    event(&events, "plugin loaded", &[("route", "/app".into())]);
    let said = event(
        &events,
        "hello from the plugin",
        &[("route", "/kit".into()), ("conn", conn.into())],
    );
    assert_eq!(said["target"], "berth::plugin");
    // Connection events carry the connection themselves; at debug level the
    // connection's span is there too.
    let opened = event(
        &events,
        "connection opened",
        &[("route", "/kit".into()), ("conn", conn.into())],
    );
    assert_eq!(opened["span"]["route"], "/kit");
    assert_eq!(opened["span"]["conn"], conn);
    assert!(opened["span"]["peer"].is_string(), "{opened}");
    let closed = event(
        &events,
        "connection closed",
        &[("route", "/kit".into()), ("conn", conn.into())],
    );
    assert_eq!(closed["fields"]["code"], 1000);
    assert_eq!(closed["fields"]["reason"], "bye");
}

#[tokio::test]
async fn log_level_sets_the_level_unless_rust_log_is_set() {
    let site = kit_site();
    site.write_config(&kit_config("log-level = \"warn\""));
    // Without RUST_LOG, the config's level: a warning shows, and the info
    // lines logged before it (every plugin load at startup) do not.
    let quiet = site.start_with_log(None, &[]);
    // A change that needs a restart: the watcher reloads the file and warns.
    site.write_config(&kit_config("log-level = \"warn\"\nmax-connections = 5"));
    quiet.wait_log(&[" WARN ", "max-connections changed"]).await;
    let log = quiet.log();
    assert!(!log.contains("plugin loaded"), "info lines at warn:\n{log}");
    assert!(!log.contains(" INFO "), "info lines at warn:\n{log}");
    drop(quiet);

    // RUST_LOG wins over log-level.
    let told = site.start_with_log(Some("info"), &[]);
    told.wait_log(&["INFO", "plugin loaded", "/kit"]).await;
}

#[test]
fn a_config_error_is_a_json_line_in_json_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "log-level = \"loud\"\n").unwrap();
    let output = berth_command()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events = json_lines(&stderr);
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["level"], "ERROR");
    let message = events[0]["fields"]["message"].as_str().unwrap();
    assert!(message.contains("berth.toml:1:13"), "{message}");
}
