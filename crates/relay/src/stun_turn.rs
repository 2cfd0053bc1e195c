//! The STUN/TURN server inside the relay, so that self-hosting a meeting server needs no
//! separate coturn for calls to connect across NATs.
//!
//! The protocol work (STUN binding, TURN allocate/refresh/permission/channel, long-term
//! credentials with nonces) is the `turn` crate's server (0.17.2, the same webrtc-rs release as
//! the call engine's stack). This module adds what a server on the open internet must have and
//! that crate leaves out:
//! - **Credentials** in the TURN REST scheme the relay already signs for coturn
//!   ([`crate::turn`]): the username is `expiry:peer`, the password `base64(HMAC-SHA1(secret,
//!   username))`; an expired username is refused.
//! - **Peer filtering** (the CVE-2020-26262 class): no relaying to or from loopback, unspecified,
//!   link-local (which holds the cloud metadata address 169.254.169.254), private, shared
//!   (100.64/10), multicast or broadcast addresses, unless the operator allows a range. Checked on
//!   every datagram the relayed socket sends or receives, so nothing reaches a refused peer
//!   whatever permissions a client asks for.
//! - **Quotas**: allocations at most in all, and a byte rate per allocation (a token bucket);
//!   the relayed ports come from a configured range.
//! - **Metrics**: allocations open and made, bytes relayed, datagrams to refused peers, and
//!   allocations refused at the cap, on the relay's `/metrics`.
//!
//! - **TURN over TCP** on the same port as UDP (3478), and **TURN over TLS on the relay's own
//!   port** (443 in production) when the relay serves TLS: a TLS connection to the relay whose
//!   first bytes are STUN is handed to the TURN server instead of HTTP, so it carries the relay's
//!   certificate (an invite link's pin covers it) and passes any firewall that lets the relay
//!   through. Both are `confer-turn-stream` streams.
//!
//! What it does not do (yet): a per-user allocation cap (the `turn` crate's address generator is
//! not told who asks); closing an allocation made over TCP when its connection closes (RFC 6062
//! asks for it; here it ends with its lifetime, at most ten minutes without a refresh). The
//! `turn` crate caps an allocation's lifetime at one hour itself, and keys allocations by
//! addresses, not transports: a UDP and a TCP client with the same address and port would share
//! a five-tuple.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use confer_turn_stream::{RelayTransport, StreamIntake, StreamServer, StreamServerLimits};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info};
use turn::allocation::AllocationInfo;
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::Conn;

use crate::rate::TokenBucket;
use crate::turn_guard::{Guard, GuardedConn, Ledger, Quotas, Refusal};

/// TURN over UDP, TCP and TLS.
pub const ALL_TRANSPORTS: [RelayTransport; 3] =
    [RelayTransport::Udp, RelayTransport::Tcp, RelayTransport::Tls];

/// The realm the embedded server names in its challenges.
pub const REALM: &str = "confer";

/// An address range, `ADDRESS/PREFIX` (`10.0.0.0/8`, `fd00::/8`); a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `ADDRESS[/PREFIX]`.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let base: IpAddr = addr.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { base, prefix })
    }

    /// Whether `ip` lies in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a relayed socket may exchange datagrams with `ip`: public addresses, and those in
/// `allowed`. Everything that reaches into the server's own network is refused by default.
pub fn peer_allowed(ip: IpAddr, allowed: &[IpRange]) -> bool {
    let ip = canonical(ip);
    if allowed.iter().any(|range| range.contains(ip)) {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => {
            let shared = IpRange { base: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), prefix: 10 };
            // IETF protocol assignments, where Oracle Cloud's metadata service (192.0.0.192) lives.
            let protocol = IpRange { base: IpAddr::V4(Ipv4Addr::new(192, 0, 0, 0)), prefix: 24 };
            let this_network = v4.octets()[0] == 0;
            !(v4.is_loopback()
                || v4.is_unspecified()
                || this_network
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] >= 240
                || shared.contains(ip)
                || protocol.contains(ip))
        }
        IpAddr::V6(v6) => {
            let segment = v6.segments()[0];
            let unique_local = segment & 0xfe00 == 0xfc00;
            let link_local = segment & 0xffc0 == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || unique_local || link_local)
        }
    }
}

/// How the embedded STUN/TURN server runs.
#[derive(Debug, Clone)]
pub struct EmbeddedTurnConfig {
    /// UDP address to listen on (port 0: the system picks one; the URLs name the bound port).
    pub listen: SocketAddr,
    /// The address put into relayed candidates (what peers send to). `None`: the listen address
    /// if it names one, else the host of the relay's public origin if that is an address, else
    /// the address this machine routes outward from.
    pub relay_ip: Option<IpAddr>,
    /// Which TURN URLs are handed out (all three by default; TLS only when the relay serves TLS).
    pub transports: Vec<RelayTransport>,
    /// Relayed ports are taken from this range (inclusive).
    pub relay_ports: (u16, u16),
    /// Peer ranges allowed besides public addresses (say `10.0.0.0/8` on a private network).
    pub allowed_peers: Vec<IpRange>,
    /// Allocations at most, in all (over it: 508 Insufficient Capacity).
    pub max_allocations: usize,
    /// Allocations per credential and per client address (over either: 486).
    pub quotas: Quotas,
    /// Bytes per second one allocation may relay, each way (bursts of two seconds' worth).
    pub allocation_byte_rate: u32,
    /// How long handed-out credentials stay valid.
    pub credential_ttl: Duration,
}

impl Default for EmbeddedTurnConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            relay_ip: None,
            transports: ALL_TRANSPORTS.to_vec(),
            relay_ports: (49_152, 65_535),
            allowed_peers: Vec::new(),
            max_allocations: 2_000,
            quotas: Quotas::default(),
            // 1.25 MB/s = 10 Mbit/s: several times one HD video stream.
            allocation_byte_rate: 1_250_000,
            credential_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// How a client reaches the embedded server, for the metrics' `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientTransport {
    Udp = 0,
    Tcp = 1,
    Tls = 2,
}

impl ClientTransport {
    const ALL: [Self; 3] = [Self::Udp, Self::Tcp, Self::Tls];

    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// The embedded server's counters.
#[derive(Debug, Default)]
pub(crate) struct TurnMetrics {
    pub(crate) allocations: AtomicU64,
    pub(crate) allocations_total: AtomicU64,
    /// By [`Refusal`], in its order.
    pub(crate) allocations_refused: [AtomicU64; 3],
    /// By [`ClientTransport`]: bytes and datagrams through relayed sockets of allocations made
    /// over that transport, both ways.
    pub(crate) relayed_bytes: [AtomicU64; 3],
    pub(crate) relayed_packets: [AtomicU64; 3],
    pub(crate) peers_refused: AtomicU64,
    pub(crate) permissions_refused: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) over_rate: AtomicU64,
    /// The TCP and TLS sides, for their connection counts.
    pub(crate) streams: std::sync::OnceLock<[Arc<StreamServer>; 2]>,
}

impl TurnMetrics {
    pub(crate) fn count_refusal(&self, refusal: Refusal) {
        let index = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
        self.allocations_refused[index].fetch_add(1, Relaxed);
    }

    /// Appends the Prometheus text of these counters to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut family = |name: &str, kind: &str, help: &str, values: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in values {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |value: &AtomicU64| vec![(String::new(), value.load(Relaxed))];
        let by_transport = |values: &[AtomicU64; 3]| {
            ClientTransport::ALL
                .iter()
                .map(|t| (format!("{{transport=\"{}\"}}", t.label()), values[*t as usize].load(Relaxed)))
                .collect::<Vec<_>>()
        };
        family("confer_turn_allocations", "gauge", "Open TURN allocations.", &plain(&self.allocations));
        family(
            "confer_turn_allocations_total",
            "counter",
            "TURN allocations made.",
            &plain(&self.allocations_total),
        );
        let refused: Vec<_> = Refusal::ALL
            .iter()
            .zip(&self.allocations_refused)
            .map(|(r, v)| (format!("{{reason=\"{}\"}}", r.label()), v.load(Relaxed)))
            .collect();
        family(
            "confer_turn_allocations_refused_total",
            "counter",
            "TURN allocations refused: the relay's cap (508), a credential's or an address's quota (486).",
            &refused,
        );
        family(
            "confer_turn_relayed_bytes_total",
            "counter",
            "Bytes relayed, both ways, by the transport the allocation's client uses.",
            &by_transport(&self.relayed_bytes),
        );
        family(
            "confer_turn_relayed_packets_total",
            "counter",
            "Datagrams relayed, both ways, by the transport the allocation's client uses.",
            &by_transport(&self.relayed_packets),
        );
        family(
            "confer_turn_permissions_refused_total",
            "counter",
            "CreatePermission and ChannelBind requests answered 403: the peer is not allowed.",
            &plain(&self.permissions_refused),
        );
        family(
            "confer_turn_refused_peer_datagrams_total",
            "counter",
            "Datagrams dropped because their peer address is not allowed (loopback, private, metadata ...).",
            &plain(&self.peers_refused),
        );
        family(
            "confer_turn_auth_failures_total",
            "counter",
            "Requests with credentials answered 401 (wrong or expired).",
            &plain(&self.auth_failures),
        );
        family(
            "confer_turn_malformed_total",
            "counter",
            "Datagrams or stream messages dropped as neither STUN nor ChannelData, or undecodable.",
            &plain(&self.malformed),
        );
        family(
            "confer_turn_over_rate_datagrams_total",
            "counter",
            "Datagrams dropped because their allocation was over its byte rate.",
            &plain(&self.over_rate),
        );
        if let Some([tcp, tls]) = self.streams.get() {
            let both = |f: fn(&StreamServer) -> u64| {
                vec![("{transport=\"tcp\"}".to_owned(), f(tcp)), ("{transport=\"tls\"}".to_owned(), f(tls))]
            };
            family(
                "confer_turn_stream_connections",
                "gauge",
                "TURN clients connected over TCP or TLS.",
                &both(|s| s.connections() as u64),
            );
            family(
                "confer_turn_stream_refused_total",
                "counter",
                "TURN TCP/TLS connections closed at once because too many were open.",
                &both(StreamServer::refused),
            );
            family(
                "confer_turn_stream_failed_handshakes_total",
                "counter",
                "TURN TLS handshakes that failed or timed out.",
                &both(StreamServer::failed_handshakes),
            );
            family(
                "confer_turn_stream_broken_total",
                "counter",
                "TURN TCP/TLS connections closed because a message was neither STUN nor ChannelData.",
                &both(StreamServer::broken),
            );
            family(
                "confer_turn_stream_dropped_total",
                "counter",
                "Messages to TURN TCP/TLS clients dropped because their connection could not take them.",
                &both(StreamServer::dropped),
            );
        }
    }
}

/// A running embedded server; closed by [`EmbeddedTurn::close`].
pub(crate) struct EmbeddedTurn {
    server: Server,
    /// TCP (its own listener) and TLS (streams the relay's port hands over).
    streams: [Arc<StreamServer>; 2],
    /// Where it listens (UDP, and TCP on the same port).
    pub(crate) local: SocketAddr,
    /// Where the relay's TLS port hands over connections that speak TURN.
    pub(crate) intake: StreamIntake,
}

impl fmt::Debug for EmbeddedTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedTurn").field("local", &self.local).finish_non_exhaustive()
    }
}

impl EmbeddedTurn {
    /// Binds the UDP socket and TCP listener and starts serving; TLS clients come through
    /// [`EmbeddedTurn::intake`] from the relay's port `tls_local`. `relay_ip` is the address
    /// relayed candidates carry.
    pub(crate) async fn start(
        config: &EmbeddedTurnConfig,
        relay_ip: IpAddr,
        tls_local: SocketAddr,
        secret: &str,
        metrics: Arc<TurnMetrics>,
    ) -> std::io::Result<Self> {
        let (socket, listener) = bind_udp_and_tcp(config.listen).await?;
        let local = socket.local_addr()?;
        let limits = StreamServerLimits::default();
        let tcp = Arc::new(StreamServer::new(listener, None, limits)?);
        let tls = Arc::new(StreamServer::intake_only(tls_local, limits));
        let intake = tls.intake();
        let _ = metrics.streams.set([Arc::clone(&tcp), Arc::clone(&tls)]);
        let auth = Arc::new(RestAuth { secret: secret.to_owned() });
        let allowed = Arc::new(config.allowed_peers.clone());
        let ledger = Arc::new(Ledger::default());
        let guard = Arc::new(Guard {
            allowed: Arc::clone(&allowed),
            auth: Arc::clone(&auth),
            realm: REALM.to_owned(),
            quotas: config.quotas,
            ledger: Arc::clone(&ledger),
            metrics: Arc::clone(&metrics),
        });
        // One count of open allocations over all transports, for the cap.
        let open = Arc::new(AtomicUsize::new(0));
        let listener = |conn: Arc<dyn Conn + Send + Sync>, transport: ClientTransport| ConnConfig {
            conn: Arc::new(GuardedConn { inner: conn, guard: Arc::clone(&guard) }),
            relay_addr_generator: Box::new(QuotaGenerator {
                bind_ip: if config.listen.ip().is_unspecified() { config.listen.ip() } else { relay_ip },
                relay_ip,
                ports: config.relay_ports,
                allowed: Arc::clone(&allowed),
                max_allocations: config.max_allocations,
                byte_rate: config.allocation_byte_rate,
                transport,
                open: Arc::clone(&open),
                metrics: Arc::clone(&metrics),
            }),
        };
        // The server tells when an allocation ends, with its credential and client: its place
        // in the quotas is given back.
        let (closed, mut ended) = tokio::sync::mpsc::channel::<AllocationInfo>(256);
        tokio::spawn(async move {
            while let Some(info) = ended.recv().await {
                ledger.released(&info.username, info.five_tuple.src_addr.ip());
            }
        });
        let server = Server::new(ServerConfig {
            conn_configs: vec![
                listener(Arc::new(socket), ClientTransport::Udp),
                listener(Arc::clone(&tcp) as Arc<dyn Conn + Send + Sync>, ClientTransport::Tcp),
                listener(Arc::clone(&tls) as Arc<dyn Conn + Send + Sync>, ClientTransport::Tls),
            ],
            realm: REALM.to_owned(),
            auth_handler: auth,
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: Some(closed),
        })
        .await
        .map_err(std::io::Error::other)?;
        info!(%local, %relay_ip, "STUN/TURN listening (UDP and TCP; TLS on the relay's port)");
        Ok(Self { server, streams: [tcp, tls], local, intake })
    }

    /// Stops serving and closes every allocation.
    pub(crate) async fn close(&self) {
        let _ = self.server.close().await;
        for streams in &self.streams {
            streams.shutdown();
        }
    }
}

/// A UDP socket and a TCP listener on the same port: `listen`'s, or with port 0 one the system
/// gives the UDP socket and TCP also gets (tried a few times, as another program may hold it).
async fn bind_udp_and_tcp(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..8 {
        let socket = UdpSocket::bind(listen).await?;
        let port = socket.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// TURN REST credentials: `expiry:id`, checked against the shared secret and the clock.
pub(crate) struct RestAuth {
    secret: String,
}

impl AuthHandler for RestAuth {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        // The `turn` server does not compare the realm itself: a key made with another realm
        // would pass, and the guard (which checks it) would not see the request as authenticated.
        if realm != REALM {
            return Err(turn::Error::Other("not this server's realm".to_owned()));
        }
        let expiry = username
            .split_once(':')
            .map_or(username, |(expiry, _)| expiry)
            .parse::<u64>()
            .map_err(|_| turn::Error::Other("username is not expiry:id".to_owned()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if expiry < now {
            return Err(turn::Error::Other("credentials expired".to_owned()));
        }
        let password = crate::turn::password(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// Hands out relayed sockets from the port range, under the allocation cap, each wrapped in a
/// [`FilteredConn`].
struct QuotaGenerator {
    bind_ip: IpAddr,
    relay_ip: IpAddr,
    ports: (u16, u16),
    allowed: Arc<Vec<IpRange>>,
    max_allocations: usize,
    byte_rate: u32,
    transport: ClientTransport,
    open: Arc<AtomicUsize>,
    metrics: Arc<TurnMetrics>,
}

#[async_trait]
impl RelayAddressGenerator for QuotaGenerator {
    fn validate(&self) -> Result<(), turn::Error> {
        if self.ports.0 == 0 || self.ports.1 < self.ports.0 {
            return Err(turn::Error::ErrMaxPortLessThanMinPort);
        }
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if !use_ipv4 {
            return Err(turn::Error::Other("only IPv4 relayed addresses are offered".to_owned()));
        }
        // Count first, so two allocations racing for the last place cannot both take it.
        if self.open.fetch_add(1, Relaxed) >= self.max_allocations {
            self.open.fetch_sub(1, Relaxed);
            // Counted as a refusal when the server's 508 leaves (turn_guard.rs).
            return Err(turn::Error::Other("allocation quota reached".to_owned()));
        }
        let (low, high) = self.ports;
        let span = u32::from(high - low) + 1;
        let mut socket = None;
        if requested_port != 0 {
            if (low..=high).contains(&requested_port) {
                socket = UdpSocket::bind((self.bind_ip, requested_port)).await.ok();
            }
        } else {
            for _ in 0..16 {
                let offset = rand::random::<u32>() % span;
                let port = low.saturating_add(u16::try_from(offset).unwrap_or(0));
                if let Ok(bound) = UdpSocket::bind((self.bind_ip, port)).await {
                    socket = Some(bound);
                    break;
                }
            }
        }
        let Some(socket) = socket else {
            self.open.fetch_sub(1, Relaxed);
            return Err(turn::Error::ErrMaxRetriesExceeded);
        };
        // From here the allocation counts, until its socket goes.
        let guard = AllocationGuard { open: Arc::clone(&self.open), metrics: Arc::clone(&self.metrics) };
        let port = socket.local_addr().map_err(|e| turn::Error::Other(e.to_string()))?.port();
        self.metrics.allocations.fetch_add(1, Relaxed);
        self.metrics.allocations_total.fetch_add(1, Relaxed);
        let now = Instant::now();
        let burst = self.byte_rate.saturating_mul(2);
        let conn = FilteredConn {
            socket,
            allowed: Arc::clone(&self.allowed),
            send_budget: Mutex::new(TokenBucket::new(self.byte_rate, burst, now)),
            recv_budget: Mutex::new(TokenBucket::new(self.byte_rate, burst, now)),
            transport: self.transport,
            metrics: Arc::clone(&self.metrics),
            _guard: guard,
        };
        debug!(port, "allocation");
        Ok((Arc::new(conn), SocketAddr::new(self.relay_ip, port)))
    }
}

/// Gives an allocation's place back when its socket goes.
struct AllocationGuard {
    open: Arc<AtomicUsize>,
    metrics: Arc<TurnMetrics>,
}

impl Drop for AllocationGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
        self.metrics.allocations.fetch_sub(1, Relaxed);
    }
}

/// A relayed socket that exchanges datagrams only with allowed peers, within its byte rate.
struct FilteredConn {
    socket: UdpSocket,
    allowed: Arc<Vec<IpRange>>,
    send_budget: Mutex<TokenBucket>,
    recv_budget: Mutex<TokenBucket>,
    transport: ClientTransport,
    metrics: Arc<TurnMetrics>,
    _guard: AllocationGuard,
}

impl FilteredConn {
    /// Whether a datagram of `len` bytes to or from `peer` may pass.
    fn admit(&self, peer: SocketAddr, len: usize, budget: &Mutex<TokenBucket>) -> bool {
        if !peer_allowed(peer.ip(), &self.allowed) {
            self.metrics.peers_refused.fetch_add(1, Relaxed);
            return false;
        }
        let cost = u32::try_from(len).unwrap_or(u32::MAX);
        let granted =
            budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner).try_take_n(Instant::now(), cost);
        if !granted {
            self.metrics.over_rate.fetch_add(1, Relaxed);
            return false;
        }
        self.metrics.relayed_bytes[self.transport as usize].fetch_add(len as u64, Relaxed);
        self.metrics.relayed_packets[self.transport as usize].fetch_add(1, Relaxed);
        true
    }
}

#[async_trait]
impl Conn for FilteredConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("a relayed socket does not connect".to_owned()))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.socket.recv_from(buf).await?;
            if self.admit(from, len, &self.recv_budget) {
                return Ok((len, from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("a relayed socket sends to an address".to_owned()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.admit(target, buf.len(), &self.send_budget) {
            // Dropped as the network would drop it: the client learns nothing it could probe with.
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The host part of an origin (`wss://host:port`, `wss://[::1]:8443`, `wss://host`).
pub(crate) fn origin_host(origin: &str) -> &str {
    let rest = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The port of an origin (`wss://host:port`; without one, 443 for `wss`, 80 for `ws`).
pub(crate) fn origin_port(origin: &str) -> u16 {
    let (scheme, rest) = origin.split_once("://").unwrap_or(("wss", origin));
    let authority = rest.split('/').next().unwrap_or(rest);
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, port)| port);
    after_host.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or(if scheme == "ws" {
        80
    } else {
        443
    })
}

/// The address the embedded server puts into relayed candidates when none is configured: the
/// listen address if it names one, else the public host if it is an address.
pub(crate) fn default_relay_ip(listen: SocketAddr, public_host: &str) -> Option<IpAddr> {
    if !listen.ip().is_unspecified() {
        return Some(listen.ip());
    }
    public_host.parse().ok()
}

/// The address this machine would send from towards the outside (a UDP "connect" to a
/// documentation address sends nothing; it only asks the routing table). `None` without a route.
pub fn outward_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    socket.local_addr().ok().map(|addr| addr.ip()).filter(|ip| !ip.is_unspecified())
}

/// The URLs clients are handed for the server at `host`: STUN, then TURN over UDP and TCP on
/// `port`, then TURN over TLS on the relay's port `tls_port` if the relay serves TLS, each if
/// `offered`. Browsers and the call engine rank the relayed candidates UDP, TCP, TLS, whatever
/// the order here.
pub(crate) fn urls(
    host: &str,
    port: u16,
    tls_port: Option<u16>,
    offered: &[RelayTransport],
) -> (String, Vec<String>) {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    let mut turn = Vec::new();
    if offered.contains(&RelayTransport::Udp) {
        turn.push(format!("turn:{host}:{port}?transport=udp"));
    }
    if offered.contains(&RelayTransport::Tcp) {
        turn.push(format!("turn:{host}:{port}?transport=tcp"));
    }
    if let Some(tls_port) = tls_port.filter(|_| offered.contains(&RelayTransport::Tls)) {
        turn.push(format!("turns:{host}:{tls_port}?transport=tcp"));
    }
    (format!("stun:{host}:{port}"), turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refuses_the_servers_own_networks_by_default() {
        for refused in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "192.0.0.192",
            "100.100.100.200",
            "fd00:ec2::254",
        ] {
            assert!(!peer_allowed(ip(refused), &[]), "{refused} must be refused");
        }
        for allowed in ["8.8.8.8", "203.0.113.7", "2001:db8::1", "::ffff:8.8.4.4"] {
            assert!(peer_allowed(ip(allowed), &[]), "{allowed} must be allowed");
        }
    }

    #[test]
    fn an_allowed_range_opens_only_itself() {
        let allowed = [IpRange::parse("10.0.0.0/8").unwrap(), IpRange::parse("127.0.0.1").unwrap()];
        assert!(peer_allowed(ip("10.200.0.9"), &allowed));
        assert!(peer_allowed(ip("127.0.0.1"), &allowed));
        assert!(!peer_allowed(ip("127.0.0.2"), &allowed));
        assert!(!peer_allowed(ip("192.168.0.1"), &allowed));
        assert!(!peer_allowed(ip("169.254.169.254"), &allowed));
    }

    #[test]
    fn urls_name_the_origins_host() {
        assert_eq!(origin_host("wss://relay.example:8443"), "relay.example");
        assert_eq!(origin_host("wss://relay.example"), "relay.example");
        assert_eq!(origin_host("wss://[2001:db8::1]:8443"), "2001:db8::1");
        assert_eq!(origin_port("wss://relay.example:8443"), 8443);
        assert_eq!(origin_port("wss://relay.example"), 443);
        assert_eq!(origin_port("wss://[2001:db8::1]:8443"), 8443);
        assert_eq!(origin_port("wss://[2001:db8::1]"), 443);
        assert_eq!(origin_port("ws://127.0.0.1:9000"), 9000);
        assert_eq!(
            urls("2001:db8::1", 3478, None, &ALL_TRANSPORTS),
            (
                "stun:[2001:db8::1]:3478".to_owned(),
                vec![
                    "turn:[2001:db8::1]:3478?transport=udp".to_owned(),
                    "turn:[2001:db8::1]:3478?transport=tcp".to_owned()
                ]
            )
        );
        assert_eq!(
            urls("relay.example", 3478, Some(443), &ALL_TRANSPORTS).1.last().map(String::as_str),
            Some("turns:relay.example:443?transport=tcp")
        );
        assert_eq!(
            urls("relay.example", 3478, Some(443), &[RelayTransport::Tls]).1,
            ["turns:relay.example:443?transport=tcp"]
        );
        // Every URL handed out is one a client's parser takes, with the parts meant.
        let (stun, turn) = urls("2001:db8::1", 3478, Some(443), &ALL_TRANSPORTS);
        for text in std::iter::once(&stun).chain(&turn) {
            let url = confer_proto::IceUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(url.host, "2001:db8::1", "{text}");
            assert_eq!(url.port, if url.is_secure() { 443 } else { 3478 }, "{text}");
        }
        assert_eq!(default_relay_ip("0.0.0.0:0".parse().unwrap(), "relay.example"), None);
        assert_eq!(default_relay_ip("0.0.0.0:0".parse().unwrap(), "192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(default_relay_ip("127.0.0.1:0".parse().unwrap(), "localhost"), Some(ip("127.0.0.1")));
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(IpRange::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(IpRange::parse("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(IpRange::parse("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert!(IpRange::parse("10.0.0.0/33").is_none());
        assert!(IpRange::parse("10.0.0/8").is_none());
        assert!(IpRange::parse("host/8").is_none());
        assert!(IpRange::parse("1.2.3.4/").is_none());
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }
}
