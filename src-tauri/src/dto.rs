//! What crosses between the shell and the page, as JSON: the events the page listens to
//! (`call` events carry a [`UiEvent`]), what commands take and return, and the one error shape
//! every command fails with ([`UiError`]: a stable code plus a message). The TypeScript side of
//! these types is generated into `ui/src/lib/bindings.ts`; a test fails when it drifts.
//!
//! Video frames are not here: they go over the frame socket ([`crate::video`]).

use confer_mesh::Path;
use confer_mesh::engine::{EngineError, EngineEvent, PeerStats};
use confer_mesh::signaling::JoinError;
use confer_proto::{Knocker, LeaveReason, Participant, PeerState, Role};
use serde::{Deserialize, Serialize};

/// A participant as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiParticipant {
    /// Its id in the room (tiles and frames are keyed by it).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether it is a host.
    pub host: bool,
    /// Whether its microphone is muted.
    pub muted: bool,
    /// Whether its camera is on.
    pub camera: bool,
    /// Whether its hand is raised.
    pub hand_raised: bool,
    /// Its place in the queue of raised hands (lower: raised earlier), once the relay has
    /// counted it.
    pub hand_order: Option<u64>,
    /// Whether its connection to the relay dropped (it may come back).
    pub reconnecting: bool,
    /// Whether it records the call (everyone is shown it).
    pub recording: bool,
}

impl From<&Participant> for UiParticipant {
    fn from(p: &Participant) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            host: p.role == Role::Host,
            muted: p.muted,
            camera: p.camera,
            hand_raised: p.hand_raised,
            hand_order: p.hand_order.filter(|_| p.hand_raised),
            reconnecting: p.state == PeerState::Reconnecting,
            recording: p.recording,
        }
    }
}

/// Someone waiting to be let in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiKnocker {
    /// Its id.
    pub id: String,
    /// The name it gave.
    pub name: String,
}

impl From<&Knocker> for UiKnocker {
    fn from(k: &Knocker) -> Self {
        Self { id: k.id.to_string(), name: k.name.clone() }
    }
}

/// One participant's audio level.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiLevel {
    /// Who.
    pub id: String,
    /// Smoothed level, dBFS (-100 for silence).
    pub dbfs: f64,
    /// Whether it is speaking now.
    pub speaking: bool,
}

/// One participant's connection over the last second.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiPeerStats {
    /// Who.
    pub id: String,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Share of its packets lost on the way to us (0..1).
    pub receive_loss: f64,
    /// Share of our video lost on the way to it (0..1), as it reports.
    pub send_loss: Option<f64>,
    /// Video received, kbit/s.
    pub receive_video_kbps: f64,
    /// What we send it, kbit/s.
    pub send_kbps: f64,
    /// Its video frames decoded per second.
    pub frame_rate: f64,
    /// How the path was made: `host`, `srflx`, `prflx` or `relay`.
    pub candidate_type: Option<String>,
    /// The path for the tile: `direct`, `relay_udp`, `relay_tcp`, `relay_tls` (through our
    /// relay, reached over that transport) or `relay_peer` (through the other side's relay).
    pub path: Option<String>,
    /// A one-word verdict for the tile: `good`, `fair` or `poor`.
    pub quality: Quality,
}

/// How a connection is doing, for a tile's signal icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Under 2% loss and under 250 ms round trip.
    Good,
    /// Under 8% loss and under 500 ms.
    Fair,
    /// Worse.
    Poor,
}

impl Quality {
    /// The verdict on a second's statistics: the worse of loss (either way) and round trip.
    pub fn of(stats: &PeerStats) -> Self {
        let loss = stats.receive_loss.max(stats.send_loss.unwrap_or(0.0));
        let rtt = stats.rtt_ms.unwrap_or(0.0);
        if loss < 0.02 && rtt < 250.0 {
            Self::Good
        } else if loss < 0.08 && rtt < 500.0 {
            Self::Fair
        } else {
            Self::Poor
        }
    }
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum UiLeaveReason {
    /// It left.
    Left,
    /// A host removed it.
    Removed,
    /// Its connection dropped and did not come back.
    Timeout,
}

impl From<LeaveReason> for UiLeaveReason {
    fn from(reason: LeaveReason) -> Self {
        match reason {
            LeaveReason::Left => Self::Left,
            LeaveReason::Removed => Self::Removed,
            LeaveReason::Timeout => Self::Timeout,
        }
    }
}

/// What the call says, as `call` events to the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UiEvent {
    /// Seated in the room.
    Joined {
        /// This participant's id.
        self_id: String,
        /// Everyone else.
        participants: Vec<UiParticipant>,
        /// Whether this participant is a host.
        host: bool,
        /// Whether guests must knock.
        locked: bool,
        /// Who waits to be let in (hosts only).
        knocking: Vec<UiKnocker>,
    },
    /// Waiting for a host to admit us.
    Knocking,
    /// Someone knocks (hosts only).
    Knock {
        /// Who.
        knocker: UiKnocker,
    },
    /// A knock ended (hosts only).
    KnockEnded {
        /// Who knocked.
        id: String,
    },
    /// The room was locked or unlocked.
    RoomLocked {
        /// Locked now.
        locked: bool,
    },
    /// The relay refused something without ending the call.
    RelayError {
        /// Its code (docs/PROTOCOL.md section 9).
        code: String,
        /// Its explanation.
        message: String,
    },
    /// Someone joined or changed their state.
    Participant {
        /// Who, as they are now.
        participant: UiParticipant,
    },
    /// Someone's connection to the relay dropped; their seat remains.
    ParticipantReconnecting {
        /// Who.
        id: String,
    },
    /// Someone left.
    ParticipantLeft {
        /// Who.
        id: String,
        /// Why.
        reason: UiLeaveReason,
    },
    /// Media flows with this participant.
    PeerConnected {
        /// Who.
        id: String,
        /// How the path was made.
        candidate_type: Option<String>,
    },
    /// No network path to this participant (yet, if `retrying`).
    PeerUnreachable {
        /// Who.
        id: String,
        /// The cause in English and what was tried (candidate types gathered and received).
        detail: String,
        /// The cause for the page to word (`call.no_path.<cause>`): `nothing_gathered`,
        /// `peer_sent_nothing`, `no_relay_offered`, `relay_unreachable`,
        /// `relay_credentials_refused`, `relay_ports_blocked`, `blocked`; `null`: a local
        /// failure, named in `detail`.
        cause: Option<String>,
        /// ICE restarts go on: it may still connect.
        retrying: bool,
    },
    /// Audio levels (every 100 ms).
    Levels {
        /// Per participant.
        levels: Vec<UiLevel>,
        /// Who speaks most.
        active_speaker: Option<String>,
    },
    /// A chat message.
    Chat {
        /// From whom.
        from: String,
        /// The text.
        text: String,
    },
    /// A device switch took effect.
    DeviceSwitched {
        /// `camera`, `microphone` or `speaker`.
        device: String,
    },
    /// A device could not be opened; the previous one stays.
    DeviceFailed {
        /// `camera`, `microphone` or `speaker`.
        device: String,
        /// Why.
        reason: String,
    },
    /// Every connected participant's statistics, once a second.
    Stats {
        /// Per participant.
        peers: Vec<UiPeerStats>,
    },
    /// The machine's network changed; connections are being moved.
    NetworkChanged,
    /// The relay connection dropped; it is coming back (media keeps flowing).
    RelayReconnecting {
        /// Why it dropped.
        cause: String,
    },
    /// Signaling is back.
    RelayResumed,
    /// Our screen share started; the frames of a peer's share are frame-socket tile
    /// `share:<peer id>`.
    ShareStarted {
        /// What is shared (`screen:<n>`, `window:<id>`).
        source: String,
    },
    /// Our screen share stopped: asked (`reason` null), or on its own or refused, with why.
    ShareStopped {
        /// Why, if it was not asked for.
        reason: Option<String>,
    },
    /// A file transfer's progress.
    FileProgress {
        /// The transfer's id (the same for each peer a file goes to).
        id: String,
        /// The other side.
        peer: String,
        /// The file's name.
        name: String,
        /// Bytes through.
        done: u64,
        /// Bytes in the file.
        size: u64,
        /// We send it.
        sending: bool,
    },
    /// A file arrived whole and checked, and was saved.
    FileReceived {
        /// From whom.
        from: String,
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
        /// Where it was saved.
        path: String,
    },
    /// A file reached a peer whole.
    FileSent {
        /// To whom.
        to: String,
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
    },
    /// A transfer failed.
    FileFailed {
        /// The other side.
        peer: String,
        /// The file's name.
        name: String,
        /// We were sending it.
        sending: bool,
        /// Why.
        reason: String,
    },
    /// Our recording started: everyone was told, and the file at `path` is being written.
    RecordingStarted {
        /// The file.
        path: String,
    },
    /// Our recording stopped: asked (`reason` null), or it could not start or failed, with
    /// why. `path` is the file, if one was written (what was written before a failure plays).
    RecordingStopped {
        /// The file.
        path: Option<String>,
        /// Why, if it was not asked for.
        reason: Option<String>,
        /// How long it is, ms.
        duration_ms: u64,
        /// Its size.
        bytes: u64,
    },
    /// This participant as the relay sees it (the place of its raised hand in the queue).
    Myself {
        /// This participant.
        participant: UiParticipant,
    },
    /// A participant reacted (the emoji floats on its tile).
    Reaction {
        /// Who.
        from: String,
        /// One of 👍 👏 😂 ❤️ 🎉 😮.
        emoji: String,
    },
    /// A host changed how many may share a screen at once.
    SharePolicy {
        /// Several at once (else one).
        several: bool,
    },
    /// A participant started or stopped sharing its screen.
    PeerSharing {
        /// Who.
        id: String,
        /// Sharing now.
        sharing: bool,
    },
    /// The call is over: left (`reason` is null) or why not.
    Ended {
        /// Why, if not by leaving.
        reason: Option<String>,
    },
}

fn candidate(path: Option<Path>) -> Option<String> {
    path.map(|p| p.local.as_str().to_owned())
}

/// The path's name for the tile (see [`UiPeerStats::path`]).
fn path_code(path: Option<Path>) -> Option<String> {
    let path = path?;
    Some(match path.relay {
        Some(transport) => format!("relay_{}", transport.as_str()),
        None if path.is_relayed() => "relay_peer".to_owned(),
        None => "direct".to_owned(),
    })
}

impl UiEvent {
    /// The page's form of an engine event; `None` for what is not for the page as an event
    /// (video frames go over the frame socket).
    pub fn from_engine(event: &EngineEvent) -> Option<Self> {
        Some(match event {
            EngineEvent::Joined { peer_id, participants, host, locked, knocking } => Self::Joined {
                self_id: peer_id.to_string(),
                participants: participants.iter().map(UiParticipant::from).collect(),
                host: *host,
                locked: *locked,
                knocking: knocking.iter().map(UiKnocker::from).collect(),
            },
            EngineEvent::Knocking => Self::Knocking,
            EngineEvent::Knock(knocker) => Self::Knock { knocker: knocker.into() },
            EngineEvent::KnockEnded(id) => Self::KnockEnded { id: id.to_string() },
            EngineEvent::RoomLocked { locked } => Self::RoomLocked { locked: *locked },
            EngineEvent::RelayError { code, message } => {
                Self::RelayError { code: code.as_str().to_owned(), message: message.clone() }
            }
            EngineEvent::Participant(p) => Self::Participant { participant: p.into() },
            EngineEvent::ParticipantReconnecting(id) => Self::ParticipantReconnecting { id: id.to_string() },
            EngineEvent::ParticipantLeft { id, reason } => {
                Self::ParticipantLeft { id: id.to_string(), reason: (*reason).into() }
            }
            EngineEvent::PeerConnected { id, path } => {
                Self::PeerConnected { id: id.to_string(), candidate_type: candidate(*path) }
            }
            EngineEvent::PeerUnreachable { id, detail, cause, retrying } => Self::PeerUnreachable {
                id: id.to_string(),
                detail: detail.clone(),
                cause: cause.map(|c| c.code().to_owned()),
                retrying: *retrying,
            },
            EngineEvent::AudioLevels { levels, active_speaker } => Self::Levels {
                levels: levels
                    .iter()
                    .map(|(id, level)| UiLevel {
                        id: id.to_string(),
                        dbfs: level.dbfs,
                        speaking: level.speaking,
                    })
                    .collect(),
                active_speaker: active_speaker.as_ref().map(ToString::to_string),
            },
            EngineEvent::Chat { from, text } => Self::Chat { from: from.to_string(), text: text.clone() },
            EngineEvent::DeviceSwitched { device } => Self::DeviceSwitched { device: (*device).to_owned() },
            EngineEvent::DeviceFailed { device, reason } => {
                Self::DeviceFailed { device: (*device).to_owned(), reason: reason.clone() }
            }
            EngineEvent::Stats(peers) => Self::Stats {
                peers: peers
                    .iter()
                    .map(|(id, s)| UiPeerStats {
                        id: id.to_string(),
                        rtt_ms: s.rtt_ms,
                        receive_loss: s.receive_loss,
                        send_loss: s.send_loss,
                        receive_video_kbps: s.receive_video_kbps,
                        send_kbps: s.send_kbps,
                        frame_rate: s.frame_rate,
                        candidate_type: candidate(s.path),
                        path: path_code(s.path),
                        quality: Quality::of(s),
                    })
                    .collect(),
            },
            EngineEvent::NetworkChanged { .. } => Self::NetworkChanged,
            EngineEvent::RelayReconnecting { cause } => Self::RelayReconnecting { cause: cause.clone() },
            EngineEvent::RelayResumed => Self::RelayResumed,
            EngineEvent::Ended(reason) => Self::Ended { reason: reason.clone() },
            EngineEvent::ShareStarted { source } => Self::ShareStarted { source: source.clone() },
            EngineEvent::ShareStopped { reason } => Self::ShareStopped { reason: reason.clone() },
            EngineEvent::PeerSharing { id, sharing } => {
                Self::PeerSharing { id: id.to_string(), sharing: *sharing }
            }
            EngineEvent::SharePolicy { several } => Self::SharePolicy { several: *several },
            EngineEvent::Myself(p) => Self::Myself { participant: p.into() },
            EngineEvent::FileProgress { id, peer, name, done, size, sending } => Self::FileProgress {
                id: id.clone(),
                peer: peer.to_string(),
                name: name.clone(),
                done: *done,
                size: *size,
                sending: *sending,
            },
            EngineEvent::FileReceived { from, name, size, path, .. } => Self::FileReceived {
                from: from.to_string(),
                name: name.clone(),
                size: *size,
                path: path.display().to_string(),
            },
            EngineEvent::FileSent { to, name, size } => {
                Self::FileSent { to: to.to_string(), name: name.clone(), size: *size }
            }
            EngineEvent::FileFailed { peer, name, sending, reason } => Self::FileFailed {
                peer: peer.to_string(),
                name: name.clone(),
                sending: *sending,
                reason: reason.clone(),
            },
            EngineEvent::Reaction { from, emoji } => {
                Self::Reaction { from: from.to_string(), emoji: emoji.clone() }
            }
            EngineEvent::RecordingStarted { path } => {
                Self::RecordingStarted { path: path.display().to_string() }
            }
            EngineEvent::RecordingStopped { path, reason, duration_ms, bytes } => Self::RecordingStopped {
                path: path.as_ref().map(|p| p.display().to_string()),
                reason: reason.clone(),
                duration_ms: *duration_ms,
                bytes: *bytes,
            },
            // (Who records arrives with each participant's presence.)
            EngineEvent::PeerRecording { .. } => return None,
            EngineEvent::VideoFrame { .. } | EngineEvent::SelfView(_) | EngineEvent::ShareFrame { .. } => {
                return None;
            }
            _ => return None,
        })
    }
}

/// Which part failed, as a stable code the page translates (see the locale files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// What was pasted is not an invite link.
    BadLink,
    /// The relay (meeting server) could not be reached.
    RelayUnreachable,
    /// The relay refused; the message names its code.
    Refused,
    /// The relay's answers made no sense.
    RelayProtocol,
    /// A camera, microphone, speaker or codec could not be opened.
    Media,
    /// The WebRTC stack could not start.
    Webrtc,
    /// There is no call to do that in.
    NotInCall,
    /// Already in a call.
    InCall,
    /// A chat message was refused (empty or too long).
    Chat,
    /// Settings could not be read or written, or are invalid.
    Settings,
    /// The relay could not create a room.
    RoomCreation,
    /// The meeting server built into the app could not start.
    EmbeddedRelay,
    /// Screens and windows could not be listed or shared (no display, a Wayland session).
    Share,
    /// A file could not be sent (not a file, not readable).
    File,
}

/// How every command fails: a stable code for the page to translate and the detail in the
/// system's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[error("{message}")]
pub struct UiError {
    /// Which part failed.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

impl UiError {
    /// An error of this code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<EngineError> for UiError {
    fn from(err: EngineError) -> Self {
        let code = match &err {
            EngineError::Join(JoinError::RelayUnreachable { .. }) => ErrorCode::RelayUnreachable,
            EngineError::Join(JoinError::Refused { .. }) => ErrorCode::Refused,
            EngineError::Join(_) => ErrorCode::RelayProtocol,
            EngineError::Media(_) => ErrorCode::Media,
            _ => ErrorCode::Webrtc,
        };
        Self::new(code, err.to_string())
    }
}

/// A screen or window the user can share, for the picker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiShareSource {
    /// Id to share it by: `screen:<n>` or `window:<id>`.
    pub id: String,
    /// `screen` or `window`.
    pub kind: String,
    /// The monitor's name or the window's title.
    pub name: String,
    /// Its size now, pixels.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// A picture of it (`data:image/jpeg;base64,…`, at most 320 x 180), if one could be taken.
    pub thumbnail: Option<String>,
}

/// A camera, microphone or speaker the user can pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiDevice {
    /// Id to choose it by (`synthetic` for the synthetic one).
    pub id: String,
    /// Name to show.
    pub name: String,
    /// Whether it is the system default.
    pub is_default: bool,
}

/// Every device the machine has, for the pickers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiDevices {
    /// Cameras (the synthetic one last).
    pub cameras: Vec<UiDevice>,
    /// Microphones.
    pub microphones: Vec<UiDevice>,
    /// Speakers.
    pub speakers: Vec<UiDevice>,
}

/// Where the page opens the frame socket, and the token it must present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FrameSocket {
    /// `ws://127.0.0.1:PORT/?token=...`
    pub url: String,
}

/// A new meeting's links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiMeeting {
    /// The host's link (keep it: it lets its holder run the meeting).
    pub host_link: String,
    /// The link to send to others (`confer://`).
    pub invite_link: String,
    /// The same invite as an `https://` page on the relay, which opens the app.
    pub web_link: String,
    /// Whether the meeting runs on the meeting server built into this app.
    pub embedded: bool,
}

/// What the lobby's preview reports, as `preview` events (its picture goes to the frame socket
/// as tile `preview`). Each carries the number `start_preview` returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UiPreviewEvent {
    /// The microphone's level, every 50 ms.
    Level {
        /// Which preview.
        generation: u64,
        /// Smoothed level, dBFS (-100 for silence).
        dbfs: f64,
        /// Whether it hears speech now.
        speaking: bool,
    },
    /// A device could not be opened, or stopped.
    Failed {
        /// Which preview.
        generation: u64,
        /// `camera` or `microphone`.
        device: String,
        /// Why, in the system's words.
        message: String,
    },
}

impl UiPreviewEvent {
    /// The page's form of preview `generation`'s event (pictures go to the frame socket instead).
    pub fn from_preview(event: confer_media::preview::PreviewEvent, generation: u64) -> Option<Self> {
        use confer_media::preview::PreviewEvent;
        match event {
            PreviewEvent::Frame(_) => None,
            PreviewEvent::Level(level) => {
                Some(Self::Level { generation, dbfs: level.dbfs, speaking: level.speaking })
            }
            PreviewEvent::Failed { device, reason } => {
                Some(Self::Failed { generation, device: device.to_owned(), message: reason })
            }
        }
    }
}

/// What the speaker played of the test sound.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiSoundCheck {
    /// Milliseconds of the sound the device took.
    pub played_ms: u32,
    /// Milliseconds the sound lasts.
    pub sound_ms: u32,
    /// Its loudest 10 ms, dBFS.
    pub peak_dbfs: f64,
}

/// The lobby's network check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiNetworkReport {
    /// The relay's round trip, milliseconds, if it answered.
    pub relay_ms: Option<u32>,
    /// Why the relay could not be checked.
    pub relay_error: Option<String>,
    /// Each STUN and TURN URL the meeting offers.
    pub servers: Vec<UiServerCheck>,
    /// What it means for a call: `unreachable`, `no_servers`, `direct`, `direct_no_relay`,
    /// `relayed`, `no_path` (the page words it: `lobby.verdict.<code>`).
    pub verdict: String,
    /// How calls reach the meeting server's relay (`udp`, `tcp`, `tls`), if they can.
    pub relay_transport: Option<String>,
    /// A TURN server refused the meeting server's credentials.
    pub credentials_refused: bool,
    /// A TURN server's relayed ports are closed by a firewall: it allocates, and relays nothing.
    pub relay_ports_blocked: bool,
    /// This machine's upload speed to the meeting server, kbit/s, if measured.
    pub uplink_kbps: Option<u32>,
    /// Why it was not measured.
    pub uplink_error: Option<String>,
    /// How many people a video call can hold at each size the camera is sent in (largest
    /// first), from the upload speed; empty if it was not measured.
    pub capacity: Vec<UiCapacity>,
}

/// How many people a video call can hold when everyone is sent this size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiCapacity {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// The most participants, this one included (at most 25: `confer_mesh::netcheck::MAX_PREDICTED`).
    pub people: u32,
}

/// One STUN or TURN URL's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UiServerCheck {
    /// The URL.
    pub url: String,
    /// A TURN server (a relay for media), not STUN.
    pub turn: bool,
    /// How long it took to answer, milliseconds.
    pub ms: Option<u32>,
    /// This machine's public address (STUN) or the relayed address (TURN).
    pub address: Option<String>,
    /// Why it did not answer (or, if `skipped`, why it was not tried).
    pub error: Option<String>,
    /// Not tried: a kind of URL Confer does not use; not a failure.
    pub skipped: bool,
}

impl UiNetworkReport {
    /// The page's form of a network check, its call capacity for the camera's `ladder`.
    pub fn new(report: confer_mesh::netcheck::NetworkReport, ladder: &confer_mesh::layers::Ladder) -> Self {
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let verdict = report.verdict();
        let capacity = report
            .capacity(ladder)
            .into_iter()
            .flatten()
            .map(|c| UiCapacity { width: c.size.0, height: c.size.1, people: c.people })
            .collect();
        let (uplink_kbps, uplink_error) = match &report.uplink {
            Ok(uplink) => (Some(uplink.kbps), None),
            Err(why) => (None, Some(why.clone())),
        };
        let credentials_refused = report.credentials_refused();
        let relay_ports_blocked = report.relay_ports_blocked();
        let (relay_ms, relay_error) = match report.relay {
            Ok(rtt) => (Some(ms(rtt)), None),
            Err(why) => (None, Some(why)),
        };
        let servers = report
            .servers
            .into_iter()
            .map(|check| {
                use confer_mesh::netcheck::ServerResult;
                let (time, address, error, skipped) = match check.result {
                    ServerResult::Answered { address, after } => {
                        (Some(ms(after)), Some(address), None, false)
                    }
                    ServerResult::Failed { reason, .. } => (None, None, Some(reason), false),
                    ServerResult::Skipped(why) => (None, None, Some(why), true),
                };
                UiServerCheck { url: check.url, turn: check.turn, ms: time, address, error, skipped }
            })
            .collect();
        Self {
            relay_ms,
            relay_error,
            servers,
            verdict: verdict.code().to_owned(),
            relay_transport: verdict.relay().map(|t| t.as_str().to_owned()),
            credentials_refused,
            relay_ports_blocked,
            uplink_kbps,
            uplink_error,
            capacity,
        }
    }
}

/// What a join asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JoinRequest {
    /// The invite link.
    pub link: String,
    /// Display name.
    pub name: String,
    /// Join muted.
    pub muted: bool,
    /// Join with the camera on.
    pub camera: bool,
    /// The uplink the lobby's network check measured, kbit/s (`null`: not measured): what
    /// everyone is sent together is kept within it.
    #[serde(default)]
    pub uplink_kbps: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use confer_proto::PeerId;

    #[test]
    fn a_tile_names_the_path_and_how_the_relay_is_reached() {
        use confer_mesh::{CandidateType as C, RelayTransport as T};
        let path = |local, remote, relay| path_code(Some(Path { local, remote, relay }));
        assert_eq!(path(C::Host, C::Srflx, None).as_deref(), Some("direct"));
        assert_eq!(path(C::Relay, C::Host, Some(T::Tls)).as_deref(), Some("relay_tls"));
        assert_eq!(path(C::Relay, C::Relay, Some(T::Udp)).as_deref(), Some("relay_udp"));
        assert_eq!(path(C::Srflx, C::Relay, None).as_deref(), Some("relay_peer"));
        assert_eq!(path_code(None), None);
    }

    #[test]
    fn a_connection_is_judged_by_its_worst_side() {
        let good = PeerStats { rtt_ms: Some(40.0), ..PeerStats::default() };
        assert_eq!(Quality::of(&good), Quality::Good);
        let lossy_outbound = PeerStats { send_loss: Some(0.05), ..good };
        assert_eq!(Quality::of(&lossy_outbound), Quality::Fair);
        let far = PeerStats { rtt_ms: Some(700.0), ..good };
        assert_eq!(Quality::of(&far), Quality::Poor);
    }

    #[test]
    fn engine_events_become_tagged_json_for_the_page() {
        let id = PeerId::parse(&"A".repeat(PeerId::CHARS)).expect("a valid id");
        let event = EngineEvent::Chat { from: id.clone(), text: "hi".into() };
        let json = serde_json::to_value(UiEvent::from_engine(&event)).unwrap_or_default();
        assert_eq!(json["type"], "chat");
        assert_eq!(json["from"], id.to_string());
        assert_eq!(json["text"], "hi");
        let ended = serde_json::to_value(UiEvent::from_engine(&EngineEvent::Ended(None))).unwrap_or_default();
        assert_eq!(ended, serde_json::json!({ "type": "ended", "reason": null }));
    }

    #[test]
    fn a_refusal_keeps_its_code_apart_from_an_unreachable_relay() {
        let refused = UiError::from(EngineError::Join(JoinError::Refused {
            code: confer_proto::ErrorCode::RoomFull,
            message: "full".into(),
        }));
        assert_eq!(refused.code, ErrorCode::Refused);
        assert!(refused.message.contains("room_full"), "{}", refused.message);
        let unreachable = UiError::from(EngineError::Join(JoinError::RelayUnreachable {
            relay: "wss://127.0.0.1:9".into(),
            reason: "connection refused".into(),
        }));
        assert_eq!(unreachable.code, ErrorCode::RelayUnreachable);
        let json = serde_json::to_value(&unreachable).unwrap_or_default();
        assert_eq!(json["code"], "relay_unreachable");
    }
}
