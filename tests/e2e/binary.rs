//! The `berth` binary as an operator runs it: startup banner, signals, exit
//! codes and error messages.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    BerthProcess, berth_command, config_text, connect, echoes, expect_close, recv_text, send_text,
    whoami,
};

/// Runs `berth serve ARGS` to its end; it must fail with exit code 1. Returns stderr.
fn serve_fails(args: &[&str]) -> String {
    let output = berth_command().arg("serve").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_runs_on_close_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n");
    let mut berth = BerthProcess::with_config(dir.path(), &text);
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&berth.url("/kit")).await;
        ids.push(whoami(&mut client).await);
        clients.push(client);
    }
    berth.signal("-TERM");
    for client in &mut clients {
        assert_eq!(expect_close(client).await.code, CloseCode::Away);
    }
    drop(clients);
    let code = berth.exited().await.code();
    let log = berth.log();
    assert_eq!(code, Some(0), "{log}");
    for id in ids {
        let line = format!("on-close conn={id} code=1001 reason=server shutting down");
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
}

#[test]
fn the_demo_runs_without_a_config_file() {
    // The store is the one thing kept apart: the user's own demo may hold it.
    let state = tempfile::tempdir().unwrap();
    let mut berth = BerthProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        echoes(&mut connect(&berth.url("/echo")).await, "demo").await;
        let mut chat = connect(&berth.url("/chat")).await;
        assert!(recv_text(&mut chat).await.contains("welcome"));
        let mut ticker = connect(&berth.url("/ticker")).await;
        send_text(&mut ticker, "subscribe:ACME").await;
        assert!(recv_text(&mut ticker).await.contains(r#""symbol":"ACME""#));
    });
    berth.signal("-INT");
    assert_eq!(runtime.block_on(berth.exited()).code(), Some(0));
}

#[test]
fn a_port_in_use_is_a_one_line_error_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = serve_fails(&["--listen", &addr]);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "listen = \"127.0.0.1:0\"\n[[route]]\npath = \"/x\"\nplugin = \"x.wasm\"\nping-every = \"1s\"\n",
    );
    let stderr = serve_fails(&["--config", &config]);
    assert!(stderr.contains(&format!("{config}:5:1:")), "{stderr}");
    assert!(stderr.contains("ping-every"), "{stderr}");

    let config = write_config(
        &dir,
        "[[route]]\npath = \"/x\"\nplugin = \"missing.wasm\"\n",
    );
    let stderr = serve_fails(&["--config", &config]);
    let expected = dir.path().join("plugins").join("missing.wasm");
    assert!(stderr.contains(&format!("{config}:3:10:")), "{stderr}");
    assert!(stderr.contains(&expected.display().to_string()), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins").join("junk.wasm"), b"not wasm").unwrap();
    let config = write_config(
        &dir,
        "listen = \"127.0.0.1:0\"\n[[route]]\npath = \"/x\"\nplugin = \"junk.wasm\"\n",
    );
    let stderr = serve_fails(&["--config", &config]);
    assert!(
        stderr.contains("is not a valid WebAssembly component"),
        "{stderr}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/berth.toml");
    let config = berth::Config::load(std::path::Path::new(example)).expect("example loads");
    assert_eq!(config.live.routes.len(), 6);
    assert_eq!(
        config.live.routes[3].instance,
        berth::config::InstanceModel::Connection
    );
}
