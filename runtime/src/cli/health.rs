//! Health checks for orchestrators, both opt-in: an HTTP endpoint (Kubernetes `httpGet`
//! probes) and a ready file (`exec` probes, or anything that can look at a file).
//!
//! Both report the same fact: the worker's consumer is running. They turn unhealthy as
//! soon as a shutdown begins, so no new work is routed to a draining worker. The same
//! endpoint serves Prometheus metrics at `/metrics` when they are on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, ErrorKind, Result};
use crate::worker::{WorkerMetrics, WorkerStatus};

/// How often the ready file is touched while the worker consumes.
pub(crate) const READY_FILE_INTERVAL: Duration = Duration::from_secs(5);

/// Longest request head read; a probe's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;

/// The health endpoint, bound before the worker starts so a taken port fails fast.
pub(crate) struct HealthServer {
    listener: TcpListener,
}

impl HealthServer {
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("could not serve health checks on {addr}"),
            )
            .with_source(e)
        })?;
        Ok(HealthServer { listener })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Answers probes until the runtime stops.
    pub(crate) async fn serve(
        self,
        status: WorkerStatus,
        hostname: String,
        metrics: Option<WorkerMetrics>,
    ) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let (status, hostname) = (status.clone(), hostname.clone());
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        // A slow or silent client must not hold a task forever.
                        let answer = answer(stream, &status, &hostname, metrics.as_ref());
                        let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "could not accept a health check connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    status: &WorkerStatus,
    hostname: &str,
    metrics: Option<&WorkerMetrics>,
) {
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or(path);
    let json = "application/json";
    let (code, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => {
            let consuming = status.is_consuming();
            let state = if consuming { "consuming" } else { "stopped" };
            let body = serde_json::json!({"status": state, "hostname": hostname}).to_string();
            let code = if consuming {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (code, json, body)
        }
        ("GET" | "HEAD", "/metrics") if metrics.is_some() => (
            "200 OK",
            WorkerMetrics::CONTENT_TYPE,
            metrics.map(WorkerMetrics::render).unwrap_or_default(),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", json, r#"{"error":"not found"}"#.to_owned()),
        _ => (
            "405 Method Not Allowed",
            json,
            r#"{"error":"method not allowed"}"#.to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {code}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes `path` now, touches it every [`READY_FILE_INTERVAL`] while the worker consumes,
/// and removes it as soon as consuming stops.
pub(crate) async fn keep_ready_file(path: PathBuf, mut status: WorkerStatus) {
    let contents = format!("{}\n", std::process::id());
    if let Err(error) = std::fs::write(&path, contents) {
        tracing::error!(%error, path = %path.display(), "could not write the ready file");
        return;
    }
    let mut ticks = tokio::time::interval(READY_FILE_INTERVAL);
    loop {
        tokio::select! {
            () = status.stopped() => break,
            _ = ticks.tick() => {
                if let Err(error) = touch(&path) {
                    tracing::warn!(%error, path = %path.display(), "could not touch the ready file");
                }
            }
        }
    }
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(%error, path = %path.display(), "could not remove the ready file");
    }
}

fn touch(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::options()
        .append(true)
        .create(true)
        .open(path)?
        .set_modified(SystemTime::now())
}
