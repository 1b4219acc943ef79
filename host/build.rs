//! Builds the guest plugins in `../plugins` for `wasm32-wasip2`, so that the
//! demo can embed them and the end-to-end tests can load them. The plugins are a
//! separate cargo workspace with its own target directory; building them from
//! here means `cargo run` and `cargo test` need no extra step.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");

    watch(&plugins);
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings (its target dir, flags, clippy's wrapper) must
    // not leak into a build for another target.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins in {} failed; if the {TARGET} target is missing, run \
             `rustup target add {TARGET}`",
            plugins.display()
        );
    }
    let out = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=BERTH_PLUGIN_DIR={}", out.display());
}

/// Asks cargo to rebuild when a plugin's sources change, skipping build output.
fn watch(plugins: &Path) {
    for name in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
    }
    let entries = std::fs::read_dir(plugins).expect("plugins/ exists");
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
