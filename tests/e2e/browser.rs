//! The demo's chat page in a real browser: headless Chromium, driven by
//! playwright-core, against the real binary serving the demo (tests/browser).

use std::path::Path;
use std::process::Command;

use crate::support::BerthProcess;

#[test]
fn two_browser_pages_chat_in_one_room_and_see_the_ticker_move() {
    let drop_in = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let server = BerthProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--plugin-dir",
        &drop_in.path().display().to_string(),
        "--state-dir",
        &state.path().display().to_string(),
    ]);
    let base = server.url("/").replacen("ws://", "http://", 1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/demo.mjs");
    // Screenshots are kept for a person to look at after the run.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let output = Command::new("node")
        .arg(&script)
        .arg(&base)
        .arg(&artifacts)
        .output()
        .expect("node runs (install Node.js 18 or later)");
    let report = format!(
        "{}{}\nberth's log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    assert!(output.status.success(), "{report}");
    for shot in ["demo-desktop.png", "demo-narrow.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is {size} bytes\n{report}");
    }
}
