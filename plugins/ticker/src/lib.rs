//! Ticker: a live price feed. A client sends `subscribe:SYMBOL` (or
//! `unsubscribe:SYMBOL`); a repeating timer moves every watched symbol's price
//! and publishes it to the topic `SYMBOL`, so the host fans each update out to
//! every subscriber. Updates are JSON:
//! `{"type":"price","symbol":"ACME","price":101.25,"time":1700000000000}`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_plugin::{CloseInfo, ConnectionId, Message, Plugin, TimerId, host};

/// How often prices move; well under the 200 ms a dashboard expects.
const TICK_MS: u32 = 100;

#[derive(Default)]
struct Feed {
    /// Watched symbols: price in cents, and how many connections watch it.
    prices: BTreeMap<String, (i64, u32)>,
    /// What each connection watches.
    watching: HashMap<ConnectionId, BTreeSet<String>>,
    timer: Option<TimerId>,
    rng: u64,
}

thread_local! {
    static FEED: RefCell<Feed> = RefCell::new(Feed { rng: 0x9e37_79b9_7f4a_7c15, ..Feed::default() });
}

impl Feed {
    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for a demo's random walk.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn watch(&mut self, conn: ConnectionId, symbol: &str) -> i64 {
        let entry = self.prices.entry(symbol.to_string()).or_insert((10_000, 0));
        if self
            .watching
            .entry(conn)
            .or_default()
            .insert(symbol.to_string())
        {
            entry.1 += 1;
        }
        let price = entry.0;
        if self.timer.is_none() {
            self.timer = host::set_timer(TICK_MS, true, 0).ok();
        }
        price
    }

    fn unwatch(&mut self, conn: ConnectionId, symbol: &str) {
        let removed = self
            .watching
            .get_mut(&conn)
            .is_some_and(|symbols| symbols.remove(symbol));
        if removed && let Some(entry) = self.prices.get_mut(symbol) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.prices.remove(symbol);
            }
        }
        if self.prices.is_empty()
            && let Some(timer) = self.timer.take()
        {
            host::cancel_timer(timer);
        }
    }
}

/// A price update for `symbol`, as the JSON text to send.
fn update(symbol: &str, cents: i64) -> String {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        r#"{{"type":"price","symbol":"{symbol}","price":{}.{:02},"time":{time}}}"#,
        cents / 100,
        cents % 100
    )
}

/// A symbol is 1 to 12 upper-case letters or digits.
fn valid_symbol(symbol: &str) -> bool {
    (1..=12).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

struct Ticker;

impl Plugin for Ticker {
    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let Some(text) = msg.as_text() else { return };
        if let Some(symbol) = text.strip_prefix("subscribe:") {
            if !valid_symbol(symbol) {
                let error = r#"{"type":"error","reason":"symbols are 1-12 of A-Z and 0-9"}"#;
                let _ = host::send(conn, Message::text(error));
                return;
            }
            if host::subscribe(conn, symbol).is_ok() {
                let price = FEED.with_borrow_mut(|feed| feed.watch(conn, symbol));
                let _ = host::send(conn, Message::text(&update(symbol, price)));
            }
        } else if let Some(symbol) = text.strip_prefix("unsubscribe:") {
            let _ = host::unsubscribe(conn, symbol);
            FEED.with_borrow_mut(|feed| feed.unwatch(conn, symbol));
        }
    }

    fn on_close(conn: ConnectionId, _info: CloseInfo<'_>) {
        // The host has already ended the connection's subscriptions.
        FEED.with_borrow_mut(|feed| {
            let symbols: Vec<String> = feed
                .watching
                .get(&conn)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for symbol in symbols {
                feed.unwatch(conn, &symbol);
            }
            feed.watching.remove(&conn);
        });
    }

    fn on_timer(_token: u64) {
        let updates: Vec<(String, i64)> = FEED.with_borrow_mut(|feed| {
            let moves: Vec<i64> = (0..feed.prices.len())
                .map(|_| (feed.next_random() % 41) as i64 - 20)
                .collect();
            feed.prices
                .iter_mut()
                .zip(moves)
                .map(|((symbol, (cents, _)), delta)| {
                    *cents = (*cents + delta).max(1);
                    (symbol.clone(), *cents)
                })
                .collect()
        });
        for (symbol, cents) in updates {
            let _ = host::publish(&symbol, Message::text(&update(&symbol, cents)), None);
        }
    }
}

berth_plugin::export!(Ticker);
