//! The listener: accepts TCP, enforces connection caps, speaks TLS, hands HTTP to the router,
//! and shuts down gracefully (stop accepting, tell clients to reconnect, drain).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confer_proto::{IceServer, InviteLink, PeerId, Role, RoomId};
use confer_turn_stream::{Prefixed, StreamIntake, starts_as_stun};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::config::RelayConfig;
use crate::http::{ConnInfo, router};
use crate::metrics::Metrics;
use crate::room::{RoomSettings, Welcome};
use crate::rooms::Rooms;
use crate::stun_turn::{self, EmbeddedTurn, TurnMetrics};
use crate::token::{InviteClaims, ResumeClaims, new_room_id, unix_now, unix_now_ms};
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
}

/// A room's id and its two invite links.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomLinks {
    /// The room.
    pub room: RoomId,
    /// The host's invite.
    pub host: LinkPair,
    /// The guests' invite.
    pub guest: LinkPair,
    /// When both invites expire (Unix seconds).
    pub expires_at: u64,
}

/// One invite in both forms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkPair {
    /// `confer://join?...`
    pub app: String,
    /// `https://relay/j/...`
    pub web: String,
}

/// State shared by every task of one relay.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Metrics,
    pub(crate) turn_metrics: Arc<TurnMetrics>,
    /// Where TLS connections that speak TURN go (the embedded TURN server, if it runs).
    pub(crate) turn_intake: Option<StreamIntake>,
    /// Unix milliseconds when this relay started; resume tokens issued before may rebuild seats.
    pub(crate) started_ms: u64,
    pub(crate) origin: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    next_conn: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Network checks per client address: each one mints TURN credentials.
    checks: Mutex<HashMap<IpAddr, crate::rate::TokenBucket>>,
    open: AtomicUsize,
    refusing: AtomicUsize,
}

impl Shared {
    /// Whether a seat this relay holds no record of may be rebuilt from a resume token issued
    /// at `issued_ms`: only if the token predates this process (a restart lost the seat) and the
    /// restart was recent enough that its holder is reconnecting, not coming back much later.
    pub(crate) fn may_rebuild(&self, issued_ms: u64, now_ms: u64) -> bool {
        let window = self.config.grace.saturating_mul(2).max(Duration::from_secs(30));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        issued_ms < self.started_ms && now_ms < self.started_ms.saturating_add(window_ms)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Relaxed)
    }

    /// The STUN servers, and TURN credentials for a seated `peer` valid from `now` (Unix seconds)
    /// for the configured TTL.
    pub(crate) fn ice_servers(&self, peer: &PeerId, now: u64) -> Vec<IceServer> {
        let ttl = self.config.turn.as_ref().map_or(Duration::ZERO, |t| t.ttl);
        self.check_ice_servers(peer, now, ttl, true)
    }

    /// The STUN servers, and (if `with_turn`) TURN credentials valid for `ttl`.
    pub(crate) fn check_ice_servers(
        &self,
        peer: &PeerId,
        now: u64,
        ttl: Duration,
        with_turn: bool,
    ) -> Vec<IceServer> {
        let mut ice_servers = Vec::new();
        if !self.config.stun_urls.is_empty() {
            ice_servers.push(IceServer {
                urls: self.config.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = self.config.turn.as_ref().filter(|_| with_turn) {
            ice_servers.push(turn::credentials(&turn::TurnConfig { ttl, ..turn.clone() }, peer, now));
        }
        ice_servers
    }

    /// Whether `ip` may run another network check now: 10 at once, then one every 6 s.
    pub(crate) fn allow_check(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut checks = self.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: past 4,096 addresses, those whose buckets have refilled are forgotten.
        if checks.len() >= 4_096 {
            checks.retain(|_, bucket| !bucket.is_full(now));
            if checks.len() >= 4_096 {
                return false;
            }
        }
        checks.entry(ip).or_insert_with(|| crate::rate::TokenBucket::per_minute(10, 10, now)).try_take(now)
    }

    /// ICE servers and a resume token for a seat.
    pub(crate) fn welcome(&self, room: &RoomId, peer: &PeerId, role: Role) -> Welcome {
        let now_ms = unix_now_ms();
        let ice_servers = self.ice_servers(peer, now_ms / 1000);
        let claims = ResumeClaims::new(room.clone(), peer.clone(), role, now_ms, self.config.resume_ttl);
        Welcome { ice_servers, resume_token: claims.sign(&self.config.token_key), resume_issued_ms: now_ms }
    }

    /// Mints a new room and its invites.
    pub(crate) fn create_room(&self, waiting_room: bool) -> RoomLinks {
        let room = new_room_id();
        let expires_at = unix_now().saturating_add(self.config.invite_ttl.as_secs());
        let pair = |role| {
            let token = InviteClaims { room: room.clone(), role, waiting_room, expires: expires_at }
                .sign(&self.config.token_key);
            let link = InviteLink {
                relay: self.origin.clone(),
                room: room.clone(),
                token,
                fingerprint: self.config.tls.as_ref().and_then(|t| t.pin),
            };
            LinkPair { app: link.app_link(), web: link.web_link() }
        };
        self.metrics.http_rooms_created.fetch_add(1, Relaxed);
        RoomLinks { host: pair(Role::Host), guest: pair(Role::Guest), room, expires_at }
    }

    pub(crate) fn render_metrics(&self) -> String {
        let (rooms, participants) = self.rooms.counts();
        let mut text = self.metrics.render(rooms, participants);
        if self.config.embedded_turn.is_some() {
            self.turn_metrics.render(&mut text);
        }
        text
    }

    /// Counts a new TCP connection against the caps; `None` says which cap it hit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
        if self.open.load(Relaxed) >= self.config.max_connections {
            return Err("the relay is at its connection limit");
        }
        let ip = address_key(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.config.max_connections_per_ip {
            return Err("too many connections from your address");
        }
        *count += 1;
        self.open.fetch_add(1, Relaxed);
        Ok(ConnSlot { shared: Arc::clone(self), ip })
    }
}

/// What one client counts as for the per-address cap: its IPv4 address, or its IPv6 /64 (one
/// host usually holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One counted connection; uncounted when dropped (the WebSocket task holds it after upgrade).
#[derive(Debug)]
pub(crate) struct ConnSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Relaxed);
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Refusals being answered at once, at most.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// One refusal being answered; released when dropped.
struct RefusalSlot(Arc<Shared>);

impl RefusalSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let previous = shared.refusing.fetch_add(1, Relaxed);
        let slot = Self(Arc::clone(shared));
        (previous < MAX_REFUSALS_IN_FLIGHT).then_some(slot)
    }
}

impl Drop for RefusalSlot {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Relaxed);
    }
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
        self.shared.shutdown.cancel();
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
        let settings = RoomSettings {
            capacity: config.room_capacity,
            grace: config.grace,
            knock_timeout: config.knock_timeout,
            replay_messages: config.replay_messages,
            replay_bytes: config.replay_bytes,
        };
        let shared = Arc::new(Shared {
            rooms: Rooms::new(settings, config.max_rooms),
            metrics: Metrics::default(),
            turn_metrics,
            turn_intake: turn.as_ref().map(|t| t.intake.clone()),
            started_ms: unix_now_ms(),
            origin,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            config,
        });
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
                        _ = tick.tick() => shared.rooms.sweep(Instant::now(), shared.config.empty_room_ttl, &shared.metrics),
                        () = shared.shutdown.cancelled() => break,
                    }
                }
            })
        };
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
                () = shared.shutdown.cancelled() => break,
            };
            let shared2 = Arc::clone(&shared);
            let app = app.clone();
            shared.tasks.spawn(async move { serve_tcp(shared2, app, stream, addr).await });
        }
        info!("shutting down: telling clients to reconnect");
        drop(self.listener);
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await.is_err() {
            warn!("some connections did not close within 5 s");
        }
        let _ = sweeper.await;
        if let Some(turn) = self.turn {
            turn.close().await;
        }
        info!("relay stopped");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
