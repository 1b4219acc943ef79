//! Helpers: a real berth server on 127.0.0.1 port 0, real WebSocket clients,
//! raw HTTP requests, and the real `berth` binary. Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A berth server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The admin listener's address, if the config sets `admin-listen`.
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The state store's folder, unless the config names one.
    _state: Option<tempfile::TempDir>,
}

/// The config text for a test server: port 0, the built plugins, then `routes`.
pub fn config_text(routes: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nplugin-dir = {:?}\n{routes}",
        berth::demo::BUILT_PLUGIN_DIR
    )
}

impl TestServer {
    /// Starts a server with the given top-level keys and `[[route]]` tables.
    pub async fn start(routes: &str) -> TestServer {
        // Each server keeps its state apart, unless the test names a folder.
        let state = (!routes.contains("state-dir")).then(|| tempfile::tempdir().unwrap());
        let text = match &state {
            Some(dir) => format!("state-dir = {:?}\n{}", dir.path(), config_text(routes)),
            None => config_text(routes),
        };
        let config = Config::from_toml(&text, Path::new("test.toml"), Path::new("/"))
            .expect("test config is valid");
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            admin,
            stop: Some(stop),
            task,
            _state: state,
        }
    }

    /// The ws:// URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
    }
}

/// Opens a WebSocket connection, failing the test on error.
pub async fn connect(url: &str) -> Client {
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect succeeds");
    client
}

/// An upgrade request for `url` with extra headers.
pub fn request(url: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = url.into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    request
}

/// Tries an upgrade: `Ok(client, response headers)` or `Err((status, body))`.
pub async fn try_connect(
    request: Request<()>,
) -> Result<(Client, tokio_tungstenite::tungstenite::http::HeaderMap), (u16, String)> {
    use tokio_tungstenite::tungstenite::Error;
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((client, response)) => Ok((client, response.headers().clone())),
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

/// The HTTP status an upgrade is refused with, or `None` if it is accepted.
pub async fn refusal(request: Request<()>) -> Option<u16> {
    try_connect(request).await.err().map(|(status, _)| status)
}

/// The next message that is not a ping or a pong (the library answers
/// pings by itself): a data message, or the close frame.
pub async fn recv(client: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message arrives in time")
            .expect("the connection is open")
            .expect("the message is valid");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next message, which must be text.
pub async fn recv_text(client: &mut Client) -> String {
    match recv(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message.
pub async fn send_text(client: &mut Client, text: &str) {
    client
        .send(Message::text(text))
        .await
        .expect("send succeeds");
}

/// Reads until the server's close frame and returns it.
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    match recv(client).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A raw HTTP/1.1 GET with extra header lines; returns the status and the whole answer.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.expect("write");
    // Read the head, then the body its content-length announces (a 101 has
    // none, and its connection stays open).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                break;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, answer)
}

/// A JSON field's raw value in a flat JSON object written by the chat plugin.
pub fn json_field<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {json}"))
        + key.len();
    let rest = &json[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').expect("closing quote") + 2
    } else {
        rest.find([',', '}']).expect("end of value")
    };
    &rest[..end]
}

/// Asks the testkit on `url` which `on-close` calls it has seen, until
/// `conn:code` is among them (bounded).
pub async fn await_on_close(url: &str, conn: &str, code: u16) {
    let expected = format!("{conn}:{code}");
    let mut observer = connect(url).await;
    for _ in 0..100 {
        send_text(&mut observer, "closes").await;
        let seen = recv_text(&mut observer).await;
        if seen.split(' ').any(|c| c == expected) {
            return;
        }
        assert!(
            !seen.split(' ').any(|c| c.starts_with(&format!("{conn}:"))),
            "on-close for {conn} had the wrong code: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no on-close {expected}");
}

/// Connects to the testkit at `url` and returns the client with its id.
pub async fn kit_client(url: &str) -> (Client, String) {
    let mut client = connect(url).await;
    send_text(&mut client, "whoami").await;
    let id = recv_text(&mut client).await.replace("id ", "");
    (client, id)
}

/// Reads the first line of a `berth serve` banner and the address in it. The
/// rest of stdout is left in the pipe, as an operator's pager would; reading
/// only this much closes the pipe early, which berth must survive.
pub fn read_banner(child: &mut std::process::Child) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let mut banner = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut banner)
        .expect("banner");
    banner
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in banner {banner:?}"))
}

/// A folder berth runs in from a config file: `plugins/` (empty at first),
/// `cache/` and `berth.toml`.
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A new site with an empty `plugins/` folder.
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        Site { dir }
    }

    /// The site's folder.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The plugin folder.
    pub fn plugins(&self) -> std::path::PathBuf {
        self.dir.path().join("plugins")
    }

    /// The config file.
    pub fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("berth.toml")
    }

    /// Writes the config: port 0, the site's folders, then `rest`.
    pub fn write_config(&self, rest: &str) {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nplugin-dir = \"plugins\"\ncache-dir = \"cache\"\n{rest}"
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// Installs `bytes` as `plugins/NAME` the way build tools do: written
    /// under a temporary dotfile name, then renamed over the real one.
    pub fn install(&self, name: &str, bytes: &[u8]) {
        let temp = self.plugins().join(format!(".{name}.tmp"));
        std::fs::write(&temp, bytes).unwrap();
        std::fs::rename(&temp, self.plugins().join(name)).unwrap();
    }

    /// Starts `berth serve --config` on the site with `extra` arguments, at
    /// log level info.
    pub fn start(&self, extra: &[&str]) -> BerthProcess {
        self.start_with_log(Some("info"), extra)
    }

    /// [`Site::start`] with `RUST_LOG` as given (`None`: unset).
    pub fn start_with_log(&self, rust_log: Option<&str>, extra: &[&str]) -> BerthProcess {
        let config = self.config();
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        BerthProcess::start_with_log(&args, rust_log)
    }
}

/// A `berth serve` process whose stderr (the log) is collected as it runs.
pub struct BerthProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BerthProcess {
    /// Starts `berth serve ARGS` at log level info and reads the address from its banner.
    pub fn start(args: &[&str]) -> BerthProcess {
        BerthProcess::start_with_log(args, Some("info"))
    }

    /// Starts `berth serve ARGS` with `RUST_LOG` set to `rust_log`, or unset
    /// for `None` (the config's `log-level` then decides).
    pub fn start_with_log(args: &[&str], rust_log: Option<&str>) -> BerthProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .arg("serve")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.spawn().expect("berth starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = read_banner(&mut child);
        BerthProcess { child, addr, log }
    }

    /// The ws:// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until the log holds a line containing every one of `parts`; returns it.
    pub async fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|line| parts.iter().all(|p| line.contains(p)))
            {
                return line.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {parts:?} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (`-HUP`, `-TERM`...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A built plugin's bytes.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(berth::demo::BUILT_PLUGIN_DIR).join(name)).expect("built plugin")
}

/// `component` with a custom section appended: the same behavior, other
/// bytes (a new content hash), as a rebuilt plugin would be.
pub fn with_nonce(component: &[u8], nonce: u64) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"nonce";
    let payload = nonce.to_le_bytes();
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Connects with a tiny receive buffer, so that a client that stops reading
/// backs up into the server quickly.
pub async fn connect_small_window(url: &str, addr: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let stream = socket.connect(addr).await.expect("connect");
    let stream = MaybeTlsStream::Plain(stream);
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    client
}

/// The resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// The path of the `lang` plugin `name` (`lang` is `js` or `python`: a folder
/// of `plugins/`). The first call for a language runs `plugins/LANG/build`,
/// which caches by source hash, and compiles each output into berth's compile
/// cache, so that servers started by parallel tests load it rather than each
/// compiling megabytes of interpreter at the same time.
pub fn guest_plugin(lang: &'static str, name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, OnceLock};
    /// Each language's output folder, made once however many tests ask at once.
    type Built = Mutex<HashMap<&'static str, Arc<OnceLock<PathBuf>>>>;
    static BUILT: OnceLock<Built> = OnceLock::new();
    let slot = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(lang)
        .or_default()
        .clone();
    let dir = slot.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("guests")
            .join(lang);
        let script = root.join("plugins").join(lang).join("build");
        let output = std::process::Command::new(&script)
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for entry in std::fs::read_dir(&out).expect("the build wrote its folder") {
            let path = entry.expect("a listing entry").path();
            if path.extension().is_some_and(|e| e == "wasm") {
                let bytes = std::fs::read(&path).expect("a built plugin");
                berth::runtime::link_check(
                    &path.display().to_string(),
                    &bytes,
                    berth::folders::default_cache_dir(),
                )
                .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
            }
        }
        out
    });
    dir.join(format!("{name}.wasm"))
}
