//! One client's WebSocket, from upgrade to close: reads and validates its messages, enforces
//! its rate and its deadlines (join within 10 s, heartbeat), hands what it says to its room, and
//! writes what the room queues for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confer_proto::{ClientMessage, ErrorCode, RoomId, ServerMessage, decode_client};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{Instrument as _, debug, info_span};

use crate::bus::{Envelope, InstanceId};
use crate::cluster::Holder;
use crate::rate::TokenBucket;
use crate::room::{ConnId, JoinRequest, ResumeRequest, encode};
use crate::rooms::{self, ConnHandle, Ending, KillSwitch, Outbound, RoomCell, Route, lock};
use crate::state::Shared;
use crate::token::{InviteClaims, ResumeClaims, TokenError, new_peer_id, unix_now, unix_now_ms};

/// Frames written before a flush, at most, when the queue holds many.
const WRITE_BATCH: usize = 64;

/// Time allowed for the last words (a fatal error and a close frame) to a closing client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames read, at most, after a write failed, looking for the client's `leave`; and how long
/// each may take to arrive (they are already in the receive buffer, or they never come).
const LEFTOVER_FRAMES: usize = 16;
const LEFTOVER_WAIT: Duration = Duration::from_millis(20);

/// How a connection's loop ended.
enum Exit {
    /// The relay ends it (error, `leave`, or shutdown).
    Ending(Ending),
    /// The client closed it or the socket failed.
    Gone,
    /// A write failed: the client reset the connection, maybe with words of its own still unread.
    Broken,
}

/// Where a connection stands.
enum Membership {
    /// No `join` or `resume` yet.
    Fresh,
    /// Seated in (or knocking at) a room held here.
    Here { cell: Arc<RoomCell> },
    /// Seated in (or knocking at) a room held by another instance.
    There { room: RoomId, holder: InstanceId },
}

/// Serves one upgraded WebSocket until it closes.
pub(crate) async fn serve<S>(shared: Arc<Shared>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = shared.next_conn_id();
    // Room and peer are filled in on join or resume; ids are not secret, addresses and tokens
    // never go into a span.
    let span = info_span!("conn", id, room = tracing::field::Empty, peer = tracing::field::Empty);
    shared.metrics.connections_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.connections_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue);
    let handle = ConnHandle { tx, kill: Arc::new(KillSwitch::default()), queued_bytes: Default::default() };
    let mut conn = Conn {
        id,
        shared: Arc::clone(&shared),
        ws,
        rx,
        handle,
        membership: Membership::Fresh,
        bucket: TokenBucket::new(shared.config.message_rate, shared.config.message_burst, Instant::now()),
        dropped_in_a_row: 0,
        last_rate_error: None,
    };
    conn.run().instrument(span).await;
    shared.metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

struct Conn<S> {
    id: ConnId,
    shared: Arc<Shared>,
    ws: WebSocketStream<S>,
    rx: mpsc::Receiver<Outbound>,
    handle: ConnHandle,
    membership: Membership,
    bucket: TokenBucket,
    dropped_in_a_row: u32,
    last_rate_error: Option<Instant>,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        match &self.membership {
            Membership::Fresh => {}
            Membership::Here { cell } => {
                let mut inner = lock(cell);
                inner.room.disconnect(Instant::now(), self.id);
                inner.deliver(&self.shared.metrics, None);
                inner.detach(self.id);
            }
            Membership::There { room, holder } => {
                if let Some(cluster) = &self.shared.cluster {
                    cluster.remove_member(self.id);
                    cluster.outlet.send(*holder, &Envelope::Disconnect { room: room.clone(), conn: self.id });
                }
            }
        }
    }
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(&mut self) {
        let exit = self.main_loop().await;
        // A client that does not read (a slow consumer, say) must not hold the task: the last
        // words get a deadline.
        let last_words = async {
            match exit {
                Exit::Ending(Ending::Error(code, detail)) => {
                    debug!(%code, "closing connection");
                    if code == ErrorCode::ShuttingDown {
                        let after_ms = rand::random_range(0..2_000);
                        let reconnect = ServerMessage::Reconnect { after_ms };
                        let _ = self.ws.feed(rooms::text(encode(&reconnect))).await;
                    }
                    let fatal = ServerMessage::Error { code, message: detail, fatal: true };
                    let _ = self.ws.feed(rooms::text(encode(&fatal))).await;
                    let _ = self.ws.close(Some(close_frame(code))).await;
                    self.linger().await;
                }
                Exit::Ending(Ending::Normal) => {
                    let left = CloseFrame { code: CloseCode::Normal, reason: "left".into() };
                    let _ = self.ws.close(Some(left)).await;
                    self.linger().await;
                }
                Exit::Gone => debug!("connection gone"),
                Exit::Broken => {
                    debug!("connection broken");
                    self.heed_a_last_leave().await;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, last_words).await;
        // Leaving the room happens in `Drop`, so that it happens even if this task is aborted.
    }

    /// After a write failed. A client that sends `leave` and closes at once, with our messages
    /// unread, makes its kernel reset the connection; a write of ours then fails while its `leave`
    /// is still in our receive buffer (a reset does not take back bytes already received). Reads
    /// what is left (a few frames, briefly) and honours a `leave` among it: the seat ends as left,
    /// at once, instead of lingering as a dropped connection through the grace period.
    async fn heed_a_last_leave(&mut self) {
        for _ in 0..LEFTOVER_FRAMES {
            match tokio::time::timeout(LEFTOVER_WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if matches!(decode_client(text.as_str()), Ok(ClientMessage::Leave)) {
                        debug!("a leave read after the connection broke");
                        let _ = self.on_text(text.as_str(), Instant::now()).await;
                        return;
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) | Err(_) => return,
            }
        }
    }

    /// Closes gracefully after our close frame: FIN, then read and discard until the client
    /// closes too. Closing with unread bytes in the receive buffer (a client still sending, the
    /// rest of an oversized message) would send a TCP reset, and a reset can make the client's
    /// kernel drop the error and close frame before the client reads them.
    async fn linger(&mut self) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let io = self.ws.get_mut();
        let _ = io.shutdown().await;
        // On the heap, and only now: a buffer held across `.await` in this future would be part
        // of every connection task's size, idle or not.
        let mut sink = vec![0u8; 4096];
        while let Ok(1..) = io.read(&mut sink).await {}
    }

    async fn main_loop(&mut self) -> Exit {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let auth_deadline = tokio::time::sleep(config.auth_timeout);
        tokio::pin!(auth_deadline);
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        let heartbeat = tokio::time::sleep(config.heartbeat_interval);
        tokio::pin!(heartbeat);
        let kill = Arc::clone(&self.handle.kill);
        loop {
            tokio::select! {
                biased;
                ending = kill.killed() => return Exit::Ending(ending),
                () = shared.shutdown.cancelled() => {
                    return Exit::Ending(Ending::Error(ErrorCode::ShuttingDown, "the relay is restarting: reconnect and resume".into()));
                }
                // Deadlines before reads: a client that keeps the socket busy must not starve them.
                () = &mut heartbeat => {
                    let now = Instant::now();
                    if now.duration_since(last_heard) >= config.heartbeat_timeout {
                        return Exit::Ending(Ending::Error(ErrorCode::HeartbeatTimeout, "nothing heard for too long".into()));
                    }
                    if now.duration_since(last_ping) >= config.heartbeat_interval {
                        self.queue(Message::Ping(Default::default()));
                        last_ping = now;
                    }
                    let next = (last_heard + config.heartbeat_timeout).min(last_ping + config.heartbeat_interval);
                    heartbeat.as_mut().reset(next.max(now + Duration::from_millis(10)).into());
                }
                () = &mut auth_deadline, if matches!(self.membership, Membership::Fresh) => {
                    return Exit::Ending(Ending::Error(ErrorCode::AuthTimeout, "send join or resume within 10 s of connecting".into()));
                }
                out = self.rx.recv() => {
                    // The sender half lives in `self.handle`, so the queue never closes here.
                    let Some(out) = out else { return Exit::Gone };
                    // A write blocks while the client does not read; the kill switch (a full
                    // queue, a removal) and the heartbeat deadline must still get through.
                    tokio::select! {
                        biased;
                        ending = kill.killed() => return Exit::Ending(ending),
                        () = tokio::time::sleep(config.heartbeat_timeout) => {
                            return fatal(ErrorCode::HeartbeatTimeout, "a write made no progress for too long");
                        }
                        written = self.write(out) => match written {
                            Ok(()) => {}
                            // tungstenite's own buffer (1 MiB) is full as well: same verdict.
                            Err(tungstenite::Error::WriteBufferFull(_)) => {
                                self.shared.metrics.reject(ErrorCode::SlowConsumer);
                                return fatal(ErrorCode::SlowConsumer, "you did not read your messages fast enough");
                            }
                            Err(_) => return Exit::Broken,
                        },
                    }
                }
                frame = self.ws.next() => {
                    last_heard = Instant::now();
                    // Every data frame counts against the rate, pings (which make us write a
                    // pong) and binary frames included.
                    if let Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_))) = &frame {
                        self.shared.metrics.messages_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if !self.bucket.try_take(last_heard) {
                            if let Some(exit) = self.rate_limited(last_heard) {
                                return exit;
                            }
                            continue;
                        }
                        self.dropped_in_a_row = 0;
                    }
                    match frame {
                        None => return Exit::Gone,
                        Some(Err(err)) => return read_error(&err),
                        Some(Ok(Message::Text(text))) => {
                            if let Some(exit) = self.on_text(text.as_str(), last_heard).await {
                                return exit;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.reply_error(ErrorCode::BinaryNotSupported, "the protocol is JSON text only".into());
                        }
                        Some(Ok(Message::Close(_))) => return Exit::Gone,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    }
                }
            }
        }
    }

    /// Writes one queued frame, and whatever else is queued, then flushes once.
    async fn write(&mut self, first: Outbound) -> Result<(), tungstenite::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            self.handle.queued_bytes.fetch_sub(out.len(), std::sync::atomic::Ordering::Relaxed);
            self.ws.feed(out.message).await?;
            self.shared.metrics.frames_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(received) = out.received {
                self.shared.metrics.forwarded(received.elapsed());
            }
            written += 1;
            if written < WRITE_BATCH {
                next = self.rx.try_recv().ok();
            }
        }
        self.ws.flush().await
    }

    /// Queues a message for this client, behind what its room queued before.
    fn queue(&self, message: Message) {
        self.handle.push(Outbound { message, received: None }, &self.shared.metrics);
    }

    /// Tells this client a message of its was refused.
    fn reply_error(&self, code: ErrorCode, message: String) {
        self.shared.metrics.reject(code);
        self.queue(rooms::text(encode(&ServerMessage::Error { code, message, fatal: false })));
    }

    async fn on_text(&mut self, text: &str, now: Instant) -> Option<Exit> {
        let msg = match decode_client(text) {
            Ok(msg) => msg,
            Err(err) => {
                self.reply_error(err.code, err.detail);
                return None;
            }
        };
        match (&self.membership, msg) {
            (_, ClientMessage::Ping { nonce }) => {
                self.queue(rooms::text(encode(&ServerMessage::Pong { nonce })));
                None
            }
            (Membership::Fresh, ClientMessage::Join { room, token, name, muted, camera }) => {
                self.join(now, &room, &token, name, muted, camera).await
            }
            (Membership::Fresh, ClientMessage::Resume { token, last_seq, name, muted, camera }) => {
                self.resume(now, &token, last_seq, name, muted, camera).await
            }
            (Membership::Fresh, _) => {
                self.reply_error(ErrorCode::NotJoined, "send join or resume first".into());
                None
            }
            (
                Membership::Here { .. } | Membership::There { .. },
                ClientMessage::Join { .. } | ClientMessage::Resume { .. },
            ) => {
                self.reply_error(ErrorCode::AlreadyJoined, "this connection already joined".into());
                None
            }
            (Membership::There { room, holder }, message) => {
                if matches!(message, ClientMessage::Signal { .. }) {
                    self.shared.metrics.signals_relayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let envelope = Envelope::Message { room: room.clone(), conn: self.id, message };
                self.pass_on(*holder, &envelope)
            }
            (Membership::Here { cell }, msg) => {
                let received = matches!(msg, ClientMessage::Signal { .. }).then_some(now);
                if received.is_some() {
                    self.shared.metrics.signals_relayed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut inner = lock(cell);
                // The room was handed to another instance (this one drains or lost it): what
                // the client says now belongs there.
                if inner.is_closed() {
                    return Some(fatal(ErrorCode::ShuttingDown, "your room moved: reconnect and resume"));
                }
                inner.room.message(now, self.id, msg);
                inner.deliver(&self.shared.metrics, received);
                None
            }
        }
    }

    /// Drops a message over the rate; tells the client at most once a second; closes a
    /// connection that keeps going far over it.
    fn rate_limited(&mut self, now: Instant) -> Option<Exit> {
        self.dropped_in_a_row += 1;
        if self.dropped_in_a_row > 4 * self.shared.config.message_burst.max(25) {
            return Some(Exit::Ending(Ending::Error(ErrorCode::RateLimited, "far too many messages".into())));
        }
        if self.last_rate_error.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            self.last_rate_error = Some(now);
            let detail =
                format!("more than {} messages per second: dropped", self.shared.config.message_rate);
            self.reply_error(ErrorCode::RateLimited, detail);
        } else {
            self.shared.metrics.reject(ErrorCode::RateLimited);
        }
        None
    }

    async fn join(
        &mut self,
        now: Instant,
        room: &RoomId,
        token: &str,
        name: String,
        muted: bool,
        camera: bool,
    ) -> Option<Exit> {
        let claims = match InviteClaims::verify(&self.shared.config.token_key, token, unix_now()) {
            Ok(claims) => claims,
            Err(err) => return Some(token_refused(err)),
        };
        if &claims.room != room {
            return Some(fatal(ErrorCode::TokenWrongRoom, "this invite is for another room"));
        }
        let peer = new_peer_id();
        tracing::Span::current().record("room", room.as_str()).record("peer", peer.as_str());
        let request = JoinRequest {
            conn: self.id,
            welcome: self.shared.welcome(room, &peer, claims.role),
            peer,
            role: claims.role,
            name,
            muted,
            camera,
        };
        if self.shared.stopping.is_cancelled() {
            return Some(restarting());
        }
        let (holder, _opening) = self.shared.holder(room).await;
        let (took_over_at_ms, mut snapshot) = match holder {
            Ok(Holder::Here { took_over_at_ms, snapshot }) => (took_over_at_ms, snapshot),
            Ok(Holder::There(holder)) => {
                let envelope = Envelope::Join {
                    room: room.clone(),
                    conn: self.id,
                    waiting_room: claims.waiting_room,
                    request,
                };
                return self.seat_there(room, holder, &envelope);
            }
            Err(_) => return Some(no_shared_state()),
        };
        loop {
            let Some(cell) = self.shared.rooms.get_or_create(
                room,
                claims.waiting_room,
                now,
                took_over_at_ms,
                snapshot.take(),
            ) else {
                return Some(relay_busy());
            };
            let mut inner = lock(&cell);
            if inner.is_closed() {
                // Dropped as empty since we looked: look again. Handed over (draining): go.
                if self.shared.stopping.is_cancelled() {
                    return Some(restarting());
                }
                continue;
            }
            inner.attach(self.id, Route::Here(self.handle.clone()));
            inner.room.require_waiting_room(claims.waiting_room);
            inner.room.join(now, request);
            inner.deliver(&self.shared.metrics, None);
            drop(inner);
            self.membership = Membership::Here { cell };
            return None;
        }
    }

    /// Seats this client in a room another instance holds: what the holder sends it comes back
    /// through the cluster.
    fn seat_there(&mut self, room: &RoomId, holder: InstanceId, envelope: &Envelope) -> Option<Exit> {
        let cluster = self.shared.cluster.as_ref()?;
        cluster.add_member(self.id, self.handle.clone(), holder);
        self.membership = Membership::There { room: room.clone(), holder };
        self.pass_on(holder, envelope)
    }

    /// Sends what this client said to the instance holding its room. If it cannot leave (the
    /// outbox is full), the client is told to reconnect and resume, and says it again then.
    fn pass_on(&self, holder: InstanceId, envelope: &Envelope) -> Option<Exit> {
        let cluster = self.shared.cluster.as_ref()?;
        if cluster.outlet.send(holder, envelope) {
            return None;
        }
        Some(fatal(ErrorCode::ShuttingDown, "the relay could not pass your message on: reconnect and resume"))
    }

    async fn resume(
        &mut self,
        now: Instant,
        token: &str,
        last_seq: u64,
        name: Option<String>,
        muted: bool,
        camera: bool,
    ) -> Option<Exit> {
        let claims = match ResumeClaims::verify(&self.shared.config.token_key, token, unix_now()) {
            Ok(claims) => claims,
            Err(err) => return Some(token_refused(err)),
        };
        tracing::Span::current().record("room", claims.room.as_str()).record("peer", claims.peer.as_str());
        let mut request = ResumeRequest {
            conn: self.id,
            welcome: self.shared.welcome(&claims.room, &claims.peer, claims.role),
            peer: claims.peer.clone(),
            role: claims.role,
            last_seq,
            token_issued_ms: claims.issued_ms,
            name,
            muted,
            camera,
            may_recreate: false,
        };
        if self.shared.stopping.is_cancelled() {
            return Some(restarting());
        }
        let (holder, _opening) = self.shared.holder(&claims.room).await;
        let (took_over_at_ms, mut snapshot) = match holder {
            Ok(Holder::Here { took_over_at_ms, snapshot }) => (took_over_at_ms, snapshot),
            Ok(Holder::There(holder)) => {
                // The holder decides whether a seat it has no record of may be rebuilt.
                let envelope = Envelope::Resume { room: claims.room.clone(), conn: self.id, request };
                return self.seat_there(&claims.room, holder, &envelope);
            }
            Err(_) => return Some(no_shared_state()),
        };
        // A seat this relay has no record of may be rebuilt only if the relay lost it after the
        // token was issued: a restart (or, in a cluster, the room's holder stopping and this
        // instance taking over). Otherwise it ended (grace over, removed, left).
        let since_ms = took_over_at_ms
            .or_else(|| self.shared.rooms.get(&claims.room).and_then(|cell| lock(&cell).rebuild_since_ms));
        let may_recreate = self.shared.may_rebuild(since_ms, claims.issued_ms, unix_now_ms());
        request.may_recreate = may_recreate;
        loop {
            // A room handed over by a holder that drained comes back whole.
            let cell = if may_recreate || snapshot.is_some() {
                match self.shared.rooms.get_or_create(
                    &claims.room,
                    false,
                    now,
                    took_over_at_ms,
                    snapshot.take(),
                ) {
                    Some(cell) => cell,
                    None => return Some(relay_busy()),
                }
            } else {
                match self.shared.rooms.get(&claims.room) {
                    Some(cell) => cell,
                    None => return Some(fatal(ErrorCode::ResumeFailed, "the seat is gone: join again")),
                }
            };
            let mut inner = lock(&cell);
            if inner.is_closed() {
                // Dropped as empty since we looked: look again. Handed over (draining): go.
                if self.shared.stopping.is_cancelled() {
                    return Some(restarting());
                }
                continue;
            }
            inner.attach(self.id, Route::Here(self.handle.clone()));
            inner.room.resume(request);
            inner.deliver(&self.shared.metrics, None);
            drop(inner);
            self.membership = Membership::Here { cell };
            return None;
        }
    }
}

fn fatal(code: ErrorCode, detail: &str) -> Exit {
    Exit::Ending(Ending::Error(code, detail.to_owned()))
}

fn restarting() -> Exit {
    fatal(ErrorCode::ShuttingDown, "the relay is restarting: reconnect and resume")
}

fn no_shared_state() -> Exit {
    fatal(ErrorCode::ShuttingDown, "the relay cannot reach its shared state right now: reconnect and resume")
}

fn relay_busy() -> Exit {
    fatal(ErrorCode::RelayBusy, "the relay cannot open more rooms right now: try again later")
}

fn token_refused(err: TokenError) -> Exit {
    match err {
        TokenError::Invalid => fatal(ErrorCode::TokenInvalid, "the token is not one this relay issued"),
        TokenError::Expired => fatal(ErrorCode::TokenExpired, "the token has expired: ask for a new link"),
    }
}

/// A read error: an oversized message gets its documented code; anything else means the socket
/// is gone.
fn read_error(err: &tungstenite::Error) -> Exit {
    match err {
        tungstenite::Error::Capacity(_) => {
            let detail =
                format!("a message may be at most {} bytes", confer_proto::limits::MAX_MESSAGE_BYTES);
            Exit::Ending(Ending::Error(ErrorCode::MessageTooLarge, detail))
        }
        tungstenite::Error::Utf8(_) => fatal(ErrorCode::MalformedJson, "a text message was not UTF-8"),
        _ => Exit::Gone,
    }
}

fn close_frame(code: ErrorCode) -> CloseFrame {
    CloseFrame { code: CloseCode::from(code.close_code()), reason: code.as_str().into() }
}
