//! Testkit: a plugin the end-to-end tests drive with text commands, one per message.
//!
//! - `whoami` answers `id N`; `addr` answers `addr IP:PORT`, the client address
//!   its upgrade request came from.
//! - `closes` answers every `on-close` seen so far, as `conn:code` separated by spaces.
//! - `send ID TEXT` sends TEXT to connection ID and answers `sent` or `error KIND`.
//! - `close CODE REASON` closes the sender's own connection.
//! - `flood COUNT SIZE` sends COUNT binary messages of SIZE bytes to the sender,
//!   stopping at the first refusal.
//! - `subscribe TOPIC` / `unsubscribe TOPIC` answer `subscribed` / `unsubscribed`.
//! - `publish TOPIC TEXT` answers `published N` (N subscribers reached).
//! - `publish-many TOPIC FROM COUNT SIZE` publishes COUNT texts `I|....` of SIZE
//!   bytes, I counting up from FROM.
//! - `timer DELAY once|repeat TOKEN` answers `timer ID`; each firing sends
//!   `tick TOKEN messages=N` (N: messages this instance has received) to the
//!   connection that set it, and publishes the same text to the topic `ticks`.
//! - `cancel ID` answers `cancelled true|false`.
//! - `config KEY` answers `config VALUE` or `config none`.
//! - `print TEXT` writes TEXT to stdout (which the host logs).
//! - `env NAME` answers `env VALUE` or `env none`; `args` answers `args N`.
//! - `read PATH` answers `read CONTENT`, `write PATH TEXT` answers `written`;
//!   either answers `error KIND` (the `std::io::ErrorKind`) when refused.
//! - `spin` loops forever (the host's call deadline must stop it).
//! - `panic` traps.
//!
//! Every `on-close` prints `on-close conn=N code=C reason=R` (the host logs it).
//!
//! The state commands (`history`, `members`, `get`, `set`, ...) are listed in
//! `store.rs`, the outbound HTTP ones (`fetch`, ...) in `fetch.rs`.
//!
//! `on-connect` accepts the first offered subprotocol, and refuses with the status in
//! `?reject=STATUS` when the query has one.

mod fetch;
mod store;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use berth_plugin::{
    Accept, CloseInfo, ConnError, Connect, ConnectionId, Message, Plugin, Published, Reject,
    Request, host,
};

struct Testkit;

thread_local! {
    /// Every `on-close` this instance has seen, as `conn:code`.
    static CLOSES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Messages this instance has received (per connection in the connection model).
    static MESSAGES: Cell<u64> = const { Cell::new(0) };
    /// The client address each connection's request came from.
    static ADDRESSES: RefCell<HashMap<ConnectionId, String>> = RefCell::new(HashMap::new());
    /// Which connection asked for each timer token, to tell it when it fires.
    static TIMER_OWNERS: RefCell<HashMap<u64, ConnectionId>> = RefCell::new(HashMap::new());
}

fn reply(conn: ConnectionId, text: String) {
    let _ = host::send(conn, Message::text(&text));
}

fn published(p: &Published) -> String {
    match p.position {
        Some(position) => format!("published {} at {position}", p.subscribers),
        None => format!("published {}", p.subscribers),
    }
}

fn outcome(result: Result<(), ConnError>, ok: &str) -> String {
    match result {
        Ok(()) => ok.to_string(),
        Err(err) => format!("error {}", err.name()),
    }
}

/// What `on_connect` decides, at once.
fn admit(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
    ADDRESSES.with_borrow_mut(|a| a.insert(conn, req.remote_addr.clone()));
    let rejected = req
        .query_param("reject")
        .and_then(|status| status.parse().ok());
    match rejected {
        Some(status) => Err(Reject::new(status, "rejected on request")),
        None => Ok(Accept {
            subprotocol: req.subprotocols.first().cloned(),
        }),
    }
}

impl Plugin for Testkit {
    fn on_connect(conn: ConnectionId, req: Request) -> Connect {
        admit(conn, req).into()
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        MESSAGES.set(MESSAGES.get() + 1);
        let Some(text) = msg.as_text() else { return };
        let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
        match command {
            "closes" => reply(conn, CLOSES.with_borrow(|closes| closes.join(" "))),
            "whoami" => reply(conn, format!("id {conn}")),
            "addr" => {
                let addr = ADDRESSES
                    .with_borrow(|a| a.get(&conn).cloned())
                    .unwrap_or_default();
                reply(conn, format!("addr {addr}"));
            }
            "send" => {
                let (target, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let answer = match target.parse() {
                    Ok(target) => outcome(host::send(target, Message::text(body)), "sent"),
                    Err(_) => "error bad-id".into(),
                };
                reply(conn, answer);
            }
            "close" => {
                let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let result = host::close(conn, code.parse().unwrap_or(0), reason);
                if result.is_err() {
                    reply(conn, outcome(result, ""));
                }
            }
            "flood" => {
                let mut args = rest.split(' ').map(|n| n.parse::<usize>().unwrap_or(0));
                let (count, size) = (args.next().unwrap_or(0), args.next().unwrap_or(0));
                let bytes = vec![b'f'; size];
                let payload = Message::binary(&bytes);
                for _ in 0..count {
                    if let Err(e) = host::send(conn, payload) {
                        // A full queue takes the answer too; others say why.
                        let _ = host::send(
                            conn,
                            Message::text(&format!("flood stopped: {}", e.name())),
                        );
                        break;
                    }
                }
            }
            "subscribe" => reply(conn, outcome(host::subscribe(conn, rest), "subscribed")),
            "unsubscribe" => reply(conn, outcome(host::unsubscribe(conn, rest), "unsubscribed")),
            "publish" => {
                let (topic, body) = rest.split_once(' ').unwrap_or((rest, ""));
                match host::publish(topic, Message::text(body), None) {
                    Ok(p) => reply(conn, published(&p)),
                    Err(e) => reply(conn, format!("publish failed: {}", e.name())),
                }
            }
            "publish-many" => {
                let mut args = rest.split(' ');
                let topic = args.next().unwrap_or_default();
                let mut number = || {
                    args.next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(0)
                };
                let (from, count, size) = (number(), number(), number());
                for i in from..from + count {
                    let mut body = i.to_string();
                    body.push('|');
                    body.extend(std::iter::repeat_n('.', size.saturating_sub(body.len())));
                    let _ = host::publish(topic, Message::text(&body), None);
                }
                reply(conn, "published".into());
            }
            "timer" => {
                let mut args = rest.split(' ');
                let delay = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let repeat = args.next() == Some("repeat");
                let token = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                TIMER_OWNERS.with_borrow_mut(|owners| owners.insert(token, conn));
                match host::set_timer(delay, repeat, token) {
                    Ok(id) => reply(conn, format!("timer {id}")),
                    Err(_) => reply(conn, "error too-many-timers".into()),
                }
            }
            "cancel" => {
                let cancelled = host::cancel_timer(rest.parse().unwrap_or(0));
                reply(conn, format!("cancelled {cancelled}"));
            }
            "config" => match host::config_get(rest) {
                Some(value) => reply(conn, format!("config {value}")),
                None => reply(conn, "config none".into()),
            },
            "print" => println!("{rest}"),
            "env" => reply(
                conn,
                match std::env::var(rest) {
                    Ok(value) => format!("env {value}"),
                    Err(_) => "env none".into(),
                },
            ),
            "args" => reply(conn, format!("args {}", std::env::args().count())),
            "read" => reply(
                conn,
                match std::fs::read_to_string(rest) {
                    Ok(text) => format!("read {text}"),
                    Err(error) => format!("error {:?}", error.kind()),
                },
            ),
            "write" => {
                let (path, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let answer = match std::fs::write(path, body) {
                    Ok(()) => "written".into(),
                    Err(error) => format!("error {:?}", error.kind()),
                };
                reply(conn, answer);
            }
            "spin" => loop {
                std::hint::spin_loop();
            },
            "panic" => panic!("asked to panic"),
            _ => reply(
                conn,
                store::answer(conn, command, rest)
                    .or_else(|| fetch::answer(conn, command, rest))
                    .unwrap_or_else(|| format!("unknown command {command}")),
            ),
        }
    }

    fn on_timer(token: u64) {
        let tick = format!("tick {token} messages={}", MESSAGES.get());
        if let Some(conn) = TIMER_OWNERS.with_borrow(|owners| owners.get(&token).copied()) {
            reply(conn, tick.clone());
        }
        let _ = host::publish("ticks", Message::text(&tick), None);
    }

    fn on_close(conn: ConnectionId, info: CloseInfo<'_>) {
        println!(
            "on-close conn={conn} code={} reason={}",
            info.code, info.reason
        );
        CLOSES.with_borrow_mut(|closes| closes.push(format!("{conn}:{}", info.code)));
        ADDRESSES.with_borrow_mut(|a| a.remove(&conn));
    }
}

berth_plugin::export!(Testkit);
