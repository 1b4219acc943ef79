//! Topics, timers, instance models and route config values.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::{
    Client, TestServer, WAIT, admitted, ask, ask_until, await_on_close, connect,
    connect_small_window, eventually, json_field, recv_text, refusal, request, send_text, whoami,
};

/// The testkit in both instance models, plus namespaced routes.
const ROUTES: &str = r#"
[[route]]
path = "/kit"
plugin = "testkit.wasm"

[[route]]
path = "/kit-conn"
plugin = "testkit.wasm"
instance = "connection"

[[route]]
path = "/other"
plugin = "testkit.wasm"

[[route]]
path = "/shared-a"
plugin = "testkit.wasm"
namespace = "shared"

[[route]]
path = "/shared-b"
plugin = "testkit.wasm"
instance = "connection"
namespace = "shared"

[[route]]
path = "/narrow"
plugin = "testkit.wasm"
instance = "connection"
max-topic-name = "8B"
max-subscriptions-per-connection = 3
max-subscriptions = 5

[[route]]
path = "/values"
plugin = "testkit.wasm"
[route.config]
greeting = "hello from the config"

[[route]]
path = "/counter"
plugin = "counter.wasm"
instance = "connection"

[[route]]
path = "/echo-conn"
plugin = "echo.wasm"
instance = "connection"
"#;

/// Reads until the connection has been quiet for half a second; fails if
/// messages keep coming (a timer that was meant to stop, say).
async fn until_quiet(client: &mut Client) {
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(500), client.next()).await {
            Err(_) => return,
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
    panic!("messages kept coming");
}

#[tokio::test]
async fn a_thousand_subscribers_each_get_every_publish_once_and_in_order() {
    for route in ["/kit", "/kit-conn"] {
        // Room in the instance pool for 1,000 subscribers with an instance each.
        let server = TestServer::start(&format!("max-instances = 1100\n{ROUTES}")).await;
        let url = server.url(route);
        let mut subscribers = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let mut client = connect(&url).await;
            send_text(&mut client, "subscribe news").await;
            subscribers.push(client);
        }
        for client in &mut subscribers {
            assert_eq!(recv_text(client).await, "subscribed");
        }
        let mut publisher = connect(&url).await;
        for n in 1..=3 {
            assert_eq!(
                ask(&mut publisher, &format!("publish news m{n}")).await,
                "published 1000"
            );
        }
        for client in &mut subscribers {
            for n in 1..=3 {
                assert_eq!(recv_text(client).await, format!("m{n}"), "{route}");
            }
            // Exactly once: the next thing it hears is the answer to this.
            assert!(ask(client, "whoami").await.starts_with("id "), "{route}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn unsubscribe_and_close_end_delivery() {
    for route in ["/kit", "/kit-conn"] {
        let server = TestServer::start(ROUTES).await;
        let url = server.url(route);
        let mut a = connect(&url).await;
        let mut b = connect(&url).await;
        assert_eq!(ask(&mut a, "subscribe t").await, "subscribed");
        assert_eq!(ask(&mut b, "subscribe t").await, "subscribed");
        assert_eq!(ask(&mut b, "subscribe t2").await, "subscribed");
        let mut publisher = connect(&url).await;
        assert_eq!(ask(&mut publisher, "publish t one").await, "published 2");

        assert_eq!(recv_text(&mut a).await, "one");
        assert_eq!(ask(&mut a, "unsubscribe t").await, "unsubscribed");
        assert_eq!(ask(&mut publisher, "publish t two").await, "published 1");
        assert_eq!(recv_text(&mut b).await, "one");
        assert_eq!(recv_text(&mut b).await, "two");
        assert!(ask(&mut a, "whoami").await.starts_with("id "));

        // A closed connection leaves every topic it was on.
        b.close(None).await.unwrap();
        let what = format!("{route}: a closed connection leaves its topics");
        eventually(WAIT, &what, async || {
            let t = ask(&mut publisher, "publish t three").await;
            let t2 = ask(&mut publisher, "publish t2 three").await;
            if t == "published 0" && t2 == "published 0" {
                Ok(())
            } else {
                Err(format!("{t:?} and {t2:?}"))
            }
        })
        .await;
        server.stop().await;
    }
}

#[tokio::test]
async fn topics_are_private_to_a_route_unless_namespaces_are_shared() {
    let server = TestServer::start(ROUTES).await;
    let mut listener = connect(&server.url("/kit")).await;
    assert_eq!(ask(&mut listener, "subscribe news").await, "subscribed");
    let mut outsider = connect(&server.url("/other")).await;
    assert_eq!(ask(&mut outsider, "publish news leak").await, "published 0");
    assert!(ask(&mut listener, "whoami").await.starts_with("id "));

    // Two routes (one of each instance model) that share a namespace share topics.
    let mut viewer = connect(&server.url("/shared-b")).await;
    assert_eq!(ask(&mut viewer, "subscribe prices").await, "subscribed");
    let mut feeder = connect(&server.url("/shared-a")).await;
    assert_eq!(ask(&mut feeder, "publish prices 42").await, "published 1");
    assert_eq!(recv_text(&mut viewer).await, "42");
    // ...and nobody else's.
    assert_eq!(ask(&mut outsider, "publish prices 43").await, "published 0");
    server.stop().await;
}

#[tokio::test]
async fn timers_fire_in_order_repeat_and_cancel() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/kit")).await;
    for (delay, token) in [(250, 3), (50, 1), (150, 2)] {
        assert!(
            ask(&mut client, &format!("timer {delay} once {token}"))
                .await
                .starts_with("timer ")
        );
    }
    for token in 1..=3 {
        assert!(
            recv_text(&mut client)
                .await
                .starts_with(&format!("tick {token} "))
        );
    }

    let id = ask(&mut client, "timer 20 repeat 7")
        .await
        .replace("timer ", "");
    for _ in 0..3 {
        assert!(recv_text(&mut client).await.starts_with("tick 7 "));
    }
    send_text(&mut client, &format!("cancel {id}")).await;
    // Ticks already queued may arrive before the answer; none after it.
    let mut answer = recv_text(&mut client).await;
    while answer.starts_with("tick 7 ") {
        answer = recv_text(&mut client).await;
    }
    assert_eq!(answer, "cancelled true");
    until_quiet(&mut client).await;
    assert_eq!(
        ask(&mut client, &format!("cancel {id}")).await,
        "cancelled false"
    );
    server.stop().await;
}

#[tokio::test]
async fn in_the_connection_model_timers_see_their_connections_state_and_end_with_it() {
    let server = TestServer::start(ROUTES).await;
    let url = server.url("/kit-conn");
    let mut busy = connect(&url).await;
    for _ in 0..4 {
        ask(&mut busy, "whoami").await;
    }
    let mut quiet = connect(&url).await;
    ask(&mut quiet, "timer 10 once 1").await;
    ask(&mut busy, "timer 10 once 1").await;
    // Each instance counts its own connection's messages, the timer command included.
    assert_eq!(recv_text(&mut quiet).await, "tick 1 messages=1");
    assert_eq!(recv_text(&mut busy).await, "tick 1 messages=5");

    let mut observer = connect(&url).await;
    assert_eq!(ask(&mut observer, "subscribe ticks").await, "subscribed");
    let mut doomed = connect(&url).await;
    ask(&mut doomed, "timer 20 repeat 9").await;
    assert!(recv_text(&mut observer).await.starts_with("tick 9 "));
    doomed.close(None).await.unwrap();
    // A timer that outlived its connection would tick on forever.
    until_quiet(&mut observer).await;
    server.stop().await;
}

#[tokio::test]
async fn counter_counts_per_connection() {
    let server = TestServer::start(ROUTES).await;
    let mut a = connect(&server.url("/counter")).await;
    let mut b = connect(&server.url("/counter")).await;
    for n in 1..=3 {
        assert_eq!(ask(&mut a, "x").await, n.to_string());
    }
    for n in 1..=2 {
        assert_eq!(ask(&mut b, "x").await, n.to_string());
    }
    assert_eq!(ask(&mut a, "x").await, "4");

    server.stop().await;
}

#[tokio::test]
async fn echo_works_in_the_connection_model_and_config_values_reach_the_plugin() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/echo-conn")).await;
    assert_eq!(
        ask(&mut client, "same plugin, other model").await,
        "same plugin, other model"
    );
    let mut values = connect(&server.url("/values")).await;
    assert_eq!(
        ask(&mut values, "config greeting").await,
        "config hello from the config"
    );
    assert_eq!(ask(&mut values, "config missing").await, "config none");
    // A key longer than any the config may hold is refused unlooked-up and counted.
    let probe = format!("config {}", "k".repeat(4096));
    assert_eq!(ask(&mut values, &probe).await, "config none");
    let mut plain = connect(&server.url("/kit")).await;
    assert_eq!(ask(&mut plain, "config greeting").await, "config none");
    let scrape = crate::metrics::scrape(server.addr).await;
    let config_key = &[("route", "/values"), ("limit", "config_key")];
    assert_eq!(
        scrape.value("berth_plugin_limit_hits_total", config_key),
        1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_while_the_others_get_everything() {
    let routes = "[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\nwrite-queue = 64\n";
    let server = TestServer::start(routes).await;
    let url = server.url("/kit");
    const BURSTS: usize = 100;
    const PER_BURST: usize = 16;
    const TOTAL: usize = BURSTS * PER_BURST;

    let mut slow = connect_small_window(&url, server.addr).await;
    let slow_id = whoami(&mut slow).await;
    assert_eq!(ask(&mut slow, "subscribe feed").await, "subscribed");

    let mut readers = Vec::new();
    for _ in 0..99 {
        let mut client = connect(&url).await;
        assert_eq!(ask(&mut client, "subscribe feed").await, "subscribed");
        readers.push(tokio::spawn(async move {
            for expected in 0..TOTAL {
                let text = recv_text(&mut client).await;
                let number = text.split('|').next().unwrap();
                assert_eq!(number, expected.to_string(), "out of order or lost");
            }
        }));
    }

    let mut publisher = connect(&url).await;
    for burst in 0..BURSTS {
        let from = burst * PER_BURST;
        let command = format!("publish-many feed {from} {PER_BURST} 4096");
        assert_eq!(ask(&mut publisher, &command).await, "published");
    }
    for reader in readers {
        tokio::time::timeout(WAIT * 3, reader)
            .await
            .expect("a reader got everything in time")
            .unwrap();
    }
    await_on_close(&url, &slow_id, 1013).await;
    drop(slow);
    server.stop().await;
}

#[tokio::test]
async fn the_ticker_publishes_to_each_symbols_subscribers() {
    let routes = "[[route]]\npath = \"/ticker\"\nplugin = \"ticker.wasm\"\n";
    let server = TestServer::start(routes).await;
    let mut acme = connect(&server.url("/ticker")).await;
    let mut both = connect(&server.url("/ticker")).await;
    send_text(&mut acme, "subscribe:ACME").await;
    send_text(&mut both, "subscribe:ACME").await;
    send_text(&mut both, "subscribe:INIT").await;
    let mut seen_init = false;
    for _ in 0..10 {
        let update = recv_text(&mut acme).await;
        assert_eq!(json_field(&update, "symbol"), "\"ACME\"");
        let update = recv_text(&mut both).await;
        seen_init |= json_field(&update, "symbol") == "\"INIT\"";
    }
    assert!(seen_init);
    send_text(&mut acme, "unsubscribe:ACME").await;
    until_quiet(&mut acme).await;
    send_text(&mut acme, "subscribe:bad symbol").await;
    assert_eq!(json_field(&recv_text(&mut acme).await, "type"), "\"error\"");
    server.stop().await;
}

#[tokio::test]
async fn a_full_instance_pool_answers_503_until_a_connection_leaves() {
    let routes = "max-instances = 3\n[[route]]\npath = \"/c\"\nplugin = \"counter.wasm\"\ninstance = \"connection\"\n";
    let server = TestServer::start(routes).await;
    let url = server.url("/c");
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&url).await);
    }
    assert_eq!(refusal(request(&url, &[])).await, Some(503));
    open.pop().unwrap().close(None).await.unwrap();
    // A freed pool slot is reused.
    let mut client = admitted(&url).await;
    assert_eq!(ask(&mut client, "x").await, "1");
    server.stop().await;
}

/// A plugin cannot make the host keep topic names of any length or any number
/// of subscriptions: past the bounds it gets an error value, the connection
/// stays, and each refusal is counted.
#[tokio::test]
async fn topic_names_and_subscriptions_are_bounded_with_an_error_to_the_plugin() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/kit")).await;
    let long = "t".repeat(257);
    assert_eq!(
        ask(&mut client, &format!("subscribe {long}")).await,
        "error too-large"
    );
    assert_eq!(
        ask(&mut client, &format!("publish {long} hi")).await,
        "publish failed: too-large"
    );
    assert_eq!(
        ask(&mut client, &format!("unsubscribe {long}")).await,
        "error too-large"
    );
    assert_eq!(
        ask(&mut client, &format!("subscribe {}", "t".repeat(256))).await,
        "subscribed"
    );
    for i in 1..1024 {
        assert_eq!(
            ask(&mut client, &format!("subscribe s{i}")).await,
            "subscribed"
        );
    }
    assert_eq!(
        ask(&mut client, "subscribe one-too-many").await,
        "error too-many-subscriptions"
    );
    // Subscribing again to a topic it has is no new subscription.
    assert_eq!(ask(&mut client, "subscribe s1").await, "subscribed");
    assert_eq!(ask(&mut client, "unsubscribe s1").await, "unsubscribed");
    assert_eq!(ask(&mut client, "subscribe one-more").await, "subscribed");
    let scrape = crate::metrics::scrape(server.addr).await;
    let hits = |route, limit| {
        scrape.value(
            "berth_plugin_limit_hits_total",
            &[("route", route), ("limit", limit)],
        )
    };
    assert_eq!(hits("/kit", "max_topic_name"), 3.0);
    assert_eq!(hits("/kit", "max_subscriptions_per_connection"), 1.0);
    assert_eq!(hits("/kit", "max_subscriptions"), 0.0);
    server.stop().await;
}

/// A route's own `max-topic-name`, `max-subscriptions-per-connection` and
/// `max-subscriptions` hold across its instances, and a subscription given
/// back, by unsubscribing or by closing, makes room for another.
#[tokio::test]
async fn a_routes_own_subscription_caps_hold_across_its_connections() {
    let server = TestServer::start(ROUTES).await;
    let url = server.url("/narrow");
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    assert_eq!(ask(&mut a, "subscribe 123456789").await, "error too-large");
    assert_eq!(ask(&mut a, "subscribe 12345678").await, "subscribed");
    for topic in ["x", "y"] {
        assert_eq!(
            ask(&mut a, &format!("subscribe {topic}")).await,
            "subscribed"
        );
    }
    assert_eq!(
        ask(&mut a, "subscribe z").await,
        "error too-many-subscriptions",
        "a connection holds three at most"
    );
    for topic in ["x", "y"] {
        assert_eq!(
            ask(&mut b, &format!("subscribe {topic}")).await,
            "subscribed"
        );
    }
    assert_eq!(
        ask(&mut b, "subscribe z").await,
        "error too-many-subscriptions",
        "the route holds five at most, whichever instance asks"
    );
    assert_eq!(ask(&mut a, "unsubscribe x").await, "unsubscribed");
    assert_eq!(ask(&mut b, "subscribe z").await, "subscribed");
    a.close(None).await.expect("close sent");
    let mut c = connect(&url).await;
    // The closed connection's three come back once its close is handled.
    ask_until(&mut c, "subscribe w", |a| a == "subscribed").await;
    let scrape = crate::metrics::scrape(server.addr).await;
    let hits = |limit| {
        scrape.value(
            "berth_plugin_limit_hits_total",
            &[("route", "/narrow"), ("limit", limit)],
        )
    };
    assert_eq!(hits("max_topic_name"), 1.0);
    assert_eq!(hits("max_subscriptions_per_connection"), 1.0);
    assert!(hits("max_subscriptions") >= 1.0);
    server.stop().await;
}

/// An instance holds at most 1,024 live timers: the next is an error value to
/// the plugin and a counted limit hit, and a cancelled one makes room.
#[tokio::test]
async fn live_timers_are_bounded_with_an_error_to_the_plugin() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/kit")).await;
    let mut first = String::new();
    for token in 0..1024 {
        let answer = ask(&mut client, &format!("timer 3600000 once {token}")).await;
        assert!(answer.starts_with("timer "), "timer {token}: {answer}");
        if token == 0 {
            first = answer["timer ".len()..].to_string();
        }
    }
    assert_eq!(
        ask(&mut client, "timer 3600000 once 5000").await,
        "error too-many-timers"
    );
    assert_eq!(
        ask(&mut client, &format!("cancel {first}")).await,
        "cancelled true"
    );
    let again = ask(&mut client, "timer 3600000 once 5001").await;
    assert!(again.starts_with("timer "), "{again}");
    let scrape = crate::metrics::scrape(server.addr).await;
    let timers = &[("route", "/kit"), ("limit", "timers")];
    assert_eq!(scrape.value("berth_plugin_limit_hits_total", timers), 1.0);
    server.stop().await;
}
