//! Guest stdout and stderr, turned into log lines tagged with the route and the
//! connection the plugin was called about, at a bounded rate per instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest log line kept from a guest; the rest of the line is cut.
pub(crate) const MAX_LINE: usize = 4096;

/// Which stream a guest wrote to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stdio {
    Stdout,
    Stderr,
}

/// Lines per second a plugin instance may log, on average.
const LINES_PER_SECOND: f64 = 100.0;
/// Lines an instance may log at once after a quiet spell.
const BURST: f64 = 200.0;

/// An instance's allowance of log lines (stdout and stderr together): a token
/// bucket, so a plugin printing in a loop costs the log a bounded rate, and the
/// operator learns how much was dropped.
pub(crate) struct LineBudget {
    route: Arc<str>,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped and not yet reported.
    dropped: u64,
    /// Whether the operator has been told lines are being dropped.
    told: bool,
    reported: Instant,
}

/// How often, at most, the count of dropped lines is logged: the notices must
/// not become a flood of their own.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl LineBudget {
    /// A full allowance for one instance of `route`.
    pub(crate) fn new(route: Arc<str>) -> Arc<LineBudget> {
        let now = Instant::now();
        Arc::new(LineBudget {
            route,
            state: Mutex::new(Bucket {
                tokens: BURST,
                refilled: now,
                dropped: 0,
                told: false,
                reported: now,
            }),
        })
    }

    /// Whether one more line may be logged now.
    pub(crate) fn take(&self) -> bool {
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + earned).min(BURST);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            bucket.dropped += 1;
            if !bucket.told {
                // Said at once, so an operator is not left guessing while the
                // plugin floods; the count follows, at most once a second.
                bucket.told = true;
                tracing::warn!(
                    target: "berth::plugin",
                    route = %self.route,
                    "plugin output over {LINES_PER_SECOND} lines per second; dropping lines"
                );
            }
            return false;
        }
        bucket.tokens -= 1.0;
        if bucket.dropped > 0 && now.duration_since(bucket.reported) >= REPORT_EVERY {
            let dropped = std::mem::take(&mut bucket.dropped);
            bucket.told = false;
            bucket.reported = now;
            drop(bucket);
            self.report_dropped(dropped);
        }
        true
    }

    fn report_dropped(&self, dropped: u64) {
        if dropped > 0 {
            tracing::warn!(
                target: "berth::plugin",
                route = %self.route,
                "{dropped} lines of plugin output dropped (over {LINES_PER_SECOND} lines per second)"
            );
        }
    }
}

impl Drop for LineBudget {
    fn drop(&mut self) {
        let dropped = self.state.get_mut().map_or(0, |b| b.dropped);
        self.report_dropped(dropped);
    }
}

/// Who is writing: the route, and the connection of the call in progress (0 when none).
#[derive(Clone)]
pub(crate) struct LogTarget {
    pub(crate) route: Arc<str>,
    pub(crate) current_conn: Arc<AtomicU64>,
    pub(crate) stream: Stdio,
    /// Shared by the instance's stdout and stderr.
    pub(crate) budget: Arc<LineBudget>,
}

impl LogTarget {
    fn emit(&self, line: &[u8]) {
        if !self.budget.take() {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let conn = self.current_conn.load(Ordering::Relaxed);
        match self.stream {
            Stdio::Stdout => {
                tracing::info!(target: "berth::plugin", route = %self.route, conn, "{line}")
            }
            Stdio::Stderr => {
                tracing::warn!(target: "berth::plugin", route = %self.route, conn, "{line}")
            }
        }
    }
}

impl IsTerminal for LogTarget {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogTarget {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            target: self.clone(),
            buf: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 guests are served, and they use `p2_stream`.
        Box::new(tokio::io::sink())
    }
}

/// Collects guest output into lines; never blocks, so a guest can always write.
struct LineWriter {
    target: LogTarget,
    buf: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            self.target.emit(&self.buf);
            self.buf.clear();
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.target.emit(&self.buf);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_the_burst_and_then_no_more_than_the_rate() {
        let budget = LineBudget::new("/r".into());
        let started = Instant::now();
        let passed = (0..10_000).filter(|_| budget.take()).count() as f64;
        // However slow the machine, no more than the burst plus what the
        // elapsed time earned gets through.
        let earned = started.elapsed().as_secs_f64() * LINES_PER_SECOND;
        assert!(passed >= BURST, "{passed}");
        assert!(
            passed <= BURST + earned + 1.0,
            "{passed} after {earned} earned"
        );
    }
}
