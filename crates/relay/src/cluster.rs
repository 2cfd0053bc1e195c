//! Scale-out: relay instances that share rooms through Redis.
//!
//! Each room is held by one instance at a time, its *holder*, which runs the room's state
//! machine (`room.rs`, unchanged) exactly as a lone relay does. Redis keeps the directory (which
//! instance holds which room, and which instances are alive) and carries envelopes between
//! instances: every instance reads its own inbox stream, and the instance a client is connected
//! to passes what the client says to the room's holder, which sends the room's answers back.
//!
//! Keys (one Redis, or a primary behind Sentinel: the scripts name keys they compute, so not
//! Redis Cluster):
//! - `confer:room:<room>`: the holder's id; expires unless the holder renews it (every 5 s).
//! - `confer:alive:<instance>`: present while the instance runs (renewed every 500 ms, gone
//!   2 s after it stops).
//! - `confer:inbox:<instance>`: the instance's stream of envelopes, each numbered per sender
//!   so that a loss shows as a gap.
//!
//! What is not delivered is never silently lost: a gap, a failed write or a holder that died
//! ends the connections concerned with `shutting_down`, and their clients resume (on any
//! instance), getting back from the holder the signals kept for them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use confer_proto::{ErrorCode, RoomId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info, warn};

use crate::bus::{Envelope, InstanceId, Outgoing, Outlet};
use crate::room::{ConnId, RoomSnapshot};
use crate::rooms::{ConnHandle, Ending, Outbound};

/// How long an instance's `alive` key lasts without renewal: a holder that stopped is given up
/// this long after, so that its clients are back in their rooms within about 3 s (clients of
/// a dead holder that resume elsewhere are seated only once it is given up). Four heartbeats:
/// a Redis that stalls for longer makes the others take the instance's rooms over (its audit
/// then sends its clients there), a hiccup, not a dropped call.
const ALIVE_TTL: Duration = Duration::from_secs(2);
/// How often an instance renews its `alive` key and looks at the instances its clients use.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a room's directory entry lasts without renewal.
const ROOM_TTL: Duration = Duration::from_secs(30);
/// How often a holder renews its rooms' entries (and finds rooms it no longer holds).
const AUDIT: Duration = Duration::from_secs(5);
/// An inbox nobody reads (its instance stopped) is dropped this long (ms) after.
const INBOX_TTL_MS: u64 = 120_000;
/// Entries an inbox keeps at most (approximately): far more than an instance reads behind.
const INBOX_MAXLEN: usize = 100_000;
/// Envelopes written in one round trip, at most.
const BATCH: usize = 256;
/// How long one read waits for envelopes.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// How often an instance trims what it has read off its inbox (nobody reads an entry twice: a
/// reader that reconnects goes on from its last id, a new process has a new inbox).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The first instance to ask for a room whose holder is gone (or that has none) becomes its
/// holder. Returns the holder; what it replaced: the dead holder, `redis` if Redis lost its
/// entries lately (it restarted empty: the room may have been held, and its holder has not
/// written it back yet), or empty; and the room's snapshot if a holder that drained left one.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. current) == 1 then
  return {current, '', ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
local snapshot = redis.call('GET', KEYS[3])
if snapshot then redis.call('DEL', KEYS[3]) else snapshot = '' end
if current and current ~= ARGV[1] then return {ARGV[1], current, snapshot} end
if not current then
  local epoch = redis.call('GET', KEYS[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not epoch or now - tonumber(epoch) < tonumber(ARGV[4]) then return {ARGV[1], 'redis', snapshot} end
end
return {ARGV[1], '', snapshot}
";

/// Set once per Redis lifetime (Unix ms, by Redis's clock): a Redis that restarted empty is told
/// by its absence or its youth.
const EPOCH_KEY: &str = "confer:epoch";

/// Sets the epoch if it is not set.
const EPOCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return 0
";

/// Renews the entries of rooms this instance holds (writing them again if Redis lost them: it
/// restarted empty); 1 per room still held, 0 per room another instance took over.
const RENEW: &str = r"
local held = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current == ARGV[1] or not current then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
";

/// Drops a room's entry if this instance holds it (and, given a second key, its snapshot).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if KEYS[2] then redis.call('DEL', KEYS[2]) end
  return redis.call('DEL', KEYS[1])
end
return 0
";

fn room_key(room: &RoomId) -> String {
    format!("confer:room:{}", room.as_str())
}

fn snapshot_key(room: &RoomId) -> String {
    format!("confer:snapshot:{}", room.as_str())
}

/// How long a room's snapshot waits for the room's next holder (periodic ones are rewritten
/// well before).
const SNAPSHOT_TTL_MS: u64 = 60_000;

/// How often a holder writes the snapshots of the rooms that changed.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// How often a holder rewrites every room's snapshot (changed or not), within its TTL.
pub(crate) const SNAPSHOT_ALL_EVERY: u32 = 20;

const ALIVE_PREFIX: &str = "confer:alive:";

fn alive_key(instance: InstanceId) -> String {
    format!("{ALIVE_PREFIX}{instance:016x}")
}

fn inbox_key(instance: InstanceId) -> String {
    format!("confer:inbox:{instance:016x}")
}

fn parse_instance(text: &str) -> Option<InstanceId> {
    (text.len() == 16).then(|| InstanceId::from_str_radix(text, 16).ok()).flatten()
}

/// Where a room is held.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Holder {
    /// Here. `took_over_at_ms` is set when this instance just took the room over from one that
    /// died: seats it has no record of may be rebuilt from resume tokens issued before then.
    /// `snapshot` is the room as a holder that drained left it.
    Here { took_over_at_ms: Option<u64>, snapshot: Option<Box<RoomSnapshot>> },
    /// By another instance.
    There(InstanceId),
}

/// A client of this instance seated in a room held elsewhere.
#[derive(Debug)]
struct Member {
    handle: ConnHandle,
    holder: InstanceId,
}

/// What the cluster counts, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterMetrics {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) rtt_count: AtomicU64,
    pub(crate) rtt_sum_us: AtomicU64,
    pub(crate) rtt_last_us: AtomicU64,
}

impl ClusterMetrics {
    fn round_trip(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.rtt_count.fetch_add(1, Relaxed);
        self.rtt_sum_us.fetch_add(us, Relaxed);
        self.rtt_last_us.store(us, Relaxed);
    }
}

/// This instance's part in a cluster.
pub(crate) struct Cluster {
    pub(crate) me: InstanceId,
    redis: ConnectionManager,
    /// A second connection for the inbox's blocking reads (they would hold up the first).
    reader: ConnectionManager,
    pub(crate) outlet: Arc<Outlet>,
    outbox: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Clients of this instance seated in rooms held elsewhere, by connection.
    members: Mutex<HashMap<ConnId, Member>>,
    /// Clients of other instances seated in rooms held here: their connection there, and the
    /// id the room knows them by here.
    pub(crate) attached: Mutex<HashMap<(InstanceId, ConnId), (RoomId, ConnId)>>,
    /// Whether the last exchange with Redis worked.
    up: AtomicBool,
    /// Told when Redis answers again after failing: the rooms' entries are written back at once.
    pub(crate) recovered: tokio::sync::Notify,
    /// Held while snapshots are written: a drain's exact snapshots are never overwritten by a
    /// periodic one still on its way.
    pub(crate) snapshot_gate: tokio::sync::Mutex<()>,
    pub(crate) metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("me", &format_args!("{:016x}", self.me)).finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// Prepares this instance's part; connects lazily (an instance may start while Redis is
    /// down: it says so on `/healthz` and keeps trying). Fails only on a malformed URL or CA.
    /// `ca`: for `rediss://`, the PEM of the authority to trust instead of the system's roots.
    pub(crate) fn new(url: &str, ca: Option<Vec<u8>>) -> redis::RedisResult<Self> {
        let client = match ca {
            None => redis::Client::open(url)?,
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
            )?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let reader = ConnectionManager::new_lazy_with_config(
            client,
            config.set_response_timeout(Some(READ_BLOCK + Duration::from_secs(2))),
        )?;
        let (outlet, rx) = Outlet::new();
        Ok(Self {
            me: rand::random::<u64>() | 1 << 63,
            redis,
            reader,
            outlet: Arc::new(outlet),
            outbox: Mutex::new(Some(rx)),
            members: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            up: AtomicBool::new(false),
            recovered: tokio::sync::Notify::new(),
            snapshot_gate: tokio::sync::Mutex::new(()),
            metrics: ClusterMetrics::default(),
        })
    }

    /// Whether the last exchange with Redis worked.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    fn went(&self, result: &redis::RedisResult<impl Sized>) {
        let ok = result.is_ok();
        if self.up.swap(ok, Relaxed) != ok {
            if ok {
                info!("Redis reachable");
                self.recovered.notify_one();
            } else if let Err(err) = result {
                warn!(%err, "Redis unreachable");
            }
        }
    }

    /// Which instance holds `room`; this one, if no live instance does.
    pub(crate) async fn holder(&self, room: &RoomId) -> redis::RedisResult<Holder> {
        let started = Instant::now();
        let result: redis::RedisResult<(String, String, String)> = redis::Script::new(ACQUIRE)
            .key(room_key(room))
            .key(EPOCH_KEY)
            .key(snapshot_key(room))
            .arg(format!("{:016x}", self.me))
            .arg(ALIVE_PREFIX)
            .arg(u64::try_from(ROOM_TTL.as_millis()).unwrap_or(u64::MAX))
            .arg(u64::try_from(AUDIT.as_millis()).unwrap_or(u64::MAX) * 2)
            .invoke_async(&mut self.redis.clone())
            .await;
        self.went(&result);
        let (holder, replaced, snapshot) = result?;
        self.metrics.round_trip(started.elapsed());
        match parse_instance(&holder) {
            Some(id) if id == self.me => {
                let took_over = !replaced.is_empty();
                if took_over {
                    self.metrics.takeovers.fetch_add(1, Relaxed);
                    info!(
                        room = room.as_str(),
                        from = replaced,
                        "took over a room whose holder stopped (or Redis lost)"
                    );
                }
                let snapshot = (!snapshot.is_empty())
                    .then(|| serde_json::from_str::<RoomSnapshot>(&snapshot))
                    .transpose()
                    .unwrap_or_else(|err| {
                        self.metrics.malformed.fetch_add(1, Relaxed);
                        warn!(%err, room = room.as_str(), "a room's snapshot is malformed: the room starts afresh");
                        None
                    })
                    .map(Box::new);
                Ok(Holder::Here { took_over_at_ms: took_over.then(crate::token::unix_now_ms), snapshot })
            }
            Some(id) => Ok(Holder::There(id)),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "a room's holder is not an instance id",
            ))),
        }
    }

    /// Forgets that this instance holds `room`, and the room's snapshot (it dropped the room).
    pub(crate) async fn release(&self, room: &RoomId) {
        let result: redis::RedisResult<i64> = redis::Script::new(RELEASE)
            .key(room_key(room))
            .key(snapshot_key(room))
            .arg(format!("{:016x}", self.me))
            .invoke_async(&mut self.redis.clone())
            .await;
        self.went(&result);
    }

    /// Renews the entries of `rooms`, which this instance holds; returns those it lost (another
    /// instance took them over while this one could not reach Redis).
    pub(crate) async fn renew(&self, rooms: &[RoomId]) -> redis::RedisResult<Vec<RoomId>> {
        let mut lost = Vec::new();
        for chunk in rooms.chunks(512) {
            let script = redis::Script::new(RENEW);
            let mut invocation = script.prepare_invoke();
            for room in chunk {
                invocation.key(room_key(room));
            }
            invocation
                .arg(format!("{:016x}", self.me))
                .arg(u64::try_from(ROOM_TTL.as_millis()).unwrap_or(u64::MAX));
            let result: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut self.redis.clone()).await;
            self.went(&result);
            for (room, held) in chunk.iter().zip(result?) {
                if held == 0 {
                    lost.push(room.clone());
                }
            }
        }
        Ok(lost)
    }

    /// Draining: leaves the rooms' snapshots for their next holders, gives the rooms up, and
    /// says this instance is gone, so that the clients told to resume next find their rooms
    /// whole on another instance.
    pub(crate) async fn hand_over(&self, rooms: Vec<(RoomId, RoomSnapshot)>) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (room, snapshot) in &rooms {
            let json = serde_json::to_string(snapshot).unwrap_or_default();
            pipe.cmd("SET").arg(snapshot_key(room)).arg(json).arg("PX").arg(SNAPSHOT_TTL_MS).ignore();
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(room_key(room))
                .arg(format!("{:016x}", self.me))
                .ignore();
        }
        pipe.cmd("DEL").arg(alive_key(self.me)).ignore();
        let result: redis::RedisResult<()> = pipe.query_async(&mut self.redis.clone()).await;
        self.went(&result);
        result
    }

    /// Writes the snapshots of rooms held here, so that an instance taking a room over after
    /// this one died finds its seats, their tokens and kept signals, its lock and waiting room.
    pub(crate) async fn save_snapshots(&self, rooms: &[(RoomId, RoomSnapshot)]) -> redis::RedisResult<()> {
        for chunk in rooms.chunks(256) {
            let mut pipe = redis::pipe();
            for (room, snapshot) in chunk {
                let json = serde_json::to_string(snapshot).unwrap_or_default();
                pipe.cmd("SET").arg(snapshot_key(room)).arg(json).arg("PX").arg(SNAPSHOT_TTL_MS).ignore();
            }
            let started = Instant::now();
            let result: redis::RedisResult<()> = pipe.query_async(&mut self.redis.clone()).await;
            self.went(&result);
            result?;
            self.metrics.round_trip(started.elapsed());
        }
        Ok(())
    }

    /// Seats a client of this instance in a room held by `holder`: what `holder` sends to
    /// `conn` reaches `handle`.
    pub(crate) fn add_member(&self, conn: ConnId, handle: ConnHandle, holder: InstanceId) {
        locked(&self.members).insert(conn, Member { handle, holder });
    }

    pub(crate) fn remove_member(&self, conn: ConnId) {
        locked(&self.members).remove(&conn);
    }

    /// Ends the connections of this instance's clients seated in rooms held by `holder` (every
    /// holder if `None`), so that they resume.
    fn cut_members(&self, holder: Option<InstanceId>, why: &str) -> usize {
        let members = locked(&self.members);
        let mut cut = 0;
        for member in members.values().filter(|m| holder.is_none_or(|h| m.holder == h)) {
            let ending = Ending::Error(ErrorCode::ShuttingDown, why.to_owned());
            cut += usize::from(member.handle.kill.kill(ending));
        }
        cut
    }

    /// Writes queued envelopes to their inboxes, in order, a batch per round trip.
    pub(crate) async fn write_loop(self: Arc<Self>) {
        let Some(mut rx) = locked(&self.outbox).take() else { return };
        let me = format!("{:016x}", self.me);
        let mut numbers: HashMap<InstanceId, u64> = HashMap::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut redis = self.redis.clone();
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            let count = batch.len() as u64;
            let bytes: u64 = batch.iter().map(|out| out.body.len() as u64).sum();
            // An inbox is only kept while written to or read: one whose instance died goes.
            let destinations: HashSet<InstanceId> = batch.iter().map(|out| out.to).collect();
            for out in batch.drain(..) {
                let number = numbers.entry(out.to).or_default();
                *number += 1 + self.outlet.take_skipped(out.to);
                pipe.cmd("XADD")
                    .arg(inbox_key(out.to))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(INBOX_MAXLEN)
                    .arg("*")
                    .arg("from")
                    .arg(&me)
                    .arg("n")
                    .arg(*number)
                    .arg("m")
                    .arg(out.body)
                    .ignore();
            }
            for to in destinations {
                pipe.cmd("PEXPIRE").arg(inbox_key(to)).arg(INBOX_TTL_MS).ignore();
            }
            let started = Instant::now();
            let result: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
            self.outlet.done(count, bytes);
            self.went(&result);
            match result {
                Ok(()) => {
                    self.metrics.round_trip(started.elapsed());
                    self.metrics.sent.fetch_add(count, Relaxed);
                }
                Err(err) => {
                    // Their numbers are spent: the receivers see the gap once writes work again.
                    self.metrics.write_failures.fetch_add(count, Relaxed);
                    let cut = self.cut_members(
                        None,
                        "the relay lost its link to the other relays: reconnect and resume",
                    );
                    warn!(%err, count, cut, "envelopes could not be written to Redis");
                }
            }
        }
    }

    /// Reads this instance's inbox and hands every envelope to `deliver`, in order (waiting
    /// while it is full: the rest stays in Redis). A gap in a sender's numbering (envelopes
    /// lost) is passed on as `None` with the sender, after the clients seated through that
    /// sender were cut.
    pub(crate) async fn read_loop(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        deliver: mpsc::Sender<(InstanceId, Option<Envelope>)>,
    ) {
        let inbox = inbox_key(self.me);
        let mut last_id = "0-0".to_owned();
        let mut trimmed_to = last_id.clone();
        let mut trimmed_at = Instant::now();
        let mut expected: HashMap<InstanceId, u64> = HashMap::new();
        let mut reader = self.reader.clone();
        let options = StreamReadOptions::default()
            .count(512)
            .block(usize::try_from(READ_BLOCK.as_millis()).unwrap_or(1000));
        loop {
            let keys = [&inbox];
            let ids = [&last_id];
            let read = redis::AsyncCommands::xread_options::<_, _, Option<StreamReadReply>>(
                &mut reader,
                &keys,
                &ids,
                &options,
            );
            let reply = tokio::select! {
                () = shutdown.cancelled() => return,
                reply = read => reply,
            };
            self.went(&reply);
            let reply = match reply {
                Ok(reply) => reply.unwrap_or_default(),
                Err(err) => {
                    debug!(%err, "reading the inbox failed");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
                last_id.clone_from(&entry.id);
                let from = entry.get::<String>("from").as_deref().and_then(parse_instance);
                let number = entry.get::<u64>("n");
                let envelope =
                    entry.get::<String>("m").and_then(|m| serde_json::from_str::<Envelope>(&m).ok());
                let (Some(from), Some(number), Some(envelope)) = (from, number, envelope) else {
                    self.metrics.malformed.fetch_add(1, Relaxed);
                    warn!(id = entry.id, "an envelope in the inbox is malformed: skipped");
                    continue;
                };
                self.metrics.received.fetch_add(1, Relaxed);
                let previous = expected.insert(from, number);
                if previous.is_some_and(|p| p.checked_add(1) != Some(number)) {
                    self.metrics.gaps.fetch_add(1, Relaxed);
                    let cut = self.cut_members(
                        Some(from),
                        "messages from the relay holding your room were lost: reconnect and resume",
                    );
                    warn!(from = format_args!("{from:016x}"), cut, "envelopes were lost on the way here");
                    if deliver.send((from, None)).await.is_err() {
                        return;
                    }
                }
                if deliver.send((from, Some(envelope))).await.is_err() {
                    return;
                }
            }
            if last_id != trimmed_to && trimmed_at.elapsed() >= TRIM_EVERY {
                // Approximate (`~`): Redis frees whole nodes, cheaply; the rest goes next time.
                let trimmed: redis::RedisResult<u64> = redis::cmd("XTRIM")
                    .arg(&inbox)
                    .arg("MINID")
                    .arg("~")
                    .arg(&last_id)
                    .query_async(&mut reader)
                    .await;
                self.went(&trimmed);
                if trimmed.is_ok() {
                    trimmed_to.clone_from(&last_id);
                }
                trimmed_at = Instant::now();
            }
        }
    }

    /// Hands an envelope from a room's holder to this instance's client it is for.
    pub(crate) fn to_member(&self, from: InstanceId, envelope: Envelope, metrics: &crate::metrics::Metrics) {
        if envelope == Envelope::Reset {
            let why = "messages to the relay holding your room were lost: reconnect and resume";
            let cut = self.cut_members(Some(from), why);
            warn!(holder = format_args!("{from:016x}"), cut, "envelopes from here were lost: clients resume");
            return;
        }
        let members = locked(&self.members);
        match envelope {
            Envelope::Send { conn, frame } => {
                if let Some(member) = members.get(&conn) {
                    let out = Outbound { message: Message::Text(Utf8Bytes::from(frame)), received: None };
                    member.handle.push(out, metrics);
                }
            }
            Envelope::Close { conn, error } => {
                if let Some(member) = members.get(&conn) {
                    let code = error.as_ref().map(|(code, _)| *code);
                    let ending = error.map_or(Ending::Normal, |(code, detail)| Ending::Error(code, detail));
                    if member.handle.kill.kill(ending)
                        && let Some(code) = code
                    {
                        metrics.reject(code);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every 500 ms: says this instance is alive, keeps its inbox, and cuts the clients seated
    /// through holders that stopped (they resume, and the room is taken over).
    ///
    /// Instances with clients seated in rooms held here that stopped are reported to `lost`
    /// (as a loss of all they would still have said), so that those seats enter their grace
    /// period instead of staying taken.
    pub(crate) async fn heartbeat_loop(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        lost: mpsc::Sender<(InstanceId, Option<Envelope>)>,
    ) {
        let mut redis = self.redis.clone();
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut watched: HashSet<InstanceId> = locked(&self.members).values().map(|m| m.holder).collect();
            watched.extend(locked(&self.attached).keys().map(|(instance, _)| *instance));
            let holders: Vec<InstanceId> = watched.into_iter().collect();
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(alive_key(self.me))
                .arg(crate::token::unix_now_ms())
                .arg("PX")
                .arg(u64::try_from(ALIVE_TTL.as_millis()).unwrap_or(u64::MAX))
                .ignore();
            pipe.cmd("PEXPIRE").arg(inbox_key(self.me)).arg(INBOX_TTL_MS).ignore();
            pipe.cmd("EVAL").arg(EPOCH).arg(1).arg(EPOCH_KEY).ignore();
            for holder in &holders {
                pipe.cmd("EXISTS").arg(alive_key(*holder));
            }
            let started = Instant::now();
            let result: redis::RedisResult<Vec<i64>> = pipe.query_async(&mut redis).await;
            self.went(&result);
            match result {
                Ok(alive) => {
                    self.metrics.round_trip(started.elapsed());
                    for (instance, alive) in holders.iter().zip(alive) {
                        if alive != 0 {
                            continue;
                        }
                        let why = "the relay holding your room stopped: reconnect and resume";
                        let cut = self.cut_members(Some(*instance), why);
                        info!(instance = format_args!("{instance:016x}"), cut, "another relay stopped");
                        // Its clients seated here: their seats enter their grace period.
                        if locked(&self.attached).keys().any(|(i, _)| i == instance) {
                            let _ = lost.send((*instance, None)).await;
                        }
                    }
                }
                Err(err) => debug!(%err, "heartbeat failed"),
            }
        }
        // A clean stop: the others need not wait for the key to expire.
        let _: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(alive_key(self.me))
            .arg(inbox_key(self.me))
            .query_async(&mut redis)
            .await;
    }

    /// How often to renew room entries.
    pub(crate) const AUDIT: Duration = AUDIT;

    /// The cluster's lines of `/metrics`.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let m = &self.metrics;
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "confer_relay_redis_up",
            "gauge",
            "Whether the last exchange with Redis worked (1) or not (0).",
            u64::from(self.is_up()),
        );
        metric(
            "confer_relay_cluster_envelopes_sent_total",
            "counter",
            "Envelopes written to other relays' inboxes.",
            m.sent.load(Relaxed),
        );
        metric(
            "confer_relay_cluster_envelopes_received_total",
            "counter",
            "Envelopes read from this relay's inbox.",
            m.received.load(Relaxed),
        );
        let lost = m.write_failures.load(Relaxed) + self.outlet.dropped.load(Relaxed);
        metric(
            "confer_relay_cluster_envelopes_lost_total",
            "counter",
            "Envelopes that could not leave (Redis failed, or the outbox was full); their clients resume.",
            lost,
        );
        metric(
            "confer_relay_cluster_gaps_total",
            "counter",
            "Gaps seen in another relay's numbering (envelopes lost on the way here).",
            m.gaps.load(Relaxed),
        );
        metric(
            "confer_relay_cluster_malformed_total",
            "counter",
            "Envelopes in the inbox that could not be read (skipped).",
            m.malformed.load(Relaxed),
        );
        metric(
            "confer_relay_cluster_takeovers_total",
            "counter",
            "Rooms taken over from a relay that stopped.",
            m.takeovers.load(Relaxed),
        );
        let name = "confer_relay_redis_round_trip_seconds";
        let _ = writeln!(out, "# HELP {name} Round trips to Redis (directory, heartbeat, batched writes).");
        let _ = writeln!(out, "# TYPE {name} summary");
        let _ = writeln!(out, "{name}_sum {}", m.rtt_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", m.rtt_count.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP confer_relay_redis_last_round_trip_seconds The latest round trip to Redis."
        );
        let _ = writeln!(out, "# TYPE confer_relay_redis_last_round_trip_seconds gauge");
        let _ = writeln!(
            out,
            "confer_relay_redis_last_round_trip_seconds {}",
            m.rtt_last_us.load(Relaxed) as f64 / 1e6
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_read_back_and_nothing_else_reads_as_one() {
        let id: InstanceId = 0x8123_4567_89ab_cdef;
        assert_eq!(parse_instance(&format!("{id:016x}")), Some(id));
        assert_eq!(parse_instance("81234567"), None);
        assert_eq!(parse_instance("zz23456789abcdef"), None);
        assert_eq!(parse_instance(""), None);
    }
}
