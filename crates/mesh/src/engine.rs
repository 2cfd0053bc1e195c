//! The call engine: an invite link becomes a live call with every other participant.
//!
//! One task owns the call: it reads signaling events, peer-connection events, commands from the
//! handle and a 20 ms playout tick. What to do about the peers (who is kept, who offers, what
//! counts as connected, when to restart ICE or give up, what a relay resume or a network change
//! means) is decided by the IO-free core in [`crate::call`], which this task feeds and obeys.
//! Capture and encoding run on their own threads (`capture.rs`): the camera is encoded in up to
//! three sizes ([`crate::layers`]), each peer gets the one chosen for it on a track of its own,
//! and layers nobody gets are not encoded; one Opus encode goes to an audio track every peer
//! connection shares. Remote video is decoded per peer and handed out as frames (`video.rs`),
//! remote audio goes through the playout (jitter buffers, mix, levels) to the speaker. Every
//! queue is bounded ([`crate::queues`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confer_media::{
    AudioProcessor, Camera, CameraChoice, DeviceChoice, FRAME_SAMPLES, H264Config, H264Encoder, I420Frame,
    Microphone, OpusConfig, OpusEncoder, PROCESSING_FRAME, Playout, ProcessingConfig, Speaker,
};
use confer_proto::{ClientMessage, ErrorCode, InviteLink, LeaveReason, Participant, PeerId, SignalPayload};
use tokio::sync::mpsc;

use crate::call::{Call, Input as CallInput, Output as CallOutput};
use crate::data::PeerMessage;
use crate::decide::IcePolicy;
use crate::decode::{Decoded, Pushed, StreamDecoder};
use crate::files::FileEvent;
use crate::layers::{LAYERS, Ladder, PeerVideo, View};
use crate::nopath::NoPathCause;
use crate::peer::{LocalTracks, Peer, PeerEvent, PeerEvents, PeerInputs, RelayAnswer, Stack};
use crate::probe::AudioProbe;
use crate::record::{Medium, Recorder, When};
use crate::share::{ShareChoice, ShareOut, Sharing};
use crate::voice::{OpusTuning, VoiceRate};

use crate::signaling::{self, Admission, JoinError, JoinOptions, Session, Signaling, SignalingEvent};

mod capture;
mod commands;
mod config;
mod events;
mod reach;
mod shows;
mod transfers;
mod video;

use capture::{ALL_LAYERS, DeviceJobs, Encoded, LayerUnit, Sending, Swaps, start_media, switched};
use commands::Command;
pub use commands::EngineHandle;
pub use config::{EngineConfig, EngineError, MediaSource};
use events::EventSink;
pub use events::{EngineEvent, EngineEvents, PeerReport, PeerStats, quantile};
use reach::refine;
use transfers::{MAX_INCOMING, Running};

pub(crate) fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Joins the call behind `link`.
pub async fn join(
    link: &InviteLink,
    config: EngineConfig,
) -> Result<(EngineHandle, EngineEvents), EngineError> {
    let started = Instant::now();
    let stack = Stack::new().map_err(|e| EngineError::WebRtc(e.to_string()))?;
    let tracks = LocalTracks::new();
    let (signaling, admission, signal_events) = signaling::join(link, JoinOptions::new(&config.name)).await?;
    let (event_tx, events) = EventSink::new();
    let (commands, command_rx) = mpsc::channel(crate::queues::COMMANDS);
    let leave = Arc::new(tokio::sync::Notify::new());
    let (media_tx, media_rx) = mpsc::channel(crate::queues::ENCODED);
    let (peer_tx, peer_rx) = PeerEvents::new();
    let (share_tx, share_rx) = mpsc::channel(crate::share::QUEUE);
    let (file_tx, file_rx) = mpsc::channel(crate::queues::FILE_EVENTS);
    let (decoded_tx, decoded_rx) = mpsc::channel(crate::decode::DECODED_QUEUE);
    let sending = Arc::new(Sending::default());
    let ladder = Ladder::new(config.width, config.height, config.fps, config.video_bitrate);
    // Audio narrows only once video is down to its smallest layer (its ceiling), and to half
    // once video is paused (its floor).
    let (floor, ceiling) = ladder.range(LAYERS - 1);
    let voice = VoiceRate::new(OpusConfig::default().bitrate_bps.unsigned_abs(), [ceiling, floor]);
    // The encoder starts as the tuning does: FEC on once someone reports a loss.
    *sending.opus.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(voice.tuning());
    let (speaker, swaps) = start_media(&config, &ladder, &sending, media_tx)?;

    let probe = config.probe.then(AudioProbe::default);
    let mut engine = Engine {
        config,
        started,
        stack,
        tracks,
        signaling,
        session: None,
        peers: HashMap::new(),
        peer_events: peer_tx,
        events: event_tx,
        playout: Playout::new(),
        speaker,
        swaps,
        device_jobs: DeviceJobs::start(),
        sending,
        ladder,
        voice,
        default_view: None,
        views: HashMap::new(),
        decoders: HashMap::new(),
        decoded: decoded_tx,
        reports: HashMap::new(),
        relay_diagnosis: None,
        awaiting_diagnosis: Vec::new(),
        participants: HashMap::new(),
        hand_raised: false,
        sharing: None,
        share_wanted: None,
        recorder: None,
        record_wanted: false,
        record_said: false,
        finishing: tokio::task::JoinSet::new(),
        probing: tokio::task::JoinSet::new(),
        own_audio_rtp: 0,
        share_out: share_tx,
        file_events: file_tx,
        transfers: tokio::task::JoinSet::new(),
        receiving: HashMap::new(),
        peer_transfers: HashMap::new(),
        addresses: crate::peer::local_addresses(),
        sent_bytes: 0,
        last_counts: HashMap::new(),
        call: Call::new(IcePolicy::default()),
        probe,
    };
    match admission {
        Admission::Joined(session) => engine.seated(session).await,
        Admission::Knocking { .. } => {
            let _ = engine.events.send(EngineEvent::Knocking);
        }
    }
    let inputs =
        Inputs { signaling: signal_events, peers: peer_rx, commands: command_rx, leave: Arc::clone(&leave) };
    tokio::spawn(engine.run(inputs, (media_rx, share_rx, file_rx, decoded_rx)));
    Ok((EngineHandle { commands, leave }, events))
}

struct PeerSlot {
    peer: Peer,
    /// Which layer of our camera its link and view allow, and why.
    video: PeerVideo,
    /// The layer it gets: `video`'s, cut to fit our uplink when we know it
    /// ([`EngineConfig::uplink_kbps`]).
    layer: Option<usize>,
    /// The layer its track carries now (a change waits for the new layer's keyframe).
    sent_layer: Option<usize>,
    /// The worst loss it reported for our video since the last second.
    loss: Option<f64>,
    /// Bytes of our camera sent to it since the last statistics.
    video_bytes: u64,
}

/// What the engine's own threads and tasks produce: encoded media, a share's pictures, file
/// transfers' progress, decoded pictures.
type Produced = (
    mpsc::Receiver<Encoded>,
    mpsc::Receiver<ShareOut>,
    mpsc::Receiver<(PeerId, FileEvent)>,
    mpsc::Receiver<Decoded>,
);

/// What the engine's task reads besides its own threads' output.
struct Inputs {
    signaling: mpsc::Receiver<SignalingEvent>,
    peers: PeerInputs,
    commands: mpsc::Receiver<Command>,
    leave: Arc<tokio::sync::Notify>,
}

struct Engine {
    config: EngineConfig,
    started: Instant,
    stack: Stack,
    tracks: LocalTracks,
    signaling: Signaling,
    session: Option<Session>,
    peers: HashMap<PeerId, PeerSlot>,
    peer_events: PeerEvents,
    events: EventSink,
    playout: Playout<PeerId>,
    speaker: Arc<Mutex<Speaker>>,
    swaps: Swaps,
    device_jobs: DeviceJobs,
    sending: Arc<Sending>,
    /// The layers our camera is encoded in.
    ladder: Ladder,
    /// How our Opus encoder follows the peers' links.
    voice: VoiceRate<PeerId>,
    /// What we show everyone's camera in, unless said per peer (`None`: nothing said).
    default_view: Option<View>,
    /// What we show a peer's camera in, said to it alone.
    views: HashMap<PeerId, View>,
    /// Per peer, the camera's decoder thread (`false`) and the screen share's (`true`).
    decoders: HashMap<(PeerId, bool), StreamDecoder>,
    /// Where the decoder threads hand their pictures.
    decoded: mpsc::Sender<Decoded>,
    reports: HashMap<PeerId, PeerReport>,
    /// The TURN URLs' answers to our own requests, once asked (see [`Engine::diagnose_relay`]).
    relay_diagnosis: Option<Vec<RelayAnswer>>,
    /// Peers waiting for that diagnosis (asked once; every one still unconnected gets it).
    awaiting_diagnosis: Vec<PeerId>,
    /// Everyone else, as the relay and their own data channel last described them.
    participants: HashMap<PeerId, Participant>,
    /// Our hand is raised.
    hand_raised: bool,
    /// Our screen share, while it runs.
    sharing: Option<Sharing>,
    /// A share asked of the relay and not yet granted (one at a time per room).
    share_wanted: Option<(ShareChoice, u32)>,
    /// Our recording of the call, while it runs.
    recorder: Option<Recorder>,
    /// A recording asked for, waiting for the relay to tell everyone.
    record_wanted: bool,
    /// We have told the relay about recording at least once (after a reconnect it is told
    /// again what is true now: a `record` lost on a dying connection must not stick).
    record_said: bool,
    /// Recordings being finished (their index written) off the engine's task.
    finishing: tokio::task::JoinSet<()>,
    /// Our own requests to the TURN URLs (see [`Engine::diagnose_relay`]), aborted when the call
    /// ends.
    probing: tokio::task::JoinSet<()>,
    /// Our own audio's clock for the recording (20 ms packets at 48 kHz).
    own_audio_rtp: u32,
    /// Where a share's thread hands its access units.
    share_out: mpsc::Sender<ShareOut>,
    /// Where file transfers report (each transfer's events are few: progress every 250 ms).
    file_events: mpsc::Sender<(PeerId, FileEvent)>,
    /// File transfers running, aborted when the call ends.
    transfers: tokio::task::JoinSet<()>,
    /// Files being received, per peer (at most [`MAX_INCOMING`] each).
    receiving: HashMap<PeerId, usize>,
    /// Each peer's transfers, stopped (and reported) before its connection is closed.
    peer_transfers: HashMap<PeerId, Vec<Running>>,
    /// The machine's interface addresses at the last look.
    addresses: std::collections::BTreeSet<std::net::IpAddr>,
    /// Bytes encoded for every peer (audio and the screen share) since the last statistics.
    sent_bytes: u64,
    /// Per peer, the counters at the last statistics: video bytes, audio bytes, packets,
    /// packets expected, frames decoded.
    last_counts: HashMap<PeerId, [u64; 5]>,
    /// The decisions about the peers: who is kept, who offers, connected, ICE recovery.
    call: Call,
    /// The test participant's measurements of what it plays (`EngineConfig::probe`).
    probe: Option<AudioProbe>,
}

impl Engine {
    async fn run(
        mut self,
        Inputs { signaling: mut signal_events, peers: mut peer_events, mut commands, leave }: Inputs,
        (mut media, mut shared, mut files, mut decoded): Produced,
    ) {
        let mut playout_tick = tokio::time::interval(Duration::from_millis(20));
        playout_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut second = tokio::time::interval(Duration::from_secs(1));
        // A look at the machine's addresses (a few microseconds): a move to another network is
        // acted on within this long.
        let mut address_tick = tokio::time::interval(Duration::from_millis(250));
        address_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let frame_duration = Duration::from_secs(1) / self.config.fps.max(1);
        let end = loop {
            tokio::select! {
                event = signal_events.recv() => match event {
                    Some(SignalingEvent::Ended(reason)) => break reason.map(|r| r.to_string()),
                    Some(event) => self.on_signaling(event).await,
                    None => break Some("signaling stopped".into()),
                },
                Some((from, event)) = peer_events.recv() => self.on_peer(from, event).await,
                () = leave.notified() => {
                    // Commands given before leaving are carried out first (a last chat goes).
                    while let Ok(command) = commands.try_recv() {
                        self.on_command(command).await;
                    }
                    self.signaling.leave();
                    break None;
                }
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => {
                        self.signaling.leave();
                        break None;
                    }
                },
                Some(encoded) = media.recv() => match encoded {
                    Encoded::Video(units, captured_us) => self.send_video(units, captured_us, frame_duration).await,
                    Encoded::Audio(packet) => {
                        self.sent_bytes += packet.len() as u64;
                        self.record_own_audio(&packet);
                        self.tracks.send_audio(packet).await;
                    }
                    Encoded::Preview(frame) => {
                        let _ = self.events.send(EngineEvent::SelfView(frame));
                    }
                    Encoded::CaptureEnded(device) => {
                        let reason = "capture stopped: the device is gone or failed".to_owned();
                        let _ = self.events.send(EngineEvent::DeviceFailed { device, reason });
                    }
                },
                Some(out) = shared.recv() => match out {
                    ShareOut::Frame(data, duration) => {
                        self.sent_bytes += data.len() as u64;
                        self.record_own_video(Medium::Screen, When::Now, &data);
                        self.tracks.send_screen(data, duration).await;
                    }
                    ShareOut::Ended(why) => self.stop_sharing(Some(why)).await,
                },
                Some((peer, event)) = files.recv() => self.on_file(peer, event).await,
                Some(picture) = decoded.recv() => self.on_decoded(picture),
                Some(_) = self.transfers.join_next(), if !self.transfers.is_empty() => {}
                Some(_) = self.finishing.join_next(), if !self.finishing.is_empty() => {}
                Some(_) = self.probing.join_next(), if !self.probing.is_empty() => {}
                _ = playout_tick.tick() => {
                    ticks += 1;
                    self.play(ticks.is_multiple_of(5));
                }
                _ = second.tick() => self.every_second().await,
                _ = address_tick.tick() => self.watch_addresses().await,
            }
        };
        self.sending.stop.store(true, Ordering::Relaxed);
        self.transfers.abort_all();
        self.probing.abort_all();
        if let Some(sharing) = self.sharing.take() {
            // Dropping it waits for its thread (at most an encode): not on the runtime's thread.
            let _ = tokio::task::spawn_blocking(move || drop(sharing)).await;
        }
        self.stop_recording(None, false);
        // Each decoder thread ends and is waited for (at most a decode each).
        let decoders = std::mem::take(&mut self.decoders);
        let _ = tokio::task::spawn_blocking(move || drop(decoders)).await;
        // A recording's file is complete before the call is said to be over.
        while self.finishing.join_next().await.is_some() {}
        for slot in self.peers.values() {
            slot.peer.close().await;
        }
        let dropped = self.events.dropped();
        if dropped > 0 {
            tracing::info!(dropped, "pictures dropped because the app was behind");
        }
        let _ = self.events.send(EngineEvent::Ended(end));
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn seated(&mut self, session: Session) {
        let _ = self.events.send(EngineEvent::Joined {
            peer_id: session.peer_id.clone(),
            participants: session.participants.clone(),
            host: session.role == confer_proto::Role::Host,
            locked: session.locked,
            knocking: session.knocking.clone(),
        });
        let me = session.peer_id.clone();
        let others: Vec<Participant> = session.participants.clone();
        self.session = Some(session);
        let ids = others.iter().map(|p| p.id.clone()).collect();
        for participant in others {
            self.note_participant(participant);
        }
        self.call.handle_input(self.now(), CallInput::Seated { me, others: ids });
        self.carry_out().await;
    }

    /// Takes what the relay says of a participant: its name, state, share and recording.
    fn note_participant(&mut self, participant: Participant) {
        if self.session.is_none() {
            return;
        }
        let id = participant.id.clone();
        self.reports.entry(id.clone()).or_default().name.clone_from(&participant.name);
        self.participants.insert(id.clone(), participant.clone());
        let (sharing, recording) = (participant.sharing, participant.recording);
        let _ = self.events.send(EngineEvent::Participant(participant));
        // (After the participant: the page shows a share of someone it knows.)
        self.peer_sharing(&id, sharing);
        self.peer_recording(&id, recording);
    }

    /// Makes the connection to `id` (the core said to); the offerer sends the first offer.
    async fn open_peer(&mut self, id: PeerId, offerer: bool) {
        let Some(session) = &self.session else { return };
        let peer = Peer::new(
            &self.stack,
            &session.ice_servers,
            self.config.relay_only,
            &self.tracks,
            id.clone(),
            offerer,
            self.peer_events.clone(),
        )
        .await;
        let first_offer = match peer {
            Ok(mut peer) if offerer => match peer.offer(false).await {
                Ok(offer) => Ok((peer, Some(offer))),
                Err(err) => {
                    // Its ICE agent and sockets would outlive it otherwise.
                    peer.close().await;
                    Err(err)
                }
            },
            Ok(peer) => Ok((peer, None)),
            Err(err) => Err(err),
        };
        let peer = match first_offer {
            Ok((peer, offer)) => {
                if let Some(offer) = offer {
                    self.signaling.signal(id.clone(), offer);
                }
                peer
            }
            Err(err) => {
                self.call.handle_input(self.now(), CallInput::OpenFailed(id.clone()));
                let detail = err.to_string();
                let _ = self.events.send(EngineEvent::PeerUnreachable {
                    id,
                    detail,
                    cause: None,
                    retrying: false,
                });
                return;
            }
        };
        // Said as soon as the channel opens (it waits until then), before the relay's word arrives.
        peer.send_data(&self.my_state().encode()).await;
        if let Some(View { width, height }) = self.views.get(&id).copied().or(self.default_view) {
            peer.send_data(&PeerMessage::View { width, height }.encode()).await;
        }
        let _ = self.playout.add_stream(id.clone());
        self.peers.insert(
            id,
            PeerSlot {
                peer,
                video: PeerVideo::new(&self.ladder),
                layer: None,
                sent_layer: None,
                loss: None,
                video_bytes: 0,
            },
        );
        self.steer();
    }

    async fn remove_participant(&mut self, id: &PeerId) {
        self.views.remove(id);
        self.participants.remove(id);
        self.last_counts.remove(id);
        // Its transfers first: a send in progress must not hold up closing the connection. Each
        // is reported stopped where it was (a file being received is deleted as its task ends).
        for transfer in self.peer_transfers.remove(id).unwrap_or_default() {
            if transfer.handle.is_finished() {
                continue;
            }
            transfer.handle.abort();
            let reason =
                crate::files::FileError::Cut { done: transfer.done, size: transfer.size }.to_string();
            let _ = self.events.send(EngineEvent::FileFailed {
                peer: id.clone(),
                name: transfer.name,
                sending: transfer.sending,
                reason,
            });
        }
        self.receiving.remove(id);
        if let Some(slot) = self.peers.remove(id) {
            // What it showed of its network stays in the report after it is gone.
            let (_, received) = slot.peer.candidate_types();
            if let Some(report) = self.reports.get_mut(id) {
                report.candidates_received = received.into_iter().collect();
            }
            slot.peer.close().await;
        }
        self.playout.remove_stream(id);
        self.voice.forget(id);
        let gone = [self.decoders.remove(&(id.clone(), false)), self.decoders.remove(&(id.clone(), true))];
        // Their threads are waited for off the engine's task.
        drop(tokio::task::spawn_blocking(move || drop(gone)));
        if let Some(probe) = &mut self.probe {
            probe.forget(id);
        }
        self.steer();
    }

    async fn on_signaling(&mut self, event: SignalingEvent) {
        match event {
            SignalingEvent::Admitted(session) => self.seated(session).await,
            SignalingEvent::PeerJoined(participant) | SignalingEvent::PeerResumed(participant) => {
                let id = participant.id.clone();
                self.note_participant(participant);
                self.call.handle_input(self.now(), CallInput::Present(id));
                self.carry_out().await;
            }
            SignalingEvent::PeerUpdated(participant) => {
                // The relay tells everyone, this participant too, of its own changes: the share
                // it granted us, or a host stopping it.
                if self.session.as_ref().is_some_and(|s| s.peer_id == participant.id) {
                    let _ = self.events.send(EngineEvent::Myself(participant.clone()));
                    if participant.sharing
                        && let Some((choice, fps)) = self.share_wanted.take()
                    {
                        self.start_sharing(choice, fps).await;
                    } else if !participant.sharing && self.sharing.is_some() && self.share_wanted.is_none() {
                        self.stop_sharing(Some("a host stopped your share".into())).await;
                    }
                    if participant.recording && self.record_wanted {
                        self.start_recording();
                    }
                    return;
                }
                self.peer_sharing(&participant.id, participant.sharing);
                self.peer_recording(&participant.id, participant.recording);
                if let Some(report) = self.reports.get_mut(&participant.id) {
                    report.muted = participant.muted;
                    report.hand_raised = participant.hand_raised;
                    report.hand_order = participant.hand_order;
                    report.name.clone_from(&participant.name);
                }
                self.participants.insert(participant.id.clone(), participant.clone());
                let _ = self.events.send(EngineEvent::Participant(participant));
            }
            SignalingEvent::PeerReconnecting(id) => {
                let _ = self.events.send(EngineEvent::ParticipantReconnecting(id));
            }
            SignalingEvent::PeerLeft { peer, reason } => {
                self.call.handle_input(self.now(), CallInput::Left(peer.clone()));
                self.carry_out().await;
                // (Also one whose connection could not be made: the core had forgotten it.)
                self.remove_participant(&peer).await;
                let _ = self.events.send(EngineEvent::ParticipantLeft { id: peer, reason });
            }
            SignalingEvent::Signal { from, payload: SignalPayload::RestartIce } => {
                // The peer's network changed.
                self.call.handle_input(self.now(), CallInput::RestartAsked(from));
                self.carry_out().await;
            }
            SignalingEvent::Signal { from, payload } => {
                let Some(slot) = self.peers.get_mut(&from) else { return };
                let signalled = slot.peer.on_signal(payload).await;
                if slot.peer.take_restart() {
                    self.call.handle_input(self.now(), CallInput::RestartedByPeer(from.clone()));
                }
                match signalled {
                    Ok(Some(answer)) => self.signaling.signal(from, answer),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(peer = %from, error = %err, "a signal could not be applied"),
                }
            }
            SignalingEvent::Reconnecting { cause, .. } => {
                self.call.handle_input(self.now(), CallInput::RelayLost);
                let _ = self.events.send(EngineEvent::RelayReconnecting { cause });
            }
            SignalingEvent::Resumed { session, gap } => {
                let _ = self.events.send(EngineEvent::RelayResumed);
                // A relay that restarted has forgotten who shares: claim the share again (a
                // `share_taken` answer stops it, if someone took it meanwhile).
                if self.sharing.is_some() {
                    self.signaling.send(ClientMessage::Share { on: true });
                }
                // Nor who records; and a `record` sent as the old connection died may be lost:
                // say again what is true now (a relay that has it answers only us).
                if self.record_said {
                    let on = self.recorder.is_some() || self.record_wanted;
                    self.signaling.send(ClientMessage::Record { on });
                }
                // What changed while we were away (a share, a recording: presence sent while our
                // connection was down never reached us).
                for participant in &session.participants {
                    self.note_participant(participant.clone());
                }
                // Who is kept, who is opened, what is renegotiated: the core decides.
                let present = session.participants.iter().map(|p| p.id.clone()).collect();
                self.session = Some(session);
                self.call.handle_input(self.now(), CallInput::Resumed { present, gap });
                self.carry_out().await;
            }
            SignalingEvent::Knock(knocker) => {
                let _ = self.events.send(EngineEvent::Knock(knocker));
            }
            SignalingEvent::KnockEnded(id) => {
                let _ = self.events.send(EngineEvent::KnockEnded(id));
            }
            SignalingEvent::RoomLocked { locked, .. } => {
                let _ = self.events.send(EngineEvent::RoomLocked { locked });
            }
            SignalingEvent::SharePolicy { several } => {
                let _ = self.events.send(EngineEvent::SharePolicy { several });
            }
            SignalingEvent::Error { code: ErrorCode::ShareTaken, message } => {
                // Refused (someone else shares), or our share was not given back after a relay
                // restart because someone took the floor meanwhile.
                self.share_wanted = None;
                if self.sharing.is_some() {
                    self.stop_sharing(Some(message)).await;
                } else {
                    let _ = self.events.send(EngineEvent::ShareStopped { reason: Some(message) });
                }
            }
            SignalingEvent::Error { code: ErrorCode::UnknownType, .. } if self.record_wanted => {
                // A relay from before recordings were announced: nobody would be told.
                self.record_wanted = false;
                let reason = "the meeting server is too old to tell everyone about a recording (update it); \
                              nothing was recorded"
                    .to_owned();
                let _ = self.events.send(EngineEvent::RecordingStopped {
                    path: None,
                    reason: Some(reason),
                    duration_ms: 0,
                    bytes: 0,
                });
            }
            SignalingEvent::Error { code: ErrorCode::UnknownType, .. } if self.share_wanted.is_some() => {
                // A relay from before shares went through it: its presence would say nobody
                // shares, so sharing without its word would confuse everyone.
                self.share_wanted = None;
                let reason =
                    "the meeting server is too old to arbitrate screen shares (update it)".to_owned();
                let _ = self.events.send(EngineEvent::ShareStopped { reason: Some(reason) });
            }
            SignalingEvent::Error { code, message } => {
                let _ = self.events.send(EngineEvent::RelayError { code, message });
            }
            SignalingEvent::Ended(_) => {}
        }
    }

    async fn on_peer(&mut self, from: PeerId, event: PeerEvent) {
        match event {
            PeerEvent::Signal(payload) => self.signaling.signal(from, payload),
            PeerEvent::Ice(ice_event) => {
                let now = self.now();
                self.call.handle_input(now, CallInput::Ice(from, ice_event));
                self.carry_out().await;
            }
            PeerEvent::Video { access_unit, screen, rtp_timestamp } => {
                if let Some(recorder) = &mut self.recorder {
                    let name = peer_name(&self.reports, &from);
                    let medium = if screen { Medium::Screen } else { Medium::Camera };
                    if recorder.video(&from, name, medium, When::Rtp(rtp_timestamp), &access_unit)
                        && let Some(slot) = self.peers.get(&from)
                    {
                        // The track lost a picture: it resumes at the peer's next keyframe.
                        slot.peer.request_keyframes();
                    }
                }
                self.decode(from, screen, access_unit);
            }
            PeerEvent::Audio { rtp_timestamp, payload } => {
                if let Some(recorder) = &mut self.recorder {
                    let name = peer_name(&self.reports, &from);
                    recorder.audio(&from, name, When::Rtp(rtp_timestamp), &payload);
                }
                let arrival = self.now().as_micros() as u64;
                self.playout.push(&from, rtp_timestamp, payload, arrival);
            }
            PeerEvent::Data(text) => match PeerMessage::decode(&text) {
                Ok(PeerMessage::Reaction { emoji }) => {
                    let _ = self.events.send(EngineEvent::Reaction { from, emoji });
                }
                Ok(PeerMessage::Chat { text }) => {
                    let _ = self.events.send(EngineEvent::Chat { from, text });
                }
                Ok(PeerMessage::State { muted, camera, hand_raised }) => {
                    let report = self.reports.entry(from.clone()).or_default();
                    (report.muted, report.hand_raised) = (muted, hand_raised);
                    if let Some(participant) = self.participants.get_mut(&from) {
                        (participant.muted, participant.camera, participant.hand_raised) =
                            (muted, camera, hand_raised);
                        let _ = self.events.send(EngineEvent::Participant(participant.clone()));
                    }
                }
                Ok(PeerMessage::View { width, height }) => {
                    let now = self.now();
                    if let Some(slot) = self.peers.get_mut(&from) {
                        slot.video.on_view(View { width, height }, &self.ladder, now);
                        self.steer();
                    }
                }
                Err(err) => tracing::debug!(peer = %from, error = %err, "a data-channel message was refused"),
            },
            PeerEvent::KeyframeRequested { screen: false } => {
                if let Some(layer) = self.peers.get(&from).and_then(|slot| slot.sent_layer) {
                    self.sending.want_keyframes(1 << layer);
                }
            }
            PeerEvent::KeyframeRequested { screen: true } => {
                if let Some(sharing) = &self.sharing {
                    sharing.request_keyframe();
                }
            }
            PeerEvent::SendReport { loss, jitter_ms } => {
                let stats = &mut self.reports.entry(from.clone()).or_default().stats;
                (stats.send_loss, stats.send_jitter_ms) = (Some(loss), Some(jitter_ms));
                if let Some(slot) = self.peers.get_mut(&from) {
                    slot.loss = Some(slot.loss.map_or(loss, |worst| worst.max(loss)));
                }
            }
            PeerEvent::NothingGathered => {
                let (diagnosed, what) = match (self.config.relay_only, self.relay_offered()) {
                    (true, true) => {
                        (NoPathCause::RelayUnreachable, "relay candidates only, and no TURN server answered")
                    }
                    (true, false) => (
                        NoPathCause::NothingGathered,
                        "relay candidates only, and the relay offers no TURN server",
                    ),
                    (false, _) => (NoPathCause::NothingGathered, "no usable network interface"),
                };
                let name = self.reports.get(&from).map(|r| r.name.clone()).unwrap_or_default();
                let (cause, answers) = refine(diagnosed, self.relay_verdict().as_ref());
                let detail =
                    format!("{}{answers}; no ICE candidates gathered here: {what}", cause.describe(&name));
                let _ = self.events.send(EngineEvent::PeerUnreachable {
                    id: from.clone(),
                    detail,
                    cause: Some(cause),
                    retrying: false,
                });
                if cause == NoPathCause::RelayUnreachable && self.relay_diagnosis.is_none() {
                    self.diagnose_relay(&from);
                }
            }
            PeerEvent::RelayDiagnosis(answers) => self.on_relay_diagnosis(answers),
            PeerEvent::FileChannel(incoming) => {
                let count = self.receiving.entry(from.clone()).or_default();
                if *count >= MAX_INCOMING {
                    tracing::info!(peer = %from, "a file channel refused: too many transfers from this peer");
                    incoming.refuse();
                    return;
                }
                *count += 1;
                let (dir, events) = (self.config.downloads.clone(), self.file_events.clone());
                let handle = self.transfers.spawn(crate::files::receive(incoming, dir, from.clone(), events));
                self.peer_transfers.entry(from).or_default().push(Running::new(handle, None, "?", false, 0));
            }
            PeerEvent::AudioLoss(loss) => {
                let now = self.now();
                self.voice.on_loss(&from, loss, now);
            }
            PeerEvent::RoundTrip(rtt) => {
                self.reports.entry(from.clone()).or_default().stats.rtt_ms =
                    Some(rtt.as_secs_f64() * 1_000.0);
            }
        }
    }

    fn play(&mut self, report_levels: bool) {
        let (probe, reports) = (&mut self.probe, &mut self.reports);
        let now_us = unix_us();
        let frame = self.playout.next_frame_each(|id, samples| {
            let Some(probe) = probe.as_mut() else { return };
            let found = probe.hear(id, samples, now_us);
            let latencies = &mut reports.entry(id.clone()).or_default().audio_latency_ms;
            latencies.extend(found.into_iter().take(10_000usize.saturating_sub(latencies.len())));
        });
        if let Ok(speaker) = self.speaker.lock() {
            speaker.play(&frame.samples);
        }
        if report_levels {
            let _ = self.events.send(EngineEvent::AudioLevels {
                levels: frame.levels,
                active_speaker: frame.active_speaker,
            });
        }
    }

    async fn every_second(&mut self) {
        if self.recorder.as_ref().is_some_and(Recorder::failed) {
            // Its writer stopped on an error (a full disk): the reason comes from finishing.
            self.stop_recording(None, true);
        }
        let now = self.now();
        // Peers the relay stopped listing, gone for good; ICE deadlines.
        self.call.handle_input(now, CallInput::Tick);
        self.carry_out().await;
        self.update_stats();
        // Each peer's layer follows the loss it reports (webrtc 0.17 has no delay-based
        // estimator; loss is what there is), and each layer's encoder its weakest receiver.
        let rates: [u32; LAYERS] = std::array::from_fn(|l| self.sending.bitrates[l].load(Ordering::Relaxed));
        let call = &self.call;
        for (_, slot) in self.peers.iter_mut().filter(|(id, _)| call.is_connected(id)) {
            let sent = slot.sent_layer.map(|layer| rates[layer]).filter(|&rate| rate > 0);
            slot.video.on_second(slot.loss.take(), sent, &self.ladder, now);
        }
        self.steer();
        // Audio follows the worst link: FEC for its loss, a narrower bitrate for its estimate.
        let tightest = (self.peers.iter())
            .filter(|(id, _)| self.call.is_connected(id))
            .map(|(_, slot)| slot.video.estimate())
            .min();
        if let Some(tuning) = self.voice.on_second(tightest, now) {
            *self.sending.opus.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tuning);
            let _ = self.events.send(EngineEvent::AudioTuned(tuning));
        }
        let ids: Vec<PeerId> = self.peers.keys().cloned().collect();
        for id in ids {
            if let Some(slot) = self.peers.get(&id) {
                slot.peer.flush_data().await;
            }
            // The last tone named stays in the report when the peer falls silent (mutes).
            if let Some(hz) = self.probe.as_ref().and_then(|probe| probe.tone(&id)) {
                self.reports.entry(id.clone()).or_default().audio_tone_hz = Some(hz);
            }
        }
    }

    /// Acts on a change of the machine's addresses (a move to another network, a VPN, a cable).
    async fn watch_addresses(&mut self) {
        let addresses = crate::peer::local_addresses();
        if addresses == self.addresses {
            return;
        }
        let added = addresses.difference(&self.addresses).copied().collect();
        let removed = self.addresses.difference(&addresses).copied().collect();
        tracing::info!(?added, ?removed, "the network changed");
        let _ = self.events.send(EngineEvent::NetworkChanged { added, removed });
        // First the relay connection (its address may be gone), so that what follows goes out
        // on a live one.
        self.signaling.network_changed(addresses.clone());
        self.addresses = addresses;
        let now = self.now();
        self.call.handle_input(now, CallInput::NetworkChanged);
        self.carry_out().await;
    }

    /// Turns the last second's counters into each connected peer's statistics, and says them.
    fn update_stats(&mut self) {
        let shared_bytes = std::mem::take(&mut self.sent_bytes);
        let mut all = Vec::new();
        for (id, slot) in &mut self.peers {
            let sent_bytes = shared_bytes + std::mem::take(&mut slot.video_bytes);
            let received = &slot.peer.received;
            let report = self.reports.entry(id.clone()).or_default();
            if let Some(decoder) = self.decoders.get(&(id.clone(), false)) {
                report.video_pictures_dropped = decoder.pictures_dropped();
            }
            let now = [
                received.video_bytes.load(Ordering::Relaxed),
                received.audio_bytes.load(Ordering::Relaxed),
                received.packets.load(Ordering::Relaxed),
                received.expected.load(Ordering::Relaxed),
                report.video_frames_decoded,
            ];
            let before = self.last_counts.insert(id.clone(), now).unwrap_or_default();
            if !self.call.is_connected(id) {
                continue;
            }
            let delta: Vec<f64> = now.iter().zip(before).map(|(n, b)| n.saturating_sub(b) as f64).collect();
            let stats = &mut report.stats;
            stats.receive_video_kbps = delta[0] * 8.0 / 1_000.0;
            stats.receive_audio_kbps = delta[1] * 8.0 / 1_000.0;
            stats.receive_loss =
                if delta[3] > 0.0 { (1.0 - delta[2] / delta[3]).clamp(0.0, 1.0) } else { 0.0 };
            stats.frame_rate = delta[4];
            stats.send_kbps = sent_bytes as f64 * 8.0 / 1_000.0;
            stats.send_layer = slot.sent_layer.map(|layer| self.ladder.size(layer));
            stats.send_estimate_kbps = f64::from(slot.video.estimate()) / 1_000.0;
            stats.path = report.path;
            all.push((id.clone(), *stats));
        }
        if !all.is_empty() {
            let _ = self.events.send(EngineEvent::Stats(all));
        }
    }

    /// Our state as said on the data channels.
    fn my_state(&self) -> PeerMessage {
        PeerMessage::State {
            muted: !self.sending.audio.load(Ordering::Relaxed),
            camera: self.sending.video.load(Ordering::Relaxed),
            hand_raised: self.hand_raised,
        }
    }

    /// Sends a message on every peer's data channel (waiting there until it opens).
    async fn tell_everyone(&mut self, message: &PeerMessage) {
        let text = message.encode();
        for slot in self.peers.values() {
            slot.peer.send_data(&text).await;
        }
    }
}

/// What a finished (or failed) recording is reported as.
fn stopped(
    path: std::path::PathBuf,
    dropped: u64,
    reason: Option<String>,
    finished: Result<
        Result<confer_media::RecordingSummary, confer_media::RecordError>,
        tokio::task::JoinError,
    >,
) -> EngineEvent {
    match finished {
        Ok(Ok(summary)) => {
            tracing::info!(path = %path.display(), ?summary, dropped, "recording finished");
            EngineEvent::RecordingStopped {
                path: Some(path),
                reason,
                duration_ms: summary.duration.as_millis() as u64,
                bytes: summary.bytes,
            }
        }
        Ok(Err(err)) => EngineEvent::RecordingStopped {
            path: Some(path),
            reason: Some(reason.unwrap_or_else(|| err.to_string())),
            duration_ms: 0,
            bytes: 0,
        },
        Err(err) => EngineEvent::RecordingStopped {
            path: Some(path),
            reason: Some(err.to_string()),
            duration_ms: 0,
            bytes: 0,
        },
    }
}

/// A peer's name as its report has it, for naming its tracks in a recording.
fn peer_name<'a>(reports: &'a HashMap<PeerId, PeerReport>, id: &PeerId) -> &'a str {
    reports.get(id).map_or("?", |r| r.name.as_str())
}
