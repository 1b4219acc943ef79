//! Protocol conformance around the upgrade and at close, checked byte for
//! byte: every request here is written by hand on a bare TCP socket and every
//! answer read raw, because client libraries hide exactly what browsers and
//! other libraries are strict about (status lines, header lists, whether a
//! body or a close code is on the wire, whether the socket ends).
//!
//! The plain answers already checked in `handshake.rs` (`/healthz`, 404, 426
//! for a plain GET, 426 for version 8, 400 for a short key, the RFC sample
//! accept key) and the close-handshake timeout checked in `hostile_clients.rs`
//! (`a_peer_that_never_answers_our_close_is_dropped_after_close_timeout`) are
//! not repeated here.

use crate::raw::{
    ACCEPT, Answer, CLOSE, RawClient, TEXT, UPGRADE, client_frame, close_payload, request_head,
};
use crate::support::{ECHO_AND_KIT, TestServer, await_on_close};

/// An echo route and a testkit route (whose `close CODE REASON` command
/// closes with any code and reason, and whose `closes` record tells what
/// `on-close` heard).
const ROUTES: &str = ECHO_AND_KIT;

/// Whether `answer` is an HTTP/1.1 answer with `status`.
fn is_11(answer: &Answer, status: u16) -> bool {
    answer.status == status && answer.status_line.starts_with("HTTP/1.1 ")
}

/// Plain requests kept alive on a socket, then an upgrade on that same socket.
#[tokio::test]
async fn requests_kept_alive_before_an_upgrade_leave_the_socket_able_to_upgrade() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = RawClient::open(addr).await;
    let healthz = wire
        .exchange(&request_head("GET", "/healthz", "HTTP/1.1", addr, &[]))
        .await;
    assert!(is_11(&healthz, 200), "{healthz:?}");
    assert_eq!(healthz.body, b"ok\n");
    // A plain GET on the route, then a refused upgrade: neither ends the socket.
    let plain = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &[]))
        .await;
    assert!(is_11(&plain, 426), "{plain:?}");
    let mut bad_key = UPGRADE;
    bad_key[2] = "Sec-WebSocket-Key: AAAA";
    let refused = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &bad_key))
        .await;
    assert!(is_11(&refused, 400), "{refused:?}");

    let upgrade = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &UPGRADE))
        .await;
    assert!(is_11(&upgrade, 101), "{upgrade:?}");
    assert_eq!(
        upgrade.header("sec-websocket-accept").as_deref(),
        Some(ACCEPT)
    );
    assert!(upgrade.lists("upgrade", "websocket"), "{upgrade:?}");
    assert!(upgrade.lists("connection", "upgrade"), "{upgrade:?}");
    // RFC 9110 section 8.6: no Content-Length in a 1xx answer.
    assert_eq!(upgrade.header("content-length"), None, "{upgrade:?}");
    assert_eq!(
        wire.round_trip("on the same socket").await,
        "on the same socket"
    );
    server.stop().await;
}

/// Header names in any case, and `Upgrade`/`Connection` values as token lists in any case.
#[tokio::test]
async fn header_names_and_tokens_match_in_any_case_and_in_lists() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let variants: [&[&str]; 3] = [
        // Firefox's Connection list, names in capitals and in lower case.
        &[
            "UPGRADE: WebSocket",
            "CONNECTION: keep-alive, Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "SEC-WEBSOCKET-VERSION: 13",
        ],
        // The Connection tokens split over two header lines.
        &[
            "upgrade: websocket",
            "Connection: keep-alive",
            "connection: UPGRADE",
            "Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ],
        // Two protocols offered, and a list without spaces.
        &[
            "Upgrade: h2c, WEBSOCKET",
            "Connection: Upgrade,keep-alive",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ],
    ];
    for headers in variants {
        let mut wire = RawClient::open(addr).await;
        let answer = wire
            .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, headers))
            .await;
        assert!(is_11(&answer, 101), "{headers:?}: {answer:?}");
        assert_eq!(
            answer.header("sec-websocket-accept").as_deref(),
            Some(ACCEPT)
        );
        assert_eq!(wire.round_trip("any case").await, "any case");
    }
    server.stop().await;
}

/// A client that writes its first frame with the request head loses nothing.
#[tokio::test]
async fn a_frame_written_right_behind_the_request_head_is_not_lost() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = RawClient::open(addr).await;
    // Head and first frame in one write, as a pipelining client sends them.
    let mut bytes = request_head("GET", "/echo", "HTTP/1.1", addr, &UPGRADE).into_bytes();
    bytes.extend(client_frame(TEXT, b"eager"));
    wire.write(&bytes).await.expect("written");
    let answer = wire.answer(false).await;
    assert!(is_11(&answer, 101), "{answer:?}");
    let eager = wire.next_non_ping().await;
    assert_eq!((eager.opcode, eager.payload), (TEXT, b"eager".to_vec()));
    server.stop().await;
}

/// Every way a `Sec-WebSocket-Key` can be wrong is answered 400.
#[tokio::test]
async fn a_missing_repeated_or_malformed_key_is_400() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let keys: [&[&str]; 8] = [
        &[],
        // Base64 of 15 and of 17 bytes.
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"],
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="],
        // 24 characters, but not base64.
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q=="],
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=A"],
        // Not the base64 of any 16 bytes: the last digit has bits past the 128th.
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR=="],
        &["Sec-WebSocket-Key: "],
        // Two keys: RFC 6455 section 11.3.1 allows one.
        &[
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
        ],
    ];
    // One socket for all: a refusal keeps an HTTP/1.1 socket open.
    let mut wire = RawClient::open(addr).await;
    for key in keys {
        let mut headers = vec![UPGRADE[0], UPGRADE[1], UPGRADE[3]];
        headers.extend_from_slice(key);
        let answer = wire
            .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &headers))
            .await;
        assert!(is_11(&answer, 400), "{key:?}: {answer:?}");
        assert_eq!(answer.header("sec-websocket-accept"), None);
    }
    // Another 16-byte key than the sample one is of course fine.
    let mut other = UPGRADE;
    other[2] = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==";
    let answer = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &other))
        .await;
    assert!(is_11(&answer, 101), "{answer:?}");
    server.stop().await;
}

/// Every way a `Sec-WebSocket-Version` can be wrong is answered 426 naming 13.
#[tokio::test]
async fn a_missing_repeated_or_unknown_version_is_426_naming_13() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let versions: [&[&str]; 4] = [
        &[],
        &["Sec-WebSocket-Version: 14"],
        &["Sec-WebSocket-Version: 13, 8"],
        &["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"],
    ];
    let mut wire = RawClient::open(addr).await;
    for version in versions {
        let mut headers = UPGRADE[..3].to_vec();
        headers.extend_from_slice(version);
        let answer = wire
            .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &headers))
            .await;
        assert!(is_11(&answer, 426), "{version:?}: {answer:?}");
        assert_eq!(
            answer.header("sec-websocket-version").as_deref(),
            Some("13")
        );
    }
    server.stop().await;
}

/// Methods besides GET and HEAD get 405 with `Allow`; HEAD gets a GET's answer without its body.
#[tokio::test]
async fn other_methods_are_405_and_head_answers_like_a_plain_get() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = RawClient::open(addr).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for headers in [&[][..], &UPGRADE[..]] {
            let answer = wire
                .exchange(&request_head(method, "/echo", "HTTP/1.1", addr, headers))
                .await;
            assert!(is_11(&answer, 405), "{method}: {answer:?}");
            assert_eq!(
                answer.header("allow").as_deref(),
                Some("GET, HEAD"),
                "{method}"
            );
        }
    }
    // HEAD never upgrades: it gets the plain GET's 426 and its headers, and no
    // body (the next answer on the socket starts right after the head).
    let get = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &[]))
        .await;
    assert!(is_11(&get, 426), "{get:?}");
    for headers in [&[][..], &UPGRADE[..]] {
        let answer = wire
            .exchange(&request_head("HEAD", "/echo", "HTTP/1.1", addr, headers))
            .await;
        assert!(is_11(&answer, 426), "{answer:?}");
        assert!(answer.lists("upgrade", "websocket"), "{answer:?}");
        assert_eq!(
            answer.header("content-length"),
            get.header("content-length")
        );
        assert_eq!(answer.header("sec-websocket-accept"), None);
        let next = wire
            .exchange(&request_head("GET", "/healthz", "HTTP/1.1", addr, &[]))
            .await;
        assert!(
            is_11(&next, 200),
            "a body followed the HEAD answer: {next:?}"
        );
    }
    server.stop().await;
}

/// Heads over 16 KiB or 100 headers get a real 431 and a clean end; smaller ones upgrade.
#[tokio::test]
async fn request_heads_over_the_limit_are_answered_431_before_the_socket_ends() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    // One 64 KiB header (the server stops reading at its limit, so most of
    // this is still unread when it answers), 200 small headers, and 24 KiB
    // over many lines: each is too large, and must get a real answer rather
    // than a reset that would lose it.
    let long = format!("X-Filler: {}", "f".repeat(64 * 1024));
    let many: Vec<String> = (0..200).map(|i| format!("X-Many-{i}: {i}")).collect();
    let lines: Vec<String> = (0..24)
        .map(|i| format!("X-Kib-{i}: {}", "k".repeat(1010)))
        .collect();
    for extra in [vec![long], many, lines] {
        let mut headers: Vec<&str> = UPGRADE.to_vec();
        headers.extend(extra.iter().map(String::as_str));
        let mut wire = RawClient::open(addr).await;
        let _ = wire
            .write(request_head("GET", "/echo", "HTTP/1.1", addr, &headers).as_bytes())
            .await;
        let answer = wire.answer(false).await;
        assert!(is_11(&answer, 431), "{answer:?}");
        assert_eq!(wire.end_cleanly().await, b"", "bytes after the 431");
    }
    // A large head within the limit (cookies, say) still upgrades.
    let cookie = format!("Cookie: session={}", "c".repeat(12 * 1024));
    let mut headers: Vec<&str> = UPGRADE.to_vec();
    headers.push(&cookie);
    let mut wire = RawClient::open(addr).await;
    let answer = wire
        .exchange(&request_head("GET", "/echo", "HTTP/1.1", addr, &headers))
        .await;
    assert!(is_11(&answer, 101), "{answer:?}");
    assert_eq!(wire.round_trip("big head").await, "big head");
    server.stop().await;
}

/// An upgrade over HTTP/1.0 gets an HTTP/1.0 4xx and the socket ends, keep-alive or not.
#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_in_http_1_0_and_the_socket_closed() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut keep_alive = UPGRADE;
    keep_alive[1] = "Connection: keep-alive, Upgrade";
    for headers in [UPGRADE, keep_alive] {
        let mut wire = RawClient::open(addr).await;
        let answer = wire
            .exchange(&request_head("GET", "/echo", "HTTP/1.0", addr, &headers))
            .await;
        assert!(answer.status_line.starts_with("HTTP/1.0 4"), "{answer:?}");
        assert_eq!(answer.header("sec-websocket-accept"), None);
        // Ended even when the client asked to keep it: no upgrade can come
        // on it, and a client waiting for one would wait in vain.
        let rest = wire.end_cleanly().await;
        assert!(rest.is_empty(), "more after the refusal: {rest:?}");
    }
    server.stop().await;
}

/// The server's close frame echoes the client's code, and the server ends the socket first.
#[tokio::test]
async fn the_server_echoes_the_clients_close_code_then_ends_the_socket() {
    let server = TestServer::start(ROUTES).await;
    let kit = server.url("/kit");
    let mut wire = RawClient::connect(server.addr, "/kit").await;
    let id = wire.round_trip("whoami").await.replace("id ", "");
    wire.write(&client_frame(CLOSE, &close_payload(4321, "done here")))
        .await
        .expect("close written");
    let payload = wire.close_payload().await;
    assert_eq!(
        payload.get(..2),
        Some(&4321u16.to_be_bytes()[..]),
        "{payload:?}"
    );
    // RFC 6455 section 7.1.1: the server ends the TCP connection first.
    assert!(
        wire.end_cleanly().await.is_empty(),
        "frames after the close"
    );
    await_on_close(&kit, &id, 4321).await;

    // A plugin-asked close is answered by the client's echo, then ended too.
    let mut wire = RawClient::connect(server.addr, "/kit").await;
    wire.write(&client_frame(TEXT, b"close 4002 enough"))
        .await
        .expect("command written");
    assert_eq!(wire.close_payload().await, close_payload(4002, "enough"));
    wire.write(&client_frame(CLOSE, &4002u16.to_be_bytes()))
        .await
        .expect("echo written");
    assert!(
        wire.end_cleanly().await.is_empty(),
        "frames after the close"
    );
    server.stop().await;
}

/// A close frame without a code is echoed empty; 1005 reaches only `on-close`.
#[tokio::test]
async fn a_close_without_a_code_is_answered_with_an_empty_close_not_1005() {
    let server = TestServer::start(ROUTES).await;
    let mut wire = RawClient::connect(server.addr, "/kit").await;
    let id = wire.round_trip("whoami").await.replace("id ", "");
    wire.write(&client_frame(CLOSE, b""))
        .await
        .expect("close written");
    assert_eq!(
        wire.close_payload().await,
        b"",
        "the echo of an empty close"
    );
    assert!(
        wire.end_cleanly().await.is_empty(),
        "frames after the close"
    );
    // 1005 is what on-close hears, never what is sent.
    await_on_close(&server.url("/kit"), &id, 1005).await;
    server.stop().await;
}

/// A plugin's close code must be one that may be on the wire; those that may are sent as given.
#[tokio::test]
async fn a_plugin_can_close_with_every_sendable_code_and_with_no_other() {
    // `lifecycle.rs` checks 1005; here the other codes RFC 6455 section 7.4
    // reserves or forbids on the wire, and the edges of the sendable ranges.
    let server = TestServer::start(ROUTES).await;
    for code in [0u16, 999, 1004, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut wire = RawClient::connect(server.addr, "/kit").await;
        let answer = wire.round_trip(&format!("close {code} nope")).await;
        assert_eq!(answer, "error invalid-code", "close {code}");
        // The connection stays open and usable.
        assert!(wire.round_trip("whoami").await.starts_with("id "));
    }
    // 1012-1014 are registered with IANA for servers to send (1014: bad gateway).
    for code in [1000u16, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
        let mut wire = RawClient::connect(server.addr, "/kit").await;
        wire.write(&client_frame(TEXT, format!("close {code} bye").as_bytes()))
            .await
            .expect("command written");
        assert_eq!(
            wire.close_payload().await,
            close_payload(code, "bye"),
            "close {code}"
        );
    }
    server.stop().await;
}

/// A plugin's close reason is cut to fit the frame, never inside a character.
#[tokio::test]
async fn a_long_close_reason_is_cut_to_123_bytes_at_a_character_boundary() {
    let server = TestServer::start(ROUTES).await;
    // "é" is the 123rd and 124th bytes: the cut falls inside it, so it goes whole.
    let straddling = format!("{}é and more", "a".repeat(122));
    let exact = "b".repeat(123);
    let over = "c".repeat(200);
    let euro = format!("{}€tail", "d".repeat(120));
    let cases = [
        (straddling.as_str(), "a".repeat(122)),
        (exact.as_str(), exact.clone()),
        (over.as_str(), "c".repeat(123)),
        // A three-byte character ending exactly at byte 123 stays.
        (euro.as_str(), format!("{}€", "d".repeat(120))),
    ];
    for (reason, sent) in cases {
        let mut wire = RawClient::connect(server.addr, "/kit").await;
        wire.write(&client_frame(
            TEXT,
            format!("close 4000 {reason}").as_bytes(),
        ))
        .await
        .expect("command written");
        let payload = wire.close_payload().await;
        assert!(
            payload.len() <= 125,
            "a {}-byte close payload",
            payload.len()
        );
        assert_eq!(payload, close_payload(4000, &sent), "reason {reason:?}");
    }
    server.stop().await;
}
