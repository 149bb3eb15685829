//! `--metrics-addr`: the stages' counters in Prometheus' text format, served over
//! HTTP while the load runs (cargo feature `prometheus`, on by default).
//!
//! stageflow records every stage's counters into the `metrics` facade (its `metrics`
//! feature); this module installs `metrics-exporter-prometheus`'s recorder (without
//! its own HTTP listener) and answers `GET /metrics` with its rendering. The HTTP side
//! is a few lines on std's `TcpListener`: one request per connection, answered and
//! closed, which is all a scraper needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics endpoint; it stops serving when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Installs the Prometheus recorder (before any stage starts: stages register
    /// their counters when they start) and serves it on `addr` (`127.0.0.1:9898`;
    /// port 0 picks a free port, see [`addr`](Self::addr)). Errors name the option
    /// and the value.
    ///
    /// ```no_run
    /// let server = stageflow_etl::metrics::MetricsServer::start("127.0.0.1:0")?;
    /// println!("scrape http://{}/metrics", server.addr());
    /// # Ok::<(), String>(())
    /// ```
    pub fn start(addr: &str) -> Result<MetricsServer, String> {
        let parsed: SocketAddr = addr.parse().map_err(|_| {
            format!("--metrics-addr must be an address like 127.0.0.1:9898, got: {addr:?}")
        })?;
        let listener = TcpListener::bind(parsed)
            .map_err(|e| format!("--metrics-addr {addr}: cannot listen there: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("--metrics-addr: cannot install the Prometheus recorder: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("etl-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    // A failed connection is the scraper's problem, not the load's.
                    if let Ok(conn) = conn {
                        let _ = answer(conn, &handle);
                    }
                }
            })
            .map_err(|e| format!("--metrics-addr: cannot start its thread: {e}"))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen, when 0 was given).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, REQUEST_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it: the metrics for `GET /metrics` (or `/`).
fn answer(mut conn: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // The request line and headers; a scraper sends no body with GET.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/metrics" | "/") => ("200 OK", handle.render()),
        ("GET", _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
