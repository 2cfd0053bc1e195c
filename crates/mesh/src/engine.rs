//! The call engine: an invite link becomes a live call with every other participant.
//!
//! One task owns the call: it reads signaling events, peer-connection events, commands from the
//! handle and a 20 ms playout tick. What to do about the peers (who is kept, who offers, what
//! counts as connected, when to restart ICE or give up, what a relay resume or a network change
//! means) is decided by the IO-free core in [`crate::call`], which this task feeds and obeys. Capture and encoding run on their own threads: the camera is encoded in up to
//! three sizes ([`crate::layers`]), each peer gets the one chosen for it on a track of its own,
//! and layers nobody gets are not encoded; one Opus encode goes to an audio track every peer
//! connection shares. Remote video is decoded per peer and handed out as frames, remote audio
//! goes through the playout (jitter buffers, mix, levels) to the speaker.

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

/// Files received at once from one peer; a further `file` channel is refused.
const MAX_INCOMING: usize = 4;

/// A file transfer with one peer, as far as the engine knows it.
#[derive(Debug)]
struct Running {
    handle: tokio::task::AbortHandle,
    /// The transfer's id, once known (a received file says it in its header).
    id: Option<String>,
    name: String,
    sending: bool,
    done: u64,
    size: u64,
}

impl Running {
    fn new(
        handle: tokio::task::AbortHandle,
        id: Option<String>,
        name: &str,
        sending: bool,
        size: u64,
    ) -> Self {
        Self { handle, id, name: name.to_owned(), sending, done: 0, size }
    }
}
use crate::signaling::{self, Admission, JoinError, JoinOptions, Session, Signaling, SignalingEvent};

mod events;

use events::EventSink;
pub use events::{EngineEvent, EngineEvents, PeerReport, PeerStats, quantile};

/// Where the engine's media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    /// The synthetic camera and microphone of this pattern id (tests, demos, bots), a silent
    /// synthetic speaker, and no audio processing (a test tone is not a voice).
    Synthetic {
        /// Pattern id painted into the video and chosen as the tone.
        pattern_id: u32,
    },
    /// Real devices.
    Devices {
        /// Camera (`None`: no camera).
        camera: Option<CameraChoice>,
        /// Microphone.
        microphone: DeviceChoice,
        /// Speaker.
        speaker: DeviceChoice,
        /// Echo cancellation, noise suppression, gain.
        processing: ProcessingConfig,
    },
}

/// How to take part in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Display name.
    pub name: String,
    /// Media source.
    pub media: MediaSource,
    /// Video size and rate.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate bounds, bits per second: (minimum, start, maximum).
    pub video_bitrate: (u32, u32, u32),
    /// Measure what the synthetic devices put in: each peer's tone and the audio latency from
    /// the microphone's markers ([`crate::probe`]; `confer join`'s reports). Off for a user's
    /// call.
    pub probe: bool,
    /// This machine's uplink, kbit/s, if known (the lobby's network check measures it): what
    /// all peers are sent together is kept within 80 % of it, the largest pictures cut first
    /// ([`crate::layers::Ladder::fit_uplink`]). `None`: each peer's link alone decides.
    pub uplink_kbps: Option<u32>,
    /// Only TURN relay candidates (to test a relay, or to hide addresses).
    pub relay_only: bool,
    /// Hand out what the camera sends as [`EngineEvent::SelfView`] (an app's self view; a
    /// headless participant has no use for it).
    pub self_view: bool,
    /// Where files others send are saved.
    pub downloads: std::path::PathBuf,
    /// Where recordings of the call are written.
    pub recordings: std::path::PathBuf,
}

impl EngineConfig {
    /// Synthetic media at 640x360, 30 fps, 300–800–1500 kbit/s.
    pub fn synthetic(name: &str, pattern_id: u32) -> Self {
        Self {
            name: name.to_owned(),
            media: MediaSource::Synthetic { pattern_id },
            width: 640,
            height: 360,
            fps: 30,
            video_bitrate: (300_000, 800_000, 1_500_000),
            uplink_kbps: None,
            probe: true,
            relay_only: false,
            self_view: false,
            downloads: std::env::temp_dir().join("confer-downloads"),
            recordings: std::env::temp_dir().join("confer-recordings"),
        }
    }
}

/// `cause` as what the relay's URLs answered our own requests (`verdict`, once asked) makes it
/// more exact, with those answers in words ("; …", or nothing): a relay that could not be reached
/// may have refused our credentials; where relay candidates were exchanged and nothing got through,
/// the relay's relayed ports may be closed.
fn refine(cause: NoPathCause, verdict: Option<&(NoPathCause, String)>) -> (NoPathCause, String) {
    match (cause, verdict) {
        (NoPathCause::RelayUnreachable, Some((refined, answers)))
        | (NoPathCause::Blocked, Some((refined @ NoPathCause::RelayPortsBlocked, answers))) => {
            (*refined, format!("; {answers}"))
        }
        _ => (cause, String::new()),
    }
}

pub(crate) fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[derive(Debug)]
enum Command {
    Chat(String),
    React(String),
    SendFile(std::path::PathBuf),
    Mute(bool),
    Camera(bool),
    Hand(bool),
    SetCamera(CameraChoice),
    Microphone(DeviceChoice),
    Speaker(DeviceChoice),
    Host(ClientMessage),
    Share(Option<(ShareChoice, u32)>),
    Record(bool),
    View(Option<PeerId>, View),
    Report(tokio::sync::oneshot::Sender<HashMap<PeerId, PeerReport>>),
}

/// A handle to a running call; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    /// Leaving is not queued behind commands: it always gets through.
    leave: Arc<tokio::sync::Notify>,
}

impl EngineHandle {
    /// Queues `command` without waiting ([`crate::queues::COMMANDS`]; when full it is dropped and
    /// logged).
    fn tell(&self, command: Command) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            tracing::error!(?command, "the call is {} commands behind: one dropped", crate::queues::COMMANDS);
        }
    }

    /// Shares a screen, a window or the synthetic page at `fps` (1–30) with everyone, in place
    /// of what is shared now; `None` stops sharing. Answered by [`EngineEvent::ShareStarted`] or
    /// [`EngineEvent::ShareStopped`] with the reason it could not start.
    pub fn share(&self, share: Option<(ShareChoice, u32)>) {
        self.tell(Command::Share(share));
    }

    /// Starts or stops recording the call into a Matroska file in
    /// [`EngineConfig::recordings`]. Everyone is told first (through the relay); writing starts
    /// once the relay confirms, with [`EngineEvent::RecordingStarted`]. Stopping (or leaving)
    /// finishes the file: [`EngineEvent::RecordingStopped`].
    pub fn record(&self, on: bool) {
        self.tell(Command::Record(on));
    }

    /// Tells `peer` (or everyone, and everyone who joins later, with `None`) what we show its
    /// camera in, in device pixels: it sends us the smallest layer that fills it, or no video
    /// for [`View::OFF`] (a minimised window, a tile off screen; audio goes on).
    pub fn view(&self, peer: Option<PeerId>, view: View) {
        self.tell(Command::View(peer, view));
    }

    /// Leaves the call.
    pub fn leave(&self) {
        self.leave.notify_one();
    }

    /// Sends a chat message to everyone (over the peers' data channels, not the relay). A text
    /// the others would refuse (empty, or over 4,000 characters) is refused here, with the
    /// reason, and nothing is sent.
    pub fn chat(&self, text: &str) -> Result<(), crate::data::DataError> {
        crate::data::check_chat(text)?;
        self.tell(Command::Chat(text.to_owned()));
        Ok(())
    }

    /// Sends the file at `path` to everyone connected now, each on a channel of its own
    /// (progress, then [`EngineEvent::FileSent`] or [`EngineEvent::FileFailed`] per peer).
    pub fn send_file(&self, path: &std::path::Path) {
        self.tell(Command::SendFile(path.to_owned()));
    }

    /// Sends a reaction (one of [`crate::data::REACTIONS`]) to everyone.
    pub fn react(&self, emoji: &str) -> Result<(), crate::data::DataError> {
        crate::data::check_reaction(emoji)?;
        self.tell(Command::React(emoji.to_owned()));
        Ok(())
    }

    /// Mutes or unmutes the microphone (nothing is sent while muted).
    pub fn mute(&self, muted: bool) {
        self.tell(Command::Mute(muted));
    }

    /// Turns the camera on or off (no video is sent while off).
    pub fn camera(&self, on: bool) {
        self.tell(Command::Camera(on));
    }

    /// Switches to another camera in the call. The old one keeps sending until the new one is
    /// open; if it cannot be opened, [`EngineEvent::DeviceFailed`] says why and nothing changes.
    pub fn set_camera(&self, choice: CameraChoice) {
        self.tell(Command::SetCamera(choice));
    }

    /// Switches to another microphone in the call (as [`EngineHandle::set_camera`]).
    pub fn set_microphone(&self, choice: DeviceChoice) {
        self.tell(Command::Microphone(choice));
    }

    /// Switches to another speaker in the call (as [`EngineHandle::set_camera`]).
    pub fn set_speaker(&self, choice: DeviceChoice) {
        self.tell(Command::Speaker(choice));
    }

    /// Raises or lowers this participant's hand.
    pub fn raise_hand(&self, raised: bool) {
        self.tell(Command::Hand(raised));
    }

    /// A host action: lock, unlock, admit, deny, remove.
    pub fn host(&self, message: ClientMessage) {
        self.tell(Command::Host(message));
    }

    /// What the engine knows of each remote participant now.
    pub async fn report(&self) -> HashMap<PeerId, PeerReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.commands.send(Command::Report(tx)).await;
        rx.await.unwrap_or_default()
    }
}

/// Why the engine could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Joining failed: unreachable relay, refusal, or protocol trouble.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A device or codec could not be opened.
    #[error("media: {0}")]
    Media(String),
    /// The WebRTC stack could not be set up.
    #[error("{0}")]
    WebRtc(String),
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

/// What the media threads are told while they run.
#[derive(Debug)]
struct Sending {
    /// Video is sent (camera on).
    video: AtomicBool,
    /// Audio is sent (not muted).
    audio: AtomicBool,
    /// Layers whose next picture must be a keyframe (bit n: layer n): a peer joined, asked, or
    /// moves to that layer.
    keyframes: AtomicU8,
    /// The media threads stop.
    stop: AtomicBool,
    /// Per layer, the bitrate its encoder aims for; 0: nobody gets it, it is not encoded.
    bitrates: [AtomicU32; LAYERS],
    /// A retuning for the Opus encoder, taken by the audio thread before its next frame.
    opus: Mutex<Option<OpusTuning>>,
}

/// Every layer.
const ALL_LAYERS: u8 = (1 << LAYERS) - 1;

impl Default for Sending {
    fn default() -> Self {
        Self {
            video: AtomicBool::new(true),
            audio: AtomicBool::new(true),
            keyframes: AtomicU8::new(ALL_LAYERS),
            stop: AtomicBool::new(false),
            bitrates: std::array::from_fn(|_| AtomicU32::new(0)),
            opus: Mutex::new(None),
        }
    }
}

impl Sending {
    /// The next picture of each layer in `layers` (a bit mask) is a keyframe.
    fn want_keyframes(&self, layers: u8) {
        self.keyframes.fetch_or(layers, Ordering::Relaxed);
    }
}

/// Hands `encoded` from a capture thread to the engine without waiting
/// ([`crate::queues::ENCODED`]): when the engine is behind it is dropped, and a dropped picture's
/// layers start again with a keyframe (what follows it could not be decoded). `false` once the
/// engine is gone.
fn hand_over(out: &mpsc::Sender<Encoded>, encoded: Encoded, sending: &Sending) -> bool {
    match out.try_send(encoded) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(Encoded::Video(units, _))) => {
            sending.want_keyframes(units.iter().fold(0, |mask, unit| mask | 1 << unit.layer));
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One layer's access unit of a captured picture.
struct LayerUnit {
    layer: usize,
    data: bytes::Bytes,
    keyframe: bool,
}

enum Encoded {
    /// A captured picture's access units, one per layer encoded, and when it was captured
    /// (Unix microseconds).
    Video(Vec<LayerUnit>, u64),
    Audio(Vec<u8>),
    /// What the camera captured, for the self view.
    Preview(Arc<I420Frame>),
    /// A device's capture ended for good (its thread is gone): `camera` or `microphone`.
    CaptureEnded(&'static str),
}

/// Says how a device switch went.
fn switched<E: std::fmt::Display>(events: &EventSink, device: &'static str, result: Result<bool, E>) {
    let event = match result {
        Ok(true) => EngineEvent::DeviceSwitched { device },
        Ok(false) => EngineEvent::DeviceFailed { device, reason: "the call is ending".into() },
        Err(err) => EngineEvent::DeviceFailed { device, reason: err.to_string() },
    };
    let _ = events.send(event);
}

/// Opens devices one at a time, in the order asked, off the engine task: a later switch always
/// wins over an earlier one that is slower to open.
struct DeviceJobs(std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>);

impl DeviceJobs {
    fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // The thread ends when the engine (the only sender) is gone.
        let _ = std::thread::Builder::new().name("confer-devices".into()).spawn(move || {
            for job in queue {
                job();
            }
        });
        Self(jobs)
    }

    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.0.send(Box::new(job));
    }
}

/// Where a newly opened device goes: the capture threads take it in place of the one they have.
struct Swaps {
    camera: std::sync::mpsc::Sender<Camera>,
    microphone: std::sync::mpsc::Sender<Microphone>,
}

/// Starts capture and encoding; returns the speaker and where new devices go.
fn start_media(
    config: &EngineConfig,
    ladder: &Ladder,
    sending: &Arc<Sending>,
    out: mpsc::Sender<Encoded>,
) -> Result<(Arc<Mutex<Speaker>>, Swaps), EngineError> {
    let media_error = |e: &dyn std::fmt::Display| EngineError::Media(e.to_string());
    let (camera_choice, mic_choice, speaker_choice, processing) = match &config.media {
        MediaSource::Synthetic { pattern_id } => (
            Some(CameraChoice::Synthetic { id: *pattern_id, name: config.name.clone() }),
            DeviceChoice::Synthetic(*pattern_id),
            DeviceChoice::Synthetic(*pattern_id),
            ProcessingConfig::OFF,
        ),
        MediaSource::Devices { camera, microphone, speaker, processing } => {
            (camera.clone(), microphone.clone(), speaker.clone(), *processing)
        }
    };
    let speaker = Arc::new(Mutex::new(
        Speaker::open_checked(speaker_choice, Duration::from_secs(5)).map_err(|e| media_error(&e))?,
    ));
    let microphone =
        Microphone::open_checked(mic_choice, Duration::from_secs(5)).map_err(|e| media_error(&e))?;
    let start = ladder.range(0).1;

    let camera = match camera_choice {
        Some(choice) => Some(
            Camera::open(choice, config.width, config.height, config.fps, Duration::from_secs(5))
                .map_err(|e| media_error(&e))?,
        ),
        None => None,
    };
    // Checked here, so a codec that cannot start fails the join rather than the thread.
    H264Encoder::new(H264Config::camera(config.fps as f32, start)).map_err(|e| media_error(&e))?;
    let (camera_swap, new_cameras) = std::sync::mpsc::channel();
    let (video_sending, video_out, fps, self_view) =
        (Arc::clone(sending), out.clone(), config.fps, config.self_view);
    std::thread::Builder::new()
        .name("confer-video-encode".into())
        .spawn(move || video_loop(camera, &new_cameras, (fps, self_view), &video_sending, &video_out))
        .map_err(|e| media_error(&e))?;
    let encoder = OpusEncoder::new(OpusConfig::default()).map_err(|e| media_error(&e))?;
    let (microphone_swap, new_microphones) = std::sync::mpsc::channel();
    let (sending, speaker_for_aec) = (Arc::clone(sending), Arc::clone(&speaker));
    std::thread::Builder::new()
        .name("confer-audio-encode".into())
        .spawn(move || {
            audio_loop(microphone, &new_microphones, encoder, processing, &speaker_for_aec, &sending, &out);
        })
        .map_err(|e| media_error(&e))?;
    Ok((speaker, Swaps { camera: camera_swap, microphone: microphone_swap }))
}

/// Encodes what the camera captures, in each layer someone gets (each its own encoder, each
/// layer half the size of the one above); takes a new camera (and starts new streams, with
/// keyframes) when one arrives.
fn video_loop(
    mut camera_slot: Option<Camera>,
    new_cameras: &std::sync::mpsc::Receiver<Camera>,
    (fps, self_view): (u32, bool),
    sending: &Sending,
    out: &mpsc::Sender<Encoded>,
) {
    let mut encoders: [Option<(H264Encoder, u32)>; LAYERS] = Default::default();
    while !sending.stop.load(Ordering::Relaxed) {
        if let Ok(next) = new_cameras.try_recv() {
            // The old camera closes as it is dropped; the new picture may differ in size.
            camera_slot = Some(next);
            encoders = Default::default();
        }
        let Some(camera) = &camera_slot else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let captured = match camera.next_frame(Duration::from_millis(200)) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(_) => {
                // Nothing more will come from it (a switch brings another): say so, do not spin.
                let _ = out.blocking_send(Encoded::CaptureEnded("camera"));
                camera_slot = None;
                continue;
            }
        };
        if !sending.video.load(Ordering::Relaxed) {
            continue;
        }
        if out.capacity() < crate::queues::ENCODED / 2 {
            // The engine is behind: this picture is not encoded (skipping it breaks nothing for
            // the receivers), and the rest of the queue stays free for audio.
            continue;
        }
        let keyframes = sending.keyframes.swap(0, Ordering::Relaxed);
        let wanted: [u32; LAYERS] =
            std::array::from_fn(|layer| sending.bitrates[layer].load(Ordering::Relaxed));
        let frame = Arc::new(captured.frame);
        let mut units = Vec::new();
        let mut smaller: Option<I420Frame> = None;
        let lowest = wanted.iter().rposition(|&bitrate| bitrate > 0);
        for (layer, slot) in encoders.iter_mut().enumerate() {
            if lowest.is_none_or(|lowest| layer > lowest) {
                // Not encoded: a layer that comes back starts with a fresh encoder (a keyframe).
                *slot = None;
                continue;
            }
            if layer > 0 {
                let above = smaller.as_ref().unwrap_or(&frame);
                if let Some(half) = above.scaled_to_fit(above.width() / 2, above.height() / 2) {
                    smaller = Some(half);
                }
            }
            let bitrate = wanted[layer];
            if bitrate == 0 {
                *slot = None;
                continue;
            }
            if slot.is_none() {
                *slot = H264Encoder::new(H264Config::camera(fps as f32, bitrate)).ok().map(|e| (e, bitrate));
            }
            let Some((encoder, current)) = slot else { continue };
            if *current != bitrate && encoder.set_bitrate(bitrate).is_ok() {
                *current = bitrate;
            }
            if keyframes & (1 << layer) != 0 {
                encoder.request_keyframe();
            }
            let picture = smaller.as_ref().unwrap_or(&frame);
            if let Ok(Some(encoded)) = encoder.encode(picture) {
                units.push(LayerUnit { layer, data: encoded.data.into(), keyframe: encoded.keyframe });
            }
        }
        if !units.is_empty() && !hand_over(out, Encoded::Video(units, captured.captured_us), sending) {
            return;
        }
        if self_view && !hand_over(out, Encoded::Preview(frame), sending) {
            return;
        }
    }
}

fn audio_loop(
    mut microphone: Microphone,
    new_microphones: &std::sync::mpsc::Receiver<Microphone>,
    mut encoder: OpusEncoder,
    processing: ProcessingConfig,
    speaker: &Mutex<Speaker>,
    sending: &Sending,
    out: &mpsc::Sender<Encoded>,
) {
    let mut processor = AudioProcessor::new(processing);
    let mut pending: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES);
    let mut ended = false;
    while !sending.stop.load(Ordering::Relaxed) {
        if ended {
            // Nothing more will come from this microphone: wait for a switch, do not spin.
            if let Ok(next) = new_microphones.recv_timeout(Duration::from_millis(200)) {
                (microphone, ended) = (next, false);
            }
            continue;
        }
        if let Ok(next) = new_microphones.try_recv() {
            microphone = next;
        }
        let captured = match microphone.next_frame(Duration::from_millis(200)) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(_) => {
                let _ = out.blocking_send(Encoded::CaptureEnded("microphone"));
                ended = true;
                continue;
            }
        };
        let mut frame = captured.samples;
        if frame.len() != PROCESSING_FRAME {
            continue;
        }
        if !processing.music_mode {
            let played = speaker.lock().map(|s| s.played_before(captured.at)).unwrap_or_default();
            for reference in played {
                let _ = processor.process_render(&reference);
            }
            let _ = processor.process_capture(&mut frame);
        }
        pending.extend_from_slice(&frame);
        if pending.len() < FRAME_SAMPLES {
            continue;
        }
        let twenty_ms: Vec<i16> = pending.drain(..FRAME_SAMPLES).collect();
        if let Some(t) = sending.opus.try_lock().ok().and_then(|mut tuning| tuning.take()) {
            // A setting libopus refuses leaves the one before it: the stream goes on.
            if let Err(err) = encoder.tune(t.bitrate_bps as i32, t.fec, t.loss_percent) {
                tracing::warn!(error = %err, "the Opus encoder refused a retuning");
            }
        }
        if !sending.audio.load(Ordering::Relaxed) {
            continue;
        }
        if let Ok(packet) = encoder.encode(&twenty_ms)
            // Waits for room: the microphone's own queue drops (counted) while this thread is
            // behind, as it would for a slow encoder.
            && out.blocking_send(Encoded::Audio(packet)).is_err()
        {
            return;
        }
    }
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
            Ok(mut peer) if offerer => peer.offer(false).await.map(|offer| (peer, Some(offer))),
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

    /// Sends each peer its layer of a captured picture. A peer moving to another layer keeps
    /// getting the old one until the new one's keyframe comes, so its picture never freezes.
    async fn send_video(&mut self, units: Vec<LayerUnit>, captured_us: u64, duration: Duration) {
        if let Some(top) = units.iter().find(|unit| unit.layer == 0) {
            self.record_own_video(Medium::Camera, When::CapturedUs(captured_us), &top.data);
        }
        for (id, slot) in &mut self.peers {
            let wanted = slot.layer;
            if wanted != slot.sent_layer
                && wanted.is_none_or(|layer| units.iter().any(|unit| unit.layer == layer && unit.keyframe))
            {
                slot.sent_layer = wanted;
                let changes = &mut self.reports.entry(id.clone()).or_default().send_layers;
                if changes.len() < 100 {
                    changes.push((unix_us() / 1_000, wanted.map(|layer| self.ladder.size(layer))));
                }
            }
            let Some(unit) = slot.sent_layer.and_then(|layer| units.iter().find(|unit| unit.layer == layer))
            else {
                continue;
            };
            slot.video_bytes += unit.data.len() as u64;
            slot.peer.send_video(unit.data.clone(), duration).await;
        }
    }

    /// Tells the camera's thread which layers to encode, at what bitrates, and which must start
    /// with a keyframe: each layer someone gets or still gets (until its switch), the top one
    /// while we record.
    fn steer(&mut self) {
        // What each peer's link and view allow, cut to our uplink if it is known (peers in id
        // order: of equals, the same ones keep the larger picture every time).
        let mut ids: Vec<PeerId> = self.peers.keys().cloned().collect();
        ids.sort();
        // A peer not connected (yet, or any more) keeps what it wants (nothing reaches it) and
        // takes nothing from the uplink.
        ids.retain(|id| {
            let Some(slot) = self.peers.get_mut(id) else { return false };
            slot.layer = slot.video.layer();
            self.call.is_connected(id)
        });
        let wanted: Vec<Option<usize>> =
            ids.iter().map(|id| self.peers.get(id).and_then(|slot| slot.video.layer())).collect();
        if let Some(kbps) = self.config.uplink_kbps {
            let layers = self.ladder.fit_uplink(&wanted, kbps.saturating_mul(1_000));
            for (id, layer) in ids.iter().zip(layers) {
                if let Some(slot) = self.peers.get_mut(id) {
                    slot.layer = layer;
                }
            }
        }
        let mut rates =
            self.ladder.bitrates_for(self.peers.values().map(|slot| (slot.layer, slot.video.estimate())));
        let mut keyframes = 0u8;
        for slot in self.peers.values() {
            if let Some(layer) = slot.sent_layer
                && rates[layer].is_none()
            {
                rates[layer] = Some(self.ladder.range(layer).0);
            }
            if let Some(layer) = slot.layer
                && slot.sent_layer != Some(layer)
            {
                keyframes |= 1 << layer;
            }
        }
        if self.recorder.is_some() && rates[0].is_none() {
            rates[0] = Some(self.ladder.range(0).1);
        }
        for (layer, rate) in rates.iter().enumerate() {
            self.sending.bitrates[layer].store(rate.unwrap_or(0), Ordering::Relaxed);
        }
        self.sending.want_keyframes(keyframes);
    }

    /// Tells `peer` (or everyone, from now on) what we show its camera in.
    async fn set_view(&mut self, peer: Option<PeerId>, view: View) {
        let message = PeerMessage::View { width: view.width, height: view.height }.encode();
        match peer {
            Some(id) => {
                self.views.insert(id.clone(), view);
                if let Some(slot) = self.peers.get(&id) {
                    slot.peer.send_data(&message).await;
                }
            }
            None => {
                self.default_view = Some(view);
                for (id, slot) in &self.peers {
                    if !self.views.contains_key(id) {
                        slot.peer.send_data(&message).await;
                    }
                }
            }
        }
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
                    self.call.handle_input(self.started.elapsed(), CallInput::RestartedByPeer(from.clone()));
                }
                match signalled {
                    Ok(Some(answer)) => self.signaling.signal(from, answer),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(peer = %from, error = %err, "a signal could not be applied"),
                }
            }
            SignalingEvent::Reconnecting { cause, .. } => {
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

    /// Hands an access unit of `from`'s camera (`screen` false) or share to its decoder thread
    /// (started on its first one).
    fn decode(&mut self, from: PeerId, screen: bool, access_unit: Vec<u8>) {
        let decoder: &mut StreamDecoder = match self.decoders.entry((from.clone(), screen)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                match StreamDecoder::start(from.clone(), screen, self.decoded.clone()) {
                    Ok(decoder) => entry.insert(decoder),
                    Err(err) => {
                        tracing::warn!(peer = %from, error = %err, "no decoder thread: this video is not shown");
                        return;
                    }
                }
            }
        };
        if decoder.push(access_unit) == Pushed::Dropped {
            // This machine is behind on this stream: it resumes at the peer's next keyframe.
            if decoder.ask_keyframe(Instant::now())
                && let Some(slot) = self.peers.get(&from)
            {
                slot.peer.request_keyframes();
            }
            self.reports.entry(from).or_default().video_units_dropped += 1;
        }
    }

    /// A picture a decoder thread finished: counted in the peer's report, handed on.
    fn on_decoded(&mut self, picture: Decoded) {
        let Decoded { from, screen, frame, stamp, at_us } = picture;
        if !self.decoders.contains_key(&(from.clone(), screen)) {
            // Decoded just before its stream ended (the peer left, its share stopped): the page
            // has forgotten its tile, and must not get it back.
            return;
        }
        let since_start = self.started.elapsed().as_millis() as u64;
        let report = self.reports.entry(from.clone()).or_default();
        if screen {
            report.share_frames_decoded += 1;
            report.share_first_frame_ms.get_or_insert(since_start);
            if let Some(stamp) = stamp {
                report.share_pattern_id = Some(stamp.id);
                let latency = (at_us / 1_000) as f64 - stamp.captured_ms as f64;
                if report.share_latency_ms.len() < 10_000 && (0.0..10_000.0).contains(&latency) {
                    report.share_latency_ms.push(latency);
                }
            }
            let _ = self.events.send(EngineEvent::ShareFrame { from, frame, stamp });
            return;
        }
        report.video_frames_decoded += 1;
        let size = (frame.width() as u32, frame.height() as u32);
        if report.video_sizes.last() != Some(&size) && report.video_sizes.len() < 100 {
            report.video_sizes.push(size);
        }
        report.first_frame_ms.get_or_insert(since_start);
        if let Some(last) = report.last_frame_ms.replace(since_start) {
            report.longest_video_gap_ms = report.longest_video_gap_ms.max(since_start.saturating_sub(last));
        }
        if let Some(stamp) = stamp {
            report.pattern_id = Some(stamp.id);
            let latency = (at_us / 1_000) as f64 - stamp.captured_ms as f64;
            if report.video_latency_ms.len() < 10_000 && (0.0..10_000.0).contains(&latency) {
                report.video_latency_ms.push(latency);
            }
        }
        let _ = self.events.send(EngineEvent::VideoFrame { from, frame, stamp });
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

    /// Whether the meeting server offers any TURN URL.
    fn relay_offered(&self) -> bool {
        self.session.as_ref().is_some_and(|session| session.ice_servers.offers_turn())
    }

    /// Carries out what the call's core decided ([`crate::call`]).
    async fn carry_out(&mut self) {
        while let Some(output) = self.call.poll_output() {
            match output {
                CallOutput::Open { peer, offerer } => self.open_peer(peer, offerer).await,
                CallOutput::Restart(id) => {
                    let Some(slot) = self.peers.get_mut(&id) else { continue };
                    match slot.peer.offer(true).await {
                        Ok(offer) => {
                            self.reports.entry(id.clone()).or_default().ice_restarts += 1;
                            self.signaling.signal(id, offer);
                        }
                        // The restart's deadline tries again.
                        Err(err) => {
                            tracing::warn!(peer = %id, %err, "an ICE restart offer could not be made");
                        }
                    }
                }
                CallOutput::AskRestart(id) => self.signaling.signal(id, SignalPayload::RestartIce),
                CallOutput::Connected(id) => self.connected(id).await,
                CallOutput::NoPathYet(id) => self.no_path(&id, None),
                CallOutput::GaveUp { peer, restarts } => self.no_path(&peer, Some(restarts)),
                CallOutput::Close { peer, timed_out } => {
                    self.remove_participant(&peer).await;
                    if timed_out {
                        let _ = self
                            .events
                            .send(EngineEvent::ParticipantLeft { id: peer, reason: LeaveReason::Timeout });
                    }
                }
            }
        }
    }

    /// Media flows with `id` (again): its path in the report, keyframes for it.
    async fn connected(&mut self, id: PeerId) {
        let Some(slot) = self.peers.get(&id) else { return };
        let path = slot.peer.path().await;
        let report = self.reports.entry(id.clone()).or_default();
        report.path = path;
        report.connected_ms.get_or_insert(self.started.elapsed().as_millis() as u64);
        if let Some(layer) = slot.sent_layer.or(slot.layer) {
            self.sending.want_keyframes(1 << layer);
        }
        if let Some(sharing) = &self.sharing {
            sharing.request_keyframe();
        }
        let _ = self.events.send(EngineEvent::PeerConnected { id, path });
    }

    /// Says there is no path to `id`, with the cause found: yet (restarts go on), or after
    /// `gave_up_after` restarts.
    fn no_path(&mut self, id: &PeerId, gave_up_after: Option<u32>) {
        let relay_offered = self.relay_offered();
        let known = self.relay_verdict();
        let Some(slot) = self.peers.get(id) else { return };
        let report = self.reports.entry(id.clone()).or_default();
        let name = if report.name.is_empty() { id.to_string() } else { report.name.clone() };
        let (gathered, received) = slot.peer.candidate_types();
        let diagnosed = NoPathCause::diagnose(&gathered, &received, relay_offered, self.config.relay_only);
        let (cause, relay_answers) = refine(diagnosed, known.as_ref());
        let relay_only = if self.config.relay_only { " (relay candidates only)" } else { "" };
        let summary = slot.peer.candidate_summary();
        let detail = match gave_up_after {
            None => format!("{}{relay_answers}; {summary}{relay_only}; still trying", cause.describe(&name)),
            Some(restarts) => format!(
                "{}{relay_answers}; no connection after {restarts} ICE restarts; {summary}{relay_only}",
                cause.describe(&name),
            ),
        };
        let retrying = gave_up_after.is_none();
        let _ = self.events.send(EngineEvent::PeerUnreachable {
            id: id.clone(),
            detail,
            cause: Some(cause),
            retrying,
        });
        if retrying
            && matches!(cause, NoPathCause::RelayUnreachable | NoPathCause::Blocked)
            && known.is_none()
            && relay_offered
        {
            self.diagnose_relay(id);
        }
    }

    /// The relay's URLs answered our own requests (`relay_diagnosis`): the cause they point to
    /// and their failures in words; `None` until asked, or if every URL answered.
    fn relay_verdict(&self) -> Option<(NoPathCause, String)> {
        let answers = self.relay_diagnosis.as_ref()?;
        let failures: Vec<String> = answers
            .iter()
            .filter_map(|(url, failure)| failure.as_ref().map(|(_, why)| format!("{url}: {why}")))
            .collect();
        if failures.is_empty() {
            return None;
        }
        let failed =
            |code: &str| answers.iter().any(|(_, failure)| failure.as_ref().is_some_and(|f| f.0 == code));
        let cause = if failed("credentials_refused") {
            NoPathCause::RelayCredentialsRefused
        } else if failed("relay_ports_blocked") {
            NoPathCause::RelayPortsBlocked
        } else {
            NoPathCause::RelayUnreachable
        };
        Some((cause, failures.join("; ")))
    }

    /// No relay candidate came, and the WebRTC stack does not say why: ask each of the meeting
    /// server's TURN URLs ourselves (5 s at most, as the lobby's check does), once, and tell the
    /// peers still waiting what they answered (`PeerEvent::RelayDiagnosis`).
    fn diagnose_relay(&mut self, id: &PeerId) {
        self.awaiting_diagnosis.push(id.clone());
        if self.awaiting_diagnosis.len() > 1 {
            return;
        }
        let Some(session) = &self.session else { return };
        let routes = session.ice_servers.clone();
        let (events, who) = (self.peer_events.clone(), id.clone());
        // Bounded: each probe ends within its 5 s.
        self.probing.spawn(async move {
            let probes = routes.turn().map(|route| async move {
                let answer = crate::turn_probe::probe(route, crate::netcheck::SERVER_TIMEOUT).await;
                (route.url.to_string(), answer.err().map(|failure| (failure.code(), failure.to_string())))
            });
            let answers = futures_util::future::join_all(probes).await;
            events.stack_said(&who, PeerEvent::RelayDiagnosis(answers));
        });
    }

    /// The relay's answers arrived: each peer still waiting and still not connected hears the
    /// cause they point to.
    fn on_relay_diagnosis(&mut self, answers: Vec<RelayAnswer>) {
        self.relay_diagnosis = Some(answers);
        let waiting = std::mem::take(&mut self.awaiting_diagnosis);
        let Some((cause, failures)) = self.relay_verdict() else { return };
        for id in waiting {
            let waiting = self.peers.get(&id).is_some_and(|slot| {
                // Where relay candidates were exchanged the relay was reached: only closed
                // relayed ports explain that.
                let (gathered, received) = slot.peer.candidate_types();
                let relayed = gathered.contains("relay") || received.contains("relay");
                !self.call.is_connected(&id) && (!relayed || cause == NoPathCause::RelayPortsBlocked)
            });
            let report = self.reports.entry(id.clone()).or_default();
            if !waiting || report.connected_ms.is_some() {
                continue;
            }
            let name = if report.name.is_empty() { id.to_string() } else { report.name.clone() };
            let detail = format!("{}; {failures}; still trying", cause.describe(&name));
            let _ = self.events.send(EngineEvent::PeerUnreachable {
                id,
                detail,
                cause: Some(cause),
                retrying: true,
            });
        }
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

    /// Sends the file at `path` to every connected peer.
    /// Checks and hashes the file at `path` off the engine's task (a large file takes seconds);
    /// once that is done ([`FileEvent::Ready`]) it goes to every connected peer.
    fn send_file(&mut self, path: std::path::PathBuf) {
        let Some(me) = self.session.as_ref().map(|s| s.peer_id.clone()) else { return };
        let events = self.file_events.clone();
        self.transfers.spawn(async move {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let id = format!("{:016x}", rand::random::<u64>());
            let event = match crate::files::prepare(&path).await {
                Ok((size, sha256)) => FileEvent::Ready { id, name, path, size, sha256 },
                Err(error) => FileEvent::Failed { id, name, sending: true, error },
            };
            let _ = events.send((me, event)).await;
        });
    }

    /// Opens a `file` channel to every connected peer and sends the file on each.
    async fn send_ready_file(
        &mut self,
        (id, name, path, size, sha256): (String, String, std::path::PathBuf, u64, String),
    ) {
        for (peer, slot) in &self.peers {
            if !self.call.is_connected(peer) {
                continue;
            }
            match slot.peer.file_channel().await {
                Ok(channel) => {
                    let header = (id.clone(), name.clone(), size, sha256.clone());
                    let events = self.file_events.clone();
                    let handle = self.transfers.spawn(crate::files::send(
                        channel,
                        path.clone(),
                        header,
                        peer.clone(),
                        events,
                    ));
                    let running = Running::new(handle, Some(id.clone()), &name, true, size);
                    self.peer_transfers.entry(peer.clone()).or_default().push(running);
                }
                Err(err) => {
                    let failed = EngineEvent::FileFailed {
                        peer: peer.clone(),
                        name: name.clone(),
                        sending: true,
                        reason: err.to_string(),
                    };
                    let _ = self.events.send(failed);
                }
            }
        }
    }

    async fn on_file(&mut self, peer: PeerId, event: FileEvent) {
        if let Some(running) = self.peer_transfers.get_mut(&peer) {
            running.retain(|transfer| !transfer.handle.is_finished());
            if let FileEvent::Progress { id, name, done, size, sending } = &event
                && let Some(transfer) = running
                    .iter_mut()
                    .find(|t| t.sending == *sending && (t.id.as_ref() == Some(id) || t.id.is_none()))
            {
                (transfer.id, transfer.name, transfer.done, transfer.size) =
                    (Some(id.clone()), name.clone(), *done, *size);
            }
        }
        let event = match event {
            FileEvent::Ready { id, name, path, size, sha256 } => {
                return self.send_ready_file((id, name, path, size, sha256)).await;
            }
            FileEvent::Progress { id, name, done, size, sending } => {
                EngineEvent::FileProgress { id, peer, name, done, size, sending }
            }
            FileEvent::Received { name, size, sha256, path, .. } => {
                self.received_one(&peer);
                EngineEvent::FileReceived { from: peer, name, size, sha256, path }
            }
            FileEvent::Sent { name, size, .. } => EngineEvent::FileSent { to: peer, name, size },
            FileEvent::Failed { name, sending, error, .. } => {
                if !sending {
                    self.received_one(&peer);
                }
                EngineEvent::FileFailed { peer, name, sending, reason: error.to_string() }
            }
        };
        let _ = self.events.send(event);
    }

    fn received_one(&mut self, peer: &PeerId) {
        if let Some(count) = self.receiving.get_mut(peer) {
            *count = count.saturating_sub(1);
        }
    }

    /// A peer shares or not, as the relay's presence says (the relay grants shares).
    fn peer_sharing(&mut self, id: &PeerId, sharing: bool) {
        let report = self.reports.entry(id.clone()).or_default();
        if report.sharing == sharing {
            return;
        }
        report.sharing = sharing;
        if !sharing {
            // The next share starts with a keyframe, maybe at another size. Its thread is
            // waited for off the engine's task.
            let decoder = self.decoders.remove(&(id.clone(), true));
            drop(tokio::task::spawn_blocking(move || drop(decoder)));
        }
        let _ = self.events.send(EngineEvent::PeerSharing { id: id.clone(), sharing });
    }

    /// Asks the relay for the share (one at a time per room); it starts once granted. Switching
    /// what we share needs no asking.
    async fn ask_to_share(&mut self, choice: ShareChoice, fps: u32) {
        if self.sharing.is_some() {
            self.start_sharing(choice, fps).await;
            return;
        }
        self.share_wanted = Some((choice, fps));
        self.signaling.send(ClientMessage::Share { on: true });
    }

    /// Starts sharing `choice` at `fps` in place of any share running now.
    async fn start_sharing(&mut self, choice: ShareChoice, fps: u32) {
        if let Some(old) = self.sharing.take() {
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        let out = self.share_out.clone();
        // Opening asks the display about the source: off the engine's thread.
        let started = tokio::task::spawn_blocking(move || Sharing::start(&choice, fps, out)).await;
        match started {
            Ok(Ok(sharing)) => {
                let source = sharing.source().to_owned();
                tracing::info!(%source, fps, "sharing");
                self.sharing = Some(sharing);
                let _ = self.events.send(EngineEvent::ShareStarted { source });
            }
            Ok(Err(err)) => self.share_failed(err.to_string()),
            Err(err) => self.share_failed(err.to_string()),
        }
    }

    /// The share could not start: the floor goes back.
    fn share_failed(&mut self, reason: String) {
        self.signaling.send(ClientMessage::Share { on: false });
        let _ = self.events.send(EngineEvent::ShareStopped { reason: Some(reason) });
    }

    /// Stops our share, asked (`reason` `None`) or because it ended on its own.
    async fn stop_sharing(&mut self, reason: Option<String>) {
        if self.share_wanted.take().is_some() {
            // Asked for and not granted yet: take the request back.
            self.signaling.send(ClientMessage::Share { on: false });
            let _ = self.events.send(EngineEvent::ShareStopped { reason });
            return;
        }
        let Some(sharing) = self.sharing.take() else { return };
        self.signaling.send(ClientMessage::Share { on: false });
        if sharing.dropped() > 0 {
            tracing::debug!(
                dropped = sharing.dropped(),
                "share access units dropped while the engine was behind"
            );
        }
        let _ = tokio::task::spawn_blocking(move || drop(sharing)).await;
        let _ = self.events.send(EngineEvent::ShareStopped { reason });
    }

    /// A peer records or not, as the relay says.
    fn peer_recording(&mut self, id: &PeerId, recording: bool) {
        let report = self.reports.entry(id.clone()).or_default();
        if report.recording == recording {
            return;
        }
        report.recording = recording;
        let _ = self.events.send(EngineEvent::PeerRecording { id: id.clone(), recording });
    }

    /// The relay told everyone we record: the file is created and written from now on.
    fn start_recording(&mut self) {
        self.record_wanted = false;
        let dir = self.config.recordings.clone();
        let title = "call";
        let started = std::fs::create_dir_all(&dir)
            .map_err(|source| confer_media::RecordError::Io { path: dir.clone(), source })
            .and_then(|()| Recorder::start(&crate::record::file_in(&dir, title), title));
        match started {
            Ok(recorder) => {
                let path = recorder.path().to_owned();
                tracing::info!(path = %path.display(), "recording");
                self.recorder = Some(recorder);
                // Every track starts with a keyframe, ours and the others'.
                self.steer();
                self.sending.want_keyframes(1);
                if let Some(sharing) = &self.sharing {
                    sharing.request_keyframe();
                }
                for slot in self.peers.values() {
                    slot.peer.request_keyframes();
                }
                let _ = self.events.send(EngineEvent::RecordingStarted { path });
            }
            Err(err) => {
                self.signaling.send(ClientMessage::Record { on: false });
                let _ = self.events.send(EngineEvent::RecordingStopped {
                    path: None,
                    reason: Some(err.to_string()),
                    duration_ms: 0,
                    bytes: 0,
                });
            }
        }
    }

    /// Stops recording (asked: `reason` `None`); `tell` says so to everyone (not when the call
    /// is over anyway). The file is finished (what is queued written, then its index) off the
    /// engine's task, which goes on with the call; [`EngineEvent::RecordingStopped`] follows.
    fn stop_recording(&mut self, reason: Option<String>, tell: bool) {
        if std::mem::take(&mut self.record_wanted) && tell {
            self.signaling.send(ClientMessage::Record { on: false });
        }
        let Some(recorder) = self.recorder.take() else { return };
        if tell {
            self.signaling.send(ClientMessage::Record { on: false });
        }
        // The top layer is encoded for the recording no longer (unless someone gets it).
        self.steer();
        let events = self.events.clone();
        self.finishing.spawn(async move {
            let path = recorder.path().to_owned();
            let dropped = recorder.dropped();
            let finished = tokio::task::spawn_blocking(move || recorder.finish()).await;
            let _ = events.send(stopped(path, dropped, reason, finished));
        });
    }

    fn record_own_video(&mut self, medium: Medium, when: When, access_unit: &[u8]) {
        let (Some(recorder), Some(session)) = (&mut self.recorder, &self.session) else { return };
        if recorder.video(&session.peer_id, &self.config.name, medium, when, access_unit) {
            match medium {
                Medium::Screen => {
                    if let Some(sharing) = &self.sharing {
                        sharing.request_keyframe();
                    }
                }
                _ => self.sending.want_keyframes(1),
            }
        }
    }

    fn record_own_audio(&mut self, packet: &[u8]) {
        let (Some(recorder), Some(session)) = (&mut self.recorder, &self.session) else { return };
        self.own_audio_rtp = self.own_audio_rtp.wrapping_add(960);
        recorder.audio(&session.peer_id, &self.config.name, When::Rtp(self.own_audio_rtp), packet);
    }
    /// Sends a message on every peer's data channel (waiting there until it opens).
    async fn tell_everyone(&mut self, message: &PeerMessage) {
        let text = message.encode();
        for slot in self.peers.values() {
            slot.peer.send_data(&text).await;
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Chat(text) => self.tell_everyone(&PeerMessage::Chat { text }).await,
            Command::React(emoji) => self.tell_everyone(&PeerMessage::Reaction { emoji }).await,
            Command::SendFile(path) => self.send_file(path),
            Command::Mute(muted) => {
                self.sending.audio.store(!muted, Ordering::Relaxed);
                let state = self.my_state();
                self.tell_everyone(&state).await;
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: Some(muted),
                    camera: None,
                    hand_raised: None,
                });
            }
            Command::Camera(on) => {
                self.sending.video.store(on, Ordering::Relaxed);
                let state = self.my_state();
                self.tell_everyone(&state).await;
                if on {
                    self.sending.want_keyframes(ALL_LAYERS);
                }
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: None,
                    camera: Some(on),
                    hand_raised: None,
                });
            }
            Command::Hand(raised) => {
                self.hand_raised = raised;
                let state = self.my_state();
                self.tell_everyone(&state).await;
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: None,
                    camera: None,
                    hand_raised: Some(raised),
                });
            }
            Command::Host(message) => self.signaling.send(message),
            Command::Share(Some((choice, fps))) => self.ask_to_share(choice, fps).await,
            Command::Share(None) => self.stop_sharing(None).await,
            Command::Record(true) => {
                if self.recorder.is_none() && !self.record_wanted {
                    self.record_wanted = true;
                    self.record_said = true;
                    self.signaling.send(ClientMessage::Record { on: true });
                }
            }
            Command::Record(false) => self.stop_recording(None, true),
            Command::View(peer, view) => self.set_view(peer, view).await,
            Command::Report(reply) => {
                let mut reports = self.reports.clone();
                for (id, slot) in &self.peers {
                    let (_, received) = slot.peer.candidate_types();
                    reports.entry(id.clone()).or_default().candidates_received =
                        received.into_iter().collect();
                }
                let _ = reply.send(reports);
            }
            Command::SetCamera(choice) => {
                let (width, height, fps) = (self.config.width, self.config.height, self.config.fps);
                let (swap, events) = (self.swaps.camera.clone(), self.events.clone());
                self.sending.want_keyframes(ALL_LAYERS);
                self.device_jobs.run(move || {
                    let opened = Camera::open(choice, width, height, fps, Duration::from_secs(5));
                    switched(&events, "camera", opened.map(|camera| swap.send(camera).is_ok()));
                });
            }
            Command::Microphone(choice) => {
                let (swap, events) = (self.swaps.microphone.clone(), self.events.clone());
                self.device_jobs.run(move || {
                    let opened = Microphone::open_checked(choice, Duration::from_secs(5));
                    switched(&events, "microphone", opened.map(|microphone| swap.send(microphone).is_ok()));
                });
            }
            Command::Speaker(choice) => {
                let (speaker, events) = (Arc::clone(&self.speaker), self.events.clone());
                self.device_jobs.run(move || {
                    let opened = Speaker::open_checked(choice, Duration::from_secs(5));
                    switched(
                        &events,
                        "speaker",
                        opened.map(|new| speaker.lock().map(|mut old| *old = new).is_ok()),
                    );
                });
            }
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
