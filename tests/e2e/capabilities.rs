//! What a plugin can reach: nothing but clocks and random numbers by default;
//! environment variables and folders only when its route grants them, and a
//! read-only folder stays read-only.

use crate::support::{TestServer, ask, connect};

/// Sends `command` on a new connection to `url` and returns the answer.
async fn ask_anew(url: &str, command: &str) -> String {
    ask(&mut connect(url).await, command).await
}

#[tokio::test]
async fn a_plugin_gets_no_environment_arguments_or_files_by_default() {
    // The host's own environment is not inherited: PATH is set in every
    // test environment, and the plugin must not see it.
    assert!(std::env::var("PATH").is_ok());
    let server = TestServer::start("[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n").await;
    let url = server.url("/kit");
    assert_eq!(ask_anew(&url, "env PATH").await, "env none");
    assert_eq!(ask_anew(&url, "args").await, "args 0");
    assert!(
        ask_anew(&url, "read /etc/hostname")
            .await
            .starts_with("error ")
    );
    assert!(
        ask_anew(&url, "write /tmp/berth-escape x")
            .await
            .starts_with("error ")
    );
    assert!(!std::path::Path::new("/tmp/berth-escape").exists());
    server.stop().await;
}

#[tokio::test]
async fn granted_environment_and_folders_are_visible_and_read_only_unless_stated() {
    let data = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("motd.txt"), "hello from the host").unwrap();
    let routes = format!(
        "[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n\
         [route.env]\nREGION = \"eu-west\"\n\
         [[route.dir]]\nhost = {data:?}\nguest = \"/data\"\n\
         [[route.dir]]\nhost = {scratch:?}\nguest = \"/scratch\"\nwritable = true\n\
         [[route]]\npath = \"/other\"\nplugin = \"testkit.wasm\"\n",
        data = data.path(),
        scratch = scratch.path(),
    );
    let server = TestServer::start(&routes).await;
    let url = server.url("/kit");
    assert_eq!(ask_anew(&url, "env REGION").await, "env eu-west");
    assert_eq!(
        ask_anew(&url, "read /data/motd.txt").await,
        "read hello from the host"
    );
    // Read-only: neither a new file nor a change to an existing one.
    assert!(
        ask_anew(&url, "write /data/new.txt x")
            .await
            .starts_with("error ")
    );
    assert!(
        ask_anew(&url, "write /data/motd.txt x")
            .await
            .starts_with("error ")
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("motd.txt")).unwrap(),
        "hello from the host"
    );
    assert!(!data.path().join("new.txt").exists());
    // Writable when the grant says so.
    assert_eq!(
        ask_anew(&url, "write /scratch/out.txt done").await,
        "written"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("out.txt")).unwrap(),
        "done"
    );
    // No escaping the folder.
    assert!(
        ask_anew(&url, "read /data/../../etc/hostname")
            .await
            .starts_with("error ")
    );
    // Grants are per route: the other route sees none of it.
    let other = server.url("/other");
    assert_eq!(ask_anew(&other, "env REGION").await, "env none");
    assert!(
        ask_anew(&other, "read /data/motd.txt")
            .await
            .starts_with("error ")
    );
    server.stop().await;
}
