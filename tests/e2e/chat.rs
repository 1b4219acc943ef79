//! The chat plugin: a room shared by every connection of the route.

use crate::support::{Client, TestServer, connect, json_field, recv_text, send_text};

const ROUTES: &str = r#"
[[route]]
path = "/chat"
plugin = "chat.wasm"
"#;

/// Joins the room and returns the client with its id.
async fn join(server: &TestServer) -> (Client, String) {
    let mut client = connect(&server.url("/chat")).await;
    let welcome = recv_text(&mut client).await;
    assert_eq!(json_field(&welcome, "type"), "\"welcome\"");
    let id = json_field(&welcome, "id").to_string();
    (client, id)
}

#[tokio::test]
async fn messages_reach_everyone_else_and_joins_and_leaves_are_announced() {
    let server = TestServer::start(ROUTES).await;
    let (mut a, a_id) = join(&server).await;
    let (mut b, b_id) = join(&server).await;
    assert_eq!(
        recv_text(&mut a).await,
        format!(r#"{{"type":"join","id":{b_id}}}"#)
    );
    let (mut c, c_id) = join(&server).await;
    assert_eq!(
        recv_text(&mut a).await,
        format!(r#"{{"type":"join","id":{c_id}}}"#)
    );
    assert_eq!(
        recv_text(&mut b).await,
        format!(r#"{{"type":"join","id":{c_id}}}"#)
    );

    send_text(&mut a, "hello \"room\"").await;
    let expected = format!(r#"{{"type":"message","from":{a_id},"text":"hello \"room\""}}"#);
    assert_eq!(recv_text(&mut b).await, expected);
    assert_eq!(recv_text(&mut c).await, expected);

    // The sender gets nothing back: its next message is b's, not its own.
    send_text(&mut b, "from b").await;
    let from_b = recv_text(&mut a).await;
    assert_eq!(json_field(&from_b, "from"), b_id);
    assert_eq!(json_field(&recv_text(&mut c).await, "from"), b_id);

    c.close(None).await.unwrap();
    for client in [&mut a, &mut b] {
        let leave = recv_text(client).await;
        assert_eq!(json_field(&leave, "type"), "\"leave\"");
        assert_eq!(json_field(&leave, "id"), c_id);
    }
    server.stop().await;
}
