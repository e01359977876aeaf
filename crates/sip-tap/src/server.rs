//! The thin tokio layer: UDP sockets and a TCP listener feeding one [`TapCore`], whose leg
//! updates go into a channel. The only file of this crate that does IO.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correlation::LegUpdate;
use listener_core::UnixMillis;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::SipTapConfig;
use crate::events::Transport;
use crate::hep;
use crate::tap::{TapCore, TapSettings, TapStats};

/// Why the tap could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SipTapError {
    /// A listen address could not be bound.
    #[error("{key} = {addr}: cannot listen: {source}")]
    Bind {
        /// The configuration key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HEP auth key file could not be read, or is empty.
    #[error("hep_auth_key_file = {path}: {reason}")]
    AuthKeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A socket failed while running.
    #[error("SIP tap socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// The bound SIP tap. [`SipTap::run`] serves until the shutdown future completes or the
/// channel's receiver is gone.
#[derive(Debug)]
pub struct SipTap {
    config: SipTapConfig,
    hep_udp: Option<UdpSocket>,
    hep_tcp: Option<TcpListener>,
    sip_udp: Option<UdpSocket>,
    core: Arc<Mutex<TapCore>>,
}

impl SipTapConfig {
    /// Reads `hep_auth_key_file` (surrounding whitespace ignored; an empty key is an error):
    /// what `check-config` runs, and what [`SipTap::bind`] starts with.
    pub fn load_auth_key(&self) -> Result<Option<Vec<u8>>, SipTapError> {
        let Some(path) = &self.hep_auth_key_file else { return Ok(None) };
        let bad = |reason: String| SipTapError::AuthKeyFile { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let key = text.trim().as_bytes().to_vec();
        if key.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        Ok(Some(key))
    }
}

impl SipTap {
    /// Binds every configured listener and reads the auth key file.
    pub async fn bind(config: SipTapConfig) -> Result<SipTap, SipTapError> {
        let hep_auth_key = config.load_auth_key()?;
        let hep_udp = bind_udp("hep_udp_listen", config.hep_udp_listen).await?;
        let sip_udp = bind_udp("sip_udp_listen", config.sip_udp_listen).await?;
        let hep_tcp = match config.hep_tcp_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| SipTapError::Bind {
                key: "hep_tcp_listen",
                addr,
                source,
            })?),
            None => None,
        };
        let core = TapCore::new(TapSettings {
            learner: config.learner(),
            hep_auth_key,
            max_message_bytes: config.max_message_bytes,
        });
        Ok(SipTap { config, hep_udp, hep_tcp, sip_udp, core: Arc::new(Mutex::new(core)) })
    }

    /// The bound HEP UDP address (useful with port 0).
    pub fn hep_udp_addr(&self) -> Option<SocketAddr> {
        self.hep_udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The bound HEP TCP address.
    pub fn hep_tcp_addr(&self) -> Option<SocketAddr> {
        self.hep_tcp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The bound raw SIP UDP address.
    pub fn sip_udp_addr(&self) -> Option<SocketAddr> {
        self.sip_udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// A handle to read the counters while it runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.core.clone())
    }

    /// Serves until `shutdown` completes or `tx`'s receiver is dropped.
    pub async fn run(self, tx: mpsc::Sender<LegUpdate>, shutdown: impl Future<Output = ()>) -> Result<(), SipTapError> {
        let SipTap { config, hep_udp, hep_tcp, sip_udp, core } = self;
        let max_datagram = config.max_datagram_bytes.max(1);
        let udp_hep = udp_loop(hep_udp, Transport::HepUdp, core.clone(), tx.clone(), max_datagram);
        let udp_sip = udp_loop(sip_udp, Transport::SipUdp, core.clone(), tx.clone(), max_datagram);
        let tcp = tcp_loop(hep_tcp, core, tx, &config);
        tokio::select! {
            r = udp_hep => r,
            r = udp_sip => r,
            r = tcp => r,
            () = shutdown => Ok(()),
        }
    }
}

/// Reads the counters of a running tap.
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Mutex<TapCore>>);

impl StatsHandle {
    /// The counters now.
    pub fn stats(&self) -> TapStats {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).stats().clone()
    }
}

async fn bind_udp(key: &'static str, addr: Option<SocketAddr>) -> Result<Option<UdpSocket>, SipTapError> {
    match addr {
        Some(addr) => {
            Ok(Some(UdpSocket::bind(addr).await.map_err(|source| SipTapError::Bind { key, addr, source })?))
        }
        None => Ok(None),
    }
}

fn now() -> UnixMillis {
    UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Feeds one input to the core and takes its updates out (the lock is never held across an
/// await).
fn feed(core: &Mutex<TapCore>, f: impl FnOnce(&mut TapCore)) -> Vec<LegUpdate> {
    let mut core = core.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut core);
    std::iter::from_fn(|| core.poll_update()).collect()
}

/// Sends updates on; `false` when the receiver is gone (time to stop).
async fn forward(tx: &mpsc::Sender<LegUpdate>, updates: Vec<LegUpdate>) -> bool {
    for u in updates {
        if tx.send(u).await.is_err() {
            return false;
        }
    }
    true
}

async fn udp_loop(
    socket: Option<UdpSocket>,
    transport: Transport,
    core: Arc<Mutex<TapCore>>,
    tx: mpsc::Sender<LegUpdate>,
    max_datagram: usize,
) -> Result<(), SipTapError> {
    let Some(socket) = socket else { return std::future::pending().await };
    // One byte more than the maximum: a datagram that fills it was longer than allowed.
    let mut buf = vec![0u8; max_datagram + 1];
    loop {
        let (n, _peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors surface on the next recv on some systems: not fatal for a listener.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => continue,
            Err(e) => return Err(e.into()),
        };
        let datagram = &buf[..n.min(max_datagram)];
        let oversize = n > max_datagram;
        let updates = feed(&core, |c| {
            let now = now();
            match (transport, oversize) {
                // Cut short: a HEP length check or SIP Content-Length check refuses it.
                (Transport::SipUdp, _) => c.handle_sip_datagram(now, datagram),
                _ => c.handle_hep(now, transport, datagram),
            }
        });
        if !forward(&tx, updates).await {
            return Ok(());
        }
    }
}

async fn tcp_loop(
    listener: Option<TcpListener>,
    core: Arc<Mutex<TapCore>>,
    tx: mpsc::Sender<LegUpdate>,
    config: &SipTapConfig,
) -> Result<(), SipTapError> {
    let Some(listener) = listener else { return std::future::pending().await };
    let limit = Arc::new(Semaphore::new(config.max_tcp_connections.max(1)));
    let idle = Duration::from_secs(config.tcp_idle_timeout_secs.max(1));
    // Dropping the set (when `run` returns) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let permit = limit.clone().acquire_owned().await.map_err(|_| std::io::Error::other("semaphore closed"))?;
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r?,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        tracing::debug!(%peer, "HEP TCP connection accepted.");
        let (core, tx) = (core.clone(), tx.clone());
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = hep_tcp_connection(stream, core, tx, idle).await {
                tracing::info!(%peer, error = %e, "HEP TCP connection closed.");
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Why a HEP TCP connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("framing lost: {0}")]
    Framing(#[from] hep::HepError),
    #[error("idle timeout")]
    Idle,
}

async fn hep_tcp_connection(
    mut stream: TcpStream,
    core: Arc<Mutex<TapCore>>,
    tx: mpsc::Sender<LegUpdate>,
    idle: Duration,
) -> Result<(), ConnectionEnd> {
    // A HEP packet is at most 65535 bytes (16-bit length), so this bounds the buffer.
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        // Cut every whole packet out of what we have.
        let mut start = 0;
        let mut updates = Vec::new();
        while let Some(len) = hep::frame_len(&buf[start..], usize::from(u16::MAX))? {
            if buf.len() - start < len {
                break;
            }
            let packet = &buf[start..start + len];
            updates.extend(feed(&core, |c| c.handle_hep(now(), Transport::HepTcp, packet)));
            start += len;
        }
        buf.drain(..start);
        if !forward(&tx, updates).await {
            return Ok(());
        }
        let n = match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectionEnd::Idle),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
