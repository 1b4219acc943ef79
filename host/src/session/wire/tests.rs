//! Unit tests of `wire`.

use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A wire over an in-memory pipe of `capacity` bytes each way, so that
/// writes larger than that are taken in parts, and a client for it.
async fn pair(capacity: usize) -> (Wire<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (server, client) = tokio::io::duplex(capacity);
    let wire = Wire::new(server, 64 << 20, None);
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    (wire, client)
}

/// Reads `count` messages on a task of its own, so that the wire can
/// write while they are read.
fn read(
    mut client: WebSocketStream<DuplexStream>,
    count: usize,
) -> tokio::task::JoinHandle<Vec<WsMessage>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < count {
            let next = client.next().await.expect("a message");
            got.push(next.expect("a valid frame"));
        }
        got
    })
}

fn binary(len: usize, seed: u8) -> WsMessage {
    WsMessage::binary(
        (0..len)
            .map(|i| (i as u8).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn every_length_class_arrives_whole_through_partial_writes() {
    let (mut wire, client) = pair(1000).await;
    let mut sent = Vec::new();
    for (seed, len) in [
        0,
        1,
        125,
        126,
        127,
        65_535,
        65_536,
        LARGE - 1,
        LARGE,
        300_000,
    ]
    .into_iter()
    .enumerate()
    {
        sent.push(binary(len, seed as u8));
        sent.push(WsMessage::text("é".repeat(len / 2)));
    }
    let mut queue: VecDeque<_> = sent.iter().cloned().map(Outbound::from).collect();
    let mut traffic = Traffic::default();
    let reader = read(client, sent.len());
    wire.drain(&mut queue, &mut traffic).await.unwrap();
    assert_eq!(reader.await.unwrap(), sent);
}

#[tokio::test]
async fn a_pong_waits_until_the_frame_being_written_is_whole() {
    let (mut wire, mut client) = pair(4096).await;
    let big = binary(200_000, 7);
    let mut queue = VecDeque::from([big.clone().into(), WsMessage::text("after").into()]);
    let mut traffic = Traffic::default();
    wire.frame(&mut queue, &mut traffic);
    // The pipe takes a part of the large frame and is then full.
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(wire.poll_write(&mut cx).is_pending());
    assert!(wire.tail.is_some(), "the large payload is mid-write");

    client
        .send(WsMessage::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    let ping = std::future::poll_fn(|cx| wire.poll_read(cx)).await;
    assert!(matches!(ping, Some(Ok(WsMessage::Ping(_)))));
    assert!(wire.has_output());

    let reader = read(client, 3);
    wire.drain(&mut queue, &mut traffic).await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got[0], big);
    // The pong goes between two whole data frames.
    assert_eq!(got[1], WsMessage::Pong(Bytes::from_static(b"p")));
    assert_eq!(got[2], WsMessage::text("after"));
}

#[tokio::test]
async fn a_close_goes_out_after_the_data_before_it_and_ends_what_is_sent() {
    let (mut wire, client) = pair(64).await;
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    let sent = [WsMessage::text("last words"), WsMessage::Close(Some(close))];
    let mut queue = sent.iter().cloned().map(Outbound::from).collect();
    let mut traffic = Traffic::default();
    let reader = read(client, 2);
    wire.drain(&mut queue, &mut traffic).await.unwrap();
    assert_eq!(reader.await.unwrap(), sent);
    // After the close frame, no control frame follows it.
    wire.frame(
        &mut VecDeque::from([WsMessage::Ping(Bytes::new()).into()]),
        &mut traffic,
    );
    assert!(!wire.has_output());
}

#[tokio::test]
async fn buffered_data_stops_at_a_control_frame_which_poll_read_returns_next() {
    let (mut wire, mut client) = pair(1 << 16).await;
    for msg in [
        WsMessage::text("a"),
        WsMessage::text("b"),
        WsMessage::Ping(Bytes::from_static(b"p")),
        WsMessage::binary(vec![1]),
    ] {
        client.feed(msg).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Some(Ok(first))) = wire.poll_read(&mut cx) else {
        panic!("a message is ready");
    };
    assert_eq!(first, WsMessage::text("a"));
    assert_eq!(wire.buffered_data(), Some(WsMessage::text("b")));
    assert_eq!(wire.buffered_data(), None, "the ping is held");
    assert!(wire.has_output(), "and already answered");
    let Poll::Ready(Some(Ok(WsMessage::Ping(_)))) = wire.poll_read(&mut cx) else {
        panic!("the held ping comes next");
    };
    assert_eq!(wire.buffered_data(), Some(WsMessage::binary(vec![1])));
    assert_eq!(wire.buffered_data(), None);
}

#[tokio::test]
async fn a_ping_is_answered_and_a_close_echoed_once() {
    let (mut wire, mut client) = pair(1 << 16).await;
    client
        .send(WsMessage::Ping(Bytes::from_static(b"hb")))
        .await
        .unwrap();
    client.send(WsMessage::Close(None)).await.unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Some(Ok(WsMessage::Ping(_)))) = wire.poll_read(&mut cx) else {
        panic!("the ping first");
    };
    let Poll::Ready(Some(Ok(WsMessage::Close(None)))) = wire.poll_read(&mut cx) else {
        panic!("then the close");
    };
    wire.drain(&mut VecDeque::new(), &mut Traffic::default())
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        WsMessage::Pong(Bytes::from_static(b"hb"))
    );
    assert!(matches!(
        client.next().await.unwrap().unwrap(),
        WsMessage::Close(None)
    ));
}

#[tokio::test]
async fn a_shared_run_is_framed_in_parts_across_batches() {
    let (mut wire, client) = pair(1000).await;
    // Several batches' worth, with a large payload among them.
    let messages: Vec<WsMessage> = (0..3000)
        .map(|i| {
            if i == 1500 {
                binary(LARGE * 2, 3)
            } else {
                WsMessage::text(format!("{i:0>100}"))
            }
        })
        .collect();
    let expected: Vec<WsMessage> = messages
        .iter()
        .cloned()
        .chain([WsMessage::text("sent after")])
        .collect();
    let mut queue = VecDeque::from([
        Outbound::Run {
            messages: messages.into_iter().map(Into::into).collect(),
            next: 0,
        },
        WsMessage::text("sent after").into(),
    ]);
    let mut traffic = Traffic::default();
    wire.frame(&mut queue, &mut traffic);
    assert!(
        matches!(queue.front(), Some(Outbound::Run { next, .. }) if *next < 3000),
        "one framing stops at a batch, in the middle of the run"
    );
    let reader = read(client, expected.len());
    wire.drain(&mut queue, &mut traffic).await.unwrap();
    assert_eq!(reader.await.unwrap(), expected);
}
