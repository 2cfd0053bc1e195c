//! The relay's application state, shared by every task of one instance: its configuration,
//! the room registry, metrics, connection ids and caps, TURN credentials, network-check rate
//! limits and invite links. The modules form a chain: `server` (listener) → `http` (routes) →
//! `conn` (one WebSocket) → `state` (this) → `rooms` (the registry and delivery) → `room` (one
//! room's state machine).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confer_proto::{ErrorCode, IceServer, InviteLink, PeerId, Role, RoomId};
use confer_turn_stream::StreamIntake;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Envelope, InstanceId};
use crate::cluster::{Cluster, Holder};
use crate::config::RelayConfig;
use crate::metrics::Metrics;
use crate::room::{ConnId, RoomSettings, Welcome};
use crate::rooms::{Rooms, Route, lock};
use crate::stun_turn::TurnMetrics;
use crate::token::{InviteClaims, ResumeClaims, new_room_id, unix_now, unix_now_ms};
use crate::turn;

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
    /// This instance's part in a cluster sharing rooms through Redis, if rooms are shared.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) metrics: Metrics,
    pub(crate) turn_metrics: Arc<TurnMetrics>,
    /// Where TLS connections that speak TURN go (the embedded TURN server, if it runs).
    pub(crate) turn_intake: Option<StreamIntake>,
    /// Unix milliseconds when this relay started; resume tokens issued before may rebuild seats.
    pub(crate) started_ms: u64,
    pub(crate) origin: String,
    /// Told to stop: no new connections; in a cluster, rooms are handed over before `shutdown`.
    pub(crate) stopping: CancellationToken,
    /// Every connection ends (told to reconnect and resume).
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    next_conn: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Network checks per client address: each one mints TURN credentials (or reads an upload).
    checks: CheckLimiter,
    open: AtomicUsize,
    refusing: AtomicUsize,
    /// Per room, whoever on this instance is asking who holds it and opening it here.
    opening: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a room is opened here (see [`Shared::holder`]).
pub(crate) type Opening = Option<tokio::sync::OwnedMutexGuard<()>>;

impl Shared {
    /// The state of a relay about to serve with `config`, reached at `origin`.
    pub(crate) fn new(
        config: RelayConfig,
        origin: String,
        turn_metrics: Arc<TurnMetrics>,
        turn_intake: Option<StreamIntake>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let settings = RoomSettings {
            capacity: config.room_capacity,
            grace: config.grace,
            knock_timeout: config.knock_timeout,
            replay_messages: config.replay_messages,
            replay_bytes: config.replay_bytes,
            // Twice the time a dead connection can go unseen.
            keep_read: (config.heartbeat_timeout * 2).max(Duration::from_secs(10)),
        };
        Self {
            rooms: Rooms::new(settings, config.max_rooms, cluster.as_ref().map(|c| Arc::clone(&c.outlet))),
            cluster,
            metrics: Metrics::default(),
            turn_metrics,
            turn_intake,
            started_ms: unix_now_ms(),
            origin,
            stopping: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            checks: CheckLimiter::default(),
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            config,
        }
    }

    /// Whether a seat this relay holds no record of may be rebuilt from a resume token issued
    /// at `issued_ms`: only if the token predates this process (a restart lost the seat) and the
    /// restart was recent enough that its holder is reconnecting, not coming back much later.
    ///
    /// `since_ms` is when the seats may have been lost: `None` for this process's start, or when
    /// this instance took the room over from one that stopped.
    pub(crate) fn may_rebuild(&self, since_ms: Option<u64>, issued_ms: u64, now_ms: u64) -> bool {
        let since_ms = since_ms.unwrap_or(self.started_ms);
        let window = self.config.grace.saturating_mul(2).max(Duration::from_secs(30));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        issued_ms < since_ms && now_ms < since_ms.saturating_add(window_ms)
    }

    /// Where `room` is held: here (always, without a cluster), or by another instance.
    ///
    /// Asked by everyone on this instance about one room in turn, each until it drops the
    /// returned [`Opening`]: drop it once the room is open here (`Rooms::get_or_create`). The
    /// holder script hands a drained room's snapshot to one caller only; without this a second
    /// joiner could open the room empty before the first restored it, and every seat in the
    /// snapshot was lost (the rolling-restart test once saw a joiner seated without the room's
    /// resident, who was then rebuilt on resume).
    pub(crate) async fn holder(&self, room: &RoomId) -> (Result<Holder, redis::RedisError>, Opening) {
        let here = || Ok(Holder::Here { took_over_at_ms: None, snapshot: None });
        let Some(cluster) = &self.cluster else { return (here(), None) };
        if self.rooms.get(room).is_some() {
            return (here(), None);
        }
        let turn = {
            let mut opening = self.opening.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Rooms nobody is opening any more.
            opening.retain(|_, turn| Arc::strong_count(turn) > 1);
            Arc::clone(opening.entry(room.clone()).or_default())
        };
        let guard = turn.lock_owned().await;
        if self.rooms.get(room).is_some() {
            // Opened (restored) by the one before us.
            return (here(), Some(guard));
        }
        (cluster.holder(room).await, Some(guard))
    }

    /// Carries out what another instance sent: the holder's side (a client of `from` joins,
    /// speaks, leaves a room held here) or the client's side (a frame from a holder).
    pub(crate) async fn on_envelope(&self, from: InstanceId, envelope: Option<Envelope>) {
        let Some(cluster) = &self.cluster else { return };
        let now = Instant::now();
        let Some(envelope) = envelope else {
            // Envelopes from `from` were lost, or `from` stopped: what its clients said to rooms
            // held here may be among them (a `disconnect`, a `join`). Their seats here enter
            // their grace period, and `from` has them resume (they say it again then).
            let seated: Vec<(ConnId, RoomId, ConnId)> = lock_attached(cluster)
                .iter()
                .filter(|((instance, _), _)| *instance == from)
                .map(|(&(_, there), (room, here))| (there, room.clone(), *here))
                .collect();
            for (there, room, here) in seated {
                self.unseat(cluster, from, there, &room, here, now);
            }
            cluster.outlet.send(from, &Envelope::Reset);
            return;
        };
        match envelope {
            Envelope::Join { room, conn, waiting_room, mut request } => {
                let Some(cell) = self.hold(cluster, &room, from, conn, waiting_room).await else { return };
                let here = self.next_conn_id();
                request.conn = here;
                let mut inner = lock(&cell);
                inner.attach(here, Route::There { instance: from, conn });
                lock_attached(cluster).insert((from, conn), (room.clone(), here));
                inner.room.require_waiting_room(waiting_room);
                inner.room.join(now, request);
                inner.deliver(&self.metrics, None);
            }
            Envelope::Resume { room, conn, mut request } => {
                let Some(cell) = self.hold(cluster, &room, from, conn, false).await else { return };
                let here = self.next_conn_id();
                request.conn = here;
                let mut inner = lock(&cell);
                request.may_recreate =
                    self.may_rebuild(inner.rebuild_since_ms, request.token_issued_ms, unix_now_ms());
                inner.attach(here, Route::There { instance: from, conn });
                lock_attached(cluster).insert((from, conn), (room.clone(), here));
                inner.room.resume(request);
                inner.deliver(&self.metrics, None);
            }
            Envelope::Message { room, conn, message } => {
                let here = lock_attached(cluster).get(&(from, conn)).map(|(_, here)| *here);
                let cell = self.rooms.get(&room).filter(|cell| !lock(cell).is_closed());
                match (here, cell) {
                    (Some(here), Some(cell)) => {
                        let mut inner = lock(&cell);
                        inner.room.message(now, here, message);
                        inner.deliver(&self.metrics, None);
                    }
                    _ => {
                        // Not (or no longer) seated here: its client must find the room again.
                        let error = Some((
                            ErrorCode::ShuttingDown,
                            "your room moved: reconnect and resume".to_owned(),
                        ));
                        cluster.outlet.send(from, &Envelope::Close { conn, error });
                    }
                }
            }
            Envelope::Disconnect { room, conn } => {
                let here = lock_attached(cluster).get(&(from, conn)).map(|(_, here)| *here);
                if let Some(here) = here {
                    self.unseat(cluster, from, conn, &room, here, now);
                }
            }
            Envelope::Send { .. } | Envelope::Close { .. } | Envelope::Reset => {
                cluster.to_member(from, envelope, &self.metrics);
            }
        }
    }

    /// A client of `from` (its connection `there`) is gone from the room held here: its seat
    /// enters its grace period.
    fn unseat(
        &self,
        cluster: &Cluster,
        from: InstanceId,
        there: ConnId,
        room: &RoomId,
        here: ConnId,
        now: Instant,
    ) {
        lock_attached(cluster).remove(&(from, there));
        if let Some(cell) = self.rooms.get(room) {
            let mut inner = lock(&cell);
            inner.room.disconnect(now, here);
            inner.deliver(&self.metrics, None);
            inner.detach(here);
        }
    }

    /// The room held here that a client of `from` asks for: made if this instance is (or now
    /// becomes) its holder. Otherwise the client is told to find it again, and `None`.
    async fn hold(
        &self,
        cluster: &Cluster,
        room: &RoomId,
        from: InstanceId,
        conn: ConnId,
        waiting_room: bool,
    ) -> Option<Arc<crate::rooms::RoomCell>> {
        let refuse = |code: ErrorCode, detail: &str| {
            cluster.outlet.send(from, &Envelope::Close { conn, error: Some((code, detail.to_owned())) });
            None
        };
        // Draining: the room goes (or went) to another instance.
        if self.stopping.is_cancelled() {
            return refuse(ErrorCode::ShuttingDown, "the relay is restarting: reconnect and resume");
        }
        if let Some(cell) = self.rooms.get(room) {
            if lock(&cell).is_closed() {
                return refuse(ErrorCode::ShuttingDown, "your room moved: reconnect and resume");
            }
            return Some(cell);
        }
        // Dropped here since the sender looked (empty for long, or moved): ask again.
        let (holder, _opening) = self.holder(room).await;
        let (took_over_at_ms, snapshot) = match holder {
            Ok(Holder::Here { took_over_at_ms, snapshot }) => (took_over_at_ms, snapshot),
            Ok(Holder::There(_)) | Err(_) => {
                return refuse(ErrorCode::ShuttingDown, "your room moved: reconnect and resume");
            }
        };
        let Some(cell) =
            self.rooms.get_or_create(room, waiting_room, Instant::now(), took_over_at_ms, snapshot)
        else {
            return refuse(
                ErrorCode::RelayBusy,
                "the relay cannot open more rooms right now: try again later",
            );
        };
        Some(cell)
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

    /// Whether `ip` may run another network check now ([`CheckLimiter`]).
    pub(crate) fn allow_check(&self, ip: IpAddr) -> bool {
        self.checks.allow(ip, Instant::now())
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

    /// Why this relay should get no new connections now, if it should not.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if self.stopping.is_cancelled() {
            return Some("shutting down");
        }
        match &self.cluster {
            Some(cluster) if !cluster.is_up() => Some("Redis is unreachable"),
            _ => None,
        }
    }

    pub(crate) fn render_metrics(&self) -> String {
        let (rooms, participants) = self.rooms.counts();
        let mut text = self.metrics.render(rooms, participants);
        if let Some(cluster) = &self.cluster {
            cluster.render_metrics(&mut text);
        }
        if self.config.embedded_turn.is_some() {
            self.turn_metrics.render(&mut text);
        }
        text
    }

    /// Counts a new TCP connection against the caps; `None` says which cap it hit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
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

type Attached = HashMap<(InstanceId, ConnId), (RoomId, ConnId)>;

fn lock_attached(cluster: &Cluster) -> std::sync::MutexGuard<'_, Attached> {
    cluster.attached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
pub(crate) struct RefusalSlot(Arc<Shared>);

impl RefusalSlot {
    pub(crate) fn take(shared: &Arc<Shared>) -> Option<Self> {
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

/// Network checks per client (an IPv6 client per /64, as connections are counted: one host
/// has a whole /64 to pick addresses from): 10 at once, then one every 6 s. At most
/// [`CheckLimiter::CLIENTS`] clients are remembered; past that, those whose buckets have
/// refilled are forgotten, and while none has, new clients wait.
#[derive(Debug, Default)]
pub(crate) struct CheckLimiter(Mutex<HashMap<IpAddr, crate::rate::TokenBucket>>);

impl CheckLimiter {
    const CLIENTS: usize = 4_096;

    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut checks = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = address_key(ip);
        if checks.len() >= Self::CLIENTS && !checks.contains_key(&key) {
            checks.retain(|_, bucket| !bucket.is_full(now));
            if checks.len() >= Self::CLIENTS {
                return false;
            }
        }
        checks.entry(key).or_insert_with(|| crate::rate::TokenBucket::per_minute(10, 10, now)).try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_checks_are_limited_per_client_and_one_ipv6_host_cannot_fill_the_table() {
        let limiter = CheckLimiter::default();
        let now = Instant::now();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // Ten at once from one address, then none until a token refills.
        assert!((0..10).all(|_| limiter.allow(ip("192.0.2.1"), now)));
        assert!(!limiter.allow(ip("192.0.2.1"), now));
        assert!(limiter.allow(ip("192.0.2.2"), now), "another client has its own budget");
        assert!(limiter.allow(ip("192.0.2.1"), now + Duration::from_secs(6)));
        // Thousands of addresses of one /64 are one client: its ten, then nothing, and the
        // table does not fill up for everyone else.
        let host: Vec<IpAddr> = (0..5_000u32).map(|n| ip(&format!("2001:db8:1:2::{n:x}"))).collect();
        let allowed = host.iter().filter(|&&a| limiter.allow(a, now)).count();
        assert_eq!(allowed, 10);
        assert!(limiter.allow(ip("2001:db8:9::1"), now), "a client of another /64 still gets checks");
    }

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
