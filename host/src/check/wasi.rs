//! What each WASI 0.2 interface gives a plugin under berth, and what to say
//! about one berth does not provide.

use std::collections::BTreeMap;

use super::names::{Name, compatible};

/// What a WASI 0.2 interface gives a plugin under berth, for the interfaces
/// berth links; `None` for the ones it does not.
pub(super) fn wasi_meaning(package: &str, interface: &str) -> Option<&'static str> {
    let table: BTreeMap<(&str, &str), &str> = [
        (
            ("cli", "environment"),
            "environment variables and arguments: empty unless the route grants [route.env]",
        ),
        (("cli", "exit"), "exit: ends the current call as a failure"),
        (("cli", "stdin"), "standard input: always empty"),
        (
            ("cli", "stdout"),
            "standard output: to berth's log, at most 100 lines a second",
        ),
        (
            ("cli", "stderr"),
            "standard error: to berth's log, at most 100 lines a second",
        ),
        (
            ("cli", "terminal-input"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-output"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stdin"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stdout"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stderr"),
            "terminal queries: never a terminal",
        ),
        (("clocks", "monotonic-clock"), "a monotonic clock"),
        (("clocks", "wall-clock"), "the time of day"),
        (
            ("filesystem", "types"),
            "files: only in folders the route grants with [[route.dir]]; none by default",
        ),
        (
            ("filesystem", "preopens"),
            "files: only in folders the route grants with [[route.dir]]; none by default",
        ),
        (
            ("io", "error"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (
            ("io", "poll"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (
            ("io", "streams"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (("random", "random"), "random numbers"),
        (("random", "insecure"), "random numbers"),
        (("random", "insecure-seed"), "random numbers"),
        (
            ("sockets", "network"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "instance-network"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "tcp"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "tcp-create-socket"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "udp"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "udp-create-socket"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "ip-name-lookup"),
            "name lookup: berth grants no network, so every lookup fails",
        ),
    ]
    .into_iter()
    .collect();
    table.get(&(package, interface)).copied()
}

/// Why berth does not provide a WASI import, and what to do about it where
/// that is known.
pub(super) fn wasi_problem(name: &str, parts: &Name<'_>) -> String {
    if parts.package == "http" {
        return format!(
            "imports {name}: berth does not provide WASI HTTP; plugins reach granted origins \
             through berth's outbound interface (the JavaScript SDK's fetch), and a plugin \
             built with componentize-js needs disableFeatures: ['http', 'fetch-event']"
        );
    }
    match parts.version {
        Some(version) if !compatible(version, "0.2.0") => {
            format!("imports {name}: berth provides WASI 0.2, not version {version}")
        }
        _ => format!("imports {name}, a WASI interface berth does not provide"),
    }
}
