//! The server side: TURN clients on a TCP listener (TLS optional), shown to the `turn` server as
//! one datagram `Conn` in which each client is its address.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::debug;
use webrtc_util::Conn;

use crate::client::WRITE_QUEUE;
use crate::frame::{FrameError, MAX_FRAME, padding, read_frame};

/// Messages from all clients waiting for the `turn` server (full: readers wait, so a busy server
/// slows its TCP clients down rather than dropping their requests).
const INCOMING_QUEUE: usize = 1024;
/// Streams handed over by [`StreamIntake::offer`] and not yet taken up (full: refused).
const INTAKE_QUEUE: usize = 64;

/// A byte stream a TURN client speaks on (TCP, or TLS over it).
pub trait TurnStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> TurnStream for T {}

type Offered = (Box<dyn TurnStream>, SocketAddr);

/// Hands streams accepted elsewhere to a [`StreamServer`]: the relay's HTTPS port takes TLS
/// connections and passes on those whose first bytes are STUN, so TURN over TLS works on the
/// relay's own port (443 in production) with the relay's own certificate.
#[derive(Debug, Clone)]
pub struct StreamIntake {
    offered: mpsc::Sender<Offered>,
}

impl StreamIntake {
    /// Gives `stream`, from the client at `peer`, to the server. `false` (and the stream closed)
    /// if the server is gone or too many streams wait.
    pub fn offer(&self, stream: impl TurnStream, peer: SocketAddr) -> bool {
        self.offered.try_send((Box::new(stream), peer)).is_ok()
    }
}

/// What one listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct StreamServerLimits {
    /// Connections open at most; one more is closed at once.
    pub max_connections: usize,
    /// Connections open at most from one IP address (one client holds one per allocation).
    pub max_per_address: usize,
    /// Time for a TLS handshake and the first message.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (a call's consent checks pass
    /// every few seconds, allocation refreshes every few minutes).
    pub idle_timeout: Duration,
}

impl Default for StreamServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4_096,
            max_per_address: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

type Clients = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Counters of a listener.
#[derive(Debug, Default)]
struct Counters {
    open: AtomicUsize,
    refused: AtomicU64,
    failed_handshakes: AtomicU64,
    broken: AtomicU64,
    dropped: AtomicU64,
}

/// TURN clients on a stream listener, as one `Conn` for the `turn` server.
pub struct StreamServer {
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    clients: Clients,
    counters: Arc<Counters>,
    local: SocketAddr,
    intake: StreamIntake,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer").field("local", &self.local).finish_non_exhaustive()
    }
}

impl StreamServer {
    /// Serves TURN clients connecting to `listener`, over TLS if `tls` is given. Spawns the accept
    /// loop on the current runtime; dropping or closing the server ends it and every connection.
    pub fn new(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        limits: StreamServerLimits,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self::serving(Some(listener), local, tls, limits))
    }

    /// Serves only the streams handed over through [`StreamServer::intake`] (the relay's HTTPS
    /// port passes on TURN over TLS); `local` is the address those clients connected to, which
    /// the `turn` server sees as this listener's.
    pub fn intake_only(local: SocketAddr, limits: StreamServerLimits) -> Self {
        Self::serving(None, local, None, limits)
    }

    fn serving(
        listener: Option<TcpListener>,
        local: SocketAddr,
        tls: Option<TlsAcceptor>,
        limits: StreamServerLimits,
    ) -> Self {
        let (to_server, incoming) = mpsc::channel(INCOMING_QUEUE);
        let clients: Clients = Arc::default();
        let counters = Arc::new(Counters::default());
        let (offered, intake) = mpsc::channel(INTAKE_QUEUE);
        let accept = tokio::spawn(accept_loop(
            Sources { listener, intake },
            tls,
            limits,
            to_server,
            Arc::clone(&clients),
            Arc::clone(&counters),
        ));
        let intake = StreamIntake { offered };
        Self { incoming: tokio::sync::Mutex::new(incoming), clients, counters, local, intake, accept }
    }

    /// Where other listeners hand over streams that turned out to be TURN (served as they are:
    /// no TLS handshake is made on them here).
    pub fn intake(&self) -> StreamIntake {
        self.intake.clone()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.counters.open.load(Relaxed)
    }

    /// Connections closed at once because the listener was full.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Relaxed)
    }

    /// Connections whose TLS handshake failed or timed out.
    pub fn failed_handshakes(&self) -> u64 {
        self.counters.failed_handshakes.load(Relaxed)
    }

    /// Connections closed because a message on them was neither STUN nor ChannelData.
    pub fn broken(&self) -> u64 {
        self.counters.broken.load(Relaxed)
    }

    /// Messages to clients dropped because their stream could not take them fast enough.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Relaxed)
    }

    /// Stops accepting and closes every connection (as dropping the server does).
    pub fn shutdown(&self) {
        self.accept.abort();
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where connections come from: the listener (if any), and streams handed over.
struct Sources {
    listener: Option<TcpListener>,
    intake: mpsc::Receiver<Offered>,
}

/// A connection to serve.
enum Accepted {
    /// From the listener: TLS (if configured) still to be done.
    Fresh(TcpStream),
    /// Handed over, ready.
    Offered(Box<dyn TurnStream>),
}

async fn accept_loop(
    mut sources: Sources,
    tls: Option<TlsAcceptor>,
    limits: StreamServerLimits,
    to_server: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    clients: Clients,
    counters: Arc<Counters>,
) {
    // Owned here: aborting the loop drops the set, which ends every connection.
    let mut connections = JoinSet::new();
    let per_address: Arc<Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = accept(sources.listener.as_ref()) => match accepted {
                Ok((stream, peer)) => (Accepted::Fresh(stream), peer),
                Err(e) => {
                    // Out of descriptors, usually: wait rather than spin.
                    debug!("TURN listener accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some((stream, peer)) = sources.intake.recv() => (Accepted::Offered(stream), peer),
        };
        let from_peer = per_address.lock().unwrap_or_else(PoisonError::into_inner).get(&peer.ip()).copied();
        if counters.open.load(Relaxed) >= limits.max_connections
            || from_peer.unwrap_or(0) >= limits.max_per_address
        {
            counters.refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        }
        counters.open.fetch_add(1, Relaxed);
        *per_address.lock().unwrap_or_else(PoisonError::into_inner).entry(peer.ip()).or_default() += 1;
        let (tls, to_server) = (tls.clone(), to_server.clone());
        // Gives the connection's places back however its task ends (a panic too).
        let slot = Slot {
            peer,
            clients: Arc::clone(&clients),
            counters: Arc::clone(&counters),
            per_address: Arc::clone(&per_address),
        };
        connections.spawn(async move {
            let (clients, counters) = (&slot.clients, &slot.counters);
            match stream {
                Accepted::Fresh(stream) => {
                    let _ = stream.set_nodelay(true);
                    serve(stream, peer, tls, limits, to_server, clients, counters).await;
                }
                Accepted::Offered(stream) => {
                    carry(stream, peer, limits, to_server, clients, counters).await;
                }
            }
        });
    }
}

/// One connection's places in the listener's tables, given back when it ends.
struct Slot {
    peer: SocketAddr,
    clients: Clients,
    counters: Arc<Counters>,
    per_address: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.peer);
        self.counters.open.fetch_sub(1, Relaxed);
        let mut per_address = self.per_address.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_address.get_mut(&self.peer.ip()) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_address.remove(&self.peer.ip());
            }
        }
    }
}

/// The next connection from `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: StreamServerLimits,
    to_server: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    clients: &Clients,
    counters: &Counters,
) {
    match tls {
        None => carry(stream, peer, limits, to_server, clients, counters).await,
        Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => carry(tls, peer, limits, to_server, clients, counters).await,
            Ok(Err(e)) => {
                counters.failed_handshakes.fetch_add(1, Relaxed);
                debug!("TURN TLS handshake failed: {e}");
            }
            Err(_) => {
                counters.failed_handshakes.fetch_add(1, Relaxed);
                debug!("TURN TLS handshake timed out");
            }
        },
    }
}

/// Moves one client's messages both ways until it closes, breaks framing or idles out.
async fn carry<S>(
    stream: S,
    peer: SocketAddr,
    limits: StreamServerLimits,
    to_server: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    clients: &Clients,
    counters: &Counters,
) where
    S: AsyncRead + AsyncWrite + Send,
{
    let (mut read_half, write_half) = tokio::io::split(stream);
    let (outgoing, mut to_write) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    clients.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, outgoing);
    let reading = async {
        let mut buf = vec![0; MAX_FRAME];
        let mut wait = limits.handshake_timeout;
        loop {
            match tokio::time::timeout(wait, read_frame(&mut read_half, &mut buf)).await {
                Ok(Ok(n)) => {
                    if to_server.send((buf[..n].to_vec(), peer)).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    if matches!(e, FrameError::NotTurn(_) | FrameError::BadLength(_)) {
                        counters.broken.fetch_add(1, Relaxed);
                    }
                    debug!("TURN stream client gone: {e}");
                    return;
                }
                Err(_) => {
                    debug!("TURN stream client idle");
                    return;
                }
            }
            wait = limits.idle_timeout;
        }
    };
    let writing = async {
        let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
        while let Some(first) = to_write.recv().await {
            let mut message = Some(first);
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
    };
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
}

#[async_trait]
impl Conn for StreamServer {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("a listener does not connect".to_owned()))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (message, from) = self
            .incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| webrtc_util::Error::Other("the TURN listener is closed".to_owned()))?;
        let n = message.len().min(buf.len());
        buf[..n].copy_from_slice(&message[..n]);
        Ok((n, from))
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("a listener sends to an address".to_owned()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let client = self.clients.lock().unwrap_or_else(PoisonError::into_inner).get(&target).cloned();
        match client {
            // Full, or gone since: lost, as a datagram to a vanished client would be.
            Some(client) => {
                if client.try_send(buf.to_vec()).is_err() {
                    self.counters.dropped.fetch_add(1, Relaxed);
                }
            }
            None => {
                self.counters.dropped.fetch_add(1, Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Does nothing: the `turn` server closes an allocation's client `Conn` when the allocation
    /// ends, and here that `Conn` is every client's listener. [`StreamServer::shutdown`] (or
    /// dropping the server) ends the listener and its connections.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
