//! The relay's settings, as a plain struct with working defaults. The binary fills it from
//! flags, environment and a TOML file; the library never reads either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use confer_proto::Fingerprint;

use crate::stun_turn::EmbeddedTurnConfig;
use crate::token::TokenKey;
use crate::turn::TurnConfig;

/// How the relay speaks TLS.
#[derive(Clone)]
pub struct TlsSetup {
    /// The rustls server configuration (certificate chain and key).
    pub server: Arc<rustls::ServerConfig>,
    /// The certificate's SHA-256 fingerprint, put into invite links when the certificate is
    /// self-signed so that clients can pin it. `None` for a certificate from a public CA.
    pub pin: Option<Fingerprint>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").field("pin", &self.pin).finish_non_exhaustive()
    }
}

/// Who may create rooms over HTTP.
#[derive(Clone, Default)]
pub enum RoomCreation {
    /// Anyone who can reach the relay.
    #[default]
    Anyone,
    /// Only requests with `Authorization: Bearer <key>` for one of these keys.
    ApiKeys(Vec<String>),
}

impl std::fmt::Debug for RoomCreation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anyone => f.write_str("Anyone"),
            Self::ApiKeys(keys) => write!(f, "ApiKeys({} keys)", keys.len()),
        }
    }
}

/// Everything the relay can be told.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS; `None` serves plain `ws://` (see [`RelayConfig::allow_plain`]).
    pub tls: Option<TlsSetup>,
    /// Serve plain `ws://` on a non-loopback address (behind a TLS-terminating proxy).
    pub allow_plain: bool,
    /// The origin clients reach the relay at (`wss://host:port`), used in invite links.
    /// Defaults to the listen address.
    pub public_url: Option<String>,
    /// Without `public_url`: the host (a name or an address; IPv6 without brackets) clients reach
    /// the relay at, with the port it bound (so `listen` may name port 0: no probing for a free
    /// port, no race for it). Defaults to the listen address.
    pub public_host: Option<String>,
    /// Signs invite and resume tokens.
    pub token_key: TokenKey,
    /// How long invite links stay valid.
    pub invite_ttl: Duration,
    /// How long a resume token stays valid.
    pub resume_ttl: Duration,
    /// STUN URLs handed to clients.
    pub stun_urls: Vec<String>,
    /// TURN servers and their shared secret.
    pub turn: Option<TurnConfig>,
    /// Run a STUN/TURN server inside the relay and hand it out (instead of `turn`, which must
    /// then be `None`). The secret is made at start; credentials follow the same scheme.
    pub embedded_turn: Option<EmbeddedTurnConfig>,
    /// Who may create rooms.
    pub room_creation: RoomCreation,
    /// Participants per room (a mesh: every one sends to every other).
    pub room_capacity: usize,
    /// How long a dropped participant keeps its seat.
    pub grace: Duration,
    /// How long a knocker may wait.
    pub knock_timeout: Duration,
    /// How long an empty room keeps its state (lock, waiting room).
    pub empty_room_ttl: Duration,
    /// Rooms held in memory at most (empty ones are dropped early when it is reached).
    pub max_rooms: usize,
    /// Time allowed from TCP accept to a finished TLS and HTTP upgrade.
    pub handshake_timeout: Duration,
    /// Time allowed from the WebSocket upgrade to `join` or `resume`.
    pub auth_timeout: Duration,
    /// How often the relay pings an idle connection.
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is dead.
    pub heartbeat_timeout: Duration,
    /// Connections at most.
    pub max_connections: usize,
    /// Connections at most from one IP address.
    pub max_connections_per_ip: usize,
    /// Messages per second a connection may send, sustained.
    pub message_rate: u32,
    /// Messages a connection may send in a burst.
    pub message_burst: u32,
    /// Messages queued towards one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Signals kept per seat for re-delivery on resume.
    pub replay_messages: usize,
    /// Bytes of signals kept per seat for re-delivery on resume.
    pub replay_bytes: usize,
    /// Serve `/echo`, a WebSocket that echoes text messages, for the load benchmark.
    pub echo_endpoint: bool,
    /// Share rooms with other instances through this Redis (`redis://` or `rediss://`); `None`
    /// keeps every room in this process.
    pub redis_url: Option<RedisUrl>,
    /// For `rediss://`: a PEM file of the certificate authority that signed Redis's certificate,
    /// trusted instead of the system's roots.
    pub redis_ca: Option<std::path::PathBuf>,
}

/// Where the Redis that instances share is: `redis://[user:password@]host:port[/db]` or
/// `rediss://…` for TLS. Its password never shows in `Debug` (nor, so, in logs).
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("?", &self.0));
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        write!(f, "RedisUrl({scheme}://{host})")
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: None,
            allow_plain: false,
            public_url: None,
            public_host: None,
            token_key: TokenKey::generate(),
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            resume_ttl: Duration::from_secs(24 * 3600),
            stun_urls: Vec::new(),
            turn: None,
            embedded_turn: None,
            room_creation: RoomCreation::Anyone,
            room_capacity: 8,
            grace: Duration::from_secs(20),
            knock_timeout: Duration::from_secs(300),
            empty_room_ttl: Duration::from_secs(600),
            max_rooms: 50_000,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            max_connections: 10_000,
            max_connections_per_ip: 64,
            message_rate: 50,
            message_burst: 200,
            outbound_queue: 256,
            replay_messages: 128,
            replay_bytes: 256 * 1024,
            echo_endpoint: false,
            redis_url: None,
            redis_ca: None,
        }
    }
}
