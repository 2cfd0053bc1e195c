//! `confer-relay`: the signaling relay as a program. Flags, environment and an optional TOML
//! file become a [`RelayConfig`]; state that must survive a restart (the token secret, the
//! self-signed certificate) is kept in the state directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use confer_relay::token::TokenKey;
use confer_relay::turn::TurnConfig;
use confer_relay::{EmbeddedTurnConfig, IpRange, Quotas, Relay, RelayConfig, RoomCreation, TlsSetup, tls};
use confer_turn_stream::RelayTransport;
use serde::Deserialize;
use tracing::{info, warn};

/// Confer's signaling relay.
///
/// Every flag can also be given as an environment variable (shown below) or as a key of the
/// same name (with underscores) in the TOML file given with --config. Flags win over the
/// environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A TOML file with any of the settings below.
    #[arg(long, env = "CONFER_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Address and port to listen on.
    #[arg(long, env = "CONFER_RELAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain. Without it (and --plain) the relay makes a self-signed certificate
    /// and pins it in the invite links.
    #[arg(long, env = "CONFER_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONFER_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain ws:// (only behind a TLS-terminating proxy, or on loopback).
    #[arg(long, env = "CONFER_RELAY_PLAIN")]
    plain: Option<bool>,
    /// The origin clients reach the relay at, for invite links (wss://host[:port]).
    #[arg(long, env = "CONFER_RELAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the token secret and the self-signed certificate are kept.
    #[arg(long, env = "CONFER_RELAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The token secret as 64 hex digits (default: generated once and kept in the state dir).
    #[arg(long, env = "CONFER_RELAY_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// STUN URL handed to clients (repeatable).
    #[arg(long = "stun-url", env = "CONFER_RELAY_STUN_URLS", value_delimiter = ',')]
    stun_urls: Vec<String>,
    /// TURN URL handed to clients (repeatable): turn:host:3478, turns:host:5349?transport=tcp.
    #[arg(long = "turn-url", env = "CONFER_RELAY_TURN_URLS", value_delimiter = ',')]
    turn_urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's static-auth-secret).
    #[arg(long, env = "CONFER_RELAY_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Lifetime of TURN credentials, in seconds.
    #[arg(long, env = "CONFER_RELAY_TURN_TTL")]
    turn_ttl: Option<u64>,
    /// Run the built-in STUN/TURN server: on or off (default: on, unless --turn-url points
    /// elsewhere). Also spelled --embedded-turn true|false.
    #[arg(long = "turn", alias = "embedded-turn", env = "CONFER_RELAY_TURN", value_parser = parse_switch)]
    embedded_turn: Option<bool>,
    /// UDP address of the built-in STUN/TURN server (default: the listen address, port 3478;
    /// port 0 lets the system choose).
    #[arg(long, env = "CONFER_RELAY_TURN_LISTEN")]
    turn_listen: Option<SocketAddr>,
    /// The address relayed candidates carry, where peers reach the built-in TURN server
    /// (default: the listen address, or the public host if it is an address, else the address
    /// this machine routes outward from).
    /// (coturn's external-ip: set it when the relay sits behind 1:1 NAT, as on cloud VMs.)
    #[arg(long = "turn-public-ip", alias = "turn-relay-ip", env = "CONFER_RELAY_TURN_PUBLIC_IP")]
    turn_relay_ip: Option<IpAddr>,
    /// Relayed ports of the built-in TURN server, MIN-MAX (default 49152-65535).
    #[arg(long, env = "CONFER_RELAY_TURN_PORTS")]
    turn_ports: Option<String>,
    /// Peer ranges the built-in TURN server may relay to besides public addresses
    /// (repeatable, ADDRESS/PREFIX; loopback, private and link-local are refused otherwise).
    #[arg(long = "turn-allow-peer", env = "CONFER_RELAY_TURN_ALLOW_PEERS", value_delimiter = ',')]
    turn_allow_peers: Vec<String>,
    /// Allocations the built-in TURN server holds at most.
    #[arg(long, env = "CONFER_RELAY_TURN_MAX_ALLOCATIONS")]
    turn_max_allocations: Option<usize>,
    /// Which of the built-in TURN server's transports are handed out: udp, tcp, tls, comma
    /// separated (default all three; tls only when the relay serves TLS).
    #[arg(long, env = "CONFER_RELAY_TURN_TRANSPORTS", value_delimiter = ',')]
    turn_transports: Vec<String>,
    /// Mbit/s one allocation of the built-in TURN server may relay, each way (default 10).
    #[arg(long, env = "CONFER_RELAY_TURN_MBPS")]
    turn_mbps: Option<u32>,
    /// Allocations one TURN credential (one participant) holds at most (default 64).
    #[arg(long, env = "CONFER_RELAY_TURN_USER_QUOTA")]
    turn_user_quota: Option<usize>,
    /// Allocations one client address holds at most (default 256).
    #[arg(long, env = "CONFER_RELAY_TURN_ADDRESS_QUOTA")]
    turn_address_quota: Option<usize>,
    /// Participants per room.
    #[arg(long, env = "CONFER_RELAY_ROOM_CAPACITY")]
    room_capacity: Option<usize>,
    /// Only holders of one of these keys may create rooms (repeatable; default: anyone).
    #[arg(long = "api-key", env = "CONFER_RELAY_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    api_keys: Vec<String>,
    /// Seconds a dropped participant keeps its seat.
    #[arg(long, env = "CONFER_RELAY_GRACE")]
    grace: Option<u64>,
    /// Validity of invite links, in seconds.
    #[arg(long, env = "CONFER_RELAY_INVITE_TTL")]
    invite_ttl: Option<u64>,
    /// Seconds an empty room keeps its state (lock, waiting room) before it is dropped.
    #[arg(long, env = "CONFER_RELAY_EMPTY_ROOM_TTL")]
    empty_room_ttl: Option<u64>,
    /// Rooms held in memory at most.
    #[arg(long, env = "CONFER_RELAY_MAX_ROOMS")]
    max_rooms: Option<usize>,
    /// Connections at most.
    #[arg(long, env = "CONFER_RELAY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections at most from one IP address.
    #[arg(long, env = "CONFER_RELAY_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Messages per second one connection may send.
    #[arg(long, env = "CONFER_RELAY_MESSAGE_RATE")]
    message_rate: Option<u32>,
    /// Messages one connection may send in a burst.
    #[arg(long, env = "CONFER_RELAY_MESSAGE_BURST")]
    message_burst: Option<u32>,
    /// Seconds between heartbeat pings.
    #[arg(long, env = "CONFER_RELAY_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Option<u64>,
    /// Seconds of silence after which a connection is dead.
    #[arg(long, env = "CONFER_RELAY_HEARTBEAT_TIMEOUT")]
    heartbeat_timeout: Option<u64>,
    /// Seconds a new connection has to send join or resume.
    #[arg(long, env = "CONFER_RELAY_AUTH_TIMEOUT")]
    auth_timeout: Option<u64>,
    /// Share rooms with other relay instances through this Redis (redis://[:password@]host:port
    /// or rediss:// for TLS). Without it, every room lives in this process.
    #[arg(long, env = "CONFER_RELAY_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// With a rediss:// URL: a PEM file of the certificate authority that signed Redis's
    /// certificate (a private CA); without it, the system's trusted roots.
    #[arg(long, env = "CONFER_RELAY_REDIS_CA")]
    redis_ca: Option<PathBuf>,
    /// Serve /echo for the load benchmark.
    #[arg(long, hide = true)]
    echo_endpoint: bool,
}

/// The TOML file: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plain: Option<bool>,
    public_url: Option<String>,
    state_dir: Option<PathBuf>,
    token_secret: Option<String>,
    stun_urls: Option<Vec<String>>,
    turn_urls: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl: Option<u64>,
    embedded_turn: Option<bool>,
    turn_listen: Option<SocketAddr>,
    #[serde(alias = "turn_public_ip")]
    turn_relay_ip: Option<IpAddr>,
    turn_ports: Option<String>,
    turn_allow_peers: Option<Vec<String>>,
    turn_max_allocations: Option<usize>,
    turn_mbps: Option<u32>,
    turn_transports: Option<Vec<String>>,
    turn_user_quota: Option<usize>,
    turn_address_quota: Option<usize>,
    room_capacity: Option<usize>,
    api_keys: Option<Vec<String>>,
    grace: Option<u64>,
    invite_ttl: Option<u64>,
    empty_room_ttl: Option<u64>,
    max_rooms: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    message_rate: Option<u32>,
    message_burst: Option<u32>,
    heartbeat_interval: Option<u64>,
    heartbeat_timeout: Option<u64>,
    auth_timeout: Option<u64>,
    redis_url: Option<String>,
    redis_ca: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = build_config(args)?;
    // Every connection is a file descriptor: raise the soft limit to the hard one, as far as
    // the system allows, and say so if it still caps the connection limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < config.max_connections as u64 + 64 => warn!(
            limit,
            max_connections = config.max_connections,
            "the open-file limit is below the connection limit; raise it (ulimit -n) or lower --max-connections"
        ),
        Ok(_) => {}
        Err(err) => warn!(%err, "cannot read or raise the open-file limit"),
    }
    let relay = Relay::bind(config).await?;
    let handle = relay.handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received: shutting down gracefully");
        handle.shutdown();
    });
    relay.run().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn build_config(args: Args) -> anyhow::Result<RelayConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let defaults = RelayConfig::default();
    let secs = Duration::from_secs;
    let state_dir = args.state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from(".confer-relay"));
    let listen = args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443)));
    let plain = args.plain.or(file.plain).unwrap_or(false);
    let public_url = args.public_url.or(file.public_url);

    let token_key = match args.token_secret.or(file.token_secret) {
        Some(hex) => TokenKey::new(parse_secret(&hex).context("the token secret must be 64 hex digits")?),
        None => persisted_token_key(&state_dir)?,
    };

    let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(tls::from_pem_files(&cert, &key)?),
        (None, None) if plain => None,
        (None, None) => Some(persisted_self_signed(&state_dir, listen, public_url.as_deref())?),
        _ => bail!("give both a TLS certificate and a key, or neither"),
    };

    let turn_urls =
        if args.turn_urls.is_empty() { file.turn_urls.unwrap_or_default() } else { args.turn_urls };
    check_ice_urls("--turn-url", &turn_urls)?;
    let turn = match (turn_urls.is_empty(), args.turn_secret.or(file.turn_secret)) {
        (true, None) => None,
        (false, Some(secret)) => Some(TurnConfig {
            urls: turn_urls,
            secret,
            ttl: secs(args.turn_ttl.or(file.turn_ttl).unwrap_or(24 * 3600)),
        }),
        (false, None) => bail!("TURN URLs need the TURN shared secret (--turn-secret)"),
        (true, Some(_)) => bail!("a TURN secret without TURN URLs (--turn-url)"),
    };
    let embedded_turn = match args.embedded_turn.or(file.embedded_turn) {
        Some(true) if turn.is_some() => {
            bail!("--turn on (the built-in TURN server) and --turn-url exclude each other")
        }
        Some(false) => None,
        _ if turn.is_some() => None,
        _ => {
            let defaults = EmbeddedTurnConfig::default();
            let relay_ports = match args.turn_ports.or(file.turn_ports) {
                Some(text) => parse_ports(&text)
                    .with_context(|| format!("--turn-ports {text:?}: expected MIN-MAX, 1 <= MIN <= MAX"))?,
                None => defaults.relay_ports,
            };
            let allow = if args.turn_allow_peers.is_empty() {
                file.turn_allow_peers.unwrap_or_default()
            } else {
                args.turn_allow_peers
            };
            let allowed_peers = allow
                .iter()
                .map(|text| {
                    IpRange::parse(text)
                        .with_context(|| format!("--turn-allow-peer {text:?}: expected ADDRESS/PREFIX"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(EmbeddedTurnConfig {
                listen: args
                    .turn_listen
                    .or(file.turn_listen)
                    .unwrap_or_else(|| SocketAddr::new(listen.ip(), 3478)),
                relay_ip: args.turn_relay_ip.or(file.turn_relay_ip),
                relay_ports,
                allowed_peers,
                max_allocations: args
                    .turn_max_allocations
                    .or(file.turn_max_allocations)
                    .unwrap_or(defaults.max_allocations),
                transports: {
                    let names = if args.turn_transports.is_empty() {
                        file.turn_transports.unwrap_or_default()
                    } else {
                        args.turn_transports
                    };
                    if names.is_empty() {
                        defaults.transports
                    } else {
                        names
                            .iter()
                            .map(|name| match name.trim() {
                                "udp" => Ok(RelayTransport::Udp),
                                "tcp" => Ok(RelayTransport::Tcp),
                                "tls" => Ok(RelayTransport::Tls),
                                other => bail!("--turn-transports {other:?}: expected udp, tcp or tls"),
                            })
                            .collect::<anyhow::Result<Vec<_>>>()?
                    }
                },
                allocation_byte_rate: match args.turn_mbps.or(file.turn_mbps) {
                    Some(0) => bail!("--turn-mbps 0 would relay nothing"),
                    Some(mbps) => mbps.saturating_mul(125_000),
                    None => defaults.allocation_byte_rate,
                },
                quotas: Quotas {
                    per_user: args
                        .turn_user_quota
                        .or(file.turn_user_quota)
                        .unwrap_or(defaults.quotas.per_user),
                    per_address: args
                        .turn_address_quota
                        .or(file.turn_address_quota)
                        .unwrap_or(defaults.quotas.per_address),
                },
                credential_ttl: secs(args.turn_ttl.or(file.turn_ttl).unwrap_or(24 * 3600)),
            })
        }
    };
    let api_keys = if args.api_keys.is_empty() { file.api_keys.unwrap_or_default() } else { args.api_keys };

    Ok(RelayConfig {
        listen,
        tls,
        allow_plain: plain,
        public_url,
        public_host: None,
        token_key,
        invite_ttl: args.invite_ttl.or(file.invite_ttl).map_or(defaults.invite_ttl, secs),
        stun_urls: {
            let urls =
                if args.stun_urls.is_empty() { file.stun_urls.unwrap_or_default() } else { args.stun_urls };
            check_ice_urls("--stun-url", &urls)?;
            urls
        },
        turn,
        embedded_turn,
        room_creation: if api_keys.is_empty() {
            RoomCreation::Anyone
        } else {
            RoomCreation::ApiKeys(api_keys)
        },
        room_capacity: args.room_capacity.or(file.room_capacity).unwrap_or(defaults.room_capacity),
        grace: args.grace.or(file.grace).map_or(defaults.grace, secs),
        empty_room_ttl: args.empty_room_ttl.or(file.empty_room_ttl).map_or(defaults.empty_room_ttl, secs),
        max_rooms: args.max_rooms.or(file.max_rooms).unwrap_or(defaults.max_rooms),
        max_connections: args.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections),
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(file.max_connections_per_ip)
            .unwrap_or(defaults.max_connections_per_ip),
        message_rate: args.message_rate.or(file.message_rate).unwrap_or(defaults.message_rate),
        message_burst: args.message_burst.or(file.message_burst).unwrap_or(defaults.message_burst),
        heartbeat_interval: args
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .map_or(defaults.heartbeat_interval, secs),
        heartbeat_timeout: args
            .heartbeat_timeout
            .or(file.heartbeat_timeout)
            .map_or(defaults.heartbeat_timeout, secs),
        auth_timeout: args.auth_timeout.or(file.auth_timeout).map_or(defaults.auth_timeout, secs),
        echo_endpoint: args.echo_endpoint,
        redis_url: args.redis_url.or(file.redis_url).map(confer_relay::RedisUrl),
        redis_ca: args.redis_ca.or(file.redis_ca),
        ..defaults
    })
}

/// `on`/`off` (and `true`/`false`, `yes`/`no`, `1`/`0`).
/// Every URL handed to clients must be one they can use (RFC 7064/7065): said at start, by name.
fn check_ice_urls(flag: &str, urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        confer_proto::IceUrl::parse(url).with_context(|| format!("{flag} {url}"))?;
    }
    Ok(())
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{text:?}: expected on or off")),
    }
}

/// `MIN-MAX`, both ports, MIN at least 1 and not above MAX.
fn parse_ports(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-')?;
    let (low, high) = (low.trim().parse::<u16>().ok()?, high.trim().parse::<u16>().ok()?);
    (low >= 1 && low <= high).then_some((low, high))
}

fn parse_secret(hex: &str) -> Option<[u8; 32]> {
    confer_proto::Fingerprint::parse(hex.trim()).map(|fp| fp.0)
}

/// Writes a file only the owner can read.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(contents.as_bytes())?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        Ok(std::fs::write(path, contents)?)
    }
}

fn persisted_token_key(state_dir: &Path) -> anyhow::Result<TokenKey> {
    let path = state_dir.join("token-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret =
            parse_secret(&text).with_context(|| format!("{} does not hold 64 hex digits", path.display()))?;
        return Ok(TokenKey::new(secret));
    }
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let key = TokenKey::generate();
    let hex: String = key.secret().iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex).with_context(|| format!("writing {}", path.display()))?;
    info!(path = %path.display(), "generated a token secret");
    Ok(key)
}

fn persisted_self_signed(
    state_dir: &Path,
    listen: SocketAddr,
    public_url: Option<&str>,
) -> anyhow::Result<TlsSetup> {
    let (cert_path, key_path) = (state_dir.join("self-signed.crt"), state_dir.join("self-signed.key"));
    let setup = if let (Ok(cert), Ok(key)) =
        (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path))
    {
        tls::from_pem(&cert, &key, true).with_context(|| format!("loading {}", cert_path.display()))?
    } else {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        if let Some(host) = public_url.and_then(|u| u.split_once("://")).map(|(_, rest)| rest) {
            let host = host.trim_end_matches('/');
            let host = host
                .rsplit_once(':')
                .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
                .map_or(host, |(h, _)| h);
            names.push(host.trim_matches(['[', ']']).to_owned());
        }
        let (setup, cert, key) = tls::self_signed(&names)?;
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        std::fs::write(&cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))?;
        write_private(&key_path, &key).with_context(|| format!("writing {}", key_path.display()))?;
        setup
    };
    if let Some(pin) = setup.pin {
        warn!(
            fingerprint = %pin,
            cert = %cert_path.display(),
            "no TLS certificate configured: using a self-signed one; invite links carry its SHA-256 fingerprint so clients can pin it"
        );
    }
    Ok(setup)
}
