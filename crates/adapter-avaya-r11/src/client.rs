//! The DevLink3 client: the only file of this crate that does IO.
//!
//! [`DevLink3Adapter`] implements [`listener_core::Adapter`] as a thin driver of the sans-IO
//! [`DevLink3Link`] (`crate::session`): it opens the TCP (or TLS) connection when the link says
//! [`LinkOutput::Connect`], writes the packets it says to send, hands it every item read, and
//! sleeps until [`DevLink3Link::poll_timeout`]. What to send when, the keepalives, the
//! dead-link timer, the backoff and the records all live in the link, tested with simulated
//! time.

use std::time::Duration;

use listener_core::{Adapter, AdapterError, BoxFuture, PbxId, SignalSink};
use listener_kit::clock::now;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_util::codec::{Decoder, Encoder};

use bytes::BytesMut;

use crate::codec::{CodecError, Incoming, PacketCodec};
use crate::config::LoadedConfig;
use crate::packet::Packet;
use crate::session::{DevLink3Link, LinkOutput, SessionError};

/// The DevLink3 adapter for one IP Office. See the module documentation.
#[derive(Debug)]
pub struct DevLink3Adapter {
    pbx: PbxId,
    config: LoadedConfig,
}

/// A connection to the PBX over TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

impl DevLink3Adapter {
    /// An adapter for `pbx` (whose type should be `avaya-r11`) with a loaded configuration.
    pub fn new(pbx: PbxId, config: LoadedConfig) -> DevLink3Adapter {
        DevLink3Adapter { pbx, config }
    }

    async fn run_inner(self, sink: &dyn SignalSink, mut shutdown: BoxFuture<'_, ()>) -> Result<(), AdapterError> {
        // Any non-zero start will do; random so that request ids differ across restarts.
        let mut link = DevLink3Link::new(self.pbx.clone(), &self.config, rand::random::<u32>());
        let mut conn: Option<Connection<Box<dyn Stream>>> = None;
        loop {
            while let Some(output) = link.poll_output() {
                match output {
                    LinkOutput::Connect => {
                        let opened = tokio::select! {
                            opened = self.connect() => opened,
                            () = &mut shutdown => return Ok(()),
                        };
                        match opened {
                            Ok(stream) => {
                                conn = Some(Connection::new(stream, self.config.max_frame_bytes));
                                link.handle_connected(now());
                            }
                            Err(e) => link.handle_failed(now(), e, rand::random()),
                        }
                    }
                    LinkOutput::Send(packet) => {
                        if let Some(c) = conn.as_mut()
                            && let Err(e) = c.send(packet).await
                        {
                            link.handle_failed(now(), e.into(), rand::random());
                        }
                    }
                    LinkOutput::Close => conn = None,
                    LinkOutput::Event(event) => sink.send(event).await?,
                }
            }
            let wait = link.poll_timeout().map(|t| Duration::from_millis(t.since(now())));
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                item = next_item(conn.as_mut()) => match item {
                    Ok(Some(item)) => {
                        link.handle_incoming(now(), item, rand::random());
                        // What is already buffered goes in before timers are looked at again.
                        while let Some(c) = conn.as_mut() {
                            match c.buffered() {
                                Ok(Some(item)) => link.handle_incoming(now(), item, rand::random()),
                                Ok(None) => break,
                                Err(e) => {
                                    link.handle_failed(now(), e.into(), rand::random());
                                    break;
                                }
                            }
                        }
                    }
                    Ok(None) => link.handle_failed(now(), SessionError::Closed, rand::random()),
                    Err(e) => link.handle_failed(now(), e.into(), rand::random()),
                },
                () = sleep_for(wait) => link.handle_timeout(now(), rand::random()),
            }
        }
    }

    /// Opens the TCP connection, and the TLS session on it when configured.
    async fn connect(&self) -> Result<Box<dyn Stream>, SessionError> {
        let cfg = &self.config;
        let tcp = timeout(cfg.connect_timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
            .await
            .map_err(|_| SessionError::Timeout("the TCP connection"))?
            .map_err(|source| SessionError::Connect { addr: format!("{}:{}", cfg.host, cfg.port), source })?;
        // Small records: do not wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        match cfg.tls.clone() {
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.client_config);
                let stream = timeout(cfg.connect_timeout, connector.connect(tls.server_name, tcp))
                    .await
                    .map_err(|_| SessionError::Timeout("the TLS handshake"))?
                    .map_err(SessionError::Tls)?;
                Ok(Box::new(stream))
            }
            None => Ok(Box::new(tcp)),
        }
    }
}

/// The next item of the connection, or never when there is none.
async fn next_item(conn: Option<&mut Connection<Box<dyn Stream>>>) -> Result<Option<Incoming>, CodecError> {
    match conn {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps `wait`, or for ever when there is nothing to wait for.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(d) => sleep(d).await,
        None => std::future::pending().await,
    }
}

impl Adapter for DevLink3Adapter {
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

/// A DevLink3 connection over any byte stream: reads [`Incoming`] items, writes [`Packet`]s.
/// Used by the client and by the simulator. `next` is cancel-safe (bytes are only buffered).
#[derive(Debug)]
pub struct Connection<S> {
    io: S,
    codec: PacketCodec,
    read: BytesMut,
    write: BytesMut,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection with frames of at most `max_frame_bytes`.
    pub fn new(io: S, max_frame_bytes: usize) -> Connection<S> {
        Connection {
            io,
            codec: PacketCodec::new(max_frame_bytes),
            read: BytesMut::with_capacity(8192),
            write: BytesMut::new(),
            eof: false,
        }
    }

    /// The next item; `None` when the peer closed the connection.
    pub async fn next(&mut self) -> Result<Option<Incoming>, CodecError> {
        loop {
            if let Some(item) = self.buffered()? {
                return Ok(Some(item));
            }
            if self.eof {
                return Ok(None);
            }
            if self.io.read_buf(&mut self.read).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// An item decodable from what is already buffered, without reading.
    pub fn buffered(&mut self) -> Result<Option<Incoming>, CodecError> {
        if self.eof { self.codec.decode_eof(&mut self.read) } else { self.codec.decode(&mut self.read) }
    }

    /// Queues a packet; [`Connection::flush`] writes it.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), CodecError> {
        self.codec.encode(packet, &mut self.write)
    }

    /// Writes queued packets.
    pub async fn flush(&mut self) -> Result<(), CodecError> {
        if !self.write.is_empty() {
            self.io.write_all(&self.write).await?;
            self.write.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues and writes one packet.
    pub async fn send(&mut self, packet: Packet) -> Result<(), CodecError> {
        self.queue(&packet)?;
        self.flush().await
    }

    /// Writes raw bytes (for tests of the decoder's resynchronisation).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.flush().await?;
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Shuts the write side down.
    pub async fn shutdown(&mut self) -> Result<(), CodecError> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}
