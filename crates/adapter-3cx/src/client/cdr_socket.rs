//! The CDR socket: 3CX's "active socket" (3CX connects to our `cdr.listen`) or "passive
//! socket" (we connect to `cdr.connect`). Lines go to the adapter's loop over a bounded
//! channel (back-pressure slows the socket, nothing is dropped).
//!
//! The listening side is unauthenticated by 3CX's design, so it is bounded: only
//! `allowed_peers` (when set), at most `max_connections` at once, `max_line_bytes` per line,
//! and a connection silent for `idle_timeout_secs` is closed. 3CX has been seen both keeping
//! one connection open and connecting once per record; both work.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use listener_kit::Backoff;
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;

use crate::cdr::{CdrLine, CdrLineCodec};
use crate::config::{CdrMode, LoadedCdr};
use crate::events::{CdrConnected, CdrConnectionRefused, CdrSocketError};

/// What the CDR socket hands the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdrMsg {
    /// One line.
    Line(String),
    /// A line over the limit was skipped (its length).
    TooLong(usize),
}

/// Runs the CDR socket until the adapter drops the receiver (or aborts the task).
pub(super) async fn run(pbx: String, cfg: LoadedCdr, tx: mpsc::Sender<CdrMsg>) {
    match cfg.mode.clone() {
        CdrMode::Listen(addr) => listen(&pbx, addr, &cfg, tx).await,
        CdrMode::Connect(host, port) => connect(&pbx, &host, port, &cfg, tx).await,
    }
}

async fn listen(pbx: &str, addr: std::net::SocketAddr, cfg: &LoadedCdr, tx: mpsc::Sender<CdrMsg>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                let delay = backoff.next_delay(rand::random::<f64>()).max(Duration::from_millis(200));
                let reason = format!("cannot listen on {addr}: {e}");
                CdrSocketError { pbx, reason: &reason, retry_in_ms: delay.as_millis() as u64 }.emit();
                tokio::time::sleep(delay).await;
                if tx.is_closed() {
                    return;
                }
            }
        }
    };
    tracing::info!(pbx, %addr, "Listening for the 3CX CDR feed (active socket).");
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                let reason = format!("accept failed: {e}");
                CdrSocketError { pbx, reason: &reason, retry_in_ms: 100 }.emit();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let peer_text = peer.to_string();
        if !cfg.allowed_peers.is_empty() && !cfg.allowed_peers.contains(&peer.ip()) {
            CdrConnectionRefused { pbx, peer: &peer_text, reason: "peer" }.emit();
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            CdrConnectionRefused { pbx, peer: &peer_text, reason: "limit" }.emit();
            continue;
        };
        CdrConnected { pbx, peer: &peer_text }.emit();
        let tx = tx.clone();
        let (max, idle, pbx) = (cfg.max_line_bytes, cfg.idle_timeout, pbx.to_owned());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(reason) = read_lines(stream, max, idle, &tx).await {
                tracing::debug!(pbx, peer = %peer_text, reason, "CDR connection closed.");
            }
        });
    }
}

async fn connect(pbx: &str, host: &str, port: u16, cfg: &LoadedCdr, tx: mpsc::Sender<CdrMsg>) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port))).await;
        let reason = match attempt {
            Ok(Ok(stream)) => {
                backoff.reset();
                let peer = format!("{host}:{port}");
                CdrConnected { pbx, peer: &peer }.emit();
                match read_lines(stream, cfg.max_line_bytes, cfg.idle_timeout, &tx).await {
                    Ok(()) => "the PBX closed the CDR connection".to_owned(),
                    Err(e) => e,
                }
            }
            Ok(Err(e)) => format!("cannot connect to {host}:{port}: {e}"),
            Err(_) => format!("timed out connecting to {host}:{port}"),
        };
        if tx.is_closed() {
            return;
        }
        let delay = backoff.next_delay(rand::random::<f64>()).max(Duration::from_millis(200));
        CdrSocketError { pbx, reason: &reason, retry_in_ms: delay.as_millis() as u64 }.emit();
        tokio::time::sleep(delay).await;
    }
}

/// Reads lines until the peer closes (`Ok`), fails, or stays silent for `idle`.
async fn read_lines<S: AsyncRead + Unpin>(
    stream: S,
    max_line_bytes: usize,
    idle: Duration,
    tx: &mpsc::Sender<CdrMsg>,
) -> Result<(), String> {
    let mut framed = FramedRead::new(stream, CdrLineCodec::new(max_line_bytes));
    loop {
        let item =
            tokio::time::timeout(idle, framed.next()).await.map_err(|_| format!("silent for {} s", idle.as_secs()))?;
        let msg = match item {
            None => return Ok(()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(CdrLine::Line(line))) => CdrMsg::Line(line),
            Some(Ok(CdrLine::TooLong { bytes })) => CdrMsg::TooLong(bytes),
        };
        if tx.send(msg).await.is_err() {
            return Ok(());
        }
    }
}
