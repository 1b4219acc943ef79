//! Helpers: a real berth server on 127.0.0.1 port 0, real WebSocket clients,
//! child processes (the real `berth` binary, `redis-server`), and polling
//! until something holds. Every wait is bounded. Raw sockets are in `raw.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth::{Config, Server};
use futures_util::{SinkExt, StreamExt};
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

/// How long [`eventually`] pauses between two tries.
const POLL: Duration = Duration::from_millis(20);

/// Runs `check` until it returns `Ok`, pausing 20 ms between tries, for at
/// most `budget` (every test gives [`WAIT`]); returns what it returned.
/// `check` tells with `Err` what it found instead, and the test fails naming
/// `what` never came true and the last thing found.
pub async fn eventually<T>(
    budget: Duration,
    what: &str,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    eventually_every(budget, POLL, what, check).await
}

/// [`eventually`] with `pause` between tries, for a check that is costly
/// or that must not be repeated quickly.
pub async fn eventually_every<T>(
    budget: Duration,
    pause: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "never true within {budget:?}: {what}; last found: {last}"
        );
        tokio::time::sleep(pause).await;
    }
}

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The compile cache of every server and `berth` process the tests start
/// (unless its config names another), and the guest plugins' build cache:
/// in the build's own temporary folder, never the user's `~/.cache/berth`.
/// One for all, so that a plugin (the megabytes of a JavaScript or Python
/// interpreter above all) is built and compiled once rather than by every
/// test at the same time.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cache")
        .join("berth")
}

/// The config text for a test server: port 0, the built plugins, then `routes`.
pub fn config_text(routes: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nplugin-dir = {:?}\n{routes}",
        berth::demo::BUILT_PLUGIN_DIR
    )
}

/// An echo route at `/echo` to stand by, and a testkit route at `/kit`
/// (whose `closes` command tells what `on-close` heard). The testkit's is
/// the last table: keys written after it are its own.
pub const ECHO_AND_KIT: &str = r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
"#;

/// A berth server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Every listener's address, with whether it is TLS, in config order.
    pub addrs: Vec<(SocketAddr, bool)>,
    /// The admin listener's address, if the config sets `admin-listen`.
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The state store's folder, unless the config names one.
    _state: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with the given top-level keys and `[[route]]` tables.
    pub async fn start(routes: &str) -> TestServer {
        TestServer::with_config(&config_text(routes)).await
    }

    /// Starts a server from a whole config `text`. Unless the text names
    /// them, the state store goes in a folder of its own and the compile
    /// cache is the tests' [`cache_dir`].
    pub async fn with_config(text: &str) -> TestServer {
        let state = (!text.contains("state-dir")).then(|| tempfile::tempdir().unwrap());
        let mut full = String::new();
        if let Some(dir) = &state {
            full.push_str(&format!("state-dir = {:?}\n", dir.path()));
        }
        if !text.contains("cache-dir") {
            full.push_str(&format!("cache-dir = {:?}\n", cache_dir()));
        }
        full.push_str(text);
        let config = Config::from_toml(&full, Path::new("test.toml"), Path::new("/"))
            .expect("test config is valid");
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let addrs = server.local_addrs();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            addrs,
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

/// Tries new connections to `url` until one is accepted (bounded), and
/// returns it: a place that was just given back may take a moment to free.
pub async fn admitted(url: &str) -> Client {
    eventually(
        WAIT,
        &format!("{url} accepts a connection"),
        async || match try_connect(request(url, &[])).await {
            Ok((client, _)) => Ok(client),
            Err((status, body)) => Err(format!("refused {status} {body}")),
        },
    )
    .await
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

/// Sends a command to a testkit (or any plugin that answers each message)
/// and returns its answer, the next text message.
pub async fn ask(client: &mut Client, command: &str) -> String {
    send_text(client, command).await;
    recv_text(client).await
}

/// Asks `command` until the answer satisfies `done` (bounded by [`WAIT`]);
/// returns that answer.
pub async fn ask_until(client: &mut Client, command: &str, done: impl Fn(&str) -> bool) -> String {
    eventually(WAIT, &format!("an answer to {command:?}"), async || {
        let answer = ask(client, command).await;
        if done(&answer) {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    })
    .await
}

/// Sends `text` to an echo route's client and expects it back as the next message.
pub async fn echoes(client: &mut Client, text: &str) {
    send_text(client, text).await;
    assert_eq!(recv_text(client).await, text, "the echo route misanswered");
}

/// The testkit's id for `client`'s connection.
pub async fn whoami(client: &mut Client) -> String {
    ask(client, "whoami").await.replace("id ", "")
}

/// Connects to the testkit at `url` and returns the client with its id.
pub async fn kit_client(url: &str) -> (Client, String) {
    let mut client = connect(url).await;
    let id = whoami(&mut client).await;
    (client, id)
}

/// Reads until the server's close frame and returns it.
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    match recv(client).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a close frame, got {other:?}"),
    }
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

/// Asks the testkit on `url`, on a connection of its own, which `on-close`
/// calls it has seen, until `conn:code` is among them (bounded).
pub async fn await_on_close(url: &str, conn: &str, code: u16) {
    let mut observer = connect(url).await;
    await_on_close_seen_by(&mut observer, conn, code).await;
}

/// [`await_on_close`], asked on `client`, a connection of the plugin already open.
pub async fn await_on_close_seen_by(client: &mut Client, conn: &str, code: u16) {
    let expected = format!("{conn}:{code}");
    eventually(WAIT, &format!("on-close {expected}"), async || {
        let seen = ask(client, "closes").await;
        if seen.split(' ').any(|c| c == expected) {
            return Ok(());
        }
        assert!(
            !seen.split(' ').any(|c| c.starts_with(&format!("{conn}:"))),
            "on-close for {conn} had the wrong code: {seen}"
        );
        Err(format!("seen {seen:?}"))
    })
    .await
}

/// A child process whose stderr is collected line by line as it runs, so
/// that a test can wait for a line; killed when dropped.
pub struct Process {
    child: std::process::Child,
    /// What it runs, for messages.
    name: String,
    stderr: Arc<Mutex<String>>,
    /// Collects stderr until the process closes it.
    collector: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` with its stderr collected (its stdout as the command says).
    pub fn spawn(command: Command) -> Process {
        let name = command.get_program().to_string_lossy().into_owned();
        Process::try_spawn(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    }

    /// [`Process::spawn`], or why the command could not be started.
    pub fn try_spawn(mut command: Command) -> std::io::Result<Process> {
        use std::io::{BufRead, BufReader};
        let name = command.get_program().to_string_lossy().into_owned();
        let mut child = command.stderr(Stdio::piped()).spawn()?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let sink = stderr.clone();
        let collector = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Ok(Process {
            child,
            name,
            stderr,
            collector: Some(collector),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, if the command piped it; once.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until stderr holds a line containing every one of `parts`; returns it.
    pub async fn wait_log(&self, parts: &[&str]) -> String {
        let what = format!("a line of {} with {parts:?}", self.name);
        eventually(WAIT, &what, async || {
            let log = self.log();
            match log
                .lines()
                .find(|line| parts.iter().all(|p| line.contains(p)))
            {
                Some(line) => Ok(line.to_string()),
                None => Err(format!("none in:\n{log}")),
            }
        })
        .await
    }

    /// Sends a signal (`-HUP`, `-TERM`...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (bounded) until it exits and returns how; its stderr is then
    /// all in [`Process::log`].
    pub async fn exited(&mut self) -> ExitStatus {
        let what = format!("{} exited", self.name);
        let child = &mut self.child;
        let status = eventually(WAIT, &what, async || {
            child
                .try_wait()
                .expect("try_wait")
                .ok_or_else(|| "still running".to_string())
        })
        .await;
        if let Some(collector) = self.collector.take() {
            collector
                .join()
                .expect("the stderr collector does not panic");
        }
        status
    }

    /// Kills it with SIGKILL, as a crash would, and waits for it to go.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `berth` binary as a command: no colors, and the tests' [`cache_dir`]
/// as its compile cache unless a config or `--cache-dir` names another.
pub fn berth_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    let cache_home = cache_dir().parent().expect("a parent").to_path_buf();
    command
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", cache_home);
    command
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
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin folder.
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    /// Writes the config: port 0, the site's folders, then `rest`.
    pub fn write_config(&self, rest: &str) {
        self.write_config_from(Path::new("plugins"), rest);
    }

    /// Writes the config: port 0, plugins from `plugin_dir`, the site's
    /// cache, then `rest`.
    pub fn write_config_from(&self, plugin_dir: &Path, rest: &str) {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nplugin-dir = {plugin_dir:?}\ncache-dir = \"cache\"\n{rest}"
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

/// A `berth serve` process (a [`Process`]) and the address its banner names.
pub struct BerthProcess {
    process: Process,
    pub addr: SocketAddr,
}

impl BerthProcess {
    /// Starts `berth serve ARGS` at log level info and reads the address from its banner.
    pub fn start(args: &[&str]) -> BerthProcess {
        BerthProcess::start_with_log(args, Some("info"))
    }

    /// Writes `text` to `dir/berth.toml` and starts `berth serve --config` on it.
    pub fn with_config(dir: &Path, text: &str) -> BerthProcess {
        let path = dir.join("berth.toml");
        std::fs::write(&path, text).expect("config written");
        BerthProcess::start(&["--config", path.to_str().expect("a UTF-8 path")])
    }

    /// Starts `berth serve ARGS` with `RUST_LOG` set to `rust_log`, or unset
    /// for `None` (the config's `log-level` then decides).
    pub fn start_with_log(args: &[&str], rust_log: Option<&str>) -> BerthProcess {
        let mut command = berth_command();
        command.arg("serve").args(args).stdout(Stdio::piped());
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut process = Process::spawn(command);
        let addr = read_banner(process.take_stdout());
        BerthProcess { process, addr }
    }

    /// The ws:// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl std::ops::Deref for BerthProcess {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for BerthProcess {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Reads the first line of a `berth serve` banner and the address in it. The
/// rest of stdout is left in the pipe, as an operator's pager would; reading
/// only this much closes the pipe early, which berth must survive.
fn read_banner(stdout: std::process::ChildStdout) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("banner");
    banner
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in banner {banner:?}"))
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

/// `len` bytes of noise from `seed`, the same for the same seed (xorshift:
/// varied bytes without a dependency).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
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
/// which caches by source hash (in `guests/` of [`cache_dir`]), and compiles
/// each output into the tests' compile cache ([`cache_dir`]), so that servers
/// started by parallel tests load it rather than each compiling megabytes of
/// interpreter at the same time.
pub fn guest_plugin(lang: &'static str, name: &str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::OnceLock;
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
        // The build caches by source hash in the tests' cache, not the user's.
        let output = Command::new(&script)
            .arg(&out)
            .env("BERTH_GUEST_CACHE", cache_dir().join("guests"))
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
                berth::runtime::link_check(&path.display().to_string(), &bytes, Some(cache_dir()))
                    .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
            }
        }
        out
    });
    dir.join(format!("{name}.wasm"))
}
