//! The thin tokio layer: UDP sockets and a TCP listener feeding one [`TapCore`], whose leg
//! updates go into a channel. The only file of this crate that does IO.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use correlation::LegUpdate;
use listener_core::SourceLimiter;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::SipTapConfig;
use listener_kit::LogGate;
use listener_kit::clock::now;

use crate::events::{self, Transport};
use crate::hep;
use crate::tap::{TapCore, TapSettings, TapStats};

/// Why the tap could not start or stopped. [`SipTapError::key`] names the `[sip_tap]` key the
/// error is about; the message says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SipTapError {
    /// A listen address could not be bound.
    #[error("{addr}: cannot listen: {source}")]
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
    #[error("{path}: {reason}")]
    AuthKeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A number is outside its range.
    #[error("must be between {min} and {max} {unit}, not {value}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What it says.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
        /// What it counts.
        unit: &'static str,
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

impl SipTapError {
    /// The `[sip_tap]` key the error is about (`None` for a socket error while running), so
    /// that the daemon can point at its line.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            SipTapError::Bind { key, .. } | SipTapError::OutOfRange { key, .. } => Some(key),
            SipTapError::AuthKeyFile { .. } => Some("hep_auth_key_file"),
            SipTapError::Io(_) => None,
        }
    }
}

/// `[sip_tap]` loaded ([`SipTapConfig::load`]): ranges checked, the HEP key read. What the
/// daemon's configuration holds and [`SipTap::bind_loaded`] starts from. `Debug` shows no key.
#[derive(Clone)]
pub struct SipTapSettings {
    config: SipTapConfig,
    hep_auth_key: Option<Vec<u8>>,
}

impl SipTapSettings {
    /// The section as written (paths as resolved by the caller).
    pub fn config(&self) -> &SipTapConfig {
        &self.config
    }
}

impl std::fmt::Debug for SipTapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipTapSettings")
            .field("config", &self.config)
            .field("hep_auth_key", &self.hep_auth_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl SipTapConfig {
    /// Checks the ranges and reads the HEP key file: what `check-config` runs and the daemon
    /// keeps.
    pub fn load(&self) -> Result<SipTapSettings, SipTapError> {
        self.validate()?;
        let hep_auth_key = self.load_auth_key()?;
        Ok(SipTapSettings { config: self.clone(), hep_auth_key })
    }

    /// Checks the connection limits' ranges.
    pub fn validate(&self) -> Result<(), SipTapError> {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let checks = [
            ("max_tcp_connections", n(self.max_tcp_connections), 1, 4_096, "connections"),
            (
                "max_tcp_connections_per_source",
                n(self.max_tcp_connections_per_source),
                1,
                n(self.max_tcp_connections.clamp(1, 4_096)),
                "connections (at most max_tcp_connections)",
            ),
            ("tcp_idle_timeout_secs", self.tcp_idle_timeout_secs, 1, 86_400, "seconds"),
        ];
        match checks.into_iter().find(|&(_, v, min, max, _)| v < min || v > max) {
            Some((key, value, min, max, unit)) => Err(SipTapError::OutOfRange { key, value, min, max, unit }),
            None => Ok(()),
        }
    }

    /// Reads `hep_auth_key_file` (surrounding whitespace ignored; an empty key is an error).
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
    /// Loads `config` ([`SipTapConfig::load`]) and binds it.
    pub async fn bind(config: SipTapConfig) -> Result<SipTap, SipTapError> {
        SipTap::bind_loaded(config.load()?).await
    }

    /// Binds every listener of settings loaded earlier.
    pub async fn bind_loaded(settings: SipTapSettings) -> Result<SipTap, SipTapError> {
        let SipTapSettings { config, hep_auth_key } = settings;
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
        let tcp = tcp_loop(hep_tcp, core.clone(), tx, &config);
        tokio::select! {
            r = udp_hep => r,
            r = udp_sip => r,
            r = tcp => r,
            () = timers(&core) => Ok(()),
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

/// Drives the core's timers (the learner forgets Call-IDs), so that its memory falls when
/// nothing comes.
async fn timers(core: &Mutex<TapCore>) {
    loop {
        let next = core.lock().unwrap_or_else(PoisonError::into_inner).poll_timeout();
        // Something may be remembered while we sleep: look again within a minute at the latest.
        let wait = next.map_or(60_000, |t| t.since(now()).min(60_000));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        core.lock().unwrap_or_else(PoisonError::into_inner).handle_timeout(now());
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
    let sources = SourceLimiter::new(config.max_tcp_connections_per_source);
    let idle = Duration::from_secs(config.tcp_idle_timeout_secs.max(1));
    let log = LogGate::every(10_000);
    // Dropping the set (when `run` returns) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        // At the cap, new connections wait in the kernel's accept queue: the idle timeout
        // frees a place held by a connection that sends nothing.
        let permit = limit.clone().acquire_owned().await.map_err(|_| std::io::Error::other("semaphore closed"))?;
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    events::accept_failed(&log, now(), &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(place) = sources.try_acquire(peer.ip()) else {
            events::connection_refused(&log, now(), peer, config.max_tcp_connections_per_source);
            continue;
        };
        tracing::debug!(%peer, "HEP TCP connection accepted.");
        let (core, tx) = (core.clone(), tx.clone());
        connections.spawn(async move {
            let _held = (permit, place);
            match hep_tcp_connection(stream, peer, &core, tx, idle).await {
                // Garbage was counted before the stream closed.
                Ok(()) | Err(ConnectionEnd::Framing(_)) => {}
                Err(ConnectionEnd::Idle) => events::connection_idle(peer),
                Err(e @ ConnectionEnd::Io(_)) => tracing::info!(%peer, error = %e, "HEP TCP connection closed."),
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

/// Reads HEP packets off one connection. It must deliver a complete packet within `idle` of
/// the last one (or of the connection): a silent connection, or one that drips a packet a
/// byte at a time, loses its place.
async fn hep_tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    core: &Mutex<TapCore>,
    tx: mpsc::Sender<LegUpdate>,
    idle: Duration,
) -> Result<(), ConnectionEnd> {
    // A HEP packet is at most 65535 bytes (16-bit length), so this bounds the buffer.
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        // Cut every whole packet out of what we have.
        let mut start = 0;
        let mut updates = Vec::new();
        while let Some(len) = hep::frame_len(&buf[start..], usize::from(u16::MAX)).inspect_err(|e| {
            // Counted while the stream is still open: whoever sees it close sees the count.
            let mut core = core.lock().unwrap_or_else(PoisonError::into_inner);
            core.handle_stream_lost(now(), Transport::HepTcp, &format_args!("{peer}: {e}"));
        })? {
            if buf.len() - start < len {
                break;
            }
            let packet = &buf[start..start + len];
            updates.extend(feed(core, |c| c.handle_hep(now(), Transport::HepTcp, packet)));
            start += len;
        }
        buf.drain(..start);
        if start > 0 {
            if !forward(&tx, updates).await {
                return Ok(());
            }
            // After the hand-over: waiting on a busy pipeline is not the sender's idleness.
            deadline = tokio::time::Instant::now() + idle;
        }
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnectionEnd::Idle),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
