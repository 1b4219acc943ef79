//! Guest stdout and stderr, turned into log lines tagged with the route and the
//! connection the plugin was called about.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest log line kept from a guest; the rest of the line is cut.
const MAX_LINE: usize = 4096;

/// Which stream a guest wrote to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stdio {
    Stdout,
    Stderr,
}

/// Who is writing: the route, and the connection of the call in progress (0 when none).
#[derive(Clone)]
pub(crate) struct LogTarget {
    pub(crate) route: Arc<str>,
    pub(crate) current_conn: Arc<AtomicU64>,
    pub(crate) stream: Stdio,
}

impl LogTarget {
    fn emit(&self, line: &[u8]) {
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
