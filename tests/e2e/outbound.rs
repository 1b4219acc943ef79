//! Outbound HTTP from plugins: a request reaches only the origins its route
//! grants (redirects included), every way it can fail is an error value,
//! a slow backend holds up only the connection that waits for it, a
//! pending `on-connect` is decided by a backend, and an answer never
//! reaches an instance other than the one that asked.

use futures_util::future::join_all;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::backend::{Backend, encoded};
use crate::metrics::scrape_until;
use crate::support::{
    Site, TestServer, WAIT, ask, connect, echoes, eventually, expect_close, plugin_bytes,
    recv_text, request, send_text, try_connect, whoami,
};

/// Routes `/kit` (testkit, granted `backend` and whatever `extra` sets) and
/// `/plain` (testkit, granted nothing).
fn routes(backend: &Backend, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n\
         allowed-outbound = [\"{}\"]\n{extra}\n\
         [[route]]\npath = \"/plain\"\nplugin = \"testkit.wasm\"\n",
        backend.grant()
    )
}

/// Asks `command` and waits for the answer that follows `fetching`.
async fn fetched(client: &mut crate::support::Client, command: &str) -> String {
    assert_eq!(ask(client, command).await, "fetching", "{command}");
    recv_text(client).await
}

#[tokio::test]
async fn a_granted_backend_answers_with_status_headers_and_body() {
    let backend = Backend::start().await;
    let server = TestServer::start(&routes(&backend, "")).await;
    let mut client = connect(&server.url("/kit")).await;

    let ok = format!("fetch {}", backend.url("/ok"));
    assert_eq!(
        fetched(&mut client, &ok).await,
        "response 200 x-test=yes hello"
    );
    let post = format!("fetch-post {} a body", backend.url("/echo"));
    assert_eq!(
        fetched(&mut client, &post).await,
        "response 200 x-test=- POST a body"
    );
    let missing = format!("fetch {}", backend.url("/nowhere"));
    assert_eq!(
        fetched(&mut client, &missing).await,
        "response 404 x-test=- no such path"
    );
    // A redirect to a granted origin is followed.
    let hop = backend.url(&format!("/to?url={}", encoded(&backend.url("/ok"))));
    let answer = fetched(&mut client, &format!("fetch {hop}")).await;
    assert_eq!(answer, "response 200 x-test=yes hello");

    // The same request from a route that was granted nothing never leaves.
    let before = backend.requests();
    let mut plain = connect(&server.url("/plain")).await;
    assert_eq!(ask(&mut plain, &ok).await, "refused not-allowed");
    assert_eq!(backend.requests(), before);
    server.stop().await;
}

#[tokio::test]
async fn every_failure_is_an_error_value_and_nothing_reaches_an_ungranted_origin() {
    let backend = Backend::start().await;
    let stranger = Backend::start().await;
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        "outbound-body-bytes = \"1KiB\"\noutbound-in-flight = 2\n\
         [route.config]\nclosed = \"{closed}\"\n"
    );
    let routes = routes(&backend, &extra).replace(
        &format!("[\"{}\"]", backend.grant()),
        &format!("[\"{}\", \"http://{closed}\"]", backend.grant()),
    );
    let server = TestServer::start(&routes).await;
    let mut client = connect(&server.url("/kit")).await;

    // Refused before anything is sent.
    let ungranted = format!("fetch {}", stranger.url("/ok"));
    assert_eq!(ask(&mut client, &ungranted).await, "refused not-allowed");
    assert_eq!(
        ask(&mut client, "fetch not a url").await,
        "refused invalid-request"
    );
    let body = "y".repeat(2000);
    let too_big = format!("fetch-post {} {body}", backend.url("/echo"));
    assert_eq!(ask(&mut client, &too_big).await, "refused invalid-request");

    // A redirect to an origin the route was not granted is not followed.
    let hop = backend.url(&format!("/to?url={}", encoded(&stranger.url("/ok"))));
    let answer = fetched(&mut client, &format!("fetch {hop}")).await;
    assert_eq!(answer, "response error not-allowed");
    assert_eq!(stranger.requests(), 0, "the ungranted backend was reached");

    let big = format!("fetch {}", backend.url("/big?n=5000"));
    assert_eq!(fetched(&mut client, &big).await, "response error too-large");
    let fits = format!("fetch {}", backend.url("/big?n=1024"));
    let answer = fetched(&mut client, &fits).await;
    assert_eq!(
        answer,
        format!("response 200 x-test=- {}", "x".repeat(1024))
    );
    let nobody = format!("fetch http://{closed}/");
    assert_eq!(
        fetched(&mut client, &nobody).await,
        "response error connect-failed"
    );
    let held = format!("fetch-within 200 {}", backend.url("/held"));
    assert_eq!(fetched(&mut client, &held).await, "response error timeout");

    // Two held requests fill the instance's outbound-in-flight; a third
    // is refused; a cancelled one frees its place.
    let held = format!("fetch {}", backend.url("/held"));
    assert_eq!(ask(&mut client, &held).await, "fetching");
    assert_eq!(ask(&mut client, &held).await, "fetching");
    assert_eq!(ask(&mut client, &held).await, "refused too-many-requests");
    backend.release();
    for _ in 0..2 {
        assert_eq!(
            recv_text(&mut client).await,
            "response 200 x-test=- released"
        );
    }
    let cancel = format!("fetch-cancel {}", backend.url("/held"));
    assert_eq!(ask(&mut client, &cancel).await, "cancelled true");

    scrape_until(server.addr, "the refusals and answers counted", |s| {
        let count = |status: &str| {
            s.find(
                "berth_outbound_requests_total",
                &[("route", "/kit"), ("status", status)],
            )
            .unwrap_or(0.0)
        };
        count("not-allowed") == 2.0
            && count("invalid-request") == 2.0
            && count("too-many-requests") == 1.0
            && count("too-large") == 1.0
            && count("connect-failed") == 1.0
            && count("timeout") == 1.0
            && count("cancelled") == 1.0
            && count("200") == 3.0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_backend_holds_up_only_the_connection_that_waits_for_it() {
    let backend = Backend::start().await;
    let server = TestServer::start(&routes(&backend, "")).await;
    let url = server.url("/kit");
    let mut waiting = connect(&url).await;
    let held = format!("fetch {}", backend.url("/held"));
    assert_eq!(ask(&mut waiting, &held).await, "fetching");

    // The route's one instance keeps serving 100 other connections, round
    // trip after round trip, while the backend has not answered.
    let others = join_all((0..100).map(|_| connect(&url))).await;
    let rounds = join_all(others.into_iter().map(|mut client| async move {
        for _ in 0..10 {
            assert!(!whoami(&mut client).await.is_empty());
        }
        client
    }))
    .await;
    assert_eq!(rounds.len(), 100);
    assert_eq!(backend.requests(), 1);

    backend.release();
    assert_eq!(
        recv_text(&mut waiting).await,
        "response 200 x-test=- released"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_pending_connect_is_decided_by_the_backend() {
    let backend = Backend::start().await;
    let config = format!(
        "handshake-timeout = \"1s\"\n\
         [[route]]\npath = \"/secure\"\nplugin = \"auth_remote.wasm\"\n\
         allowed-outbound = [\"{grant}\"]\n\
         [route.config]\nverify-url = \"{verify}\"\n\
         [[route]]\npath = \"/slow\"\nplugin = \"auth_remote.wasm\"\n\
         allowed-outbound = [\"{grant}\"]\n\
         [route.config]\nverify-url = \"{held}\"\n\
         [[route]]\npath = \"/ungranted\"\nplugin = \"auth_remote.wasm\"\n\
         [route.config]\nverify-url = \"{verify}\"\n",
        grant = backend.grant(),
        verify = backend.url("/verify"),
        held = backend.url("/held"),
    );
    let server = TestServer::start(&config).await;

    let (mut client, _) = try_connect(request(&server.url("/secure?token=good"), &[]))
        .await
        .expect("a good token opens");
    echoes(&mut client, "in").await;

    let refused = try_connect(request(&server.url("/secure?token=bad"), &[])).await;
    assert_eq!(refused.err(), Some((403, "bad token".into())));
    let refused = try_connect(request(&server.url("/ungranted?token=good"), &[])).await;
    assert_eq!(refused.err(), Some((502, "not-allowed".into())));

    // A backend slower than handshake-timeout: the client gets 503, and
    // the plugin's late answer finds no connection to open.
    let refused = try_connect(request(&server.url("/slow?token=good"), &[])).await;
    assert_eq!(refused.err().map(|(status, _)| status), Some(503));
    backend.release();

    // on-close stays for accepted connections only: one close, from the
    // connection that opened.
    drop(client);
    scrape_until(
        server.addr,
        "one close event, for the one connection",
        |s| {
            let closes = |route: &str| {
                s.value(
                    "berth_plugin_events_total",
                    &[("route", route), ("kind", "close")],
                )
            };
            closes("/secure") == 1.0 && closes("/slow") == 0.0
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_answer_never_reaches_an_instance_that_did_not_ask() {
    let backend = Backend::start().await;
    let server = TestServer::start(&routes(&backend, "")).await;
    let url = server.url("/kit");
    let mut asker = connect(&url).await;
    let held = format!("fetch {}", backend.url("/held"));
    assert_eq!(ask(&mut asker, &held).await, "fetching");

    // Another connection makes the route's instance trap: a fresh one
    // takes over, and the request of the old one is cancelled with it.
    let mut other = connect(&url).await;
    send_text(&mut other, "panic").await;
    scrape_until(
        server.addr,
        "the request cancelled with its instance",
        |s| {
            s.find(
                "berth_outbound_requests_total",
                &[("route", "/kit"), ("status", "cancelled")],
            ) == Some(1.0)
        },
    )
    .await;
    backend.release();
    // The next thing the asker hears is the answer to its next command,
    // not a response meant for the instance that is gone.
    let answer = ask(&mut asker, "whoami").await;
    assert!(answer.starts_with("id "), "{answer}");
    let again = format!("fetch {}", backend.url("/ok"));
    assert_eq!(
        fetched(&mut asker, &again).await,
        "response 200 x-test=yes hello"
    );
    server.stop().await;
}

#[tokio::test]
async fn after_a_reload_each_answer_reaches_the_version_that_asked() {
    let backend = Backend::start().await;
    let site = Site::new();
    site.install("kit.wasm", &plugin_bytes("testkit.wasm"));
    let config = |version: u32| {
        format!(
            "[[route]]\npath = \"/d\"\nplugin = \"kit.wasm\"\n\
             allowed-outbound = [\"{grant}\"]\n[route.config]\nversion = \"{version}\"\n\
             [[route]]\npath = \"/r\"\nplugin = \"kit.wasm\"\non-reload = \"restart\"\n\
             allowed-outbound = [\"{grant}\"]\n[route.config]\nversion = \"{version}\"\n",
            grant = backend.grant()
        )
    };
    site.write_config(&config(1));
    let berth = site.start(&[]);
    let held = format!("fetch {}", backend.url("/held"));
    let mut draining = connect(&berth.url("/d")).await;
    let mut restarting = connect(&berth.url("/r")).await;
    for client in [&mut draining, &mut restarting] {
        assert_eq!(ask(client, &held).await, "fetching");
    }

    site.write_config(&config(2));
    for path in ["/d", "/r"] {
        let url = berth.url(path);
        eventually(WAIT, &format!("{path} runs the new version"), async || {
            let answer = ask(&mut connect(&url).await, "config version").await;
            (answer == "config 2").then_some(()).ok_or(answer)
        })
        .await;
    }
    // restart: the old connection is closed, and its request with it.
    assert_eq!(expect_close(&mut restarting).await.code, CloseCode::Restart);
    backend.release();
    // drain: the old version still serves its connection, and the answer
    // it asked for reaches it.
    assert_eq!(
        recv_text(&mut draining).await,
        "response 200 x-test=- released"
    );
    // The new versions' instances hear only their own answers.
    for path in ["/d", "/r"] {
        let mut client = connect(&berth.url(path)).await;
        let ok = format!("fetch {}", backend.url("/ok"));
        assert_eq!(
            fetched(&mut client, &ok).await,
            "response 200 x-test=yes hello"
        );
    }
}
