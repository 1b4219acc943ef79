//! Hot reload, as an operator meets it: the real `berth` binary watching a
//! plugin folder and its config file, files changed the ways editors, build
//! tools and deploy scripts change them, and real clients checking which
//! version answers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    BerthProcess, Site, WAIT, ask, connect, echoes, eventually, expect_close, plugin_bytes,
    request, try_connect, with_nonce,
};

/// What a new connection to a route gets for the text "x": `None` for 404.
async fn probe(url: &str) -> Option<String> {
    match try_connect(request(url, &[])).await {
        Ok((mut client, _)) => {
            let reply = ask(&mut client, "x").await;
            let _ = client.close(None).await;
            Some(reply)
        }
        Err((404, _)) => None,
        Err((status, body)) => panic!("unexpected refusal {status}: {body}"),
    }
}

fn echo(answer: &Option<String>) -> bool {
    answer.as_deref() == Some("x")
}

fn counter(answer: &Option<String>) -> bool {
    answer.as_deref().is_some_and(|r| r.parse::<u64>().is_ok())
}

fn gone(answer: &Option<String>) -> bool {
    answer.is_none()
}

/// Probes `url` until `want` holds (bounded).
async fn wait_for(url: &str, what: &str, want: fn(&Option<String>) -> bool) {
    eventually(WAIT, &format!("{url} is {what}"), async || {
        let answer = probe(url).await;
        if want(&answer) {
            Ok(())
        } else {
            Err(format!("answer {answer:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn every_way_a_file_arrives_serves_the_right_version() {
    let site = Site::new();
    site.write_config("auto-routes = true\n");
    let berth = site.start(&[]);
    let url = berth.url("/app");
    let app = site.plugins().join("app.wasm");
    assert!(
        gone(&probe(&url).await),
        "nothing is served before the file exists"
    );

    // cp of a new file.
    std::fs::copy(
        Path::new(berth::demo::BUILT_PLUGIN_DIR).join("echo.wasm"),
        &app,
    )
    .unwrap();
    wait_for(&url, "echo (copied in)", echo).await;

    // Written elsewhere, then renamed over the old one.
    site.install("app.wasm", &plugin_bytes("counter.wasm"));
    wait_for(&url, "counter (renamed over)", counter).await;

    // Overwritten in place, slowly: the half-written file must not be loaded
    // for good, whatever the watcher saw in between.
    let bytes = plugin_bytes("echo.wasm");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&app).unwrap();
        let (first, second) = bytes.split_at(bytes.len() / 2);
        file.write_all(first).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        file.write_all(second).unwrap();
    }
    wait_for(&url, "echo (overwritten in place)", echo).await;

    // mv from another folder.
    let outside = site.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("app.wasm"), plugin_bytes("counter.wasm")).unwrap();
    std::fs::rename(outside.join("app.wasm"), &app).unwrap();
    wait_for(&url, "counter (moved in)", counter).await;

    // Deleted: new connections get 404.
    std::fs::remove_file(&app).unwrap();
    wait_for(&url, "gone (deleted)", gone).await;

    // A new name is a new route; temporary and hidden names are not.
    std::fs::write(
        site.plugins().join(".hidden.wasm"),
        plugin_bytes("echo.wasm"),
    )
    .unwrap();
    std::fs::write(
        site.plugins().join("app.wasm.part"),
        plugin_bytes("echo.wasm"),
    )
    .unwrap();
    std::fs::write(outside.join("fresh.wasm"), plugin_bytes("echo.wasm")).unwrap();
    std::fs::rename(
        outside.join("fresh.wasm"),
        site.plugins().join("fresh.wasm"),
    )
    .unwrap();
    wait_for(&berth.url("/fresh"), "echo (a new name)", echo).await;
    assert!(gone(&probe(&berth.url("/.hidden")).await));
    assert!(gone(&probe(&url).await));
}

#[tokio::test]
async fn a_bad_file_never_replaces_a_working_plugin() {
    let site = Site::new();
    site.write_config("auto-routes = true\n");
    site.install("app.wasm", &plugin_bytes("echo.wasm"));
    let berth = site.start(&[]);
    let url = berth.url("/app");
    wait_for(&url, "echo", echo).await;

    let counter_bytes = plugin_bytes("counter.wasm");
    // The smallest valid component: it implements nothing.
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let bad: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"this is not webassembly".to_vec(),
            "is not a valid WebAssembly component",
        ),
        (
            "truncated",
            counter_bytes[..counter_bytes.len() / 2].to_vec(),
            "is not a valid WebAssembly component",
        ),
        (
            "wrong world",
            empty_component,
            "does not implement the berth:plugin world",
        ),
    ];
    for (index, (what, bytes, reason)) in bad.into_iter().enumerate() {
        site.install("app.wasm", &bytes);
        let hash = blake3_prefix(&bytes);
        let line = berth
            .wait_log(&["plugin not loaded", "app.wasm", reason, &hash])
            .await;
        assert!(
            line.contains("the previous version keeps serving"),
            "{what}: {line}"
        );
        assert!(
            echo(&probe(&url).await),
            "{what} (#{index}) replaced the working plugin"
        );
    }
    // A good file after the bad ones is taken.
    site.install("app.wasm", &counter_bytes);
    wait_for(&url, "counter", counter).await;
}

/// The first 12 hex digits of a BLAKE3 hash, as berth logs them.
fn blake3_prefix(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..12].to_string()
}

#[tokio::test]
async fn drain_keeps_old_connections_and_restart_closes_them_with_1012() {
    let site = Site::new();
    site.install("d.wasm", &plugin_bytes("echo.wasm"));
    site.install("r.wasm", &plugin_bytes("echo.wasm"));
    site.write_config(
        "[[route]]\npath = \"/d\"\nplugin = \"d.wasm\"\n\
         [[route]]\npath = \"/r\"\nplugin = \"r.wasm\"\non-reload = \"restart\"\n",
    );
    let berth = site.start(&[]);
    let mut old_drain = connect(&berth.url("/d")).await;
    let mut old_restart = connect(&berth.url("/r")).await;
    for client in [&mut old_drain, &mut old_restart] {
        echoes(client, "before").await;
    }

    site.install("d.wasm", &plugin_bytes("counter.wasm"));
    site.install("r.wasm", &plugin_bytes("counter.wasm"));
    wait_for(&berth.url("/d"), "counter", counter).await;
    wait_for(&berth.url("/r"), "counter", counter).await;

    // drain: the old connection still talks to the old version, which
    // stops when that last connection closes.
    echoes(&mut old_drain, "after").await;
    let old = blake3_prefix(&plugin_bytes("echo.wasm"));
    let stopped = ["route version stopped", "route=/d", old.as_str()];
    assert!(
        !berth
            .log()
            .lines()
            .any(|l| stopped.iter().all(|p| l.contains(p)))
    );
    old_drain.close(None).await.unwrap();
    berth.wait_log(&stopped).await;
    // restart: the old connection is told to come back.
    let frame = expect_close(&mut old_restart).await;
    assert_eq!(frame.code, CloseCode::Restart, "{frame:?}");
    let mut again = connect(&berth.url("/r")).await;
    assert!(ask(&mut again, "y").await.parse::<u64>().is_ok());
}

#[tokio::test]
async fn replacing_a_plugin_20_times_under_load_loses_nothing() {
    const CLIENTS: usize = 20;
    const SWAPS: u64 = 20;
    let site = Site::new();
    let echo_bytes = plugin_bytes("echo.wasm");
    site.install("app.wasm", &echo_bytes);
    site.write_config("auto-routes = true\n");
    let berth = site.start(&[]);
    let url = berth.url("/app");
    wait_for(&url, "echo", echo).await;

    let stop = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (url, stop, replies) = (url.clone(), stop.clone(), replies.clone());
        clients.push(tokio::spawn(async move {
            let mut sent = 0u64;
            // Bounded: the swaps below take seconds, not minutes.
            for _connection in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut ws = connect(&url).await;
                // A new connection every 20 messages, so that connections
                // open on every version, four messages in flight at a time.
                for _ in 0..5 {
                    let batch: Vec<String> =
                        (0..4).map(|i| format!("c{client}-m{}", sent + i)).collect();
                    for text in &batch {
                        ws.feed(Message::text(text.as_str())).await.unwrap();
                    }
                    ws.flush().await.unwrap();
                    for text in &batch {
                        let reply = tokio::time::timeout(WAIT, ws.next())
                            .await
                            .expect("reply in time")
                            .expect("connection open")
                            .expect("valid message");
                        assert_eq!(
                            reply,
                            Message::text(text.as_str()),
                            "lost, duplicated or misordered"
                        );
                    }
                    sent += 4;
                    replies.fetch_add(4, Ordering::Relaxed);
                }
                ws.close(None).await.unwrap();
            }
            sent
        }));
    }

    let loaded_before = loads(&berth);
    for swap in 1..=SWAPS {
        site.install("app.wasm", &with_nonce(&echo_bytes, swap));
        // Loaded, then traffic reaches the new version before the next swap.
        let mut loaded_at = None;
        let what = format!("swap {swap} loaded and answering");
        eventually(WAIT, &what, async || {
            if loaded_at.is_none() {
                if loads(&berth) < loaded_before + swap as usize {
                    return Err(format!("not loaded:\n{}", berth.log()));
                }
                loaded_at = Some(replies.load(Ordering::Relaxed));
            }
            let at = loaded_at.expect("set once loaded");
            if replies.load(Ordering::Relaxed) < at + 40 {
                return Err("traffic stalled after the swap".to_string());
            }
            Ok(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let sent = tokio::time::timeout(WAIT, client)
            .await
            .expect("client ends")
            .expect("client saw every reply in order");
        assert!(sent > 0);
    }
    let log = berth.log();
    assert!(!log.contains("ERROR"), "errors during the swaps:\n{log}");
    assert!(!log.contains("WARN"), "warnings during the swaps:\n{log}");
}

/// How many "plugin loaded" lines the log holds.
fn loads(berth: &BerthProcess) -> usize {
    berth.log().matches("plugin loaded").count()
}

#[tokio::test]
async fn config_edits_add_and_remove_routes_and_a_bad_edit_keeps_the_old_config() {
    let site = Site::new();
    site.install("echo.wasm", &plugin_bytes("echo.wasm"));
    site.install("counter.wasm", &plugin_bytes("counter.wasm"));
    let a = "[[route]]\npath = \"/a\"\nplugin = \"echo.wasm\"\n";
    let b = "[[route]]\npath = \"/b\"\nplugin = \"counter.wasm\"\n";
    site.write_config(a);
    let berth = site.start(&[]);
    wait_for(&berth.url("/a"), "echo", echo).await;
    assert!(gone(&probe(&berth.url("/b")).await));

    site.write_config(&format!("{a}{b}"));
    wait_for(&berth.url("/b"), "counter (route added)", counter).await;

    site.write_config(b);
    wait_for(&berth.url("/a"), "gone (route removed)", gone).await;

    // Line 8 (after the three lines write_config puts first and route b), column 8.
    site.write_config(&format!("{b}[[route]]\npath = 5\n"));
    let line = berth.wait_log(&["config not reloaded"]).await;
    let place = format!("{}:8:8:", site.config().display());
    assert!(line.contains(&place), "no {place} in {line}");
    assert!(line.contains("the running config stays"), "{line}");
    assert!(
        counter(&probe(&berth.url("/b")).await),
        "the old config stopped serving"
    );
    assert!(gone(&probe(&berth.url("/a")).await));
}

#[tokio::test]
async fn sighup_reloads_when_nothing_is_watched() {
    let a = "[[route]]\npath = \"/a\"\nplugin = \"echo.wasm\"\n";
    let b = "[[route]]\npath = \"/b\"\nplugin = \"echo.wasm\"\n";
    // Two sites alike: one served unwatched, the other watched, as a control.
    let (site, control) = (Site::new(), Site::new());
    for site in [&site, &control] {
        site.install("echo.wasm", &plugin_bytes("echo.wasm"));
        site.write_config(a);
    }
    let berth = site.start(&["--no-watch"]);
    let watched = control.start(&[]);
    wait_for(&berth.url("/a"), "echo", echo).await;
    wait_for(&watched.url("/a"), "echo", echo).await;

    // Unwatched, the edit alone changes nothing: once the control has
    // reloaded the same edit, made after this one, a watcher would have
    // reloaded this one too.
    site.write_config(b);
    control.write_config(b);
    watched.wait_log(&["config reloaded"]).await;
    wait_for(&watched.url("/b"), "echo (the control, watched)", echo).await;
    assert!(!berth.log().contains("config reloaded"), "{}", berth.log());
    assert!(echo(&probe(&berth.url("/a")).await));
    assert!(gone(&probe(&berth.url("/b")).await));

    berth.signal("-HUP");
    wait_for(&berth.url("/b"), "echo (after SIGHUP)", echo).await;
    wait_for(&berth.url("/a"), "gone (after SIGHUP)", gone).await;
}

#[tokio::test]
async fn a_restart_takes_compiled_plugins_from_the_cache() {
    let site = Site::new();
    site.install("app.wasm", &plugin_bytes("echo.wasm"));
    site.write_config("auto-routes = true\n");
    {
        let berth = site.start(&[]);
        let line = berth.wait_log(&["plugin loaded", "route=/app"]).await;
        assert!(line.contains("from=\"compiled\""), "{line}");
    }
    let berth = site.start(&[]);
    let line = berth.wait_log(&["plugin loaded", "route=/app"]).await;
    assert!(line.contains("from=\"cache\""), "{line}");
    wait_for(&berth.url("/app"), "echo", echo).await;
}

#[tokio::test]
async fn the_demo_serves_what_is_dropped_into_its_folder() {
    let folder = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let berth = BerthProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--plugin-dir",
        folder.path().to_str().unwrap(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--state-dir",
        cache.path().join("state").to_str().unwrap(),
    ]);
    wait_for(&berth.url("/echo"), "the demo's echo", echo).await;
    std::fs::write(
        folder.path().join("mine.wasm"),
        plugin_bytes("counter.wasm"),
    )
    .unwrap();
    wait_for(&berth.url("/mine"), "counter (dropped in)", counter).await;
    echoes(&mut connect(&berth.url("/echo")).await, "still here").await;
}
