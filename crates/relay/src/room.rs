//! One room's membership, as a state machine that does no IO.
//!
//! Callers feed it what happened (`join`, `resume`, `message`, `disconnect`, `timeout`), each
//! with the current time, then drain [`Room::poll_output`] and carry the outputs to the
//! connections. Everything the relay decides about a room — who may enter, who knocks, who may
//! send to whom, what a reconnecting participant gets back, when a seat is given up — is decided
//! here, and tested here in fake time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use confer_proto::{
    ClientMessage, ErrorCode, IceServer, Knocker, LeaveReason, Participant, PeerId, PeerState, Role, RoomId,
    ServerMessage, SignalPayload,
};

/// The relay's id for one WebSocket connection (never sent on the wire).
pub(crate) type ConnId = u64;

/// Limits and timings of a room.
#[derive(Debug, Clone)]
pub(crate) struct RoomSettings {
    /// Seats, including those of reconnecting participants.
    pub(crate) capacity: usize,
    /// How long a dropped participant keeps its seat.
    pub(crate) grace: Duration,
    /// How long a knocker waits before it is turned away.
    pub(crate) knock_timeout: Duration,
    /// Signals kept per seat for re-delivery on resume.
    pub(crate) replay_messages: usize,
    /// Bytes of signals kept per seat for re-delivery on resume.
    pub(crate) replay_bytes: usize,
    /// How long a signal is kept once written to a seat whose connection stays up: by then the
    /// client has read it (a connection that died unseen is found by the heartbeat well within
    /// this), and a resume that still wants it is told `gap`.
    pub(crate) keep_read: Duration,
}

/// Knockers waiting at most, per room.
const MAX_KNOCKERS: usize = 16;

/// What a newly seated participant is handed, prepared by the caller (it needs keys the room
/// does not hold).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Welcome {
    pub(crate) ice_servers: Vec<IceServer>,
    pub(crate) resume_token: String,
    /// When `resume_token` was issued (Unix ms): it names the token among the seat's tokens.
    pub(crate) resume_issued_ms: u64,
}

/// Who is asking to join, as its verified invite says.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct JoinRequest {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) role: Role,
    pub(crate) name: String,
    pub(crate) muted: bool,
    pub(crate) camera: bool,
    pub(crate) welcome: Welcome,
}

/// Who is asking to resume, as its verified resume token says.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ResumeRequest {
    pub(crate) conn: ConnId,
    pub(crate) peer: PeerId,
    pub(crate) role: Role,
    pub(crate) last_seq: u64,
    /// When the presented resume token was issued (Unix ms).
    pub(crate) token_issued_ms: u64,
    pub(crate) name: Option<String>,
    pub(crate) muted: bool,
    pub(crate) camera: bool,
    /// True if the seat may be rebuilt from the token alone: the relay lost its state (a
    /// restart) after the token was issued, and the restart was recent.
    pub(crate) may_recreate: bool,
    pub(crate) welcome: Welcome,
}

/// What the room asks its caller to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Send this frame to the connection.
    Send { conn: ConnId, frame: Frame },
    /// Tell the connection its message was refused; it stays open.
    Reject { conn: ConnId, code: ErrorCode, detail: String },
    /// Close the connection: with an error, or normally (`None`) after `leave`.
    Close { conn: ConnId, error: Option<(ErrorCode, String)> },
}

#[derive(Debug)]
struct Seat {
    peer: PeerId,
    conn: Option<ConnId>,
    role: Role,
    name: String,
    muted: bool,
    camera: bool,
    hand_raised: bool,
    /// When the hand went up, as the room counts raises (the queue's order).
    hand_order: Option<u64>,
    /// Holds the screen share (granted by `share`).
    sharing: bool,
    /// Records the call (said by `record`).
    recording: bool,
    disconnected_at: Option<Instant>,
    next_seq: u64,
    /// Issue times of the newest resume token handed to this seat and of the one before; only
    /// these two resume it (the one before, for a client that lost the `resumed` carrying the
    /// newest).
    tokens_ms: [u64; 2],
    /// Signals sent to this seat, oldest first, with their `seq` and when they were sent, for
    /// re-delivery on resume.
    replay: VecDeque<(u64, Frame, Instant)>,
    replay_bytes: usize,
    /// Restored from a snapshot taken before its holder stopped: signals sent to it after the
    /// snapshot are lost, so its next resume reports a gap.
    incomplete: bool,
}

impl Seat {
    /// Gives up kept signals from the oldest on, while `stale` says so.
    fn give_up_kept(&mut self, mut stale: impl FnMut(&(u64, Frame, Instant)) -> bool) {
        while let Some(oldest) = self.replay.front().filter(|kept| stale(kept)) {
            self.replay_bytes -= oldest.1.len();
            self.replay.pop_front();
        }
    }

    fn participant(&self) -> Participant {
        Participant {
            id: self.peer.clone(),
            name: self.name.clone(),
            role: self.role,
            muted: self.muted,
            camera: self.camera,
            hand_raised: self.hand_raised,
            hand_order: self.hand_order,
            sharing: self.sharing,
            recording: self.recording,
            state: if self.conn.is_some() { PeerState::Active } else { PeerState::Reconnecting },
        }
    }
}

/// How a newly seated participant is greeted.
#[derive(Debug, Clone, Copy)]
enum Greeting {
    /// After `join` (or admission): `joined`.
    Joined,
    /// After `resume` of a seat the relay had lost: `resumed`, with a gap.
    Rebuilt,
}

#[derive(Debug)]
struct Knock {
    request: JoinRequest,
    since: Instant,
}

/// One room.
#[derive(Debug)]
pub(crate) struct Room {
    id: RoomId,
    settings: RoomSettings,
    seats: Vec<Seat>,
    knocks: Vec<Knock>,
    locked: bool,
    waiting_room: bool,
    /// Several may share a screen at once (a host allowed it); else one at a time.
    several_shares: bool,
    /// Hands raised so far: the next raise's place in the queue.
    hands_raised: u64,
    empty_since: Option<Instant>,
    /// Whether anyone has been seated or knocked here yet.
    occupied_once: bool,
    /// Seats that ended here (left, removed, timed out), newest last: never rebuilt from a
    /// resume token.
    ended: VecDeque<PeerId>,
    outputs: VecDeque<Output>,
    /// Counts the calls that may have changed the room (for snapshots of changed rooms only).
    version: u64,
}

/// Ended seats remembered per room.
const MAX_ENDED: usize = 256;

/// How far numbering jumps in a seat restored from a periodic snapshot: more signals than a seat
/// is ever sent between two snapshots.
const SEQ_JUMP: u64 = 1 << 20;

/// What a room hands to the instance that takes it over when its holder drains (relays sharing
/// rooms): its seats with their replay buffers and tokens, its rules, and the seats that ended.
/// Knockers are not carried: their connections end, and they knock again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RoomSnapshot {
    /// Taken when its holder drained (nothing happened after it); else one of the periodic
    /// snapshots, after which signals may have been sent (see `Seat::incomplete`).
    #[serde(default)]
    exact: bool,
    seats: Vec<SeatSnapshot>,
    locked: bool,
    waiting_room: bool,
    several_shares: bool,
    hands_raised: u64,
    occupied_once: bool,
    ended: Vec<PeerId>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SeatSnapshot {
    peer: PeerId,
    role: Role,
    name: String,
    muted: bool,
    camera: bool,
    hand_raised: bool,
    hand_order: Option<u64>,
    sharing: bool,
    recording: bool,
    next_seq: u64,
    tokens_ms: [u64; 2],
    replay: Vec<(u64, String)>,
}

impl Room {
    pub(crate) fn new(id: RoomId, settings: RoomSettings, waiting_room: bool, now: Instant) -> Self {
        Self {
            id,
            settings,
            seats: Vec::new(),
            knocks: Vec::new(),
            locked: false,
            waiting_room,
            several_shares: false,
            hands_raised: 0,
            empty_since: Some(now),
            occupied_once: false,
            ended: VecDeque::new(),
            outputs: VecDeque::new(),
            version: 0,
        }
    }

    /// Counts the calls that may have changed the room.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The room as the next holder needs it (see [`RoomSnapshot`]); `exact` when nothing will
    /// happen to it here after (a drain).
    pub(crate) fn snapshot(&self, exact: bool) -> RoomSnapshot {
        let seats = self
            .seats
            .iter()
            .map(|seat| SeatSnapshot {
                peer: seat.peer.clone(),
                role: seat.role,
                name: seat.name.clone(),
                muted: seat.muted,
                camera: seat.camera,
                hand_raised: seat.hand_raised,
                hand_order: seat.hand_order,
                sharing: seat.sharing,
                recording: seat.recording,
                next_seq: seat.next_seq,
                tokens_ms: seat.tokens_ms,
                // Kept signals only when exact: a room restored from a periodic snapshot tells
                // every resume `gap` anyway (it may lack the last second's signals), and its
                // clients renegotiate; copying them every second would cost as much as
                // forwarding them.
                replay: if exact {
                    seat.replay
                        .iter()
                        .map(|(seq, frame, _)| (*seq, String::from_utf8_lossy(&frame.0).into_owned()))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        RoomSnapshot {
            exact,
            seats,
            locked: self.locked,
            waiting_room: self.waiting_room,
            several_shares: self.several_shares,
            hands_raised: self.hands_raised,
            occupied_once: self.occupied_once,
            ended: self.ended.iter().cloned().collect(),
        }
    }

    /// The room again from a snapshot, on the instance that takes it over. Every seat is
    /// reconnecting from `now` (its client resumes here, within a new grace period).
    pub(crate) fn restore(id: RoomId, settings: RoomSettings, snapshot: RoomSnapshot, now: Instant) -> Self {
        let mut room = Self::new(id, settings, snapshot.waiting_room, now);
        let exact = snapshot.exact;
        room.seats = snapshot
            .seats
            .into_iter()
            .take(room.settings.capacity)
            .map(|seat| {
                let replay: VecDeque<(u64, Frame, Instant)> = seat
                    .replay
                    .into_iter()
                    .map(|(seq, text)| (seq, Frame(bytes::Bytes::from(text)), now))
                    .collect();
                let replay_bytes = replay.iter().map(|(_, frame, _)| frame.len()).sum();
                // After a periodic snapshot, signals may have been numbered that it does not
                // hold: numbering jumps past them, so none is mistaken for one already read.
                let next_seq = if exact { seat.next_seq } else { seat.next_seq.saturating_add(SEQ_JUMP) };
                Seat {
                    peer: seat.peer,
                    conn: None,
                    role: seat.role,
                    name: seat.name,
                    muted: seat.muted,
                    camera: seat.camera,
                    hand_raised: seat.hand_raised,
                    hand_order: seat.hand_order,
                    sharing: seat.sharing,
                    recording: seat.recording,
                    disconnected_at: Some(now),
                    next_seq,
                    tokens_ms: seat.tokens_ms,
                    replay,
                    replay_bytes,
                    incomplete: !exact,
                }
            })
            .collect();
        room.locked = snapshot.locked;
        room.several_shares = snapshot.several_shares;
        room.hands_raised = snapshot.hands_raised;
        room.occupied_once = snapshot.occupied_once;
        room.ended = snapshot.ended.into_iter().rev().take(MAX_ENDED).rev().collect();
        if !room.seats.is_empty() {
            room.empty_since = None;
        }
        room
    }

    /// A join with a waiting-room invite gives the room a waiting room (it may have been opened
    /// by a resume after a restart, which does not know).
    pub(crate) fn require_waiting_room(&mut self, waiting_room: bool) {
        self.waiting_room |= waiting_room;
    }

    /// The next thing to carry out, in order.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Participants holding a seat (active or reconnecting).
    /// Whether a guest must knock now (the room is locked, or always has a waiting room).
    pub(crate) fn guests_knock(&self) -> bool {
        self.locked || self.waiting_room
    }

    pub(crate) fn seated(&self) -> usize {
        self.seats.len()
    }

    /// True if nobody has been seated or knocking for at least `age`.
    pub(crate) fn is_empty_for(&self, now: Instant, age: Duration) -> bool {
        self.empty_since.is_some_and(|since| now.saturating_duration_since(since) >= age)
    }

    /// Whether the room may be dropped early to make space: it is empty, and either someone
    /// has been in it or it has been empty for a few seconds (a room just opened for a join in
    /// progress must not be taken from under it).
    pub(crate) fn is_evictable(&self, now: Instant) -> bool {
        self.empty_since.is_some() && (self.occupied_once || self.is_empty_for(now, Duration::from_secs(5)))
    }

    /// When the room next needs [`Room::timeout`] called.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let grace = self.seats.iter().filter_map(|s| s.disconnected_at).map(|t| t + self.settings.grace);
        let knocks = self.knocks.iter().map(|k| k.since + self.settings.knock_timeout);
        let read = self
            .seats
            .iter()
            .filter(|s| s.conn.is_some())
            .filter_map(|s| s.replay.front())
            .map(|(_, _, at)| *at + self.settings.keep_read);
        grace.chain(knocks).chain(read).min()
    }

    pub(crate) fn join(&mut self, now: Instant, request: JoinRequest) {
        self.version += 1;
        if self.seat_of(request.conn).is_some() || self.knocks.iter().any(|k| k.request.conn == request.conn)
        {
            self.reject(request.conn, ErrorCode::AlreadyJoined, "this connection already joined");
            return;
        }
        if request.role == Role::Guest && (self.locked || self.waiting_room) {
            if self.knocks.len() >= MAX_KNOCKERS {
                self.close(request.conn, ErrorCode::RoomFull, "too many people are knocking");
                return;
            }
            self.send(request.conn, &ServerMessage::Knocking { peer_id: request.peer.clone() });
            let knocker = Knocker { id: request.peer.clone(), name: request.name.clone() };
            self.send_to_hosts(&ServerMessage::Knock { peer: knocker });
            self.knocks.push(Knock { request, since: now });
            self.empty_since = None;
            self.occupied_once = true;
            return;
        }
        if self.seats.len() >= self.settings.capacity {
            let detail = format!("the room holds {} participants", self.settings.capacity);
            self.close(request.conn, ErrorCode::RoomFull, &detail);
            return;
        }
        self.seat(request, 1, Greeting::Joined);
    }

    /// Seats a participant, greets it and announces it to the others. `first_seq` is the
    /// first signal seq it will get.
    fn seat(&mut self, request: JoinRequest, first_seq: u64, greeting: Greeting) {
        let seat = Seat {
            peer: request.peer,
            conn: Some(request.conn),
            role: request.role,
            name: request.name.trim().to_owned(),
            muted: request.muted,
            camera: request.camera,
            hand_raised: false,
            hand_order: None,
            sharing: false,
            recording: false,
            disconnected_at: None,
            next_seq: first_seq,
            tokens_ms: [request.welcome.resume_issued_ms; 2],
            replay: VecDeque::new(),
            replay_bytes: 0,
            incomplete: false,
        };
        let announce = ServerMessage::PeerJoined { peer: seat.participant() };
        let (peer_id, room, role) = (seat.peer.clone(), self.id.clone(), seat.role);
        let participants = self.participants_except(&seat.peer);
        let (ice_servers, resume_token) = (request.welcome.ice_servers, request.welcome.resume_token);
        let (locked, knocking) = (self.locked, self.knockers_for(seat.role));
        let greeting = match greeting {
            Greeting::Joined => ServerMessage::Joined {
                peer_id,
                room,
                role,
                participants,
                ice_servers,
                resume_token,
                locked,
                knocking,
                grace_secs: self.settings.grace.as_secs(),
            },
            // A seat rebuilt after a restart: whatever was in flight then is lost.
            Greeting::Rebuilt => ServerMessage::Resumed {
                peer_id,
                room,
                role,
                participants,
                ice_servers,
                resume_token,
                locked,
                knocking,
                replayed: 0,
                gap: true,
            },
        };
        self.send(request.conn, &greeting);
        self.broadcast_except(&seat.peer, &announce);
        self.seats.push(seat);
        self.empty_since = None;
        self.occupied_once = true;
    }

    pub(crate) fn resume(&mut self, request: ResumeRequest) {
        self.version += 1;
        let Some(index) = self.seats.iter().position(|s| s.peer == request.peer) else {
            self.recreate(request);
            return;
        };
        if !self.seats[index].tokens_ms.contains(&request.token_issued_ms) {
            self.close(
                request.conn,
                ErrorCode::ResumeFailed,
                "this resume token was replaced by a newer one",
            );
            return;
        }
        let seat = &mut self.seats[index];
        seat.tokens_ms = [request.welcome.resume_issued_ms, seat.tokens_ms[0]];
        let was_reconnecting = self.seats[index].conn.is_none();
        if let Some(old) = self.seats[index].conn.replace(request.conn) {
            self.close(old, ErrorCode::Replaced, "another connection resumed this seat");
        }
        let seat = &mut self.seats[index];
        seat.disconnected_at = None;
        let replay: Vec<Frame> = seat
            .replay
            .iter()
            .filter(|(seq, ..)| *seq > request.last_seq)
            .map(|(_, f, _)| f.clone())
            .collect();
        let oldest_held = seat.replay.front().map_or(seat.next_seq, |(seq, ..)| *seq);
        // What the client says it has read, it will not ask for again.
        seat.give_up_kept(|(seq, ..)| *seq <= request.last_seq);
        // Taken whatever the numbering says: only the first resume after a restore is told.
        let incomplete = std::mem::take(&mut seat.incomplete);
        let gap = request.last_seq.saturating_add(1) < oldest_held || incomplete;
        let participant = seat.participant();
        let role = seat.role;
        let resumed = ServerMessage::Resumed {
            peer_id: request.peer.clone(),
            room: self.id.clone(),
            role,
            participants: self.participants_except(&request.peer),
            ice_servers: request.welcome.ice_servers,
            resume_token: request.welcome.resume_token,
            locked: self.locked,
            knocking: self.knockers_for(role),
            replayed: u32::try_from(replay.len()).unwrap_or(u32::MAX),
            gap,
        };
        self.send(request.conn, &resumed);
        for frame in replay {
            self.outputs.push_back(Output::Send { conn: request.conn, frame });
        }
        if was_reconnecting {
            self.broadcast_except(&request.peer, &ServerMessage::PeerResumed { peer: participant });
        }
    }

    /// A resume for a seat this room does not hold: rebuilt only after a restart lost it.
    fn recreate(&mut self, request: ResumeRequest) {
        if !request.may_recreate || self.ended.contains(&request.peer) {
            self.close(request.conn, ErrorCode::ResumeFailed, "the seat is gone: join again");
            return;
        }
        if self.seats.len() >= self.settings.capacity {
            let detail = format!("the room holds {} participants", self.settings.capacity);
            self.close(request.conn, ErrorCode::RoomFull, &detail);
            return;
        }
        let join = JoinRequest {
            conn: request.conn,
            peer: request.peer,
            role: request.role,
            name: request.name.unwrap_or_else(|| "Guest".to_owned()),
            muted: request.muted,
            camera: request.camera,
            welcome: request.welcome,
        };
        self.seat(join, request.last_seq.saturating_add(1), Greeting::Rebuilt);
    }

    /// A message from a connection bound to this room (not `join`/`resume`).
    pub(crate) fn message(&mut self, now: Instant, conn: ConnId, msg: ClientMessage) {
        // A signal changes only what a periodic snapshot leaves out (kept signals, numbering).
        if !matches!(msg, ClientMessage::Signal { .. } | ClientMessage::Ping { .. }) {
            self.version += 1;
        }
        let Some(index) = self.seat_of(conn) else {
            let detail = if self.knocks.iter().any(|k| k.request.conn == conn) {
                "you are waiting to be admitted"
            } else {
                "join the room first"
            };
            if matches!(msg, ClientMessage::Leave) {
                self.disconnect(now, conn);
                self.outputs.push_back(Output::Close { conn, error: None });
            } else {
                self.reject(conn, ErrorCode::NotJoined, detail);
            }
            return;
        };
        match msg {
            ClientMessage::Signal { to, payload } => self.signal(now, index, conn, &to, payload),
            ClientMessage::Update { name, muted, camera, hand_raised } => {
                let seat = &mut self.seats[index];
                if let Some(name) = name {
                    seat.name = name.trim().to_owned();
                }
                seat.muted = muted.unwrap_or(seat.muted);
                seat.camera = camera.unwrap_or(seat.camera);
                seat.hand_raised = hand_raised.unwrap_or(seat.hand_raised);
                // The queue: a hand raised goes to the back; one lowered leaves it.
                if !seat.hand_raised {
                    seat.hand_order = None;
                } else if seat.hand_order.is_none() {
                    self.hands_raised = self.hands_raised.saturating_add(1);
                    seat.hand_order = Some(self.hands_raised);
                }
                let update = ServerMessage::PeerUpdated { peer: seat.participant() };
                self.broadcast(&update);
            }
            ClientMessage::Share { on } => self.share(index, conn, on),
            ClientMessage::Record { on } => {
                let seat = &mut self.seats[index];
                let changed = seat.recording != on;
                seat.recording = on;
                let update = ServerMessage::PeerUpdated { peer: seat.participant() };
                if changed {
                    self.broadcast(&update);
                } else {
                    // Nothing changed: only the sender is answered (it may have missed the
                    // first answer, on a connection that dropped).
                    self.send(conn, &update);
                }
            }
            ClientMessage::StopShare { peer } => {
                if self.require_host(index, conn) {
                    match self.seats.iter_mut().find(|s| s.peer == peer) {
                        Some(seat) => {
                            seat.sharing = false;
                            let update = ServerMessage::PeerUpdated { peer: seat.participant() };
                            self.broadcast(&update);
                        }
                        None => self.reject(
                            conn,
                            ErrorCode::PeerNotFound,
                            "no participant with that id in your room",
                        ),
                    }
                }
            }
            ClientMessage::SharePolicy { several } => {
                if self.require_host(index, conn) {
                    self.several_shares = several;
                    let by = self.seats[index].peer.clone();
                    self.broadcast(&ServerMessage::SharePolicy { several, by });
                }
            }
            ClientMessage::Lock | ClientMessage::Unlock => {
                if self.require_host(index, conn) {
                    self.locked = matches!(msg, ClientMessage::Lock);
                    let by = self.seats[index].peer.clone();
                    self.broadcast(&ServerMessage::RoomLocked { locked: self.locked, by });
                }
            }
            ClientMessage::Admit { peer } => {
                if self.require_host(index, conn) {
                    self.admit(conn, &peer);
                }
            }
            ClientMessage::Deny { peer } => {
                if self.require_host(index, conn) {
                    match self.take_knock(&peer) {
                        Some(knock) => {
                            self.close(knock.request.conn, ErrorCode::KnockDenied, "a host denied entry");
                        }
                        None => self.reject(conn, ErrorCode::PeerNotFound, "nobody knocks with that id"),
                    }
                }
            }
            ClientMessage::Remove { peer } => {
                if self.require_host(index, conn) {
                    self.remove(now, conn, &peer);
                }
            }
            ClientMessage::Leave => {
                let seat = self.seats.remove(index);
                self.outputs.push_back(Output::Close { conn, error: None });
                self.left(now, &seat.peer, LeaveReason::Left);
            }
            ClientMessage::Ping { nonce } => self.send(conn, &ServerMessage::Pong { nonce }),
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } => {
                self.reject(conn, ErrorCode::AlreadyJoined, "this connection already joined");
            }
        }
    }

    /// Grants or ends a seat's screen share: one at a time unless a host allowed several.
    fn share(&mut self, index: usize, conn: ConnId, on: bool) {
        if on && !self.several_shares {
            let others = self.seats.iter().enumerate().find(|(i, s)| *i != index && s.sharing);
            if let Some((_, sharer)) = others {
                let detail =
                    format!("{} is sharing; one share at a time (a host can allow more)", sharer.name);
                self.reject(conn, ErrorCode::ShareTaken, &detail);
                return;
            }
        }
        let seat = &mut self.seats[index];
        seat.sharing = on;
        let update = ServerMessage::PeerUpdated { peer: seat.participant() };
        self.broadcast(&update);
    }

    fn signal(&mut self, now: Instant, from_index: usize, conn: ConnId, to: &PeerId, payload: SignalPayload) {
        let from = self.seats[from_index].peer.clone();
        let Some(target) = self.seats.iter_mut().find(|s| &s.peer == to) else {
            self.reject(conn, ErrorCode::PeerNotFound, "no participant with that id in your room");
            return;
        };
        let seq = target.next_seq;
        target.next_seq = target.next_seq.saturating_add(1);
        let frame = encode(&ServerMessage::Signal { from, seq, payload });
        target.replay_bytes += frame.len();
        target.replay.push_back((seq, frame.clone(), now));
        while target.replay.len() > self.settings.replay_messages
            || (target.replay_bytes > self.settings.replay_bytes && target.replay.len() > 1)
        {
            if let Some((_, old, _)) = target.replay.pop_front() {
                target.replay_bytes -= old.len();
            }
        }
        if let Some(conn) = target.conn {
            self.outputs.push_back(Output::Send { conn, frame });
        }
    }

    fn admit(&mut self, host_conn: ConnId, peer: &PeerId) {
        if !self.knocks.iter().any(|k| &k.request.peer == peer) {
            self.reject(host_conn, ErrorCode::PeerNotFound, "nobody knocks with that id");
            return;
        }
        if self.seats.len() >= self.settings.capacity {
            let detail = format!("the room holds {} participants", self.settings.capacity);
            self.reject(host_conn, ErrorCode::RoomFull, &detail);
            return;
        }
        if let Some(knock) = self.take_knock(peer) {
            self.seat(knock.request, 1, Greeting::Joined);
        }
    }

    fn remove(&mut self, now: Instant, host_conn: ConnId, peer: &PeerId) {
        let Some(index) = self.seats.iter().position(|s| &s.peer == peer) else {
            self.reject(host_conn, ErrorCode::PeerNotFound, "no participant with that id in your room");
            return;
        };
        let seat = self.seats.remove(index);
        if let Some(conn) = seat.conn {
            self.close(conn, ErrorCode::Removed, "a host removed you from the room");
        }
        self.left(now, &seat.peer, LeaveReason::Removed);
    }

    /// A connection bound to this room went away (socket closed, dead, or too slow).
    pub(crate) fn disconnect(&mut self, now: Instant, conn: ConnId) {
        self.version += 1;
        if let Some(index) = self.seat_of(conn) {
            let seat = &mut self.seats[index];
            seat.conn = None;
            seat.disconnected_at = Some(now);
            let peer = seat.peer.clone();
            self.broadcast_except(&peer, &ServerMessage::PeerReconnecting { peer: peer.clone() });
        } else if let Some(index) = self.knocks.iter().position(|k| k.request.conn == conn) {
            let knock = self.knocks.remove(index);
            self.send_to_hosts(&ServerMessage::KnockEnded { peer: knock.request.peer });
            self.mark_if_empty(now);
        }
    }

    /// Gives up seats whose grace period is over and turns away knockers who waited too long.
    pub(crate) fn timeout(&mut self, now: Instant) {
        // Kept signals a connected client has read go (no change a snapshot holds).
        let keep_read = self.settings.keep_read;
        for seat in self.seats.iter_mut().filter(|s| s.conn.is_some()) {
            seat.give_up_kept(|(_, _, at)| now.saturating_duration_since(*at) >= keep_read);
        }
        let before = (self.seats.len(), self.knocks.len());
        let grace = self.settings.grace;
        while let Some(index) = self
            .seats
            .iter()
            .position(|s| s.disconnected_at.is_some_and(|t| now.saturating_duration_since(t) >= grace))
        {
            let seat = self.seats.remove(index);
            self.left(now, &seat.peer, LeaveReason::Timeout);
        }
        let wait = self.settings.knock_timeout;
        while let Some(index) =
            self.knocks.iter().position(|k| now.saturating_duration_since(k.since) >= wait)
        {
            let knock = self.knocks.remove(index);
            self.close(knock.request.conn, ErrorCode::KnockTimeout, "nobody admitted you in time");
            self.send_to_hosts(&ServerMessage::KnockEnded { peer: knock.request.peer });
        }
        if (self.seats.len(), self.knocks.len()) != before {
            self.version += 1;
        }
        self.mark_if_empty(now);
    }

    fn left(&mut self, now: Instant, peer: &PeerId, reason: LeaveReason) {
        if self.ended.len() == MAX_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back(peer.clone());
        self.broadcast(&ServerMessage::PeerLeft { peer: peer.clone(), reason });
        self.mark_if_empty(now);
    }

    fn mark_if_empty(&mut self, now: Instant) {
        if self.seats.is_empty() && self.knocks.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }

    fn take_knock(&mut self, peer: &PeerId) -> Option<Knock> {
        let index = self.knocks.iter().position(|k| &k.request.peer == peer)?;
        let knock = self.knocks.remove(index);
        self.send_to_hosts(&ServerMessage::KnockEnded { peer: peer.clone() });
        Some(knock)
    }

    fn require_host(&mut self, index: usize, conn: ConnId) -> bool {
        let is_host = self.seats[index].role == Role::Host;
        if !is_host {
            self.reject(
                conn,
                ErrorCode::RoleForbidden,
                "only a host may do this; your invite is a guest invite",
            );
        }
        is_host
    }

    fn seat_of(&self, conn: ConnId) -> Option<usize> {
        self.seats.iter().position(|s| s.conn == Some(conn))
    }

    fn participants_except(&self, peer: &PeerId) -> Vec<Participant> {
        self.seats.iter().filter(|s| &s.peer != peer).map(Seat::participant).collect()
    }

    fn knockers_for(&self, role: Role) -> Vec<Knocker> {
        if role != Role::Host {
            return Vec::new();
        }
        let knocker = |k: &Knock| Knocker { id: k.request.peer.clone(), name: k.request.name.clone() };
        self.knocks.iter().map(knocker).collect()
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMessage) {
        self.outputs.push_back(Output::Send { conn, frame: encode(msg) });
    }

    fn reject(&mut self, conn: ConnId, code: ErrorCode, detail: &str) {
        self.outputs.push_back(Output::Reject { conn, code, detail: detail.to_owned() });
    }

    fn close(&mut self, conn: ConnId, code: ErrorCode, detail: &str) {
        self.outputs.push_back(Output::Close { conn, error: Some((code, detail.to_owned())) });
    }

    fn send_to_hosts(&mut self, msg: &ServerMessage) {
        self.fan_out(msg, |seat| seat.role == Role::Host);
    }

    fn broadcast(&mut self, msg: &ServerMessage) {
        self.fan_out(msg, |_| true);
    }

    fn broadcast_except(&mut self, peer: &PeerId, msg: &ServerMessage) {
        self.fan_out(msg, |seat| &seat.peer != peer);
    }

    /// Sends one message, serialised once, to every connected seat `include` picks.
    fn fan_out(&mut self, msg: &ServerMessage, include: impl Fn(&Seat) -> bool) {
        let frame = encode(msg);
        for conn in self.seats.iter().filter(|s| include(s)).filter_map(|s| s.conn) {
            self.outputs.push_back(Output::Send { conn, frame: frame.clone() });
        }
    }
}

/// One encoded server message (JSON text), shared by every connection it goes to: a clone
/// is a reference count. Only [`encode`] makes one, so it always holds UTF-8. The room knows
/// nothing of how it travels (the delivery layer turns it into a WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame(bytes::Bytes);

impl Frame {
    /// The JSON text.
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Bytes of text.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn into_bytes(self) -> bytes::Bytes {
        self.0
    }
}

/// Serialises a message once; the frame is shared by every receiver.
pub(crate) fn encode(msg: &ServerMessage) -> Frame {
    // Serialising these types cannot fail: every map key is a string and no Serialize impl
    // returns an error. Should that ever change, the peer gets an `internal` error, not a panic.
    let text = serde_json::to_string(msg).unwrap_or_else(|_| {
        r#"{"type":"error","code":"internal","message":"encoding failed","fatal":false}"#.to_owned()
    });
    Frame(bytes::Bytes::from(text))
}

#[cfg(test)]
mod tests;
