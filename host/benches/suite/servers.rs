//! The servers under test: starting them on CPU 0, draining their output, and
//! reading their CPU time and memory from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::LIMIT;

/// Whether `taskset` can pin processes here.
pub fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How many lines of a server's stderr the report quotes; the rest are only counted.
const KEPT_LINES: usize = 12;

/// One `plugin loaded` line of berth's log: how a route's new version was made.
#[derive(Clone, Debug)]
pub struct Load {
    /// The first 12 hex digits of the plugin's content hash.
    pub hash: String,
    /// Where the compiled plugin came from: `compiled`, `cache` or `memory`.
    pub from: String,
    /// Milliseconds from reading the file to having the compiled plugin.
    pub compile_ms: f64,
    /// Milliseconds from reading the file to the route's workers being ready.
    pub ready_ms: f64,
}

/// What a server wrote to stderr: berth's instance timings and plugin loads
/// apart, anything else kept so that the report can say what went wrong.
#[derive(Default)]
struct Log {
    made: Vec<u64>,
    loads: Vec<Load>,
    other_count: usize,
    other: Vec<String>,
}

impl Log {
    fn notes(&self) -> Option<String> {
        if self.other_count == 0 {
            return None;
        }
        let mut text = String::new();
        for line in &self.other {
            text.push_str(&format!("  {line}\n"));
        }
        if self.other_count > self.other.len() {
            text.push_str(&format!(
                "  ... {} more lines\n",
                self.other_count - self.other.len()
            ));
        }
        Some(text.trim_end().to_string())
    }
}

/// The logs of the servers started so far, for [`report_servers_on_panic`].
static LOGS: Mutex<Vec<NamedLog>> = Mutex::new(Vec::new());

/// A server's name and its log, for as long as the server lives.
type NamedLog = (&'static str, Weak<Mutex<Log>>);

/// Makes a panic also print what each server still running wrote to stderr:
/// a client's failure is often only the echo of a server's.
pub fn report_servers_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        // A task's panic is raised again by whoever awaits it; report once.
        static REPORTED: AtomicBool = AtomicBool::new(false);
        if REPORTED.swap(true, Ordering::Relaxed) {
            return;
        }
        // The readers may still be a line or two behind the servers.
        std::thread::sleep(Duration::from_millis(200));
        let Ok(logs) = LOGS.try_lock() else { return };
        for (name, log) in logs.iter() {
            if let Some(log) = log.upgrade()
                && let Ok(log) = log.try_lock()
            {
                let notes = log.notes().unwrap_or_else(|| "  (nothing)".to_string());
                eprintln!("{name}'s stderr:\n{notes}");
            }
        }
    }));
}

/// A running server process, killed when dropped.
pub struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `program args` on CPU 0 (when taskset exists) and waits for the
    /// `listening on ADDR` line both servers print first.
    pub fn start(name: &'static str, program: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = if has_taskset() {
            let mut c = Command::new("taskset");
            // taskset execs the program, so the child's pid is the server's.
            c.args(["-c", "0", program]);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {program}: {e}"));

        // Both pipes are drained for the server's whole life: a full pipe
        // would stall the server mid-measurement.
        let (first, lines) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut lines_read = stdout.lines();
            let _ = first.send(lines_read.next());
            for _ in lines_read {}
        });
        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                if let Some(load) = plugin_load(&line) {
                    log.loads.push(load);
                    continue;
                }
                match instance_micros(&line) {
                    Some(micros) => log.made.push(micros),
                    None if line.trim().is_empty() => {}
                    None => {
                        log.other_count += 1;
                        if log.other.len() < KEPT_LINES {
                            log.other.push(line);
                        }
                    }
                }
            }
        });

        LOGS.lock().unwrap().push((name, Arc::downgrade(&log)));
        let mut server = Server {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
        };
        let line = match lines.recv_timeout(LIMIT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => {
                let _ = server.child.wait();
                let notes = server.stop().unwrap_or_default();
                panic!("{name} exited before listening; its stderr:\n{notes}");
            }
            Err(_) => panic!("{name} printed nothing within {LIMIT:?}"),
        };
        server.addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
        server
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's name in tables.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// User plus system CPU time of the whole process so far, all threads
    /// included, at /proc's resolution of one clock tick.
    pub fn cpu(&self) -> Duration {
        cpu_time(&self.child.id().to_string())
    }

    /// The server's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("{}: cannot read /proc/{pid}/status: {e}", self.name));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Takes the `instance made` timings (µs) logged since the last call,
    /// waiting up to a second for `expected` of them to come through the pipe.
    pub fn take_made(&self, expected: usize) -> Vec<u64> {
        for _ in 0..100 {
            if self.log.lock().unwrap().made.len() >= expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::mem::take(&mut self.log.lock().unwrap().made)
    }

    /// Takes the `plugin loaded` line of the plugin whose content hash starts
    /// with `hash`, waiting up to a second for it to come through the pipe.
    pub fn take_load(&self, hash: &str) -> Option<Load> {
        for _ in 0..100 {
            {
                let mut log = self.log.lock().unwrap();
                if let Some(at) = log.loads.iter().position(|l| l.hash == hash) {
                    return Some(log.loads.remove(at));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The stderr lines other than instance timings and plugin loads, first
    /// few quoted, if any.
    pub fn notes(&self) -> Option<String> {
        self.log.lock().unwrap().notes()
    }

    /// Stops the server the way an operator's restart does: SIGTERM, then
    /// wait for it to exit (killed if it has not within [`LIMIT`]). Returns
    /// how long that took and its [`notes`](Self::notes), complete.
    pub fn terminate(mut self) -> (Duration, Option<String>) {
        let began = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill only sends a signal, to our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        while began.elapsed() < LIMIT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = began.elapsed();
        (took, self.stop())
    }

    /// Kills the server and returns its [`notes`](Self::notes), complete.
    pub fn stop(mut self) -> Option<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe closes with the process, so the reader ends promptly.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.notes()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This load generator's CPU time so far: beside the elapsed time it shows
/// whether the generator, not the server, was the limit.
pub fn own_cpu() -> Duration {
    cpu_time("self")
}

/// User plus system CPU time of process `pid` (all its threads) from /proc.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// The `micros=N` of berth's `instance made` trace line, if `line` is one.
fn instance_micros(line: &str) -> Option<u64> {
    if !line.contains("instance made") {
        return None;
    }
    line.split("micros=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The fields of berth's `plugin loaded` info line, if `line` is one:
/// `... plugin loaded route=/x file=... hash=d10cf7284ccf from="cache" compile_ms=1.1 ready_ms=1.7`.
fn plugin_load(line: &str) -> Option<Load> {
    if !line.contains("plugin loaded ") {
        return None;
    }
    Some(Load {
        hash: field(line, "hash")?.to_string(),
        from: field(line, "from")?.trim_matches('"').to_string(),
        compile_ms: field(line, "compile_ms")?.parse().ok()?,
        ready_ms: field(line, "ready_ms")?.parse().ok()?,
    })
}

/// The value of ` NAME=VALUE` in a tracing line, up to the next space.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// Clock ticks per second, the unit of /proc's CPU times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}
