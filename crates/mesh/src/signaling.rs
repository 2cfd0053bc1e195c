//! The signaling client: one WSS connection to the relay, speaking docs/PROTOCOL.md, that
//! survives the relay. When the connection drops (or the relay says `reconnect`), it comes back
//! with back-off and jitter and resumes the seat, replaying the signals it missed; only a refusal
//! or a lost seat ends it.
//!
//! Failures are told apart: [`JoinError::RelayUnreachable`] (no connection, TLS or WebSocket
//! upgrade failed), [`JoinError::Refused`] (the relay answered with an error code), and
//! [`JoinError::Protocol`] (the relay answered something this client does not understand).

use std::time::Duration;

use confer_proto::{
    ClientMessage, ErrorCode, InviteLink, Knocker, LeaveReason, Participant, PeerId, Role, RoomId,
    SUBPROTOCOL, ServerMessage, SignalPayload, decode_server,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::decide::Backoff;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay may take to answer `join` or `resume`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaving waits for the relay to close the connection.
const LEAVE_WAIT: Duration = Duration::from_secs(1);
/// The relay pings every 5 s: this long without hearing anything means the connection is dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// No connection to the relay: refused, unreachable, timed out, TLS or pin mismatch, or the
    /// WebSocket upgrade was refused.
    #[error("the relay at {relay} is unreachable: {reason}")]
    RelayUnreachable {
        /// The relay's origin.
        relay: String,
        /// What failed.
        reason: String,
    },
    /// The relay refused, with a stable code (docs/PROTOCOL.md section 9).
    #[error("the relay refused: {code} ({message})")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// The relay's explanation (for logs).
        message: String,
    },
    /// The relay answered something this client does not understand.
    #[error("the relay broke the protocol: {0}")]
    Protocol(String),
}

/// Who and how to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    /// Display name.
    pub name: String,
    /// Joining muted.
    pub muted: bool,
    /// Joining with the camera on.
    pub camera: bool,
    /// How long to keep trying to get back to the relay after losing it before giving up.
    pub reconnect_for: Duration,
}

impl JoinOptions {
    /// Joining as `name`, unmuted, camera on, trying to get back for up to a minute.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), muted: false, camera: true, reconnect_for: Duration::from_secs(60) }
    }
}

/// A seat in a room, as `joined` or `resumed` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// This participant's id.
    pub peer_id: PeerId,
    /// The room.
    pub room: RoomId,
    /// Host or guest.
    pub role: Role,
    /// Everyone else.
    pub participants: Vec<Participant>,
    /// STUN and TURN servers for the peer connections, parsed (malformed URLs set aside).
    pub ice_servers: crate::ice::IceRoutes,
    /// Whether guests must knock.
    pub locked: bool,
    /// Waiting knockers (hosts only).
    pub knocking: Vec<Knocker>,
}

/// What happens on the signaling channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalingEvent {
    /// Seated after knocking.
    Admitted(Session),
    /// Someone joined.
    PeerJoined(Participant),
    /// Someone left, was removed, or timed out.
    PeerLeft {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's connection to the relay dropped; their seat (and likely their media) remains.
    PeerReconnecting(PeerId),
    /// Someone is back.
    PeerResumed(Participant),
    /// Someone changed name, mute, camera or hand.
    PeerUpdated(Participant),
    /// A signal from another member.
    Signal {
        /// From whom.
        from: PeerId,
        /// What.
        payload: SignalPayload,
    },
    /// The room was locked or unlocked.
    RoomLocked {
        /// Locked now.
        locked: bool,
        /// By whom.
        by: PeerId,
    },
    /// A host changed how many may share a screen at once.
    SharePolicy {
        /// Several at once (else one).
        several: bool,
    },
    /// Someone knocks (hosts only).
    Knock(Knocker),
    /// A knock ended (hosts only).
    KnockEnded(PeerId),
    /// The connection to the relay dropped; trying again (attempt n, and why it dropped).
    Reconnecting {
        /// Attempts so far.
        attempt: u32,
        /// Why the connection was lost.
        cause: String,
    },
    /// Back in the room. With `gap`, signals were lost: renegotiate with every peer.
    Resumed {
        /// The seat as the relay now sees it.
        session: Session,
        /// Signals were lost while away.
        gap: bool,
    },
    /// A non-fatal error from the relay (e.g. `rate_limited`, `peer_not_found`).
    Error {
        /// Its code.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// Signaling is over: left, refused, or the relay could not be reached again in time.
    Ended(Option<JoinError>),
}

/// How the first answer to `join` turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Seated.
    Joined(Session),
    /// Waiting for a host; [`SignalingEvent::Admitted`] follows if one admits.
    Knocking {
        /// This participant's id while knocking (kept when admitted).
        peer_id: PeerId,
    },
}

#[derive(Debug)]
enum Command {
    Send(ClientMessage),
    /// The machine's addresses now.
    NetworkChanged(std::collections::BTreeSet<std::net::IpAddr>),
    Leave,
}

/// A handle to the signaling connection; cheap to clone. Sending never waits for the network.
#[derive(Debug, Clone)]
pub struct Signaling {
    commands: mpsc::UnboundedSender<Command>,
}

impl Signaling {
    /// Sends a signal to a member.
    pub fn signal(&self, to: PeerId, payload: SignalPayload) {
        self.send(ClientMessage::Signal { to, payload });
    }

    /// Sends any client message (updates and host actions). `join`, `resume` and `leave` are
    /// the client's own business and are ignored here.
    pub fn send(&self, message: ClientMessage) {
        if !matches!(
            message,
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } | ClientMessage::Leave
        ) {
            let _ = self.commands.send(Command::Send(message));
        }
    }

    /// The machine's addresses are now `addresses`: if the connection's own address is gone (the
    /// laptop left that network), the connection is dead though no error says so yet; get back to
    /// the relay from the new address now instead of after `SILENCE_TIMEOUT`. Messages sent after
    /// this go on the new connection.
    pub fn network_changed(&self, addresses: std::collections::BTreeSet<std::net::IpAddr>) {
        let _ = self.commands.send(Command::NetworkChanged(addresses));
    }

    /// Leaves the room for good.
    pub fn leave(&self) {
        let _ = self.commands.send(Command::Leave);
    }
}

/// Joins the room of `link`. Returns once the relay has answered: seated or knocking. Events
/// (presence, signals, reconnections) arrive on the receiver until [`SignalingEvent::Ended`].
pub async fn join(
    link: &InviteLink,
    options: JoinOptions,
) -> Result<(Signaling, Admission, mpsc::Receiver<SignalingEvent>), JoinError> {
    let join = ClientMessage::Join {
        room: link.room.clone(),
        token: link.token.clone(),
        name: options.name.clone(),
        muted: options.muted,
        camera: options.camera,
    };
    let (socket, answer) = first_join(link, &join).await?;
    let (admission, resume_token) = match session_of(answer) {
        Ok(Admitted { session, resume_token, resumed: false, .. }) => {
            crate::tls::trust_relay_turn(link, &session.ice_servers);
            (Admission::Joined(session), Some(resume_token))
        }
        Ok(Admitted { .. }) => {
            return Err(JoinError::Protocol("expected joined or knocking, got resumed".into()));
        }
        Err(ServerMessage::Knocking { peer_id }) => (Admission::Knocking { peer_id }, None),
        Err(other) => return Err(JoinError::Protocol(format!("expected joined or knocking, got {other:?}"))),
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::channel(crate::queues::SIGNALING);
    let client = Client {
        link: link.clone(),
        options,
        resume_token,
        last_seq: 0,
        events: event_tx,
        commands: command_rx,
        backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(5), seed()),
    };
    tokio::spawn(client.run(socket));
    Ok((Signaling { commands }, admission, events))
}

/// How long to pause before each new try of a first join that met a relay going away: one draining
/// for an upgrade (`shutting_down`), or one a load balancer handed the connection to as it closed.
/// Another instance (or the same one, restarted) takes the join a moment later; anything else
/// (refused, unreachable, no answer, a certificate that is not the link's) is reported at once.
const JOIN_RETRY_PAUSES: [Duration; 3] =
    [Duration::from_millis(200), Duration::from_millis(500), Duration::from_millis(1_000)];

/// Connects, sends `join` and reads the answer, trying again (see [`JOIN_RETRY_PAUSES`]) while
/// the relay went away mid-way.
async fn first_join(link: &InviteLink, join: &ClientMessage) -> Result<(Socket, ServerMessage), JoinError> {
    let mut pauses = JOIN_RETRY_PAUSES.iter();
    loop {
        let failed = match try_join(link, join).await {
            Ok(joined) => return Ok(joined),
            Err(failed) => failed,
        };
        let Some(pause) = pauses.next().filter(|_| failed.went_away) else { return Err(failed.error) };
        tracing::info!(error = %failed.error, "the relay went away during the join; trying again");
        tokio::time::sleep(*pause).await;
    }
}

async fn try_join(link: &InviteLink, join: &ClientMessage) -> Result<(Socket, ServerMessage), Failed> {
    let mut socket = connect_once(link).await?;
    send(&mut socket, join)
        .await
        .map_err(|reason| Failed { error: unreachable_error(link, reason), went_away: true })?;
    let answer = first_answer(&mut socket).await?;
    Ok((socket, answer))
}

/// A try that failed, and whether because the relay went away mid-way (worth another try).
#[derive(Debug)]
struct Failed {
    error: JoinError,
    went_away: bool,
}

impl From<Failed> for JoinError {
    fn from(failed: Failed) -> Self {
        failed.error
    }
}

/// Whether a connection error means the other end closed on us mid-way (rather than refusing,
/// not answering or not being the relay the link names).
fn closed_midway(err: &tungstenite::Error) -> bool {
    use std::io::ErrorKind;
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe
        ),
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::HandshakeIncomplete,
        ) => true,
        _ => false,
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

fn unreachable_error(link: &InviteLink, reason: impl Into<String>) -> JoinError {
    JoinError::RelayUnreachable { relay: link.relay.clone(), reason: reason.into() }
}

async fn connect(link: &InviteLink) -> Result<Socket, JoinError> {
    Ok(connect_once(link).await?)
}

async fn connect_once(link: &InviteLink) -> Result<Socket, Failed> {
    let final_error = |error| Failed { error, went_away: false };
    let mut request = link
        .ws_url()
        .into_client_request()
        .map_err(|e| final_error(JoinError::Protocol(format!("bad relay URL: {e}"))))?;
    let protocol =
        SUBPROTOCOL.parse().map_err(|_| final_error(JoinError::Protocol("subprotocol header".into())))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol);
    let connector = if link.relay.starts_with("wss://") {
        Connector::Rustls(crate::tls::client_config(link.fingerprint))
    } else {
        Connector::Plain
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(confer_proto::limits::MAX_MESSAGE_BYTES);
    config.max_frame_size = Some(confer_proto::limits::MAX_MESSAGE_BYTES);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(err)) => {
            Err(Failed { error: unreachable_error(link, describe(&err)), went_away: closed_midway(&err) })
        }
        Err(_) => Err(final_error(unreachable_error(
            link,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

/// A connection error in words a person can act on.
fn describe(err: &tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Io(io) => {
            match io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(reason)) => {
                    format!("TLS: the relay's certificate is not the one the link names ({reason:?})")
                }
                Some(tls) => format!("TLS: {tls}"),
                None => format!("network: {io}"),
            }
        }
        tungstenite::Error::Tls(tls) => format!("TLS: {tls} (is the link's certificate pin right?)"),
        tungstenite::Error::Http(response) => {
            format!("the WebSocket upgrade was refused with HTTP {}", response.status())
        }
        other => other.to_string(),
    }
}

async fn send(socket: &mut Socket, message: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
    socket.send(Message::text(text)).await.map_err(|e| describe(&e))
}

/// Reads the relay's answer to `join` or `resume`: the first message that is not a pong. A relay
/// that closes without answering, or answers `shutting_down`, went away mid-way.
async fn first_answer(socket: &mut Socket) -> Result<ServerMessage, Failed> {
    let gone = |error| Failed { error, went_away: true };
    let answer = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match decode_server(text.as_str()) {
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        let went_away = code == ErrorCode::ShuttingDown;
                        return Err(Failed { error: JoinError::Refused { code, message }, went_away });
                    }
                    // A relay that must let go of us before answering (it is restarting, or the
                    // relay holding the room stopped) says when to come back, then
                    // `shutting_down` follows: that is the answer.
                    Ok(ServerMessage::Pong { .. } | ServerMessage::Reconnect { .. }) => {}
                    Ok(message) => return Ok(message),
                    Err(err) => {
                        return Err(Failed { error: JoinError::Protocol(err.to_string()), went_away: false });
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame.and_then(|f| ErrorCode::from_name(&f.reason)) {
                        Some(code) => Failed {
                            error: JoinError::Refused { code, message: "closed by the relay".into() },
                            went_away: code == ErrorCode::ShuttingDown,
                        },
                        None => gone(JoinError::Protocol(
                            "the relay closed the connection without answering".into(),
                        )),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(gone(JoinError::Protocol(describe(&err)))),
                None => {
                    return Err(gone(JoinError::Protocol(
                        "the relay closed the connection without answering".into(),
                    )));
                }
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer).await.unwrap_or_else(|_| {
        let error = JoinError::Protocol(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()));
        Err(Failed { error, went_away: false })
    })
}

/// Why one connection ended.
/// The local address of the connection to the relay.
fn local_ip(socket: &Socket) -> Option<std::net::IpAddr> {
    let tcp = match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp,
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
        _ => return None,
    };
    tcp.local_addr().ok().map(|a| a.ip())
}

enum Drop {
    /// Lost: try to get back (after this long at the least).
    Lost { cause: String, wait: Duration },
    /// Over for good.
    Ended(Option<JoinError>),
}

struct Client {
    link: InviteLink,
    options: JoinOptions,
    /// The newest resume token; `None` while knocking.
    resume_token: Option<String>,
    last_seq: u64,
    events: mpsc::Sender<SignalingEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    backoff: Backoff,
}

impl Client {
    async fn run(mut self, socket: Socket) {
        let mut socket = socket;
        loop {
            let (cause, wait) = match self.serve(&mut socket).await {
                Drop::Ended(reason) => {
                    let _ = socket.close(None).await;
                    let _ = self.events.send(SignalingEvent::Ended(reason)).await;
                    return;
                }
                Drop::Lost { cause, wait } => (cause, wait),
            };
            match self.come_back(cause, wait).await {
                Ok(new_socket) => socket = new_socket,
                Err(reason) => {
                    let _ = self.events.send(SignalingEvent::Ended(Some(reason))).await;
                    return;
                }
            }
        }
    }

    /// Gets back to the relay and resumes the seat, trying until `reconnect_for` has passed.
    async fn come_back(&mut self, cause: String, first_wait: Duration) -> Result<Socket, JoinError> {
        let Some(token) = self.resume_token.clone() else {
            // A knocker has no seat to resume.
            return Err(unreachable_error(&self.link, cause));
        };
        let deadline = tokio::time::Instant::now() + self.options.reconnect_for;
        let mut wait = first_wait;
        let mut last_reason = cause.clone();
        loop {
            let _ = self
                .events
                .send(SignalingEvent::Reconnecting {
                    attempt: self.backoff.attempt() + 1,
                    cause: last_reason.clone(),
                })
                .await;
            tokio::time::sleep(wait.max(self.backoff.next_delay())).await;
            wait = Duration::ZERO;
            if tokio::time::Instant::now() > deadline {
                return Err(unreachable_error(
                    &self.link,
                    format!(
                        "could not get back for {} s: {last_reason}",
                        self.options.reconnect_for.as_secs()
                    ),
                ));
            }
            let mut socket = match connect(&self.link).await {
                Ok(socket) => socket,
                Err(JoinError::RelayUnreachable { reason, .. }) => {
                    last_reason = reason;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let resume = ClientMessage::Resume {
                token: token.clone(),
                last_seq: self.last_seq,
                name: Some(self.options.name.clone()),
                muted: self.options.muted,
                camera: self.options.camera,
            };
            if let Err(reason) = send(&mut socket, &resume).await {
                last_reason = reason;
                continue;
            }
            match first_answer(&mut socket).await.map_err(JoinError::from).map(session_of) {
                Ok(Ok(Admitted { session, resume_token, gap, resumed: true })) => {
                    self.resume_token = Some(resume_token);
                    self.backoff.reset();
                    let _ = self.events.send(SignalingEvent::Resumed { session, gap }).await;
                    return Ok(socket);
                }
                Ok(Ok(Admitted { .. })) => {
                    return Err(JoinError::Protocol("expected resumed, got joined".into()));
                }
                Ok(Err(other)) => {
                    return Err(JoinError::Protocol(format!("expected resumed, got {other:?}")));
                }
                // The relay is there but still starting or shutting down: try again.
                Err(JoinError::Refused { code: ErrorCode::ShuttingDown, message }) => last_reason = message,
                Err(JoinError::Protocol(reason)) => last_reason = reason,
                Err(refused) => return Err(refused),
            }
        }
    }

    /// Serves one connection until it drops or signaling ends.
    async fn serve(&mut self, socket: &mut Socket) -> Drop {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Send(message)) => {
                        self.remember(&message);
                        if let Err(cause) = send(socket, &message).await {
                            return Drop::Lost { cause, wait: Duration::ZERO };
                        }
                    }
                    Some(Command::NetworkChanged(addresses)) => {
                        if let Some(ip) = local_ip(socket)
                            && !addresses.contains(&ip)
                        {
                            let cause = format!("the network changed: this connection's address {ip} is gone");
                            return Drop::Lost { cause, wait: Duration::ZERO };
                        }
                    }
                    Some(Command::Leave) | None => {
                        let _ = send(socket, &ClientMessage::Leave).await;
                        // The relay answers with its close: read until then (briefly), so that
                        // the socket closes cleanly rather than with a reset, which could take
                        // our `leave` with it and leave our seat "reconnecting" for the others.
                        let _ = tokio::time::timeout(LEAVE_WAIT, async {
                            while let Some(Ok(_)) = socket.next().await {}
                        })
                        .await;
                        return Drop::Ended(None);
                    }
                },
                incoming = tokio::time::timeout(SILENCE_TIMEOUT, socket.next()) => match incoming {
                    Err(_) => return Drop::Lost { cause: format!("nothing heard from the relay for {} s", SILENCE_TIMEOUT.as_secs()), wait: Duration::ZERO },
                    Ok(None) => return Drop::Lost { cause: "the connection closed".into(), wait: Duration::ZERO },
                    Ok(Some(Err(err))) => return Drop::Lost { cause: describe(&err), wait: Duration::ZERO },
                    Ok(Some(Ok(Message::Text(text)))) => match decode_server(text.as_str()) {
                        Ok(message) => {
                            if let Some(end) = self.handle(message).await {
                                return end;
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "ignoring a message from the relay"),
                    },
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        let code = frame.as_ref().and_then(|f| ErrorCode::from_name(&f.reason));
                        return match code {
                            Some(code) if is_final(code) => Drop::Ended(Some(JoinError::Refused { code, message: "closed by the relay".into() })),
                            _ => Drop::Lost { cause: "the relay closed the connection".into(), wait: Duration::ZERO },
                        };
                    }
                    Ok(Some(Ok(_))) => {}
                },
            }
        }
    }

    /// Keeps what a resume must repeat (name, mute, camera).
    fn remember(&mut self, message: &ClientMessage) {
        if let ClientMessage::Update { name, muted, camera, .. } = message {
            if let Some(name) = name {
                self.options.name.clone_from(name);
            }
            if let Some(muted) = muted {
                self.options.muted = *muted;
            }
            if let Some(camera) = camera {
                self.options.camera = *camera;
            }
        }
    }

    /// Turns one relay message into events; returns how the connection ends, if it does.
    async fn handle(&mut self, message: ServerMessage) -> Option<Drop> {
        // `joined` arrives here when a host admits a knocker; `resumed` only answers a resume.
        let message = match session_of(message) {
            Ok(Admitted { session, resume_token, resumed: false, .. }) => {
                crate::tls::trust_relay_turn(&self.link, &session.ice_servers);
                self.resume_token = Some(resume_token);
                let _ = self.events.send(SignalingEvent::Admitted(session)).await;
                return None;
            }
            Ok(Admitted { resumed: true, .. }) => return None,
            Err(message) => message,
        };
        let mut signal_seq = None;
        let event = match message {
            ServerMessage::Signal { from, seq, payload } => {
                // A resume replays what came after last_seq; anything older is a duplicate.
                if seq <= self.last_seq {
                    return None;
                }
                signal_seq = Some(seq);
                SignalingEvent::Signal { from, payload }
            }
            ServerMessage::PeerJoined { peer } => SignalingEvent::PeerJoined(peer),
            ServerMessage::PeerLeft { peer, reason } => SignalingEvent::PeerLeft { peer, reason },
            ServerMessage::PeerReconnecting { peer } => SignalingEvent::PeerReconnecting(peer),
            ServerMessage::PeerResumed { peer } => SignalingEvent::PeerResumed(peer),
            ServerMessage::PeerUpdated { peer } => SignalingEvent::PeerUpdated(peer),
            ServerMessage::RoomLocked { locked, by } => SignalingEvent::RoomLocked { locked, by },
            ServerMessage::SharePolicy { several, .. } => SignalingEvent::SharePolicy { several },
            ServerMessage::Knock { peer } => SignalingEvent::Knock(peer),
            ServerMessage::KnockEnded { peer } => SignalingEvent::KnockEnded(peer),
            ServerMessage::Reconnect { after_ms } => {
                return Some(Drop::Lost {
                    cause: "the relay is restarting".into(),
                    wait: Duration::from_millis(after_ms.min(30_000)),
                });
            }
            ServerMessage::Error { code, message, fatal } => {
                if fatal && is_final(code) {
                    return Some(Drop::Ended(Some(JoinError::Refused { code, message })));
                }
                if fatal {
                    return Some(Drop::Lost { cause: message, wait: Duration::ZERO });
                }
                SignalingEvent::Error { code, message }
            }
            // (`joined` and `resumed` were taken above.)
            ServerMessage::Pong { .. }
            | ServerMessage::Knocking { .. }
            | ServerMessage::Joined { .. }
            | ServerMessage::Resumed { .. } => {
                return None;
            }
        };
        // Not waiting: a client stopped here would neither send the engine's signals nor answer
        // the relay's pings. An engine this far behind costs the connection instead: it is
        // resumed at once, the relay replays the signals after the last one taken, and presence
        // comes with the resume.
        match self.events.try_send(event) {
            Ok(()) => {
                if let Some(seq) = signal_seq {
                    self.last_seq = seq;
                }
                None
            }
            Err(mpsc::error::TrySendError::Full(_)) => Some(Drop::Lost {
                cause: format!("the call fell {} relay messages behind", crate::queues::SIGNALING),
                wait: Duration::ZERO,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }
}

/// A seat given by `joined` or `resumed`.
struct Admitted {
    session: Session,
    resume_token: String,
    /// Whether this answers a resume.
    resumed: bool,
    /// Signals were lost while away (resumes only).
    gap: bool,
}

/// The session in a `joined` or `resumed` message; any other message is handed back.
#[expect(clippy::result_large_err, reason = "the message is handed back by value once; boxing buys nothing")]
fn session_of(message: ServerMessage) -> Result<Admitted, ServerMessage> {
    match message {
        ServerMessage::Joined {
            peer_id,
            room,
            role,
            participants,
            ice_servers,
            resume_token,
            locked,
            knocking,
            ..
        } => Ok(Admitted {
            session: Session {
                peer_id,
                room,
                role,
                participants,
                ice_servers: crate::ice::IceRoutes::parse(&ice_servers),
                locked,
                knocking,
            },
            resume_token,
            resumed: false,
            gap: false,
        }),
        ServerMessage::Resumed {
            peer_id,
            room,
            role,
            participants,
            ice_servers,
            resume_token,
            locked,
            knocking,
            gap,
            ..
        } => Ok(Admitted {
            session: Session {
                peer_id,
                room,
                role,
                participants,
                ice_servers: crate::ice::IceRoutes::parse(&ice_servers),
                locked,
                knocking,
            },
            resume_token,
            resumed: true,
            gap,
        }),
        other => Err(other),
    }
}

/// Fatal codes after which coming back is pointless (the seat is gone or never was).
/// (A connection the relay dropped for silence or slowness, or because it is shutting down, can
/// come back; everything else, `replaced` included, ends signaling.)
fn is_final(code: ErrorCode) -> bool {
    !matches!(code, ErrorCode::ShuttingDown | ErrorCode::HeartbeatTimeout | ErrorCode::SlowConsumer)
}
