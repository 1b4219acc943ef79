//! The `berth` binary as an operator runs it: startup banner, signals, exit
//! codes and error messages.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{WAIT, config_text, connect, expect_close, read_banner, recv_text, send_text};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Waits (bounded) for the process to exit and returns its exit code.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("berth did not exit within {limit:?}");
}

/// Starts `berth serve` with `args` and reads the bound address from its banner.
/// The rest of stdout is left in the pipe, as an operator's pager would.
fn start(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(BERTH)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth starts");
    let addr = read_banner(&mut child);
    (child, addr)
}

/// Runs `berth serve ARGS` to its end; it must fail with exit code 1. Returns stderr.
fn serve_fails(args: &[&str]) -> String {
    let output = Command::new(BERTH)
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
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
    let config = write_config(
        &dir,
        &config_text("[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n"),
    );
    let (mut child, addr) = start(&["--config", &config]);
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut client = connect(&format!("ws://{addr}/kit")).await;
        send_text(&mut client, "whoami").await;
        ids.push(recv_text(&mut client).await.replace("id ", ""));
        clients.push(client);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for client in &mut clients {
        assert_eq!(expect_close(client).await.code, CloseCode::Away);
    }
    drop(clients);
    let code = tokio::task::spawn_blocking(move || {
        let code = wait_exit(&mut child, Duration::from_secs(10));
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (code, log)
    })
    .await
    .unwrap();
    let (code, log) = code;
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
    let (mut child, addr) = start(&[
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
        let mut client = connect(&format!("ws://{addr}/echo")).await;
        send_text(&mut client, "demo").await;
        assert_eq!(recv_text(&mut client).await, "demo");
        let mut chat = connect(&format!("ws://{addr}/chat")).await;
        assert!(recv_text(&mut chat).await.contains("welcome"));
        let mut ticker = connect(&format!("ws://{addr}/ticker")).await;
        send_text(&mut ticker, "subscribe:ACME").await;
        assert!(recv_text(&mut ticker).await.contains(r#""symbol":"ACME""#));
    });
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(wait_exit(&mut child, WAIT), Some(0));
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
    assert_eq!(config.live.routes.len(), 5);
    assert_eq!(
        config.live.routes[3].instance,
        berth::config::InstanceModel::Connection
    );
}
