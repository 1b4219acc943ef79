//! permessage-deflate (RFC 7692): what berth answers to an offer, messages
//! compressed both ways, the inflate cap against a bomb, corrupt input, and
//! one publish reaching subscribers that negotiated different windows.
//!
//! The client side is written by hand on [`RawClient`], compressing with
//! flate2 as any client would, so that each frame's RSV1 bit and bytes are
//! what the test says they are.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::raw::{CONTINUATION, MASK, PING, RawClient, ServerFrame, TEXT, frame, http_get};
use crate::support::{
    BerthProcess, TestServer, WAIT, ask, config_text, connect, echoes, noise, rss_bytes,
};

const BINARY: u8 = 0x2;
const RSV1: u8 = 0b100;

/// What a browser sends.
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

const ROUTES: &str = r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"

[[route]]
path = "/plain"
plugin = "echo.wasm"
compression = "off"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
"#;

/// A chat message of about `len` bytes, in the JSON that real-time
/// handlers send: it shrinks several times.
fn json(len: usize, seed: usize) -> String {
    let mut text = String::from("[");
    let mut i = seed;
    while text.len() < len {
        text.push_str(&format!(
            r#"{{"type":"message","room":"lobby","user":"user-{}","text":"message number {i}"}},"#,
            i % 13
        ));
        i += 1;
    }
    text.pop();
    text.push(']');
    text
}

/// `payload` compressed as one message, as a client that takes no context
/// over compresses it: a sync flush, its `00 00 FF FF` taken off.
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    compressor
        .compress_vec(payload, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert_eq!(compressor.total_in() as usize, payload.len(), "all taken");
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

/// A compressed message's payload inflated with a window of `window_bits`,
/// which fails if the server used a larger one.
fn inflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut inflater = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::with_capacity(payload.len() * 20 + 64);
    inflater
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's message inflates");
    assert_eq!(
        inflater.total_in() as usize,
        input.len(),
        "output room ran out"
    );
    out
}

/// Upgrades to `path` offering `extensions` (a header line, or none).
async fn upgrade(
    addr: std::net::SocketAddr,
    path: &str,
    extensions: &[&str],
) -> (RawClient, String) {
    let (client, head) = RawClient::upgrade(addr, path, extensions).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "not upgraded: {head}");
    (client, head.to_ascii_lowercase())
}

/// The next data frame, past the server's pings.
async fn data_frame(client: &mut RawClient) -> ServerFrame {
    loop {
        let frame = client.next_frame().await.expect("a data frame");
        if frame.opcode != PING {
            assert!(frame.fin, "berth sends each message in one frame");
            return frame;
        }
    }
}

/// A masked, compressed, final client frame.
fn compressed(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, RSV1, opcode, &deflate(payload), Some(MASK))
}

#[tokio::test]
async fn offers_are_answered_without_context_takeover_and_with_the_window_asked_for() {
    let server = TestServer::start(ROUTES).await;
    let (_, head) = upgrade(server.addr, "/echo", &[OFFER]).await;
    assert!(
        head.contains("\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
        "{head}"
    );
    let (_, head) = upgrade(
        server.addr,
        "/echo",
        &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"],
    )
    .await;
    assert!(head.contains("; server_max_window_bits=10\r\n"), "{head}");

    // Offers berth cannot take, a route that does not compress, and a client
    // that offers nothing: no extension, and the connection still opens.
    for (path, offer) in [
        (
            "/echo",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8",
        ),
        (
            "/echo",
            "Sec-WebSocket-Extensions: permessage-deflate; mystery=1",
        ),
        ("/echo", "Sec-WebSocket-Extensions: x-webkit-deflate-frame"),
        ("/plain", OFFER),
    ] {
        let (_, head) = upgrade(server.addr, path, &[offer]).await;
        assert!(
            !head.contains("sec-websocket-extensions"),
            "{path} {offer}: {head}"
        );
    }
    let (_, head) = upgrade(server.addr, "/echo", &[]).await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn messages_are_compressed_both_ways_above_the_threshold() {
    let server = TestServer::start(ROUTES).await;
    let (mut client, _) = upgrade(server.addr, "/echo", &[OFFER]).await;

    // A large message comes back compressed, several times smaller.
    let big = json(8 * 1024, 0);
    client
        .write(&compressed(TEXT, big.as_bytes()))
        .await
        .unwrap();
    let echo = data_frame(&mut client).await;
    assert!(echo.rsv1, "compressed");
    assert_eq!(echo.opcode, TEXT);
    assert!(
        echo.payload.len() * 4 < big.len(),
        "{} bytes",
        echo.payload.len()
    );
    assert_eq!(inflate(&echo.payload, 15), big.as_bytes());

    // One under the threshold (1 KiB) comes back plain, whichever way it came.
    let small = json(300, 1);
    client
        .write(&compressed(TEXT, small.as_bytes()))
        .await
        .unwrap();
    let echo = data_frame(&mut client).await;
    assert!(!echo.rsv1);
    assert_eq!(echo.payload, small.as_bytes());

    // A message that does not shrink goes plain, even above the threshold.
    let noise = noise(0x9E37_79B9_7F4A_7C15, 4096);
    client.write(&compressed(BINARY, &noise)).await.unwrap();
    let echo = data_frame(&mut client).await;
    assert!(!echo.rsv1);
    assert_eq!((echo.opcode, echo.payload), (BINARY, noise));

    // A compressed message in fragments: RSV1 on the first only, with a
    // ping between them.
    let packed = deflate(big.as_bytes());
    let (a, rest) = packed.split_at(packed.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(false, RSV1, TEXT, a, Some(MASK));
    bytes.extend(frame(true, 0, PING, b"mid", Some(MASK)));
    bytes.extend(frame(false, 0, CONTINUATION, b, Some(MASK)));
    bytes.extend(frame(true, 0, CONTINUATION, c, Some(MASK)));
    client.write(&bytes).await.unwrap();
    let pong = client.next_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    let echo = data_frame(&mut client).await;
    assert_eq!(inflate(&echo.payload, 15), big.as_bytes());

    // Plain messages still pass on a compressed connection.
    client
        .write(&frame(true, 0, TEXT, big.as_bytes(), Some(MASK)))
        .await
        .unwrap();
    let echo = data_frame(&mut client).await;
    assert_eq!(inflate(&echo.payload, 15), big.as_bytes());

    // A client that asked for a 9-bit window can inflate with one.
    let (mut small_window, _) = upgrade(
        server.addr,
        "/echo",
        &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9"],
    )
    .await;
    let long = json(32 * 1024, 2);
    small_window
        .write(&compressed(TEXT, long.as_bytes()))
        .await
        .unwrap();
    let echo = data_frame(&mut small_window).await;
    assert!(echo.rsv1);
    assert_eq!(inflate(&echo.payload, 9), long.as_bytes());

    // A client that offered nothing gets plain frames and may not set RSV1.
    let (mut plain, _) = upgrade(server.addr, "/echo", &[]).await;
    plain.send_text(&big).await;
    let echo = data_frame(&mut plain).await;
    assert!(!echo.rsv1);
    assert_eq!(echo.payload, big.as_bytes());

    // What compression saved shows in the metrics.
    let (status, metrics) = http_get(server.addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        let series = format!("{name}{{route=\"/echo\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.unwrap_or_else(|| panic!("no {series}in\n{metrics}"))[series.len()..]
            .parse()
            .unwrap()
    };
    let (payload, wire) = (
        value("berth_sent_bytes_total"),
        value("berth_sent_wire_bytes_total"),
    );
    println!("sent {payload} payload bytes as {wire} on the wire");
    assert!(wire < payload / 2.0, "{wire} of {payload}");
    server.stop().await;
}

/// Sends `offence` on a connection that negotiated compression and returns
/// the close code berth answers with.
async fn close_code_for(offence: Vec<u8>) -> (u16, String) {
    let server = TestServer::start(ROUTES).await;
    let (mut client, _) = upgrade(server.addr, "/echo", &[OFFER]).await;
    client.write(&offence).await.unwrap();
    let answer = client.expect_close().await;
    server.stop().await;
    answer
}

#[tokio::test]
async fn corrupt_or_misplaced_compression_closes_the_connection() {
    // A block of the reserved type: not DEFLATE.
    let corrupt = frame(true, RSV1, BINARY, &[0x07, 0x00], Some(MASK));
    assert_eq!(
        close_code_for(corrupt).await,
        (1007, "invalid compressed data".into())
    );

    // Valid DEFLATE whose text is not UTF-8.
    let bad_text = compressed(
        TEXT,
        b"caf\xC3 au lait and some more text to make it worth it",
    );
    assert_eq!(close_code_for(bad_text).await.0, 1007);

    // RSV1 belongs on a message's first frame, never a continuation or a ping.
    let mut late = frame(false, 0, TEXT, b"plain start", Some(MASK));
    late.extend(frame(
        true,
        RSV1,
        CONTINUATION,
        &deflate(b"then compressed"),
        Some(MASK),
    ));
    assert_eq!(close_code_for(late).await.0, 1002);
    let ping = frame(true, RSV1, PING, b"", Some(MASK));
    assert_eq!(close_code_for(ping).await.0, 1002);
}

/// A few KB of valid DEFLATE that inflates to `gib` GiB of zeros: the same
/// sync-flushed MiB of zeros, over and over (each copy stands alone, so the
/// copies make one valid stream).
fn bomb(gib: usize) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::best(), false);
    let mut mib = Vec::with_capacity(8 * 1024);
    compressor
        .compress_vec(&vec![0u8; 1 << 20], &mut mib, FlushCompress::Sync)
        .expect("compress");
    mib.repeat(gib * 1024)
}

#[tokio::test]
async fn an_inflate_bomb_costs_no_more_than_the_cap_and_closes_with_1009() {
    const CAP: usize = 4 << 20;
    const BOMBERS: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let routes =
        format!("[[route]]\npath = \"/echo\"\nplugin = \"echo.wasm\"\nmax-message-size = {CAP}\n");
    let berth = BerthProcess::with_config(dir.path(), &config_text(&routes));
    let url = berth.url("/echo");

    let payload = bomb(1);
    assert!(
        payload.len() < CAP,
        "the bomb passes the size check: {} bytes",
        payload.len()
    );
    println!("bomb: {} KiB that inflate to 1 GiB", payload.len() / 1024);
    let bytes = frame(true, RSV1, BINARY, &payload, Some(MASK));

    // Warm up: one ordinary compressed echo brings the allocator and the
    // codec's buffers in before the baseline.
    let (mut warm, _) = upgrade(berth.addr, "/echo", &[OFFER]).await;
    let text = json(4096, 0);
    warm.write(&compressed(TEXT, text.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        inflate(&data_frame(&mut warm).await.payload, 15),
        text.as_bytes()
    );
    let before = rss_bytes(berth.pid());

    let mut peak = before;
    let bombers = (0..BOMBERS).map(|_| {
        let bytes = bytes.clone();
        async move {
            let (mut client, _) = upgrade(berth.addr, "/echo", &[OFFER]).await;
            client.write(&bytes).await.unwrap();
            client.expect_close().await
        }
    });
    let closes = tokio::time::timeout(WAIT, async {
        let all = futures_util::future::join_all(bombers);
        tokio::pin!(all);
        loop {
            tokio::select! {
                closes = &mut all => break closes,
                () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {
                    peak = peak.max(rss_bytes(berth.pid()));
                }
            }
        }
    })
    .await
    .expect("every bomber is closed in time");
    peak = peak.max(rss_bytes(berth.pid()));
    for (code, reason) in closes {
        assert_eq!((code, reason.as_str()), (1009, "message too big"));
    }
    let grown = peak.saturating_sub(before);
    println!(
        "resident memory: {} KiB before, peak {} KiB: {:.2}x the cap per bomber",
        before / 1024,
        peak / 1024,
        grown as f64 / (BOMBERS as f64 * CAP as f64)
    );
    assert!(
        grown < BOMBERS * 2 * CAP as u64,
        "grew {} KiB for {BOMBERS} bombers with a {} KiB cap",
        grown / 1024,
        CAP / 1024
    );

    // The server still serves.
    echoes(&mut connect(&url).await, "after").await;
}

#[tokio::test]
async fn a_publish_reaches_every_kind_of_subscriber_intact() {
    let server = TestServer::start(ROUTES).await;
    let mut wide = Vec::new();
    for _ in 0..3 {
        wide.push(upgrade(server.addr, "/kit", &[OFFER]).await.0);
    }
    let (narrow, _) = upgrade(
        server.addr,
        "/kit",
        &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9"],
    )
    .await;
    let (plain, _) = upgrade(server.addr, "/kit", &[]).await;
    let mut all: Vec<(RawClient, Option<u8>)> = wide.into_iter().map(|c| (c, Some(15))).collect();
    all.push((narrow, Some(9)));
    all.push((plain, None));
    for (client, _) in &mut all {
        assert_eq!(client.round_trip("subscribe news").await, "subscribed");
    }

    let mut publisher = connect(&server.url("/kit")).await;
    let texts: Vec<String> = (0..5).map(|i| json(2048 + i * 1000, i)).collect();
    for text in &texts {
        let command = format!("publish news {text}");
        assert_eq!(ask(&mut publisher, &command).await, "published 5");
    }
    for (client, window) in &mut all {
        for text in &texts {
            let got = data_frame(client).await;
            assert_eq!(got.rsv1, window.is_some());
            let payload = match window {
                Some(bits) => inflate(&got.payload, *bits),
                None => got.payload,
            };
            assert_eq!(payload, text.as_bytes(), "window {window:?}");
        }
    }
    server.stop().await;
}
