//! What the engine tells its owner: events as they happen, and per-peer reports and statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use confer_media::synthetic::FrameStamp;
use confer_media::{I420Frame, StreamLevel};
use confer_proto::{Knocker, LeaveReason, Participant, PeerId};
use tokio::sync::mpsc;

use crate::nopath::NoPathCause;
use crate::peer::Path;

/// What the engine reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EngineEvent {
    /// Seated in the room.
    Joined {
        /// This participant's id.
        peer_id: PeerId,
        /// Everyone else.
        participants: Vec<Participant>,
        /// Whether this participant is a host (may lock, admit, deny, remove).
        host: bool,
        /// Whether guests must knock.
        locked: bool,
        /// Who waits to be let in (hosts only).
        knocking: Vec<Knocker>,
    },
    /// Someone knocks (hosts only).
    Knock(Knocker),
    /// A knock ended: admitted, denied, gave up or timed out (hosts only).
    KnockEnded(PeerId),
    /// The room was locked or unlocked.
    RoomLocked {
        /// Locked now.
        locked: bool,
    },
    /// The relay refused something without ending the call (`rate_limited`, `not_host`, ...).
    RelayError {
        /// Its code.
        code: confer_proto::ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// Waiting for a host to admit us.
    Knocking,
    /// Someone joined, or changed their state (mute, camera, hand, reconnecting).
    Participant(Participant),
    /// Someone's connection to the relay dropped; their seat (and probably media) remains.
    ParticipantReconnecting(PeerId),
    /// Someone left.
    ParticipantLeft {
        /// Who.
        id: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// Media flows with this participant.
    PeerConnected {
        /// Who.
        id: PeerId,
        /// How the path was made.
        path: Option<Path>,
    },
    /// No network path to this participant (yet): said within the first connection attempt's
    /// timeout (10 s), while ICE restarts go on (`retrying`), and again when they are given up.
    PeerUnreachable {
        /// Who.
        id: PeerId,
        /// The cause in English with what was tried (for logs and the CLI).
        detail: String,
        /// The cause, for the UI to word in the user's language; `None` for a local failure
        /// named in `detail` (the peer connection could not be made).
        cause: Option<NoPathCause>,
        /// ICE restarts go on; a connection may still come.
        retrying: bool,
    },
    /// A decoded video frame from a participant.
    VideoFrame {
        /// From whom.
        from: PeerId,
        /// The picture.
        frame: Arc<I420Frame>,
        /// The synthetic camera's stamp, if the picture carries one.
        stamp: Option<FrameStamp>,
    },
    /// What this participant's camera sends (each frame sent), for the self view.
    SelfView(Arc<I420Frame>),
    /// A decoded picture of a participant's screen share.
    ShareFrame {
        /// From whom.
        from: PeerId,
        /// The picture.
        frame: Arc<I420Frame>,
        /// The synthetic page's stamp, if the picture carries one.
        stamp: Option<FrameStamp>,
    },
    /// A host changed how many may share a screen at once.
    SharePolicy {
        /// Several at once (else one).
        several: bool,
    },
    /// A participant started or stopped sharing (as the relay, which grants shares, says).
    PeerSharing {
        /// Who.
        id: PeerId,
        /// Sharing now.
        sharing: bool,
    },
    /// Our share started: every peer is sent it.
    ShareStarted {
        /// What is shared (`screen:<n>`, `window:<id>`, `synthetic`).
        source: String,
    },
    /// Our share stopped: asked (`reason` is `None`), or on its own (the window closed, the
    /// display went away) or refused at the start, with why.
    ShareStopped {
        /// Why, if it was not asked for.
        reason: Option<String>,
    },
    /// A participant started or stopped recording the call (as the relay says).
    PeerRecording {
        /// Who.
        id: PeerId,
        /// Recording now.
        recording: bool,
    },
    /// Our recording started: everyone was told, and the file is being written.
    RecordingStarted {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Our recording stopped (asked: `reason` is `None`), or could not start, or failed (a full
    /// disk: what was written stays playable).
    RecordingStopped {
        /// The file, if one was written.
        path: Option<std::path::PathBuf>,
        /// Why, if it was not asked for.
        reason: Option<String>,
        /// How long it is.
        duration_ms: u64,
        /// Its size.
        bytes: u64,
    },
    /// Audio levels per participant (every 100 ms) and who speaks most.
    AudioLevels {
        /// Level per participant.
        levels: Vec<(PeerId, StreamLevel)>,
        /// The active speaker.
        active_speaker: Option<PeerId>,
    },
    /// This participant as the relay sees it (its hand's place in the queue, its share).
    Myself(Participant),
    /// A file transfer's progress (every 250 ms while it runs).
    FileProgress {
        /// The transfer's id.
        id: String,
        /// The other side.
        peer: PeerId,
        /// The file's name.
        name: String,
        /// Bytes through.
        done: u64,
        /// Bytes in the file.
        size: u64,
        /// We send it (else we receive it).
        sending: bool,
    },
    /// A file arrived whole, its SHA-256 checked, and was saved.
    FileReceived {
        /// From whom.
        from: PeerId,
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
        /// Its SHA-256 (hex).
        sha256: String,
        /// Where it was saved.
        path: std::path::PathBuf,
    },
    /// A file reached a peer whole (the peer checked it).
    FileSent {
        /// To whom.
        to: PeerId,
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
    },
    /// A transfer failed, with why.
    FileFailed {
        /// The other side.
        peer: PeerId,
        /// The file's name (`?` if it never said).
        name: String,
        /// We were sending it.
        sending: bool,
        /// Why, in words.
        reason: String,
    },
    /// A reaction (one of [`crate::data::REACTIONS`]).
    Reaction {
        /// From whom.
        from: PeerId,
        /// The emoji.
        emoji: String,
    },
    /// A chat message.
    Chat {
        /// From whom.
        from: PeerId,
        /// The text.
        text: String,
    },
    /// Our Opus encoder was retuned to the links it is sent over ([`crate::voice`]).
    AudioTuned(crate::voice::OpusTuning),
    /// A device switch took effect.
    DeviceSwitched {
        /// Which: `camera`, `microphone` or `speaker`.
        device: &'static str,
    },
    /// A device could not be opened (the one before it stays in use), or its capture stopped.
    DeviceFailed {
        /// Which: `camera`, `microphone` or `speaker`.
        device: &'static str,
        /// Why, in the system's words.
        reason: String,
    },
    /// Each connected participant's statistics, once a second.
    Stats(Vec<(PeerId, PeerStats)>),
    /// The machine's addresses changed; connections are being moved (ICE restarts).
    NetworkChanged {
        /// Addresses that appeared.
        added: Vec<std::net::IpAddr>,
        /// Addresses that went away.
        removed: Vec<std::net::IpAddr>,
    },
    /// The relay connection dropped; signaling is coming back (media keeps flowing).
    RelayReconnecting {
        /// Why it dropped.
        cause: String,
    },
    /// Signaling is back.
    RelayResumed,
    /// The call is over for us: left (`None`) or why not.
    Ended(Option<String>),
}

impl EngineEvent {
    /// Frames, levels and statistics: a newer one follows, so one may be dropped when the app is
    /// behind ([`crate::queues::PICTURE_EVENTS`]).
    fn is_picture(&self) -> bool {
        matches!(
            self,
            Self::VideoFrame { .. }
                | Self::ShareFrame { .. }
                | Self::SelfView(_)
                | Self::AudioLevels { .. }
                | Self::Stats(_)
        )
    }
}

/// Where the engine's events go: two bounded queues, so pictures never crowd out the events that
/// change what the app shows (see [`crate::queues`]).
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    state: mpsc::Sender<EngineEvent>,
    pictures: mpsc::Sender<EngineEvent>,
    /// Pictures dropped because the app was behind.
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// The sink and the app's end of it.
    pub(crate) fn new() -> (Self, EngineEvents) {
        let (state, state_rx) = mpsc::channel(crate::queues::STATE_EVENTS);
        let (pictures, pictures_rx) = mpsc::channel(crate::queues::PICTURE_EVENTS);
        let sink = Self { state, pictures, dropped: Arc::default() };
        (sink, EngineEvents { state: state_rx, pictures: pictures_rx, ended: Default::default() })
    }

    /// Hands `event` to the app without waiting: a picture the app has no room for is dropped
    /// and counted; any other event is dropped and logged as an error (the app has stopped
    /// reading). `Err` when the app has gone.
    pub(crate) fn send(&self, event: EngineEvent) -> Result<(), ()> {
        let picture = event.is_picture();
        let queue = if picture { &self.pictures } else { &self.state };
        match queue.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) if picture => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::error!(
                    ?event,
                    "the app is {} events behind: one dropped",
                    crate::queues::STATE_EVENTS
                );
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }

    /// Pictures dropped so far because the app was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The app's end of a call's events ([`crate::engine::join`]).
#[derive(Debug)]
pub struct EngineEvents {
    state: mpsc::Receiver<EngineEvent>,
    pictures: mpsc::Receiver<EngineEvent>,
    /// Streams ended by a state event already handed out (a participant left: its camera and
    /// share; a share stopped), whose queued pictures are not handed out after it.
    ended: std::collections::HashSet<(PeerId, bool)>,
}

impl EngineEvents {
    /// The next event; `None` once the call is over and everything was read. Events that change
    /// what the app shows come before pictures: a participant's tile exists before its frames.
    /// Up to [`crate::queues::PICTURE_EVENTS`] pictures wait for the app; older ones are dropped
    /// while it does not read, so a stalled app holds a few frames, not a growing pile.
    pub async fn recv(&mut self) -> Option<EngineEvent> {
        loop {
            let event = tokio::select! {
                biased;
                Some(event) = self.state.recv() => event,
                Some(event) = self.pictures.recv() => event,
                else => return None,
            };
            if let Some(event) = self.pass(event) {
                return Some(event);
            }
        }
    }

    /// An event if one is waiting (state first), without waiting.
    pub fn try_recv(&mut self) -> Option<EngineEvent> {
        loop {
            let event = self.state.try_recv().ok().or_else(|| self.pictures.try_recv().ok())?;
            if let Some(event) = self.pass(event) {
                return Some(event);
            }
        }
    }

    /// Keeps track of the streams that ended; `None` for a picture of one of them, queued
    /// before its end was said (the app has forgotten its tile and must not get it back).
    fn pass(&mut self, event: EngineEvent) -> Option<EngineEvent> {
        match &event {
            EngineEvent::ParticipantLeft { id, .. } => {
                self.ended.insert((id.clone(), false));
                self.ended.insert((id.clone(), true));
            }
            EngineEvent::PeerSharing { id, sharing } => {
                if *sharing {
                    self.ended.remove(&(id.clone(), true));
                } else {
                    self.ended.insert((id.clone(), true));
                }
            }
            EngineEvent::Participant(participant) => {
                self.ended.remove(&(participant.id.clone(), false));
            }
            EngineEvent::VideoFrame { from, .. } if self.ended.contains(&(from.clone(), false)) => {
                return None;
            }
            EngineEvent::ShareFrame { from, .. } if self.ended.contains(&(from.clone(), true)) => {
                return None;
            }
            _ => {}
        }
        Some(event)
    }
}

/// One participant's connection over the last second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerStats {
    /// Round-trip time, ms (from RTCP receiver reports).
    pub rtt_ms: Option<f64>,
    /// Packets lost of what it sent us (0..1), from sequence numbers.
    pub receive_loss: f64,
    /// Packets lost of the video we send it (0..1), as it reports.
    pub send_loss: Option<f64>,
    /// Interarrival jitter of the video we send it, ms, as it reports.
    pub send_jitter_ms: Option<f64>,
    /// Video received, kbit/s.
    pub receive_video_kbps: f64,
    /// Audio received, kbit/s.
    pub receive_audio_kbps: f64,
    /// What we send it (its layer of our camera, our audio, our share), kbit/s.
    pub send_kbps: f64,
    /// The size of the layer of our camera it gets (`None`: no video to it: it does not show
    /// ours, or its link carries too little).
    pub send_layer: Option<(u32, u32)>,
    /// What its link is estimated to carry, from the loss it reports, kbit/s.
    pub send_estimate_kbps: f64,
    /// Video frames decoded per second.
    pub frame_rate: f64,
    /// The selected candidate pair's path.
    pub path: Option<Path>,
}

/// What one remote participant looks like to the engine's owner, for reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerReport {
    /// Display name.
    pub name: String,
    /// Milliseconds from join to this peer's first decoded frame.
    pub first_frame_ms: Option<u64>,
    /// Milliseconds from join to the first ICE connection with this peer.
    pub connected_ms: Option<u64>,
    /// Frames decoded.
    pub video_frames_decoded: u64,
    /// Access units of its video dropped unseen because this machine's decoder was too far
    /// behind (each time, its next keyframe was asked for).
    pub video_units_dropped: u64,
    /// Pictures of its video decoded but dropped because the engine was behind with them.
    pub video_pictures_dropped: u64,
    /// The sizes of its decoded pictures, in the order they changed (the layers it sent us; the
    /// last is the current one; the first 100 changes).
    pub video_sizes: Vec<(u32, u32)>,
    /// Milliseconds from join to the last decoded frame.
    pub last_frame_ms: Option<u64>,
    /// The longest wait between two decoded frames of its video, ms: how long the picture froze
    /// at worst (a network change, a lost keyframe).
    pub longest_video_gap_ms: u64,
    /// The pattern id read from its synthetic video.
    pub pattern_id: Option<u32>,
    /// The synthetic tone last heard from it, Hz.
    pub audio_tone_hz: Option<f64>,
    /// The selected candidate pair's path.
    pub path: Option<Path>,
    /// Whether it is muted (as it says).
    pub muted: bool,
    /// Whether its hand is raised (as it says).
    pub hand_raised: bool,
    /// Its hand's place in the room's queue (as the relay counts raises).
    pub hand_order: Option<u64>,
    /// ICE restarts this side made (as the offerer).
    pub ice_restarts: u32,
    /// The connection over the last second.
    pub stats: PeerStats,
    /// When (Unix ms) the layer of our camera it gets changed, and to what size (`None`: no
    /// video to it), in order (the first 100 changes).
    pub send_layers: Vec<(u64, Option<(u32, u32)>)>,
    /// Glass-to-glass video latency, ms: decode time minus the capture time stamped into each
    /// synthetic frame (clocks must agree: same machine or NTP), one sample per frame (last 10,000).
    pub video_latency_ms: Vec<f64>,
    /// Audio latency to the speaker queue, ms, from the synthetic microphone's markers.
    pub audio_latency_ms: Vec<f64>,
    /// The candidate types this participant's signals carried (`host`, `srflx`, `relay`, …): what
    /// of its network it showed us (a relay-only participant shows `relay` alone).
    pub candidates_received: Vec<&'static str>,
    /// Whether it shares its screen now (as it says).
    pub sharing: bool,
    /// Whether it records the call now (as the relay says).
    pub recording: bool,
    /// Pictures of its screen share decoded.
    pub share_frames_decoded: u64,
    /// Milliseconds from join to the first decoded picture of its share.
    pub share_first_frame_ms: Option<u64>,
    /// The pattern id read from its synthetic share.
    pub share_pattern_id: Option<u32>,
    /// Glass-to-glass latency of its share, ms, from the stamps (last 10,000).
    pub share_latency_ms: Vec<f64>,
}

/// The `q` quantile (0..=1) of `values`, or `None` if empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_of_a_stream_that_ended_are_not_handed_out_after_its_end() {
        let (sink, mut events) = EventSink::new();
        let ann = PeerId::parse("aaaaaaaaaaa").unwrap_or_else(|_| unreachable!("a valid id"));
        let frame = Arc::new(
            I420Frame::filled(16, 16, (16, 128, 128)).unwrap_or_else(|_| unreachable!("a valid size")),
        );
        let picture =
            || EngineEvent::VideoFrame { from: ann.clone(), frame: Arc::clone(&frame), stamp: None };
        let share = || EngineEvent::ShareFrame { from: ann.clone(), frame: Arc::clone(&frame), stamp: None };
        // Queued while the app was busy: two pictures, then Ann's share stops and she leaves.
        for event in [picture(), share(), EngineEvent::PeerSharing { id: ann.clone(), sharing: false }] {
            sink.send(event).unwrap_or_else(|()| unreachable!("the app is there"));
        }
        sink.send(EngineEvent::ParticipantLeft { id: ann.clone(), reason: LeaveReason::Left })
            .unwrap_or_else(|()| unreachable!("the app is there"));
        assert!(matches!(events.try_recv(), Some(EngineEvent::PeerSharing { sharing: false, .. })));
        assert!(matches!(events.try_recv(), Some(EngineEvent::ParticipantLeft { .. })));
        assert!(events.try_recv().is_none(), "no picture of Ann after she left");
        // She comes back (a resumed seat keeps its id): her pictures are hers again.
        let back = Participant {
            id: ann.clone(),
            name: "Ann".into(),
            role: confer_proto::Role::Guest,
            muted: false,
            camera: true,
            hand_raised: false,
            hand_order: None,
            sharing: false,
            recording: false,
            state: confer_proto::PeerState::Active,
        };
        sink.send(EngineEvent::Participant(back)).unwrap_or_else(|()| unreachable!("the app is there"));
        sink.send(picture()).unwrap_or_else(|()| unreachable!("the app is there"));
        assert!(matches!(events.try_recv(), Some(EngineEvent::Participant(_))));
        assert!(matches!(events.try_recv(), Some(EngineEvent::VideoFrame { .. })));
    }
}
