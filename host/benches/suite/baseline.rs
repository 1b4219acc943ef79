//! The baseline: a plain tokio-tungstenite server with nothing between the
//! socket and the message, serving `/echo` (every text or binary message back
//! to its sender) and `/sub` + `/pub` (each text sent on `/pub` goes to every
//! `/sub` connection through a tokio broadcast channel).

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Its tungstenite settings: a 4 KiB read buffer (tungstenite allocates it
/// eagerly) so that the idle-memory comparison is against a well-tuned server.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// One line saying what the baseline is, for the report's header.
pub fn describe() -> String {
    let config = config();
    format!(
        "tokio-tungstenite 0.30 on tokio's default multi-thread runtime (1 worker when pinned), \
         TCP_NODELAY, read buffer {} B, write buffer {} B, echo replies fed as read and \
         flushed when no frame is ready",
        config.read_buffer_size, config.write_buffer_size
    )
}

/// Serves until killed; prints `baseline listening on ADDR` first.
pub async fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the baseline binds");
    println!("baseline listening on {}", listener.local_addr().unwrap());
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    let (tx, _) = broadcast::channel::<Message>(crate::QUEUE_DEPTH);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, tx.clone()));
            }
            // Out of file descriptors, most likely: back off, as berth does.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connection(stream: TcpStream, tx: broadcast::Sender<Message>) {
    let mut path = String::new();
    // The callback's signature, large error included, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config())).await
    else {
        return;
    };
    match path.as_str() {
        "/echo" => echo(ws).await,
        "/pub" => publish(ws, tx).await,
        "/sub" => subscribe(ws, tx.subscribe()).await,
        _ => {}
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(first)) = ws.next().await {
        // Answer every frame already read, then write the answers with one flush.
        let mut next = Some(first);
        while let Some(msg) = next {
            if (msg.is_text() || msg.is_binary()) && ws.feed(msg).await.is_err() {
                return;
            }
            next = match ws.next().now_or_never() {
                Some(Some(Ok(msg))) => Some(msg),
                Some(_) => {
                    // Closed: still send what was fed, the close reply included.
                    let _ = ws.flush().await;
                    return;
                }
                None => None,
            };
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

async fn publish(mut ws: WebSocketStream<TcpStream>, tx: broadcast::Sender<Message>) {
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() {
            let _ = tx.send(msg);
        }
    }
}

async fn subscribe(ws: WebSocketStream<TcpStream>, mut rx: broadcast::Receiver<Message>) {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(msg) => {
                    // Write everything already broadcast, then flush once.
                    let mut batch = vec![msg];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    for msg in batch {
                        if sink.feed(msg).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = sink.close().await;
                    return;
                }
                _ => {}
            },
        }
    }
}
