//! `berth check` and `berth new` as a plugin author runs them: the real binary,
//! real components, and for `berth new` the real toolchains of each language.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{
    BerthProcess, berth_command, connect, echoes, guest_plugin, noise, recv_text,
};

/// Runs `berth ARGS` and returns its exit code and stdout (stderr appended).
fn berth(args: &[&str]) -> (i32, String) {
    let output = berth_command().args(args).output().expect("berth runs");
    (output.status.code().expect("an exit code"), text(&output))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn built(name: &str) -> String {
    Path::new(berth::demo::BUILT_PLUGIN_DIR)
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_accepts_plugins_that_fit_in_every_language_and_lists_what_they_ask_for() {
    let plugins = [
        built("echo.wasm"),
        guest_plugin("js", "echo").display().to_string(),
        guest_plugin("python", "echo").display().to_string(),
    ];
    for plugin in plugins {
        let (code, out) = berth(&["check", &plugin]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("fits berth:plugin/plugin@0.5.0"), "{out}");
        assert!(out.contains("berth:plugin/host@0.5.0"), "{out}");
        assert!(out.contains("berth:plugin/handler@0.5.0"), "{out}");
        assert!(out.contains("on-connect, on-events"), "{out}");
    }
    // A plugin that calls backends names the grant its route needs; one
    // that does not asks for no network at all.
    let (code, out) = berth(&["check", &built("auth_remote.wasm")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("berth:plugin/outbound@0.5.0"), "{out}");
    assert!(
        out.contains("allowed-outbound") && out.contains("fetch"),
        "{out}"
    );
    let (_, out) = berth(&["check", &built("echo.wasm")]);
    assert!(!out.contains("outbound"), "{out}");
    // A plugin that asks for files says so in words an operator can act on,
    // and one that keeps state names the state calls it makes.
    let (code, out) = berth(&["check", &built("testkit.wasm")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("berth:plugin/state@0.5.0"), "{out}");
    assert!(
        out.contains("history") && out.contains("compare-and-set"),
        "{out}"
    );
    assert!(
        out.contains("wasi:filesystem/preopens") && out.contains("[[route.dir]]"),
        "{out}"
    );
}

#[test]
fn check_lists_every_missing_export_and_wrong_type() {
    let (code, out) = berth(&["check", &built("misfit.wasm")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not fit berth:plugin/plugin@0.5.0"),
        "{out}"
    );
    assert!(out.contains("does not export `on-events`"), "{out}");
    assert!(out.contains("`on-connect` has the wrong type"), "{out}");
    assert!(
        out.contains("func(payload: list<u8>, events: list<variant { message(record { conn: u64, kind: enum { text, binary }, start: u32, len: u32 })"),
        "berth's side is spelled out: {out}"
    );
}

#[test]
fn check_says_when_a_file_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(built("echo.wasm")).unwrap();
    let random = noise(0x9e37_79b9_7f4a_7c15, 4096);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "module.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        ("random.wasm", random, "not WebAssembly"),
        (
            "truncated.wasm",
            echo[..echo.len() / 2].to_vec(),
            "not a valid component",
        ),
        ("empty.wasm", Vec::new(), "not WebAssembly"),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, out) = berth(&["check", &path.display().to_string()]);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains(says), "{name}: {out}");
    }
    let (code, out) = berth(&[
        "check",
        &dir.path().join("absent.wasm").display().to_string(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read"), "{out}");
}

/// `berth new NAME --lang LANG`, then the build command it prints, then
/// `berth check` on the output, then the plugin served and spoken to.
async fn new_project_builds_fits_and_serves(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("hello-berth");
    let (code, out) = berth(&[
        "new",
        "hello-berth",
        "--lang",
        lang,
        "--dir",
        &project.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    let build = out
        .lines()
        .skip_while(|line| *line != "build it:")
        .nth(1)
        .and_then(|line| line.split_once(" && "))
        .map(|(_, command)| command.to_string())
        .unwrap_or_else(|| panic!("a build command in {out}"));
    let check = out
        .lines()
        .skip_while(|line| !line.starts_with("check it"))
        .nth(1)
        .and_then(|line| line.trim().strip_prefix("berth check "))
        .map(|output| project.join(output).display().to_string())
        .unwrap_or_else(|| panic!("a check command in {out}"));

    let mut command = Command::new("sh");
    command.arg("-c").arg(&build).current_dir(&project);
    // This test runs under cargo; the project's own build must not inherit
    // cargo's settings for this crate (its target dir above all).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key == "RUSTFLAGS"
            || key.starts_with("RUSTC_")
        {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("the build command runs");
    assert!(output.status.success(), "{build}:\n{}", text(&output));

    let (code, out) = berth(&["check", &check]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fits berth:plugin/plugin@0.5.0"), "{out}");

    let wasm = Path::new(&check);
    let folder = wasm.parent().unwrap().display().to_string();
    let route = format!("/{}", wasm.file_stem().unwrap().to_string_lossy());
    let state = tempfile::tempdir().unwrap();
    let server = BerthProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--plugin-dir",
        &folder,
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    server
        .wait_log(&["plugin loaded", &format!("route={route}")])
        .await;
    let mut client = connect(&server.url(&route)).await;
    assert_eq!(recv_text(&mut client).await, "hello from hello-berth");
    echoes(&mut client, "ping").await;
}

#[tokio::test]
async fn new_rust_project_builds_fits_and_serves() {
    new_project_builds_fits_and_serves("rust").await;
}

#[tokio::test]
async fn new_js_project_builds_fits_and_serves() {
    new_project_builds_fits_and_serves("js").await;
}

#[tokio::test]
async fn new_python_project_builds_fits_and_serves() {
    new_project_builds_fits_and_serves("python").await;
}
