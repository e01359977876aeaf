//! The IO layer: the only file of this crate that touches sockets and tasks.
//!
//! [`R9Adapter`] implements [`listener_core::Adapter`]. One task owns the [`Tracker`]; small
//! reader tasks feed it lines through a bounded channel (a slow pipeline slows the sockets,
//! nothing is dropped):
//!
//! - **SMDR, listen mode**: a TCP listener that accepts only `smdr.allowed_sources` (default:
//!   the configured `host`, resolved at start), logs and counts everyone else, and keeps at
//!   most `smdr.max_connections` (a new connection from the PBX closes its oldest: the PBX
//!   reconnected and the old socket is dead);
//! - **SMDR, connect mode**, and **Delta2**: a client that connects (TCP keepalive on), reads
//!   lines, and reconnects with [`listener_kit::Backoff`] (full jitter) after any failure;
//! - the link state sent to the pipeline is `Up` when every configured feed is connected.
//!
//! At shutdown the readers stop, the lines they already handed over are still fed to the
//! tracker, and its output is sent before `run` returns.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use listener_core::{
    Adapter, AdapterError, AdapterEvent, AdapterState, BoxFuture, LinkState, PbxId, SignalSink, SinkClosed,
};
use listener_kit::{Backoff, clock};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::Decoder;

use crate::codec::{Line, LineCodec};
use crate::config::{Reconnect, Settings, SmdrTransport};
use crate::events::{
    R9LineTooLong, R9LinesReceived, R9LinkDown, R9LinkUp, R9RecordMalformed, SmdrConnectionRefused, SmdrRecordDuplicate,
};
use crate::tracker::{Delta2Handled, Output, SmdrHandled, Tracker};

/// Inputs per wake-up handled before outputs are sent.
const MAX_BATCH: usize = 256;

/// The feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// SMDR.
    Smdr,
    /// Delta2 from the relay.
    Delta2,
}

impl Feed {
    fn as_str(self) -> &'static str {
        match self {
            Feed::Smdr => "smdr",
            Feed::Delta2 => "delta2",
        }
    }
}

/// What the reader tasks tell the adapter's task.
#[derive(Debug)]
enum Input {
    Line(Feed, Line),
    Up { feed: Feed, conn: u64, peer: String },
    Down { feed: Feed, conn: u64, reason: String, retry_in_ms: Option<u64> },
}

/// The Avaya IP Office R9 adapter. See the module documentation.
#[derive(Debug)]
pub struct R9Adapter {
    pbx: PbxId,
    settings: Settings,
    state: AdapterState,
}

impl R9Adapter {
    /// An adapter for `pbx` with loaded settings and what it checkpointed before a restart.
    pub fn new(pbx: PbxId, settings: Settings, state: AdapterState) -> R9Adapter {
        R9Adapter { pbx, settings, state }
    }

    async fn run_inner(self, sink: &dyn SignalSink, mut shutdown: BoxFuture<'_, ()>) -> Result<(), AdapterError> {
        let R9Adapter { pbx, settings, state } = self;
        let name = pbx.name.to_string();
        let mut tracker = Tracker::new(pbx.clone(), settings.clock.clone(), settings.tracker);
        let restored = tracker.restore(clock::now(), &state);
        if restored > 0 {
            tracing::info!(pbx = %name, restored, "Avaya R9 state restored (emitted calls, segments being collected).");
        }
        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let mut tasks = JoinSet::new();
        let mut links = Links::new(settings.smdr.is_some(), settings.delta2.is_some());
        links.max_line = (
            settings.smdr.as_ref().map_or(0, |s| s.max_line_bytes),
            settings.delta2.as_ref().map_or(0, |d| d.max_line_bytes),
        );
        if let Some(smdr) = &settings.smdr {
            let max = smdr.max_line_bytes;
            match &smdr.transport {
                SmdrTransport::Listen { addr, allowed, max_connections } => {
                    let listener = SmdrListener {
                        pbx: name.clone(),
                        addr: *addr,
                        allowed: allowed.clone(),
                        host: settings.host.clone(),
                        max_connections: *max_connections,
                        max_line_bytes: max,
                    };
                    tasks.spawn(listener.run(tx.clone()));
                }
                SmdrTransport::Connect { port } => {
                    let target = target(&settings.host, *port);
                    tasks.spawn(client(Feed::Smdr, name.clone(), target, smdr.reconnect, max, tx.clone()));
                }
            }
        }
        if let Some(d2) = &settings.delta2 {
            let (target, rc, max) = (d2.connect.clone(), d2.reconnect, d2.max_line_bytes);
            tasks.spawn(client(Feed::Delta2, name.clone(), target, rc, max, tx.clone()));
        }
        drop(tx);
        sink.send(AdapterEvent::Link { pbx: pbx.clone(), state: LinkState::Connecting }).await?;
        let mut result = Ok(());
        loop {
            let next_timer = match drain(&mut tracker, sink).await {
                Ok(t) => t,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            let timer_at =
                next_timer.map(|t| Instant::now() + Duration::from_millis(t.0.saturating_sub(clock::now().0)));
            tokio::select! {
                () = &mut shutdown => break,
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    let mut batch = vec![input];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    for input in batch {
                        if let Some(state) = handle(&name, &mut tracker, &mut links, input) {
                            sink.send(AdapterEvent::Link { pbx: pbx.clone(), state }).await?;
                        }
                    }
                }
                () = sleep_until(timer_at.unwrap_or_else(Instant::now)), if timer_at.is_some() => {
                    tracker.handle_timeout(clock::now());
                }
            }
        }
        // Stop reading; what the readers handed over is still fed and sent.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        while let Ok(input) = rx.try_recv() {
            if let Input::Line(..) = input {
                let _ = handle(&name, &mut tracker, &mut links, input);
            }
        }
        if result.is_ok() {
            drain(&mut tracker, sink).await?;
        }
        result
    }
}

/// Sends everything the tracker has; returns its next timer.
async fn drain(tracker: &mut Tracker, sink: &dyn SignalSink) -> Result<Option<listener_core::UnixMillis>, SinkClosed> {
    loop {
        match tracker.poll_output() {
            Output::Event(e) => sink.send(e).await?,
            Output::Timeout(t) => return Ok(t),
        }
    }
}

/// Feeds one input; returns the new public link state when it changed.
fn handle(pbx: &str, tracker: &mut Tracker, links: &mut Links, input: Input) -> Option<LinkState> {
    let now = clock::now();
    match input {
        Input::Line(feed, Line::TooLong { bytes }) => {
            let max = match feed {
                Feed::Smdr => links.max_line.0,
                Feed::Delta2 => links.max_line.1,
            };
            R9LineTooLong { pbx, feed: feed.as_str(), bytes, max }.emit();
            None
        }
        Input::Line(Feed::Smdr, Line::Text(line)) => {
            R9LinesReceived { pbx, feed: "smdr", count: 1 }.emit();
            match tracker.handle_smdr_line(now, &line) {
                SmdrHandled::Segment => {}
                SmdrHandled::Duplicate => SmdrRecordDuplicate { pbx }.emit(),
                SmdrHandled::Malformed(e) => R9RecordMalformed {
                    pbx,
                    feed: "smdr",
                    kind: e.kind(),
                    reason: &e.to_string(),
                    raw: &String::from_utf8_lossy(&line),
                }
                .emit(),
                SmdrHandled::TooManySegments => R9RecordMalformed {
                    pbx,
                    feed: "smdr",
                    kind: "too-many-segments",
                    reason: "the call has more segments than allowed",
                    raw: &String::from_utf8_lossy(&line),
                }
                .emit(),
            }
            None
        }
        Input::Line(Feed::Delta2, Line::Text(line)) => {
            R9LinesReceived { pbx, feed: "delta2", count: 1 }.emit();
            tracing::trace!(pbx, record = %String::from_utf8_lossy(&line), "Delta2 line.");
            if let Delta2Handled::Malformed(e) = tracker.handle_delta2_line(now, &line) {
                R9RecordMalformed {
                    pbx,
                    feed: "delta2",
                    kind: e.kind(),
                    reason: &e.to_string(),
                    raw: &String::from_utf8_lossy(&line),
                }
                .emit();
            }
            None
        }
        Input::Up { feed, conn, peer } => {
            R9LinkUp { pbx, feed: feed.as_str(), peer: &peer }.emit();
            if feed == Feed::Delta2 {
                tracker.handle_delta2_link(now, true);
            }
            links.up(feed, conn)
        }
        Input::Down { feed, conn, reason, retry_in_ms } => {
            R9LinkDown { pbx, feed: feed.as_str(), reason: &reason, retry_in_ms }.emit();
            if feed == Feed::Delta2 {
                tracker.handle_delta2_link(now, false);
            }
            links.down(feed, conn, reason)
        }
    }
}

/// The feeds' connections, and the public link state they make.
#[derive(Debug)]
struct Links {
    /// `max_line_bytes` of SMDR and Delta2, for the log.
    max_line: (usize, usize),
    smdr: Option<Vec<u64>>,
    delta2: Option<Vec<u64>>,
    last: Option<LinkState>,
    reason: String,
}

impl Links {
    fn new(smdr: bool, delta2: bool) -> Links {
        Links {
            max_line: (0, 0),
            smdr: smdr.then(Vec::new),
            delta2: delta2.then(Vec::new),
            last: Some(LinkState::Connecting),
            reason: String::new(),
        }
    }

    fn conns(&mut self, feed: Feed) -> Option<&mut Vec<u64>> {
        match feed {
            Feed::Smdr => self.smdr.as_mut(),
            Feed::Delta2 => self.delta2.as_mut(),
        }
    }

    fn up(&mut self, feed: Feed, conn: u64) -> Option<LinkState> {
        if let Some(c) = self.conns(feed) {
            c.push(conn);
        }
        self.state()
    }

    fn down(&mut self, feed: Feed, conn: u64, reason: String) -> Option<LinkState> {
        if let Some(c) = self.conns(feed) {
            c.retain(|x| *x != conn);
        }
        self.reason = format!("{}: {reason}", feed.as_str());
        self.state()
    }

    fn state(&mut self) -> Option<LinkState> {
        let up = |c: &Option<Vec<u64>>| c.as_ref().is_none_or(|v| !v.is_empty());
        let state = if up(&self.smdr) && up(&self.delta2) {
            LinkState::Up
        } else {
            LinkState::Down { reason: self.reason.clone() }
        };
        let changed = match (&self.last, &state) {
            (Some(LinkState::Down { .. }), LinkState::Down { .. }) => false,
            (Some(a), b) => a != b,
            (None, _) => true,
        };
        self.last = Some(state.clone());
        changed.then_some(state)
    }
}

fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Reads lines from `stream` into `tx` until EOF or an error; returns why it ended.
async fn read_lines(feed: Feed, mut stream: TcpStream, max_line_bytes: usize, tx: &mpsc::Sender<Input>) -> String {
    let mut codec = LineCodec::new(max_line_bytes);
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    if tx.send(Input::Line(feed, line)).await.is_err() {
                        return "the adapter stopped".into();
                    }
                }
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                while let Ok(Some(line)) = codec.decode_eof(&mut buf) {
                    if tx.send(Input::Line(feed, line)).await.is_err() {
                        break;
                    }
                }
                return "the peer closed the connection".into();
            }
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// A client of a line feed (SMDR in connect mode, the Delta2 relay): connects, reads,
/// reconnects with backoff, forever.
async fn client(
    feed: Feed,
    pbx: String,
    target: String,
    rc: Reconnect,
    max_line_bytes: usize,
    tx: mpsc::Sender<Input>,
) {
    let mut backoff = Backoff::new(rc.min, rc.max);
    let mut conn = 0u64;
    loop {
        conn += 1;
        let reason = match timeout(rc.connect_timeout, connect(&target)).await {
            Ok(Ok(stream)) => {
                backoff.reset();
                let peer = stream.peer_addr().map_or_else(|_| target.clone(), |a| a.to_string());
                if tx.send(Input::Up { feed, conn, peer }).await.is_err() {
                    return;
                }
                read_lines(feed, stream, max_line_bytes, &tx).await
            }
            Ok(Err(e)) => format!("cannot connect to {target}: {e}"),
            Err(_) => format!("cannot connect to {target}: timed out"),
        };
        let delay = backoff.next_delay(rand::random::<f64>());
        let retry_in_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        if tx.send(Input::Down { feed, conn, reason, retry_in_ms }).await.is_err() {
            return;
        }
        tracing::debug!(pbx, feed = feed.as_str(), "Reconnecting after backoff.");
        sleep(delay).await;
    }
}

async fn connect(target: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in tokio::net::lookup_host(target).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // SMDR and the relay may stay silent for hours: let TCP notice a dead peer.
        socket.set_keepalive(true)?;
        match socket.connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The SMDR listener (the IP Office connects to us).
struct SmdrListener {
    pbx: String,
    addr: SocketAddr,
    allowed: Option<Vec<IpAddr>>,
    host: String,
    max_connections: usize,
    max_line_bytes: usize,
}

impl SmdrListener {
    async fn run(self, tx: mpsc::Sender<Input>) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    let delay = backoff.next_delay(rand::random::<f64>());
                    let reason = format!("cannot listen on {}: {e}", self.addr);
                    let retry_in_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                    if tx.send(Input::Down { feed: Feed::Smdr, conn: 0, reason, retry_in_ms }).await.is_err() {
                        return;
                    }
                    sleep(delay).await;
                }
            }
        };
        tracing::info!(pbx = %self.pbx, addr = %self.addr, "Listening for SMDR.");
        let mut allowed = self.allowed.clone().unwrap_or_default();
        let mut readers: JoinSet<()> = JoinSet::new();
        let mut open: VecDeque<(u64, AbortHandle)> = VecDeque::new();
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<u64>();
        let mut conn = 0u64;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                Some(id) = closed_rx.recv() => {
                    open.retain(|(c, _)| *c != id);
                    continue;
                }
                Some(_) = readers.join_next(), if !readers.is_empty() => continue,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(pbx = %self.pbx, error = %e, "SMDR accept failed.");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.allowed.is_none() {
                // The default allow-list is the PBX's host, resolved now (its address may change).
                if let Ok(addrs) = tokio::net::lookup_host(target(&self.host, 0)).await {
                    allowed = addrs.map(|a| a.ip()).collect();
                }
            }
            let ip = canonical(peer.ip());
            if !allowed.iter().any(|a| canonical(*a) == ip) {
                SmdrConnectionRefused { pbx: &self.pbx, peer: &peer.to_string(), reason: "not-allowed" }.emit();
                drop(stream);
                continue;
            }
            while open.len() >= self.max_connections {
                if let Some((old, handle)) = open.pop_front() {
                    handle.abort();
                    let reason = format!("replaced by a new connection from {peer}");
                    let _ = tx.send(Input::Down { feed: Feed::Smdr, conn: old, reason, retry_in_ms: None }).await;
                }
            }
            conn += 1;
            let id = conn;
            if tx.send(Input::Up { feed: Feed::Smdr, conn: id, peer: peer.to_string() }).await.is_err() {
                return;
            }
            let tx = tx.clone();
            let closed = closed_tx.clone();
            let max = self.max_line_bytes;
            let handle = readers.spawn(async move {
                let reason = read_lines(Feed::Smdr, stream, max, &tx).await;
                let _ = tx.send(Input::Down { feed: Feed::Smdr, conn: id, reason, retry_in_ms: None }).await;
                let _ = closed.send(id);
            });
            open.push_back((id, handle));
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so that a dual-stack listener matches IPv4 entries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Adapter for R9Adapter {
    fn pbx(&self) -> &PbxId {
        &self.pbx
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a dyn SignalSink,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(self.run_inner(sink, shutdown))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_up_when_every_configured_feed_is() {
        let mut l = Links::new(true, true);
        assert_eq!(l.up(Feed::Smdr, 1), Some(LinkState::Down { reason: String::new() }));
        assert_eq!(l.up(Feed::Delta2, 1), Some(LinkState::Up));
        assert_eq!(l.up(Feed::Smdr, 2), None);
        assert_eq!(l.down(Feed::Smdr, 1, "x".into()), None, "one SMDR connection is still open");
        assert_eq!(l.down(Feed::Smdr, 2, "gone".into()), Some(LinkState::Down { reason: "smdr: gone".into() }));
        assert_eq!(l.down(Feed::Delta2, 1, "also".into()), None, "still down");
        let mut only = Links::new(true, false);
        assert_eq!(only.up(Feed::Smdr, 1), Some(LinkState::Up));
    }

    #[test]
    fn mapped_addresses_and_targets() {
        let mapped: IpAddr = "::ffff:192.0.2.20".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.20".parse::<IpAddr>().unwrap());
        assert_eq!(target("192.0.2.20", 5080), "192.0.2.20:5080");
        assert_eq!(target("::1", 5080), "[::1]:5080");
    }
}
