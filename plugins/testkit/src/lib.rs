//! Testkit: a plugin the end-to-end tests drive with text commands, one per message.
//!
//! - `whoami` answers `id N`.
//! - `closes` answers every `on-close` seen so far, as `conn:code` separated by spaces.
//! - `send ID TEXT` sends TEXT to connection ID and answers `sent` or `error KIND`.
//! - `close CODE REASON` closes the sender's own connection.
//! - `flood COUNT SIZE` sends COUNT binary messages of SIZE bytes to the sender,
//!   stopping at the first refusal.
//! - `print TEXT` writes TEXT to stdout (which the host logs).
//! - `spin` loops forever (the host's call deadline must stop it).
//! - `panic` traps.
//!
//! Every `on-close` prints `on-close conn=N code=C reason=R` (the host logs it).
//!
//! `on-connect` accepts the first offered subprotocol, and refuses with the status in
//! `?reject=STATUS` when the query has one.

wit_bindgen::generate!({ path: "../../wit", world: "berth:plugin/plugin" });

use std::cell::RefCell;

use berth::plugin::host;
use berth::plugin::types::{Accept, CloseInfo, ConnError, ConnectionId, Message, Reject, Request};
use exports::berth::plugin::handler::Guest;

struct Testkit;

thread_local! {
    /// Every `on-close` this instance has seen, as `conn:code`.
    static CLOSES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn error_name(err: ConnError) -> &'static str {
    match err {
        ConnError::UnknownConnection => "unknown-connection",
        ConnError::Closing => "closing",
        ConnError::QueueFull => "queue-full",
        ConnError::InvalidCode => "invalid-code",
    }
}

fn reply(conn: ConnectionId, text: String) {
    let _ = host::send(conn, &Message::Text(text));
}

fn outcome(result: Result<(), ConnError>, ok: &str) -> String {
    match result {
        Ok(()) => ok.to_string(),
        Err(err) => format!("error {}", error_name(err)),
    }
}

impl Guest for Testkit {
    fn on_connect(_conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        let rejected = req
            .query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("reject="))
            .and_then(|status| status.parse().ok());
        match rejected {
            Some(status) => Err(Reject {
                status,
                reason: "rejected on request".into(),
            }),
            None => Ok(Accept {
                subprotocol: req.subprotocols.first().cloned(),
            }),
        }
    }

    fn on_message(conn: ConnectionId, msg: Message) {
        let Message::Text(text) = msg else { return };
        let (command, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match command {
            "closes" => reply(conn, CLOSES.with_borrow(|closes| closes.join(" "))),
            "whoami" => reply(conn, format!("id {conn}")),
            "send" => {
                let (target, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let answer = match target.parse() {
                    Ok(target) => outcome(host::send(target, &Message::Text(body.into())), "sent"),
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
                let payload = Message::Binary(vec![b'f'; size]);
                for _ in 0..count {
                    if host::send(conn, &payload).is_err() {
                        break;
                    }
                }
            }
            "print" => println!("{rest}"),
            "spin" => loop {
                std::hint::spin_loop();
            },
            "panic" => panic!("asked to panic"),
            _ => reply(conn, format!("unknown command {command}")),
        }
    }

    fn on_close(conn: ConnectionId, info: CloseInfo) {
        println!(
            "on-close conn={conn} code={} reason={}",
            info.code, info.reason
        );
        CLOSES.with_borrow_mut(|closes| closes.push(format!("{conn}:{}", info.code)));
    }
}

export!(Testkit);
