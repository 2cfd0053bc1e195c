//! The listener: accepts TCP, enforces connection caps, speaks TLS, hands HTTP to the router,
//! and shuts down gracefully (stop accepting, tell clients to reconnect, drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confer_proto::InviteLink;
use confer_turn_stream::{Prefixed, starts_as_stun};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::config::RelayConfig;
use crate::http::{ConnInfo, router};
use crate::state::{RefusalSlot, RoomLinks, Shared};
use crate::stun_turn::{self, EmbeddedTurn, TurnMetrics};
use crate::turn;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// Plain `ws://` was asked for on an address other machines can reach.
    #[error(
        "refusing to serve plain ws:// on {0}: configure TLS, or allow plain explicitly (behind a TLS-terminating proxy)"
    )]
    PlainNotAllowed(SocketAddr),
    /// The public URL is not `wss://host[:port]` or `ws://host[:port]`.
    #[error("the public URL {0:?} must look like wss://host[:port]")]
    PublicUrl(String),
    /// The embedded TURN server and an external one were both configured.
    #[error("the embedded TURN server and external TURN URLs exclude each other")]
    TurnConflict,
    /// The embedded TURN server could not tell which address peers reach it at.
    #[error(
        "the embedded TURN server needs the address peers reach it at: listen on that address, use it as the public host, or name it (--turn-relay-ip)"
    )]
    TurnRelayIp,
    /// The embedded TURN server's UDP port could not be bound.
    #[error("cannot start the embedded STUN/TURN server on UDP {addr}: {source}")]
    TurnBind { addr: SocketAddr, source: std::io::Error },
    /// The Redis URL is not one the client understands.
    #[error("the Redis URL is not usable: {0}")]
    RedisUrl(String),
    /// The certificate authority file for Redis could not be read.
    #[error("cannot read the Redis CA file {path}: {source}")]
    RedisCa { path: std::path::PathBuf, source: std::io::Error },
}

/// A bound relay, ready to run.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    shared: Arc<Shared>,
    turn: Option<EmbeddedTurn>,
}

/// Controls a running relay from outside.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// Starts a graceful shutdown; [`Relay::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.shared.stopping.cancel();
    }

    /// Mints a room, as `POST /rooms` does.
    pub fn create_room(&self, waiting_room: bool) -> RoomLinks {
        self.shared.create_room(waiting_room)
    }

    /// The origin used in links (`wss://host:port`).
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }
}

impl Relay {
    /// Binds the listen address.
    pub async fn bind(mut config: RelayConfig) -> Result<Self, RelayError> {
        if config.tls.is_none() && !config.allow_plain && !config.listen.ip().is_loopback() {
            return Err(RelayError::PlainNotAllowed(config.listen));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let local =
            listener.local_addr().map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let origin = match &config.public_url {
            Some(url) => {
                let probe =
                    format!("{}/j/{}/t", url.trim_end_matches('/').replacen("ws", "http", 1), "A".repeat(22));
                if !(url.starts_with("wss://") || url.starts_with("ws://"))
                    || InviteLink::parse(&probe).is_err()
                {
                    return Err(RelayError::PublicUrl(url.clone()));
                }
                url.trim_end_matches('/').to_owned()
            }
            None => {
                let scheme = if config.tls.is_some() { "wss" } else { "ws" };
                let host = match &config.public_host {
                    Some(host) => host.clone(),
                    None if local.ip().is_unspecified() => "localhost".to_owned(),
                    None => local.ip().to_string(),
                };
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                let origin = format!("{scheme}://{host}:{}", local.port());
                let probe = format!("{}/j/{}/t", origin.replacen("ws", "http", 1), "A".repeat(22));
                if InviteLink::parse(&probe).is_err() {
                    return Err(RelayError::PublicUrl(origin));
                }
                origin
            }
        };
        let turn_metrics = Arc::new(TurnMetrics::default());
        let turn = match config.embedded_turn.clone() {
            None => None,
            Some(_) if config.turn.is_some() => return Err(RelayError::TurnConflict),
            Some(embedded) => {
                let host = stun_turn::origin_host(&origin).to_owned();
                let relay_ip = embedded
                    .relay_ip
                    .or_else(|| stun_turn::default_relay_ip(embedded.listen, &host))
                    .or_else(|| stun_turn::default_relay_ip(local, &host))
                    .or_else(stun_turn::outward_ip)
                    .ok_or(RelayError::TurnRelayIp)?;
                let secret = crate::token::turn_secret(&config.token_key);
                let server =
                    EmbeddedTurn::start(&embedded, relay_ip, local, &secret, Arc::clone(&turn_metrics))
                        .await
                        .map_err(|source| RelayError::TurnBind { addr: embedded.listen, source })?;
                // TURN over TLS rides on the relay's own TLS port, as clients reach it.
                let tls_port = config.tls.is_some().then(|| stun_turn::origin_port(&origin));
                let (stun_url, turn_urls) =
                    stun_turn::urls(&host, server.local.port(), tls_port, &embedded.transports);
                config.stun_urls.insert(0, stun_url);
                config.turn =
                    Some(turn::TurnConfig { urls: turn_urls, secret, ttl: embedded.credential_ttl });
                Some(server)
            }
        };
        let turn_intake = turn.as_ref().map(|t| t.intake.clone());
        let cluster = match &config.redis_url {
            None => None,
            Some(url) => {
                let ca = match &config.redis_ca {
                    None => None,
                    Some(path) => Some(redis_ca(path)?),
                };
                Some(Arc::new(Cluster::new(&url.0, ca).map_err(|err| RelayError::RedisUrl(err.to_string()))?))
            }
        };
        let shared = Arc::new(Shared::new(config, origin, turn_metrics, turn_intake, cluster));
        Ok(Self { listener, shared, turn })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.shared.config.listen)
    }

    /// Where the embedded STUN/TURN server listens, if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(|t| t.local)
    }

    /// A handle to shut the relay down or mint rooms.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle { shared: Arc::clone(&self.shared) }
    }

    /// Serves until [`RelayHandle::shutdown`], then drains: every client is told to reconnect,
    /// and the call returns when their connections have closed (or after 5 s).
    pub async fn run(self) {
        let shared = self.shared;
        let app = router(Arc::clone(&shared));
        let sweeper = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let dropped = shared.rooms.sweep(Instant::now(), shared.config.empty_room_ttl, &shared.metrics);
                            if let Some(cluster) = &shared.cluster {
                                for room in dropped {
                                    cluster.release(&room).await;
                                    // Someone joined it again meanwhile: claim it back at once.
                                    if shared.rooms.get(&room).is_some() {
                                        let _ = cluster.renew(&[room]).await;
                                    }
                                }
                            }
                        }
                        () = shared.shutdown.cancelled() => break,
                    }
                }
            })
        };
        let cluster_tasks = shared.cluster.as_ref().map(|cluster| {
            info!(instance = format_args!("{:016x}", cluster.me), "sharing rooms through Redis");
            let mut tasks = tokio::task::JoinSet::new();
            tasks.spawn(Arc::clone(cluster).write_loop());
            // Envelopes (and losses) are carried out in order by one task; a full queue holds
            // the reader back (Redis keeps the rest of the inbox).
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            // Until the clients are told to go: a draining instance's rooms must not look
            // abandoned before their snapshots are written.
            tasks.spawn(Arc::clone(cluster).heartbeat_loop(shared.shutdown.clone(), tx.clone()));
            tasks.spawn(Arc::clone(cluster).read_loop(shared.shutdown.clone(), tx));
            let applier = Arc::clone(&shared);
            tasks.spawn(async move {
                while let Some((from, envelope)) = rx.recv().await {
                    // A fault in one envelope must not stop the others from being carried out.
                    let applied = std::panic::AssertUnwindSafe(applier.on_envelope(from, envelope));
                    if futures_util::FutureExt::catch_unwind(applied).await.is_err() {
                        warn!("an envelope could not be carried out (a fault): skipped");
                    }
                }
            });
            let snapshotter = Arc::clone(&shared);
            tasks.spawn(async move { snapshot_loop(snapshotter).await });
            let auditor = Arc::clone(&shared);
            tasks.spawn(async move { audit_loop(auditor).await });
            tasks
        });
        let listen = self.listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let turn = self.turn.as_ref().map_or_else(|| "off".to_owned(), |t| format!("udp+tcp {}", t.local));
        info!(origin = %shared.origin, %listen, tls = shared.config.tls.is_some(), %turn, "relay listening");
        if shared.config.public_url.is_none() && shared.origin.contains("://localhost:") {
            warn!(
                "invite links point to localhost: pass --public-url wss://HOST:PORT so that other machines can join"
            );
        }
        loop {
            let (stream, addr) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shared.stopping.cancelled() => break,
            };
            let shared2 = Arc::clone(&shared);
            let app = app.clone();
            shared.tasks.spawn(async move { serve_tcp(shared2, app, stream, addr).await });
        }
        if let Some(cluster) = &shared.cluster {
            // Rooms go whole to the instances that take them over: snapshots first, then the
            // clients are told to resume (there, through the load balancer).
            let _gate = cluster.snapshot_gate.lock().await;
            let rooms = shared.rooms.snapshots();
            let count = rooms.len();
            match tokio::time::timeout(Duration::from_secs(2), cluster.hand_over(rooms)).await {
                Ok(Ok(())) => info!(rooms = count, "rooms handed over"),
                Ok(Err(err)) => {
                    warn!(%err, "the rooms could not be handed over: their seats are rebuilt from resume tokens");
                }
                Err(_) => {
                    warn!("handing the rooms over timed out: their seats are rebuilt from resume tokens");
                }
            }
            for room in shared.rooms.ids() {
                shared.rooms.evacuate(
                    &room,
                    "the relay is restarting: reconnect and resume",
                    &shared.metrics,
                );
            }
        }
        shared.shutdown.cancel();
        info!("shutting down: telling clients to reconnect");
        drop(self.listener);
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await.is_err() {
            warn!("some connections did not close within 5 s");
        }
        let _ = sweeper.await;
        if let Some(cluster) = &shared.cluster {
            // What the rooms last sent to clients of other instances leaves before we go.
            let flushed = async {
                while !cluster.outlet.is_idle() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
        }
        if let Some(mut tasks) = cluster_tasks {
            // The writer ends when every outlet is gone; the rest end with the shutdown.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if let Some(turn) = self.turn {
            turn.close().await;
        }
        info!("relay stopped");
    }
}

/// Writes the snapshots of the rooms held here that changed, every second (and all of them now
/// and then, within their TTL), so that a holder's crash loses at most the last second.
async fn snapshot_loop(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else { return };
    let mut tick = tokio::time::interval(crate::cluster::SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = std::collections::HashMap::new();
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.stopping.cancelled() => return,
        }
        ticks = ticks.wrapping_add(1);
        let all = ticks.is_multiple_of(crate::cluster::SNAPSHOT_ALL_EVERY);
        let _gate = cluster.snapshot_gate.lock().await;
        if shared.stopping.is_cancelled() {
            return;
        }
        let rooms = shared.rooms.changed_snapshots(&mut seen, all);
        if rooms.is_empty() {
            continue;
        }
        if let Err(err) = cluster.save_snapshots(&rooms).await {
            debug!(%err, "writing the rooms' snapshots failed");
            // Every room is written again next time (Redis may have restarted empty).
            seen.clear();
        }
    }
}

/// Renews the directory entries of the rooms held here; a room another instance took over (this
/// one could not reach Redis for too long) is dropped here, its clients told to resume there.
async fn audit_loop(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else { return };
    let mut tick = tokio::time::interval(Cluster::AUDIT);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cluster.recovered.notified() => {}
            () = shared.shutdown.cancelled() => return,
        }
        let held = shared.rooms.ids();
        match cluster.renew(&held).await {
            Ok(lost) => {
                for room in lost {
                    warn!(room = room.as_str(), "another relay took this room over: its clients move there");
                    shared.rooms.evacuate(
                        &room,
                        "your room moved to another relay: reconnect and resume",
                        &shared.metrics,
                    );
                }
            }
            Err(err) => debug!(%err, "renewing the rooms' entries failed"),
        }
    }
}

async fn serve_tcp(shared: Arc<Shared>, app: axum::Router, stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let ip = addr.ip();
    let slot = shared.admit(ip);
    // A refused connection is told why (HTTP 429, then closed) unless too many refusals are
    // already in progress: then it is dropped at once, so refusals cannot exhaust descriptors.
    let _refusal;
    let info = match slot {
        Ok(slot) => ConnInfo { slot: Some(Arc::new(slot)), refused: None, ip },
        Err(why) => {
            debug!(why, "connection over a cap");
            match RefusalSlot::take(&shared) {
                Some(refusal) => _refusal = refusal,
                None => return,
            }
            ConnInfo { slot: None, refused: Some(why), ip }
        }
    };
    match &shared.config.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
            match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(mut tls_stream)) => {
                    // STUN first: a TURN client (TURN over TLS on this port); else HTTP.
                    let mut first = [0u8; 1];
                    let read =
                        tokio::time::timeout(shared.config.handshake_timeout, tls_stream.read(&mut first));
                    match read.await {
                        Ok(Ok(1)) => {}
                        _ => return,
                    }
                    if let Some(intake) = shared.turn_intake.as_ref().filter(|_| starts_as_stun(first[0])) {
                        drop(info);
                        if !intake.offer(Prefixed::new(first.to_vec(), tls_stream), addr) {
                            debug!("TURN over TLS refused: the TURN server is busy");
                        }
                        return;
                    }
                    serve_http(shared, app, Prefixed::new(first.to_vec(), tls_stream), info).await;
                }
                Ok(Err(err)) => debug!(%err, "TLS handshake failed"),
                Err(_) => debug!("TLS handshake timed out"),
            }
        }
        None => serve_http(shared, app, stream, info).await,
    }
}

async fn serve_http<IO>(shared: Arc<Shared>, app: axum::Router, io: IO, info: ConnInfo)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                debug!(%err, "HTTP connection ended with an error");
            }
        }
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// The PEM of the authority Redis's certificate is checked against; a file that holds no
/// certificate is refused now, not found out later as an endless "Redis is unreachable".
fn redis_ca(path: &std::path::Path) -> Result<Vec<u8>, RelayError> {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|source| RelayError::RedisCa { path: path.to_owned(), source })?;
    if !rustls::pki_types::CertificateDer::pem_slice_iter(&pem).any(|cert| cert.is_ok()) {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidData, "it holds no PEM certificate");
        return Err(RelayError::RedisCa { path: path.to_owned(), source });
    }
    Ok(pem)
}
