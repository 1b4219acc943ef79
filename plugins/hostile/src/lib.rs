//! Hostile: a plugin that misbehaves on demand, so that the end-to-end tests
//! can check that berth contains every kind of fault to the plugin (or the
//! connection) that caused it. Commands are text messages, one per message.
//!
//! Runaway calls, one per export:
//! - a connection opened with `?spin=connect` loops forever in `on-connect`;
//! - `spin` loops forever in `on-message`;
//! - `spin-on-close` answers `armed`; this connection's `on-close` will loop forever;
//! - `spin-timer` answers `timer set` and sets a 10 ms timer whose `on-timer`
//!   loops forever.
//!
//! Other faults:
//! - `alloc` allocates 1 MiB blocks, writing every byte and answering
//!   `allocated N` after each (N: the MiB it holds), until an allocation
//!   fails; then it answers `alloc-failed N` and traps. (A host that traps
//!   the failed `memory.grow` itself ends it before that last answer.)
//! - `panic` traps.
//! - `recurse` recurses without bound until the stack overflows (a trap).
//! - `print MB` writes MB megabytes of 100-byte text lines to stdout (which
//!   the host logs), then answers `printed LINES`.
//!
//! Reaching out:
//! - `send ID` sends a text to connection ID; `close ID` closes it with 4000.
//!   Both answer `ok` or the error kind (`unknown-connection`, ...).
//! - `subscribe TOPIC` answers `subscribed` or the error kind.
//! - `publish-flood TOPIC COUNT SIZE` publishes COUNT text messages of SIZE
//!   bytes to TOPIC in this one call, each starting with `SEQ|`, where SEQ
//!   counts this instance's flood messages from 0; answers `flooded N` (N: the
//!   deliveries the host reported, summed).
//!
//! Asking the host to hold more than it should (each answers what the host
//! said, so that a test sees the error value):
//! - a connection opened with `?reject=MIB` is refused with a reason of MIB MiB;
//! - `big-send MIB COUNT` sends this connection COUNT binary messages of MIB
//!   MiB; answers `sent N` or `sent N, then ERROR`;
//! - `many-topics COUNT` subscribes this connection to COUNT topics; answers
//!   `subscribed N` or `subscribed N, then ERROR`;
//! - `long-topic MIB` subscribes to, then publishes on, a topic named with
//!   MIB MiB; answers `subscribe ERROR, publish ERROR` (or `ok` for each);
//! - `config-key MIB` asks `config-get` for a key of MIB MiB; answers
//!   `config none` or `config VALUE`;
//! - `log-loop COUNT` calls the `log` import COUNT times with 4 KB lines in
//!   this one call; answers `logged COUNT`.
//!
//! Observing:
//! - `ping` answers `pong`.
//! - `count` answers `count N`: the messages this instance has handled, this
//!   one included. It restarts from 1 on a fresh instance, which shows that a
//!   trapped instance's state was lost.
//! - `whoami` answers `id N`.
//! - `closes` answers every `on-close` this instance has seen, as `conn:code`
//!   separated by spaces (how a test learns that the host closed a client
//!   that no longer reads, with what code).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hint::black_box;
use std::io::Write;

use berth_plugin::{
    Accept, CloseInfo, ConnError, Connect, ConnectionId, Message, Plugin, Reject, Request, host,
};

/// The plugin's export implementation.
struct Hostile;

/// One allocation step of `alloc`.
const MIB: usize = 1 << 20;
/// Bytes in one line written by `print`, its newline included.
const LINE: usize = 100;

thread_local! {
    /// Messages this instance has handled.
    static MESSAGES: Cell<u64> = const { Cell::new(0) };
    /// The sequence number of this instance's next flood message; it carries
    /// on across floods so that a subscriber can check order over all of them.
    static FLOODED: Cell<u64> = const { Cell::new(0) };
    /// Every `on-close` this instance has seen, as `conn:code`.
    static CLOSES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Connections whose `on-close` must loop.
    static SPIN_ON_CLOSE: RefCell<HashSet<ConnectionId>> = RefCell::new(HashSet::new());
}

/// Sends `text` to `conn`. A refusal is ignored: the test that sent the
/// command notices the missing answer.
fn reply(conn: ConnectionId, text: String) {
    let _ = host::send(conn, Message::text(&text));
}

/// `ok` for success, else the error's name.
fn outcome(result: Result<(), ConnError>, ok: &str) -> String {
    match result {
        Ok(()) => ok.to_string(),
        Err(err) => err.name().to_string(),
    }
}

/// Loops until the host's call deadline stops it. The counter goes through
/// `black_box` so that the loop keeps doing work the compiler cannot drop.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Holds ever more memory until the allocator says no, then traps.
fn alloc(conn: ConnectionId) -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::new();
        // `try_reserve` rather than a plain push: a failed plain allocation
        // aborts at once, and the test wants to hear how far it got.
        if blocks.try_reserve(1).is_err() || block.try_reserve_exact(MIB).is_err() {
            let held = blocks.len();
            // Room for the answer and the panic message.
            blocks.pop();
            reply(conn, format!("alloc-failed {held}"));
            panic!("allocation failed after {held} MiB");
        }
        // Writing every byte makes the memory real, not just reserved.
        block.resize(MIB, 0x5a);
        blocks.push(black_box(block));
        // Sent as it goes, so that the client learns how far it got even when
        // the host ends the call at the failed allocation.
        reply(conn, format!("allocated {}", blocks.len()));
    }
}

/// Recurses until the stack overflows. Each call uses its callee's result,
/// through `black_box`, after the callee returns, so the recursion can be
/// neither turned into a loop nor cut short by the optimizer. The frames are
/// small, so it is the engine's own call-stack limit that stops it rather
/// than the guest's stack in linear memory running out first.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = black_box(recurse(depth + 1));
    below.wrapping_add(depth)
}

/// Writes `megabytes` MB of 100-byte lines to stdout; returns how many lines.
fn print(megabytes: usize) -> usize {
    let lines = megabytes * 1_000_000 / LINE;
    let mut stdout = std::io::stdout().lock();
    // Whole chunks of lines per write: one host call per 64 KiB, not per line.
    let mut chunk = String::with_capacity(64 * 1024 + LINE);
    for n in 0..lines {
        let head = format!("hostile output line {n}");
        chunk.push_str(&head);
        chunk.extend(std::iter::repeat_n('.', LINE - 1 - head.len()));
        chunk.push('\n');
        if chunk.len() >= 64 * 1024 {
            let _ = stdout.write_all(chunk.as_bytes());
            chunk.clear();
        }
    }
    let _ = stdout.write_all(chunk.as_bytes());
    let _ = stdout.flush();
    lines
}

/// Publishes `count` numbered texts of `size` bytes to `topic`; returns the
/// deliveries the host reported.
fn publish_flood(topic: &str, count: u64, size: usize) -> u64 {
    let mut reached = 0;
    for _ in 0..count {
        let seq = FLOODED.get();
        FLOODED.set(seq + 1);
        let mut body = format!("{seq}|");
        body.extend(std::iter::repeat_n('.', size.saturating_sub(body.len())));
        reached += host::publish(topic, Message::text(&body), None)
            .map_or(0, |p| u64::from(p.subscribers));
    }
    reached
}

/// Makes up to `count` tries, stopping at the first error: `N` when every
/// try succeeded, else `N, then ERROR`.
fn tally(count: usize, mut try_one: impl FnMut(usize) -> Result<(), ConnError>) -> String {
    for i in 0..count {
        if let Err(e) = try_one(i) {
            return format!("{i}, then {}", e.name());
        }
    }
    count.to_string()
}

/// Asks the host to hold the requests in the module doc's second list.
fn press_host(conn: ConnectionId, command: &str, rest: &str) -> String {
    let mut args = rest.split(' ').map(|n| n.parse::<usize>().unwrap_or(0));
    let mut number = || args.next().unwrap_or(0);
    match command {
        "big-send" => {
            let (mib, count) = (number(), number());
            let bytes = vec![b'b'; mib * MIB];
            let sent = tally(count, |_| host::send(conn, Message::binary(&bytes)));
            format!("sent {sent}")
        }
        "many-topics" => {
            let topics = tally(number(), |i| host::subscribe(conn, &format!("topic-{i}")));
            format!("subscribed {topics}")
        }
        "long-topic" => {
            let topic = "t".repeat(number() * MIB);
            let subscribed = outcome(host::subscribe(conn, &topic), "ok");
            let published = match host::publish(&topic, Message::text("x"), None) {
                Ok(_) => "ok",
                Err(e) => e.name(),
            };
            format!("subscribe {subscribed}, publish {published}")
        }
        "config-key" => {
            let key = "k".repeat(number() * MIB);
            match host::config_get(&key) {
                Some(value) => format!("config {value}"),
                None => "config none".into(),
            }
        }
        "log-loop" => {
            let count = number();
            let line = "l".repeat(4000);
            for _ in 0..count {
                host::log(berth_plugin::LogLevel::Info, &line);
            }
            format!("logged {count}")
        }
        _ => format!("unknown command {command}"),
    }
}

/// What `on_connect` decides, at once.
fn admit(_conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
    if req.query_params().any(|pair| pair == ("spin", "connect")) {
        spin();
    }
    if let Some((_, mib)) = req.query_params().find(|(name, _)| *name == "reject") {
        let mib: usize = mib.parse().unwrap_or(0);
        return Err(Reject::new(403, "r".repeat(mib * MIB)));
    }
    Ok(Accept::new())
}

impl Plugin for Hostile {
    fn on_connect(_conn: ConnectionId, req: Request) -> Connect {
        admit(_conn, req).into()
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        MESSAGES.set(MESSAGES.get() + 1);
        let Some(text) = msg.as_text() else { return };
        let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
        match command {
            "ping" => reply(conn, "pong".into()),
            "count" => reply(conn, format!("count {}", MESSAGES.get())),
            "whoami" => reply(conn, format!("id {conn}")),
            "closes" => reply(conn, CLOSES.with_borrow(|closes| closes.join(" "))),
            "spin" => spin(),
            "spin-on-close" => {
                SPIN_ON_CLOSE.with_borrow_mut(|conns| conns.insert(conn));
                reply(conn, "armed".into());
            }
            "spin-timer" => match host::set_timer(10, false, 0) {
                Ok(_) => reply(conn, "timer set".into()),
                Err(_) => reply(conn, "too-many-timers".into()),
            },
            "alloc" => alloc(conn),
            "panic" => panic!("asked to panic"),
            "recurse" => {
                let depth = recurse(0);
                // Never reached: the stack overflows first.
                reply(conn, format!("recursion ended at {depth}"));
            }
            "print" => {
                let lines = print(rest.parse().unwrap_or(0));
                reply(conn, format!("printed {lines}"));
            }
            "send" => {
                let answer = match rest.parse() {
                    Ok(target) => outcome(host::send(target, Message::text("hostile")), "ok"),
                    Err(_) => "bad-id".into(),
                };
                reply(conn, answer);
            }
            "close" => {
                let answer = match rest.parse() {
                    Ok(target) => outcome(host::close(target, 4000, "hostile"), "ok"),
                    Err(_) => "bad-id".into(),
                };
                reply(conn, answer);
            }
            "subscribe" => reply(conn, outcome(host::subscribe(conn, rest), "subscribed")),
            "publish-flood" => {
                let mut args = rest.split(' ');
                let topic = args.next().unwrap_or_default();
                let mut number = || args.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                let (count, size) = (number(), number());
                let reached = publish_flood(topic, count, size as usize);
                reply(conn, format!("flooded {reached}"));
            }
            "big-send" | "many-topics" | "long-topic" | "config-key" | "log-loop" => {
                reply(conn, press_host(conn, command, rest));
            }
            _ => reply(conn, format!("unknown command {command}")),
        }
    }

    fn on_close(conn: ConnectionId, info: CloseInfo<'_>) {
        CLOSES.with_borrow_mut(|closes| closes.push(format!("{conn}:{}", info.code)));
        if SPIN_ON_CLOSE.with_borrow(|conns| conns.contains(&conn)) {
            spin();
        }
    }

    fn on_timer(_token: u64) {
        spin();
    }
}

berth_plugin::export!(Hostile);
