//! The registry of rooms, and delivery of what a room decides to the connections in it.
//!
//! Each room sits behind its own mutex, so rooms never wait on each other. The lock is held
//! only while the room's state machine runs and its outputs are handed to bounded queues with
//! `try_send`: it is never held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use confer_proto::{ErrorCode, RoomId, ServerMessage};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::bus::{Envelope, InstanceId, Outlet};
use crate::metrics::Metrics;
use crate::room::{ConnId, Frame, Output, Room, RoomSettings, RoomSnapshot, encode};

/// One message queued towards a connection. Everything the relay sends a client goes through
/// this queue, so that one place writes to the socket (and that place can be interrupted).
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) message: Message,
    /// When the signal it carries was read off the sender's socket (for the latency histogram).
    pub(crate) received: Option<Instant>,
}

/// How a connection ends when the relay ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A normal close (after `leave`).
    Normal,
    /// A close with an error code.
    Error(ErrorCode, String),
}

/// Ends a connection from outside its task; works even when its queue is full.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    ending: OnceLock<Ending>,
    notify: Notify,
}

impl KillSwitch {
    /// Ends the connection; the first ending wins. Returns whether this call set it.
    pub(crate) fn kill(&self, ending: Ending) -> bool {
        let first = self.ending.set(ending).is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Waits until the connection is to end, and says how.
    pub(crate) async fn killed(&self) -> Ending {
        loop {
            if let Some(ending) = self.ending.get() {
                return ending.clone();
            }
            self.notify.notified().await;
        }
    }
}

/// Bytes queued towards one connection at most: with 128 KiB messages, 256 frames alone
/// would allow 32 MiB for a client that reads just fast enough.
pub(crate) const MAX_QUEUED_BYTES: usize = 2 * 1024 * 1024;

impl Outbound {
    /// Payload bytes, for the queue's byte budget.
    pub(crate) fn len(&self) -> usize {
        self.message.len()
    }
}

/// What a room needs to reach one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Outbound>,
    pub(crate) kill: Arc<KillSwitch>,
    /// Bytes in the queue now; the writer subtracts what it writes.
    pub(crate) queued_bytes: Arc<AtomicUsize>,
}

impl ConnHandle {
    /// Queues a frame; a connection whose queue is full (in frames or bytes) is too slow and
    /// is closed.
    pub(crate) fn push(&self, out: Outbound, metrics: &Metrics) {
        let len = out.len();
        let over_budget = self.queued_bytes.fetch_add(len, Relaxed) + len > MAX_QUEUED_BYTES;
        if over_budget || self.tx.try_send(out).is_err() {
            self.queued_bytes.fetch_sub(len, Relaxed);
            if self.tx.is_closed() {
                return;
            }
            let ending =
                Ending::Error(ErrorCode::SlowConsumer, "you did not read your messages fast enough".into());
            if self.kill.kill(ending) {
                metrics.reject(ErrorCode::SlowConsumer);
            }
        }
    }
}

/// How a room reaches one of its connections.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// A client of this instance.
    Here(ConnHandle),
    /// A client of another instance (when rooms are shared): its connection id there.
    There { instance: InstanceId, conn: ConnId },
}

/// A room and the connections it may address.
#[derive(Debug)]
pub(crate) struct RoomInner {
    pub(crate) room: Room,
    conns: HashMap<ConnId, Route>,
    /// Where envelopes to other instances leave (when rooms are shared).
    outlet: Option<Arc<Outlet>>,
    /// Set when the registry dropped the room; a connection that finds it set looks again.
    closed: bool,
    /// Unix ms from which this room may have lost seats: a resume token issued before it may
    /// rebuild its seat. `None`: when this process started (a restart loses every room); set
    /// when this instance took the room over from one that stopped.
    pub(crate) rebuild_since_ms: Option<u64>,
}

impl RoomInner {
    /// Lets the room address this connection.
    pub(crate) fn attach(&mut self, conn: ConnId, route: Route) {
        self.conns.insert(conn, route);
    }

    /// Forgets a connection (its task is ending).
    pub(crate) fn detach(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Carries out everything the room decided. `received` stamps signals for the latency
    /// histogram.
    pub(crate) fn deliver(&mut self, metrics: &Metrics, received: Option<Instant>) {
        while let Some(output) = self.room.poll_output() {
            match output {
                Output::Send { conn, frame } => self.send(conn, frame, received, metrics),
                Output::Reject { conn, code, detail } => {
                    metrics.reject(code);
                    let frame = encode(&ServerMessage::Error { code, message: detail, fatal: false });
                    self.send(conn, frame, None, metrics);
                }
                Output::Close { conn, error } => match self.conns.get(&conn) {
                    Some(Route::Here(handle)) => {
                        let code = error.as_ref().map(|(code, _)| *code);
                        let ending =
                            error.map_or(Ending::Normal, |(code, detail)| Ending::Error(code, detail));
                        if handle.kill.kill(ending)
                            && let Some(code) = code
                        {
                            metrics.reject(code);
                        }
                    }
                    Some(&Route::There { instance, conn }) => {
                        if let Some(outlet) = &self.outlet {
                            outlet.send(instance, &Envelope::Close { conn, error });
                        }
                    }
                    None => {}
                },
            }
        }
    }

    fn send(&self, conn: ConnId, frame: Frame, received: Option<Instant>, metrics: &Metrics) {
        match self.conns.get(&conn) {
            Some(Route::Here(handle)) => handle.push(Outbound { message: text(frame), received }, metrics),
            Some(&Route::There { instance, conn }) => {
                if let Some(outlet) = &self.outlet {
                    let frame = String::from_utf8_lossy(&frame.into_bytes()).into_owned();
                    outlet.send(instance, &Envelope::Send { conn, frame });
                }
            }
            None => {}
        }
    }

    /// Ends every connection in the room (it moved to another instance): clients resume there.
    pub(crate) fn evacuate(&mut self, why: &str, metrics: &Metrics) {
        self.closed = true;
        for route in self.conns.values() {
            let error = Some((ErrorCode::ShuttingDown, why.to_owned()));
            match route {
                Route::Here(handle) => {
                    if handle.kill.kill(Ending::Error(ErrorCode::ShuttingDown, why.to_owned())) {
                        metrics.reject(ErrorCode::ShuttingDown);
                    }
                }
                &Route::There { instance, conn } => {
                    if let Some(outlet) = &self.outlet {
                        outlet.send(instance, &Envelope::Close { conn, error });
                    }
                }
            }
        }
    }
}

/// A room's frame as a WebSocket text message (no copy: the frame's bytes are shared).
pub(crate) fn text(frame: Frame) -> Message {
    // A frame is UTF-8 by construction; the check is the price of the room not knowing the
    // WebSocket type (a few hundred nanoseconds for a signal).
    Message::Text(Utf8Bytes::try_from(frame.into_bytes()).unwrap_or_else(|_| {
        Utf8Bytes::from_static(
            r#"{"type":"error","code":"internal","message":"encoding failed","fatal":false}"#,
        )
    }))
}

/// A shared room.
pub(crate) type RoomCell = Mutex<RoomInner>;

/// Locks a room. A panic while a room was locked poisons only that room's mutex; the state is
/// still consistent enough to serve (every method leaves it valid), so the poison is ignored
/// rather than spread to every later caller.
pub(crate) fn lock(cell: &RoomCell) -> MutexGuard<'_, RoomInner> {
    cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// All rooms held in memory.
#[derive(Debug)]
pub(crate) struct Rooms {
    map: Mutex<HashMap<RoomId, Arc<RoomCell>>>,
    settings: RoomSettings,
    /// Rooms held at most: every valid invite can reopen its room, so without a cap a client
    /// joining and leaving many rooms would grow the registry by its rate times the empty-room TTL.
    max_rooms: usize,
    /// Where rooms send to clients of other instances (when rooms are shared).
    outlet: Option<Arc<Outlet>>,
}

impl Rooms {
    pub(crate) fn new(settings: RoomSettings, max_rooms: usize, outlet: Option<Arc<Outlet>>) -> Self {
        Self { map: Mutex::new(HashMap::new()), settings, max_rooms, outlet }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RoomId, Arc<RoomCell>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The room, made if it is not held (a valid token may always reopen its room), from
    /// `snapshot` if its last holder left one. `took_over_at_ms`: this instance just took the
    /// room over from one that stopped (see `RoomInner::rebuild_since_ms`). At the cap, empty
    /// rooms are dropped early to make space; `None` if none is empty.
    pub(crate) fn get_or_create(
        &self,
        id: &RoomId,
        waiting_room: bool,
        now: Instant,
        took_over_at_ms: Option<u64>,
        snapshot: Option<Box<RoomSnapshot>>,
    ) -> Option<Arc<RoomCell>> {
        let mut map = self.map();
        if let Some(cell) = map.get(id) {
            if took_over_at_ms.is_some() {
                lock(cell).rebuild_since_ms = took_over_at_ms;
            }
            return Some(Arc::clone(cell));
        }
        if map.len() >= self.max_rooms {
            // Not rooms just made: two joiners at the cap would evict each other's new room.
            map.retain(|_, cell| {
                let mut inner = lock(cell);
                let drop_it = inner.room.is_evictable(now);
                inner.closed |= drop_it;
                !drop_it
            });
            if map.len() >= self.max_rooms {
                return None;
            }
        }
        let cell = Arc::new(Mutex::new(RoomInner {
            room: match snapshot {
                Some(snapshot) => {
                    let mut room = Room::restore(id.clone(), self.settings.clone(), *snapshot, now);
                    room.require_waiting_room(waiting_room);
                    room
                }
                None => Room::new(id.clone(), self.settings.clone(), waiting_room, now),
            },
            conns: HashMap::new(),
            outlet: self.outlet.clone(),
            closed: false,
            rebuild_since_ms: took_over_at_ms,
        }));
        map.insert(id.clone(), Arc::clone(&cell));
        Some(cell)
    }

    /// The room, if held.
    pub(crate) fn get(&self, id: &RoomId) -> Option<Arc<RoomCell>> {
        self.map().get(id).cloned()
    }

    /// Runs every room's timers, and drops rooms empty for longer than `ttl`; returns those.
    pub(crate) fn sweep(&self, now: Instant, ttl: Duration, metrics: &Metrics) -> Vec<RoomId> {
        let cells: Vec<(RoomId, Arc<RoomCell>)> =
            self.map().iter().map(|(id, cell)| (id.clone(), Arc::clone(cell))).collect();
        let mut expired = Vec::new();
        for (id, cell) in cells {
            let mut inner = lock(&cell);
            if inner.room.next_deadline().is_some_and(|t| t <= now) {
                inner.room.timeout(now);
                inner.deliver(metrics, None);
            }
            if inner.room.is_empty_for(now, ttl) {
                expired.push(id);
            }
        }
        if expired.is_empty() {
            return expired;
        }
        let mut map = self.map();
        expired.retain(|id| {
            // Check again under both locks: someone may have joined since.
            let Some(cell) = map.get(id) else { return false };
            let mut inner = lock(cell);
            if !inner.room.is_empty_for(now, ttl) {
                return false;
            }
            inner.closed = true;
            drop(inner);
            map.remove(id);
            true
        });
        expired
    }

    /// The ids of the rooms held.
    pub(crate) fn ids(&self) -> Vec<RoomId> {
        self.map().keys().cloned().collect()
    }

    /// Draining: every room's snapshot, each room closed to further changes.
    pub(crate) fn snapshots(&self) -> Vec<(RoomId, RoomSnapshot)> {
        let cells: Vec<(RoomId, Arc<RoomCell>)> =
            self.map().iter().map(|(id, cell)| (id.clone(), Arc::clone(cell))).collect();
        cells
            .into_iter()
            .map(|(id, cell)| {
                let mut inner = lock(&cell);
                inner.closed = true;
                (id, inner.room.snapshot(true))
            })
            .collect()
    }

    /// Snapshots of the rooms that changed since `seen` says they were last taken (every room
    /// if `all`); `seen` is brought up to date and forgets rooms no longer held.
    pub(crate) fn changed_snapshots(
        &self,
        seen: &mut HashMap<RoomId, u64>,
        all: bool,
    ) -> Vec<(RoomId, RoomSnapshot)> {
        let cells: Vec<(RoomId, Arc<RoomCell>)> =
            self.map().iter().map(|(id, cell)| (id.clone(), Arc::clone(cell))).collect();
        seen.retain(|id, _| cells.iter().any(|(held, _)| held == id));
        let mut out = Vec::new();
        for (id, cell) in cells {
            let inner = lock(&cell);
            let version = inner.room.version();
            if inner.is_closed() || (!all && seen.get(&id) == Some(&version)) {
                continue;
            }
            out.push((id.clone(), inner.room.snapshot(false)));
            seen.insert(id, version);
        }
        out
    }

    /// Drops a room that moved to another instance, ending its connections.
    pub(crate) fn evacuate(&self, id: &RoomId, why: &str, metrics: &Metrics) {
        let cell = self.map().remove(id);
        if let Some(cell) = cell {
            lock(&cell).evacuate(why, metrics);
        }
    }

    /// Rooms held, and participants seated in them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let cells: Vec<Arc<RoomCell>> = self.map().values().cloned().collect();
        let seated = cells.iter().map(|cell| lock(cell).room.seated()).sum();
        (cells.len(), seated)
    }
}
