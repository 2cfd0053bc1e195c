//! The messages. Each is a JSON object with a `type` tag; fields a receiver does not know are
//! ignored, so later versions can add fields without breaking older peers.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, PeerId, RoomId};

/// What an invite lets its holder do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May lock and unlock the room, admit or deny knockers and remove participants. Never knocks.
    Host,
    /// Takes part; knocks first when the room is locked or has a waiting room.
    Guest,
}

/// Whether a participant's connection is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Connected to the relay.
    Active,
    /// Lost its connection; holds its seat for the grace period and may resume.
    Reconnecting,
}

/// Why a participant left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It said `leave`.
    Left,
    /// A host removed it.
    Removed,
    /// Its connection dropped and it did not resume within the grace period.
    Timeout,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Its id in this room.
    pub id: PeerId,
    /// Its display name.
    pub name: String,
    /// Host or guest.
    pub role: Role,
    /// Whether its microphone is muted.
    #[serde(default)]
    pub muted: bool,
    /// Whether its camera is on.
    #[serde(default)]
    pub camera: bool,
    /// Whether it raised its hand.
    #[serde(default)]
    pub hand_raised: bool,
    /// Its place in the room's queue of raised hands: raised hands ordered by this number were
    /// raised in that order (absent while the hand is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_order: Option<u64>,
    /// Whether it holds the screen share (granted by `share`).
    #[serde(default)]
    pub sharing: bool,
    /// Whether it records the call on its own machine (said by `record`).
    #[serde(default)]
    pub recording: bool,
    /// Whether its connection is live.
    pub state: PeerState,
}

/// A participant waiting for a host to let it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knocker {
    /// Its id (it keeps it when admitted).
    pub id: PeerId,
    /// The display name it gave.
    pub name: String,
}

/// One ICE server, in the shape of WebRTC's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (TURN REST scheme: `expiry:peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (base64 HMAC-SHA1 of the username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What one peer sends another through the relay. The relay checks sizes and forwards it
/// unchanged; it never acts on the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalPayload {
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The `candidate:` line.
        candidate: String,
        /// The media stream it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The m-line index it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
        /// The ICE username fragment it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    /// The sender has gathered all its candidates.
    EndOfCandidates {
        /// The ICE username fragment the end applies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    /// The sender's network changed (its addresses did): the offerer restarts ICE now rather
    /// than waiting for the connection to fail. An answerer ignores it.
    RestartIce,
    /// Any of the above, sealed end to end by the peers (URL-safe base64). Opaque to the relay.
    Sealed {
        /// The ciphertext.
        data: String,
    },
}

/// A message from a client to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Take a seat in a room with an invite token.
    Join {
        /// The room, as named in the invite link.
        room: RoomId,
        /// The invite token from the link.
        token: String,
        /// The display name to show others (1 to 64 characters).
        name: String,
        /// Whether the microphone starts muted.
        #[serde(default)]
        muted: bool,
        /// Whether the camera starts on.
        #[serde(default)]
        camera: bool,
    },
    /// Take back a seat after a dropped connection, with the resume token from `joined` or
    /// `resumed`.
    Resume {
        /// The resume token.
        token: String,
        /// The `seq` of the last `signal` received (0 if none); later ones are delivered again.
        #[serde(default)]
        last_seq: u64,
        /// The display name, in case the relay lost it (after a restart).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The mute state, in case the relay lost it.
        #[serde(default)]
        muted: bool,
        /// The camera state, in case the relay lost it.
        #[serde(default)]
        camera: bool,
    },
    /// Forward a payload to one participant of the same room.
    Signal {
        /// The receiver.
        to: PeerId,
        /// What to forward.
        payload: SignalPayload,
    },
    /// Change what others see of this participant. Absent fields stay as they are.
    Update {
        /// A new display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Microphone muted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        muted: Option<bool>,
        /// Camera on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        camera: Option<bool>,
        /// Hand raised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hand_raised: Option<bool>,
    },
    /// Start (`on`) or stop sharing a screen. Starting is granted (a `peer_updated` of yourself
    /// with `sharing: true`, to everyone) or refused with `share_taken` while someone else
    /// shares and the room allows one share at a time.
    Share {
        /// Sharing from now on.
        on: bool,
    },
    /// Start (`on`) or stop recording the call on your own machine. Everyone is told (a
    /// `peer_updated` with `recording`); a client starts writing only once its own
    /// `peer_updated` says `recording: true`, so no one is recorded unannounced.
    Record {
        /// Recording from now on.
        on: bool,
    },
    /// Host: stop a participant's screen share (it sees its own `peer_updated` with
    /// `sharing: false`).
    StopShare {
        /// The sharer.
        peer: PeerId,
    },
    /// Host: let several participants share at once (`several`), or one at a time (the
    /// default; shares running now go on).
    SharePolicy {
        /// Several at once.
        several: bool,
    },
    /// Host: newcomers must knock from now on.
    Lock,
    /// Host: newcomers enter directly again (unless the room has a waiting room).
    Unlock,
    /// Host: let a knocking participant in.
    Admit {
        /// The knocker.
        peer: PeerId,
    },
    /// Host: turn a knocking participant away.
    Deny {
        /// The knocker.
        peer: PeerId,
    },
    /// Host: remove a participant from the room.
    Remove {
        /// The participant.
        peer: PeerId,
    },
    /// Keepalive; answered with `pong`.
    Ping {
        /// Echoed back in the `pong`.
        #[serde(default)]
        nonce: u64,
    },
    /// Leave the room for good (others see `left` at once).
    Leave,
}

/// A message from the relay to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// You have a seat.
    Joined {
        /// Your id in this room.
        peer_id: PeerId,
        /// The room.
        room: RoomId,
        /// Your role.
        role: Role,
        /// Everyone else in the room.
        participants: Vec<Participant>,
        /// ICE servers for your peer connections, with TURN credentials if the relay has any.
        ice_servers: Vec<IceServer>,
        /// Present this with `resume` after a dropped connection.
        resume_token: String,
        /// Whether the room is locked.
        locked: bool,
        /// Participants waiting to be admitted (hosts only; empty for guests).
        knocking: Vec<Knocker>,
        /// How long the relay keeps your seat after your connection drops, in seconds.
        grace_secs: u64,
    },
    /// You are waiting for a host to admit you. `joined` follows if one does.
    Knocking {
        /// Your id (you keep it when admitted).
        peer_id: PeerId,
    },
    /// Hosts: someone is knocking.
    Knock {
        /// The knocker.
        peer: Knocker,
    },
    /// Hosts: a knocker is no longer waiting (admitted, denied, or gone).
    KnockEnded {
        /// The knocker.
        peer: PeerId,
    },
    /// Your seat is back after `resume`. Re-sent signals follow.
    Resumed {
        /// Your id (unchanged).
        peer_id: PeerId,
        /// The room.
        room: RoomId,
        /// Your role.
        role: Role,
        /// Everyone else in the room, as they are now.
        participants: Vec<Participant>,
        /// ICE servers, with fresh TURN credentials.
        ice_servers: Vec<IceServer>,
        /// A new resume token; the old one no longer works.
        resume_token: String,
        /// Whether the room is locked.
        locked: bool,
        /// Participants waiting to be admitted (hosts only).
        knocking: Vec<Knocker>,
        /// How many signals after your `last_seq` follow.
        replayed: u32,
        /// True if some signals after your `last_seq` were no longer held and are lost.
        gap: bool,
    },
    /// Someone took a seat.
    PeerJoined {
        /// The newcomer.
        peer: Participant,
    },
    /// Someone left.
    PeerLeft {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's connection dropped; it may resume within the grace period.
    PeerReconnecting {
        /// Who.
        peer: PeerId,
    },
    /// Someone who was reconnecting is back.
    PeerResumed {
        /// Who, as it is now.
        peer: Participant,
    },
    /// Someone changed name, mute, camera or hand state.
    PeerUpdated {
        /// Who, as it is now.
        peer: Participant,
    },
    /// A payload from another participant.
    Signal {
        /// The sender.
        from: PeerId,
        /// Per-receiver sequence number, counting from 1; quote the last one in `resume`.
        seq: u64,
        /// What it sent, unchanged.
        payload: SignalPayload,
    },
    /// The room was locked or unlocked.
    RoomLocked {
        /// Now locked?
        locked: bool,
        /// The host who did it.
        by: PeerId,
    },
    /// A host changed how many may share a screen at once.
    SharePolicy {
        /// Several at once (else one).
        several: bool,
        /// The host who did it.
        by: PeerId,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The relay is going away: reconnect (to the same URL) and `resume`.
    Reconnect {
        /// Wait this long (randomised per client) before reconnecting.
        after_ms: u64,
    },
    /// Something you sent was refused, or your connection is being closed.
    Error {
        /// Stable code (see `docs/PROTOCOL.md`).
        code: ErrorCode,
        /// Human-readable detail, for logs.
        message: String,
        /// If true the relay closes the connection after this message.
        fatal: bool,
    },
}
