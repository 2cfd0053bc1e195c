//! The client side: a TURN server dialled over TCP or TLS, as a `Conn` for the `turn` client.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;
use webrtc_util::Conn;

use crate::RelayTransport;
use crate::frame::{FrameError, MAX_FRAME, padding, read_frame};

/// Messages read from the stream, waiting for the `turn` client (full: the reader waits, and TCP
/// slows the server down).
const READ_QUEUE: usize = 64;
/// Messages waiting to be written (full: the newest is dropped and counted, as UDP would lose it;
/// 64 full-size media packets are about a quarter of a second at 2 Mbit/s, so a slow stream
/// never holds seconds of stale media).
pub(crate) const WRITE_QUEUE: usize = 64;

/// Why a TURN server could not be reached over a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The host name did not resolve.
    #[error("{host} did not resolve: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The server's machine answered, and nothing listens on the port (or a firewall rejects).
    #[error("TCP connection to {0} refused")]
    Refused(SocketAddr),
    /// Nothing answered in time: a firewall dropping the packets, or no such machine.
    #[error("no answer from {0} (TCP connect timed out)")]
    Timeout(SocketAddr),
    /// The TCP connection failed otherwise (no route, reset, …).
    #[error("TCP connection to {addr} failed: {reason}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// What the system said.
        reason: io::Error,
    },
    /// TCP connected and TLS did not: the certificate is not trusted or not for this name, or the
    /// server does not speak TLS there.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// Where.
        addr: SocketAddr,
        /// What went wrong, from rustls.
        reason: String,
    },
    /// UDP is not a stream.
    #[error("TURN over UDP needs no stream")]
    NotAStream,
}

type TrustMap = HashMap<String, Arc<rustls::ClientConfig>>;

/// TLS configurations for particular TURN servers, by `host:port`.
static TRUST: LazyLock<Mutex<TrustMap>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The configuration for servers nobody registered: the web's roots (Mozilla's, from
/// webpki-roots), checked as a browser would.
static WEB_ROOTS: LazyLock<Option<Arc<rustls::ClientConfig>>> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
});

/// Uses `config` for TLS to the TURN server at `server` (`host:port`, as in its URL) from now on:
/// the call engine registers the link's pinned certificate for the relay's own TURN server. The
/// ICE agent dials from inside `webrtc-ice`, which has no way to be handed a configuration per
/// call, hence a registry; a later registration for the same server replaces the earlier one.
pub fn trust(server: &str, config: Arc<rustls::ClientConfig>) {
    TRUST.lock().unwrap_or_else(PoisonError::into_inner).insert(server.to_owned(), config);
}

fn tls_config(server: &str) -> Option<Arc<rustls::ClientConfig>> {
    let registered = TRUST.lock().unwrap_or_else(PoisonError::into_inner).get(server).cloned();
    registered.or_else(|| WEB_ROOTS.clone())
}

/// Connects to the TURN server `host:port` over `transport` (TCP, or TLS checked against what
/// [`trust`] registered for it, else the web's roots), everything within `within`.
pub async fn dial(
    transport: RelayTransport,
    host: &str,
    port: u16,
    within: Duration,
) -> Result<StreamConn, DialError> {
    if transport == RelayTransport::Udp {
        return Err(DialError::NotAStream);
    }
    let deadline = tokio::time::Instant::now() + within;
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(DialError::Resolve { host: host.to_owned(), reason: e.to_string() }),
            Err(_) => {
                return Err(DialError::Resolve { host: host.to_owned(), reason: "timed out".to_owned() });
            }
        };
    let mut last = DialError::Resolve { host: host.to_owned(), reason: "no address".to_owned() };
    for addr in addrs {
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = DialError::Refused(addr);
                continue;
            }
            Ok(Err(reason)) => {
                last = DialError::Connect { addr, reason };
                continue;
            }
            Err(_) => return Err(DialError::Timeout(addr)),
        };
        // Media: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map_err(|reason| DialError::Connect { addr, reason })?;
        if transport == RelayTransport::Tcp {
            return Ok(StreamConn::new(stream, local, addr));
        }
        let server = format!("{host}:{port}");
        let tls_error = |reason: String| DialError::Tls { addr, reason };
        let config = tls_config(&server).ok_or_else(|| tls_error("no TLS configuration".to_owned()))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| tls_error(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        return match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(StreamConn::new(tls, local, addr)),
            Ok(Err(e)) => Err(tls_error(tls_reason(&e))),
            Err(_) => Err(tls_error("the server sent no TLS answer in time".to_owned())),
        };
    }
    Err(last)
}

/// rustls's reason, without the io wrapping.
fn tls_reason(error: &io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(why))) => {
            format!("certificate not accepted: {why}")
        }
        Some(rustls::Error::InvalidCertificate(why)) => format!("certificate not accepted: {why}"),
        Some(other) => other.to_string(),
        None if error.kind() == io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
        None => error.to_string(),
    }
}

/// A TURN server at the other end of a byte stream, as the datagram `Conn` the `turn` client
/// speaks through. Every `send_to` goes to that server, whatever address it names.
pub struct StreamConn {
    incoming: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    outgoing: mpsc::Sender<Vec<u8>>,
    local: SocketAddr,
    server: SocketAddr,
    dropped: Arc<AtomicU64>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for StreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConn").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

impl StreamConn {
    /// Wraps a connected stream to the server at `server`. Spawns its reader and writer tasks
    /// (on the current Tokio runtime); dropping or closing the `StreamConn` ends them and the stream.
    pub fn new<S>(stream: S, local: SocketAddr, server: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut read_half, write_half) = tokio::io::split(stream);
        let (to_client, incoming) = mpsc::channel::<Vec<u8>>(READ_QUEUE);
        let (outgoing, mut to_write) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0; MAX_FRAME];
            loop {
                match read_frame(&mut read_half, &mut buf).await {
                    Ok(n) => {
                        if to_client.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                    Err(FrameError::Closed) => break,
                    Err(e) => {
                        debug!("TURN stream ended: {e}");
                        break;
                    }
                }
            }
        });
        let writer = tokio::spawn(async move {
            let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
            while let Some(first) = to_write.recv().await {
                let mut message = Some(first);
                // Everything already queued goes in one flush (one TLS record, few segments).
                while let Some(m) = message {
                    if writer.write_all(&m).await.is_err() || writer.write_all(padding(&m)).await.is_err() {
                        return;
                    }
                    message = to_write.try_recv().ok();
                }
                if writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        Self {
            incoming: tokio::sync::Mutex::new(incoming),
            outgoing,
            local,
            server,
            dropped: Arc::new(AtomicU64::new(0)),
            reader,
            writer,
        }
    }

    /// Messages dropped because the stream could not take them fast enough.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn enqueue(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        match self.outgoing.try_send(buf.to_vec()) {
            Ok(()) => Ok(buf.len()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Relaxed);
                Ok(buf.len())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
        }
    }
}

fn closed() -> webrtc_util::Error {
    webrtc_util::Error::from(io::Error::new(io::ErrorKind::ConnectionReset, "the TURN stream is closed"))
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

#[async_trait]
impl Conn for StreamConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        // Cancellation-safe: a message is taken from the queue only when it is returned.
        let message = self.incoming.lock().await.recv().await.ok_or_else(closed)?;
        let n = message.len().min(buf.len());
        buf[..n].copy_from_slice(&message[..n]);
        Ok((n, self.server))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.enqueue(buf)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.enqueue(buf)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.reader.abort();
        self.writer.abort();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
