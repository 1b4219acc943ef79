//! Outbound HTTP from a JavaScript plugin (`plugins/js/src/fetcher.js`): the
//! SDK's `fetch` against a backend the route was granted, from a message
//! handler and from an `async onConnect`, which answers the upgrade only
//! once the backend has.

use crate::backend::{Backend, encoded};
use crate::support::{
    TestServer, connect, guest_plugin, recv_text, request, send_text, try_connect,
};

/// The fetcher on `/fetch` (one instance for the route) and `/fetch-conn`
/// (one per connection), both granted `backend` and nothing else.
async fn server(backend: &Backend) -> TestServer {
    let plugin = guest_plugin("js", "fetcher");
    let grant = backend.grant();
    TestServer::start(&format!(
        r#"
[[route]]
path = "/fetch"
plugin = {plugin:?}
allowed-outbound = [{grant:?}]

[[route]]
path = "/fetch-conn"
plugin = {plugin:?}
instance = "connection"
allowed-outbound = [{grant:?}]
"#
    ))
    .await
}

#[tokio::test]
async fn js_fetch_answers_a_message_with_the_backends_response() {
    let backend = Backend::start().await;
    let stranger = Backend::start().await;
    let server = server(&backend).await;
    let mut client = connect(&server.url("/fetch")).await;

    send_text(&mut client, &backend.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");
    send_text(&mut client, &backend.url("/verify?token=bad")).await;
    assert_eq!(recv_text(&mut client).await, "403 bad token");

    // Another origin is not granted: the promise rejects with the reason,
    // and nothing reaches it.
    send_text(&mut client, &stranger.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "error not-allowed");
    assert_eq!(stranger.requests(), 0);

    // The instance goes on after a rejected request.
    send_text(&mut client, &backend.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");
    server.stop().await;
}

#[tokio::test]
async fn js_async_on_connect_answers_once_the_backend_has() {
    let backend = Backend::start().await;
    let stranger = Backend::start().await;
    let server = server(&backend).await;
    let check = |route: &str, url: &str| {
        request(&server.url(&format!("{route}?check={}", encoded(url))), &[])
    };

    for route in ["/fetch", "/fetch-conn"] {
        // Accepted after the backend's 200, and open for messages.
        let (mut client, _) = try_connect(check(route, &backend.url("/verify?token=good")))
            .await
            .unwrap_or_else(|(status, body)| panic!("{route}: refused {status} {body}"));
        send_text(&mut client, &backend.url("/ok")).await;
        assert_eq!(recv_text(&mut client).await, "200 hello", "{route}");

        // Refused with the backend's status.
        let refused = try_connect(check(route, &backend.url("/verify?token=bad")))
            .await
            .err();
        assert_eq!(refused, Some((403, "denied".to_string())), "{route}");
    }

    // No response at all: 502, with the reason as the body.
    let refused = try_connect(check("/fetch", &stranger.url("/ok")))
        .await
        .err();
    assert_eq!(refused, Some((502, "not-allowed".to_string())));

    // Without `check` the hook answers at once, with nothing to wait for.
    let mut client = connect(&server.url("/fetch")).await;
    send_text(&mut client, &backend.url("/missing")).await;
    assert_eq!(recv_text(&mut client).await, "404 no such path");
    server.stop().await;
}
