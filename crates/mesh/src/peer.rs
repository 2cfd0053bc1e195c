//! One WebRTC peer connection per remote participant, through the `webrtc` crate (pinned to
//! 0.17.2). This is the only module that touches that crate, so moving to another WebRTC stack
//! changes this file and nothing else.
//!
//! What it does: H.264 (constrained baseline, packetization mode 1) and Opus, shared local tracks
//! (the engine encodes once and every peer connection sends the same samples), NACK
//! retransmission (the crate's default interceptors), PLI both ways (the receiver asks on the
//! first packet and after loss; the sender reports requests so the encoder makes a keyframe),
//! trickle ICE with candidates held until the remote description is set, ICE restart, one
//! ordered data channel (announced by the offerer) for chat and state, and the selected candidate
//! pair.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use confer_proto::{PeerId, SignalPayload};
use confer_turn_stream::RelayTransport;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::codecs::opus::OpusPacket;
use webrtc::rtp::extension::abs_send_time_extension::unix2ntp;
use webrtc::rtp::packetizer::Depacketizer as _;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::rtp_transceiver::rtp_receiver::RTCRtpReceiver;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_remote::TrackRemote;

/// Why a peer connection could not be made or used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("WebRTC: {0}")]
pub(crate) struct PeerError(String);

impl From<webrtc::Error> for PeerError {
    fn from(err: webrtc::Error) -> Self {
        Self(err.to_string())
    }
}

const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The minimum time between two keyframe requests this side sends.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

fn h264() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![RTCPFeedback { typ: "ccm".into(), parameter: "fir".into() }],
    }
}

fn opus() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The WebRTC stack, configured once for all peer connections.
pub(crate) struct Stack {
    api: API,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stack")
    }
}

impl Stack {
    pub(crate) fn new() -> Result<Self, PeerError> {
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters { capability: h264(), payload_type: 102, ..Default::default() },
            RTPCodecType::Video,
        )?;
        media.register_codec(
            RTCRtpCodecParameters { capability: opus(), payload_type: 111, ..Default::default() },
            RTPCodecType::Audio,
        )?;
        // After the codecs: NACK generator and responder, RTCP reports, PLI feedback.
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let mut settings = SettingEngine::default();
        settings.set_ice_timeouts(
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(1)),
        );
        // Same-machine calls (tests, demos) need loopback candidates; mDNS would open a
        // multicast socket and publish names a peer without mDNS cannot resolve.
        settings.set_include_loopback_candidate(true);
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        // How long the controlling side waits before it nominates a working pair of each type,
        // so a better type may still succeed. The crate waits 1 s for peer-reflexive pairs and
        // 0.5 s for server-reflexive ones: a peer's checks often arrive before its trickled
        // candidates, so half of all same-network calls connected through a peer-reflexive pair
        // a whole second late. Such a pair is a proven direct path: wait a little, not a second.
        settings.set_prflx_acceptance_min_wait(Some(Duration::from_millis(50)));
        settings.set_srflx_acceptance_min_wait(Some(Duration::from_millis(100)));
        settings.set_relay_acceptance_min_wait(Some(Duration::from_millis(200)));
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        Ok(Self { api })
    }
}

/// The local tracks every peer connection shares: audio and the screen share are encoded once
/// and written once. (The camera is not: each peer has a track of its own, carrying the layer
/// chosen for it, see [`Peer::send_video`].)
#[derive(Clone)]
pub(crate) struct LocalTracks {
    audio: Arc<TrackLocalStaticSample>,
    /// The screen share: on every connection from the start, sending only while sharing.
    screen: Arc<TrackLocalStaticSample>,
}

/// The track id of a screen share (the `msid` a receiver tells it apart by).
pub(crate) const SCREEN_TRACK: &str = "screen";

/// Which of our tracks a sender carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Camera,
    Audio,
    Screen,
}

impl std::fmt::Debug for LocalTracks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalTracks")
    }
}

impl LocalTracks {
    pub(crate) fn new() -> Self {
        Self {
            audio: Arc::new(TrackLocalStaticSample::new(opus(), "audio".into(), "confer".into())),
            screen: Arc::new(TrackLocalStaticSample::new(
                h264(),
                SCREEN_TRACK.into(),
                "confer-screen".into(),
            )),
        }
    }

    /// Sends one access unit of the screen share to every peer.
    pub(crate) async fn send_screen(&self, access_unit: Vec<u8>, duration: Duration) {
        let sample = Sample { data: Bytes::from(access_unit), duration, ..Default::default() };
        let _ = self.screen.write_sample(&sample).await;
    }

    /// Sends one 20 ms Opus packet to every peer.
    pub(crate) async fn send_audio(&self, packet: Vec<u8>) {
        let sample =
            Sample { data: Bytes::from(packet), duration: Duration::from_millis(20), ..Default::default() };
        let _ = self.audio.write_sample(&sample).await;
    }
}

/// How a peer connection's path was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateType {
    /// Directly between the machines' addresses.
    Host,
    /// Through a NAT, by the addresses a STUN server saw.
    Srflx,
    /// Through a NAT, learnt from the peer's checks.
    Prflx,
    /// Through a TURN relay.
    Relay,
}

impl CandidateType {
    /// The name WebRTC uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Srflx => "srflx",
            Self::Prflx => "prflx",
            Self::Relay => "relay",
        }
    }
}

fn candidate_type(typ: RTCIceCandidateType) -> Option<CandidateType> {
    match typ {
        RTCIceCandidateType::Host => Some(CandidateType::Host),
        RTCIceCandidateType::Srflx => Some(CandidateType::Srflx),
        RTCIceCandidateType::Prflx => Some(CandidateType::Prflx),
        RTCIceCandidateType::Relay => Some(CandidateType::Relay),
        RTCIceCandidateType::Unspecified => None,
    }
}

/// The path a connection took: both ends' candidate types, and how this side reaches its TURN
/// server when its end is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// This side's candidate of the selected pair.
    pub local: CandidateType,
    /// The peer's.
    pub remote: CandidateType,
    /// UDP, TCP or TLS to our TURN server, when `local` is a relay candidate.
    pub relay: Option<RelayTransport>,
}

impl Path {
    /// Whether media goes through a TURN server (ours or the peer's) rather than directly.
    pub fn is_relayed(&self) -> bool {
        self.local == CandidateType::Relay || self.remote == CandidateType::Relay
    }
}

/// What a peer connection reports to the engine.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    /// Send this to the peer through the relay.
    Signal(SignalPayload),
    /// The ICE transport changed state.
    Ice(crate::decide::IceEvent),
    /// An H.264 access unit arrived (Annex B), of the camera or (`screen`) of a screen share.
    /// After loss a keyframe has been asked for.
    Video { access_unit: Vec<u8>, screen: bool, rtp_timestamp: u32 },
    /// An Opus packet arrived.
    Audio { rtp_timestamp: u32, payload: Vec<u8> },
    /// A data channel message.
    Data(String),
    /// The peer asked for a keyframe of our camera or (`screen`) of our share.
    KeyframeRequested { screen: bool },
    /// What the peer reports of the video we send, from its receiver reports: loss (0..1) and
    /// interarrival jitter.
    SendReport {
        /// Fraction lost since its last report.
        loss: f64,
        /// Jitter, ms.
        jitter_ms: f64,
    },
    /// The fraction (0..1) of our audio the peer reports lost since its last report.
    AudioLoss(f64),
    /// Round-trip time to the peer, from its receiver report on one of our senders.
    RoundTrip(Duration),
    /// The peer opened a channel to send us a file.
    FileChannel(crate::files::Incoming),
    /// Gathering ended without a single local candidate: no path can exist.
    NothingGathered,
    /// What the meeting server's TURN URLs answered to requests of our own, asked when no relay
    /// candidate came (the WebRTC stack does not say why): each URL and, if it failed, the
    /// failure's code and words.
    RelayDiagnosis(Vec<RelayAnswer>),
}

/// Where peer connections report to the engine (see [`crate::queues`]): what the peers send, on
/// a queue its readers wait for; the stack's own state changes, on one its callbacks never wait
/// for (they may hold the connection's locks while the engine awaits the same connection).
#[derive(Debug, Clone)]
pub(crate) struct PeerEvents {
    remote: mpsc::Sender<(PeerId, PeerEvent)>,
    stack: mpsc::Sender<(PeerId, PeerEvent)>,
}

impl PeerEvents {
    /// The senders and the engine's end.
    pub(crate) fn new() -> (Self, PeerInputs) {
        let (remote, remote_rx) = mpsc::channel(crate::queues::REMOTE);
        let (stack, stack_rx) = mpsc::channel(crate::queues::STACK);
        (Self { remote, stack }, PeerInputs { remote: remote_rx, stack: stack_rx })
    }

    /// A state change of the stack (or our own probe's answer), without waiting: dropped and
    /// logged if the engine is [`crate::queues::STACK`] behind.
    pub(crate) fn stack_said(&self, who: &PeerId, event: PeerEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.stack.try_send((who.clone(), event)) {
            tracing::error!(peer = %who, "the engine is {} stack events behind: one dropped", crate::queues::STACK);
        }
    }

    /// Our own probe's answer, from a task of the engine's: waits for room (it must not be lost:
    /// peers wait for it).
    pub(crate) async fn probe_said(&self, who: &PeerId, event: PeerEvent) {
        let _ = self.stack.send((who.clone(), event)).await;
    }

    /// Media the peer sent: waits for room ([`crate::queues::REMOTE`]), so RTP backs up into the
    /// stack's receive buffer (which drops; loss recovery follows). `false` once the engine is
    /// gone.
    pub(crate) async fn peer_sent(&self, who: &PeerId, event: PeerEvent) -> bool {
        self.remote.send((who.clone(), event)).await.is_ok()
    }

    /// A data channel message or what RTCP said, without waiting: dropped and logged when the
    /// engine is [`crate::queues::REMOTE`] behind. Waiting would stop the channel's or the RTCP
    /// reader: a closed SCTP window stalls the peer's own sends to us (and through its engine,
    /// its other peers), and unread RTCP stops retransmissions and round-trip times.
    pub(crate) fn peer_said(&self, who: &PeerId, event: PeerEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.remote.try_send((who.clone(), event)) {
            tracing::warn!(peer = %who, "the engine is {} events behind: a message or report dropped", crate::queues::REMOTE);
        }
    }
}

/// The engine's end of [`PeerEvents`].
#[derive(Debug)]
pub(crate) struct PeerInputs {
    remote: mpsc::Receiver<(PeerId, PeerEvent)>,
    stack: mpsc::Receiver<(PeerId, PeerEvent)>,
}

impl PeerInputs {
    /// The next event, the stack's first.
    pub(crate) async fn recv(&mut self) -> Option<(PeerId, PeerEvent)> {
        tokio::select! {
            biased;
            Some(event) = self.stack.recv() => Some(event),
            Some(event) = self.remote.recv() => Some(event),
            else => None,
        }
    }
}

/// One TURN URL and, if it failed our own request, the failure's code and words.
pub(crate) type RelayAnswer = (String, Option<(&'static str, String)>);

/// The candidate types seen on one connection, to say why it found no path.
#[derive(Debug, Default)]
struct CandidateLog {
    gathered: std::collections::BTreeSet<&'static str>,
    received: std::collections::BTreeSet<&'static str>,
    /// "Nothing gathered" was said (once is enough: restarts gather nothing again).
    nothing_reported: bool,
}

/// The ICE username fragment a description gives (its first `a=ice-ufrag:` line).
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:")).map(str::to_owned)
}

/// The type a candidate line names (`typ host`, …), if it is one ICE knows.
fn candidate_type_of(line: &str) -> Option<&'static str> {
    let mut words = line.split_ascii_whitespace();
    words.find(|w| *w == "typ")?;
    let typ = words.next()?;
    ["host", "srflx", "prflx", "relay"].into_iter().find(|t| *t == typ)
}

/// What has arrived from a peer so far, counted as it is read.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// RTP bytes (header and payload) of video.
    pub video_bytes: AtomicU64,
    /// RTP bytes of audio.
    pub audio_bytes: AtomicU64,
    /// Packets received (both streams).
    pub packets: AtomicU64,
    /// Packets expected (both streams), from the sequence numbers: received + lost.
    pub expected: AtomicU64,
    /// Raised to ask the peer for keyframes on every video track (each track's reader asks
    /// once per raise, with its next packet).
    pub keyframes_wanted: AtomicU64,
}

/// Counts one stream's packets against its sequence numbers (RFC 3550 A.3, simplified: no
/// probation, a jump of more than 3,000 is a restart, late packets are not un-lost).
#[derive(Debug, Default)]
struct SequenceCounter {
    highest: Option<u16>,
}

impl SequenceCounter {
    /// How many packets this one says were expected since the last: 1 in order, more after a
    /// gap, 0 for a late or repeated one.
    fn expected(&mut self, sequence: u16) -> u64 {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence);
            return 1;
        };
        let ahead = sequence.wrapping_sub(highest);
        match ahead {
            0 => 0,
            1..=3_000 => {
                self.highest = Some(sequence);
                u64::from(ahead)
            }
            // Far behind: late or duplicate. Far ahead: the stream restarted.
            _ if (ahead as i16) < 0 => 0,
            _ => {
                self.highest = Some(sequence);
                1
            }
        }
    }
}

/// One peer connection.
pub(crate) struct Peer {
    pc: Arc<RTCPeerConnection>,
    /// The data channel, once there is one (the offerer makes it; the answerer gets it).
    data: DataSlot,
    /// Messages sent before the data channel opened, sent when it does.
    unsent: Outbox,
    offerer: bool,
    /// Remote candidates that came before the remote description.
    held: Vec<RTCIceCandidateInit>,
    has_remote: bool,
    /// The ICE username fragment of the peer's last offer.
    remote_ufrag: Option<String>,
    /// An offer with new ICE credentials came: the peer restarted ICE (taken by the engine).
    restarted: bool,
    candidates: Arc<std::sync::Mutex<CandidateLog>>,
    /// What has arrived.
    pub(crate) received: Arc<Received>,
    /// Our camera, as sent to this peer alone (the layer chosen for it).
    video: Arc<TrackLocalStaticSample>,
    /// Its reading tasks (remote tracks, RTCP of our senders): ended when it closes, aborted if
    /// it is dropped.
    tasks: Tasks,
}

/// A peer connection's tasks, shared with the stack's callbacks that start them.
type Tasks = Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>;

/// Starts `task` among `tasks`.
fn start(tasks: &Tasks, task: impl Future<Output = ()> + Send + 'static) {
    tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).spawn(task);
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("offerer", &self.offerer).finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer connection to `remote` sending `tracks`, reporting on `events` (tagged with the
    /// remote's id). `relay_only` restricts ICE to TURN candidates.
    pub(crate) async fn new(
        stack: &Stack,
        servers: &crate::ice::IceRoutes,
        relay_only: bool,
        tracks: &LocalTracks,
        remote: PeerId,
        offerer: bool,
        events: PeerEvents,
    ) -> Result<Self, PeerError> {
        let config = RTCConfiguration {
            ice_servers: servers.for_webrtc(),
            ice_transport_policy: if relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            },
            ..Default::default()
        };
        let pc = Arc::new(stack.api.new_peer_connection(config).await?);
        let video = Arc::new(TrackLocalStaticSample::new(h264(), "video".into(), "confer".into()));
        let video_sender = pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal + Send + Sync>).await?;
        let audio_sender =
            pc.add_track(Arc::clone(&tracks.audio) as Arc<dyn TrackLocal + Send + Sync>).await?;
        // Third, after the camera and the microphone: their m-lines keep their places.
        let screen_sender =
            pc.add_track(Arc::clone(&tracks.screen) as Arc<dyn TrackLocal + Send + Sync>).await?;
        // Each sender's SSRC is read here, before any description is applied: read from the
        // RTCP task, `get_parameters` could run while `set_remote_description` updates the
        // media engine, and webrtc 0.17.2 takes the engine's two header-extension locks in
        // opposite orders there (a deadlock of both runtime threads, seen once in CI).
        let tasks: Tasks = Arc::default();
        for (sender, sent) in
            [(video_sender, Sent::Camera), (audio_sender, Sent::Audio), (screen_sender, Sent::Screen)]
        {
            let ssrc = sender.get_parameters().await.encodings.first().map(|e| e.ssrc);
            start(&tasks, watch_rtcp(sender, ssrc, remote.clone(), events.clone(), sent));
        }
        // The data channel is announced in band (DCEP) by the offerer. (Negotiated channels race
        // in webrtc 0.17: a message that arrives before the crate has set up its own side of the
        // stream is taken for an announcement, fails, and the stream is closed.)
        let data: DataSlot = Arc::default();
        let unsent: Outbox = Arc::default();
        let wiring = DataWiring {
            slot: Arc::clone(&data),
            unsent: Arc::clone(&unsent),
            events: events.clone(),
            who: remote.clone(),
        };
        if offerer {
            let channel = pc
                .create_data_channel(
                    DATA_LABEL,
                    Some(RTCDataChannelInit { ordered: Some(true), ..Default::default() }),
                )
                .await?;
            wiring.take(&channel);
        }
        {
            let (files, who) = (events.clone(), remote.clone());
            pc.on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
                let (wiring, files, who) = (wiring.clone(), files.clone(), who.clone());
                Box::pin(async move {
                    if channel.label() == crate::files::FILE_LABEL {
                        // Its handlers are set here, before it reads anything.
                        let incoming = crate::files::accept(channel);
                        files.peer_sent(&who, PeerEvent::FileChannel(incoming)).await;
                    } else if !offerer
                        && channel.label() == DATA_LABEL
                        && wiring.slot.lock().is_ok_and(|s| s.is_none())
                    {
                        wiring.take(&channel);
                    } else {
                        // One `confer` channel per peer, made by the offerer: anything else is
                        // closed once open (closing it here, before the crate has opened it,
                        // would not stick).
                        crate::files::refuse(&channel);
                    }
                })
            }));
        }

        let tx = events.clone();
        let who = remote.clone();
        let candidates: Arc<std::sync::Mutex<CandidateLog>> = Arc::default();
        let log = Arc::clone(&candidates);
        pc.on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
            let (tx, who) = (tx.clone(), who.clone());
            if let Ok(mut log) = log.lock() {
                match &candidate {
                    Some(c) => {
                        log.gathered.insert(match c.typ {
                            RTCIceCandidateType::Srflx => "srflx",
                            RTCIceCandidateType::Prflx => "prflx",
                            RTCIceCandidateType::Relay => "relay",
                            _ => "host",
                        });
                    }
                    None if log.gathered.is_empty() && !log.nothing_reported => {
                        log.nothing_reported = true;
                        tx.stack_said(&who, PeerEvent::NothingGathered);
                    }
                    None => {}
                }
            }
            Box::pin(async move {
                let payload = match candidate.map(|c| c.to_json()) {
                    Some(Ok(init)) => SignalPayload::Candidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid.filter(|m| !m.is_empty()),
                        sdp_m_line_index: init.sdp_mline_index,
                        username_fragment: init.username_fragment,
                    },
                    Some(Err(_)) => return,
                    None => SignalPayload::EndOfCandidates { username_fragment: None },
                };
                tx.stack_said(&who, PeerEvent::Signal(payload));
            })
        }));

        let tx = events.clone();
        let who = remote.clone();
        pc.on_ice_connection_state_change(Box::new(move |state: RTCIceConnectionState| {
            let event = match state {
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                    Some(crate::decide::IceEvent::Connected)
                }
                RTCIceConnectionState::Disconnected => Some(crate::decide::IceEvent::Disconnected),
                RTCIceConnectionState::Failed => Some(crate::decide::IceEvent::Failed),
                _ => None,
            };
            if let Some(event) = event {
                tx.stack_said(&who, PeerEvent::Ice(event));
            }
            Box::pin(async {})
        }));

        let tx = events;
        let who = remote;
        let weak = Arc::downgrade(&pc);
        let received: Arc<Received> = Arc::default();
        let counters = Arc::clone(&received);
        let track_tasks = Arc::downgrade(&tasks);
        pc.on_track(Box::new(move |track: Arc<TrackRemote>, receiver: Arc<RTCRtpReceiver>, _| {
            let (tx, who, weak, counters) = (tx.clone(), who.clone(), weak.clone(), Arc::clone(&counters));
            // Once the peer is gone there is nothing to read into.
            let Some(tasks) = track_tasks.upgrade() else { return Box::pin(async {}) };
            // Reading runs in its own task: a handler's future holds the connection's lock.
            start(&tasks, read_track(track, weak, who, tx, counters));
            // The crate's interceptors see incoming RTCP only as it is read. The peer's sender
            // reports must pass them, or our receiver reports cannot say when the last one came,
            // and the peer gets no round-trip time.
            start(&tasks, async move { while receiver.read_rtcp().await.is_ok() {} });
            Box::pin(async {})
        }));

        Ok(Self {
            pc,
            data,
            unsent,
            offerer,
            held: Vec::new(),
            has_remote: false,
            remote_ufrag: None,
            restarted: false,
            candidates,
            received,
            video,
            tasks,
        })
    }

    /// Sends this peer one H.264 access unit of our camera (Annex B, SPS/PPS before every IDR):
    /// the layer chosen for it. Its track's sequence numbers and timestamps run on across a
    /// change of layer (a keyframe of the new size), so a receiver sees one stream.
    pub(crate) async fn send_video(&self, access_unit: Bytes, duration: Duration) {
        let sample = Sample { data: access_unit, duration, ..Default::default() };
        let _ = self.video.write_sample(&sample).await;
    }

    /// The offerer's first offer (or a restart's, with fresh ICE credentials).
    pub(crate) async fn offer(&mut self, ice_restart: bool) -> Result<SignalPayload, PeerError> {
        let options = ice_restart.then(|| RTCOfferOptions { ice_restart: true, ..Default::default() });
        let offer = self.pc.create_offer(options).await?;
        self.pc.set_local_description(offer.clone()).await?;
        Ok(SignalPayload::Offer { sdp: offer.sdp })
    }

    /// Handles a signal from the peer; returns the answer to send back, if any.
    pub(crate) async fn on_signal(
        &mut self,
        payload: SignalPayload,
    ) -> Result<Option<SignalPayload>, PeerError> {
        match payload {
            SignalPayload::Offer { sdp } => {
                let ufrag = ice_ufrag(&sdp);
                self.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                if self.remote_ufrag.is_some() && ufrag.is_some() && ufrag != self.remote_ufrag {
                    self.restarted = true;
                }
                if ufrag.is_some() {
                    self.remote_ufrag = ufrag;
                }
                self.release_held().await?;
                let answer = self.pc.create_answer(None).await?;
                self.pc.set_local_description(answer.clone()).await?;
                Ok(Some(SignalPayload::Answer { sdp: answer.sdp }))
            }
            SignalPayload::Answer { sdp } => {
                self.pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                self.release_held().await?;
                Ok(None)
            }
            SignalPayload::Candidate { candidate, sdp_mid, sdp_m_line_index, username_fragment } => {
                if let (Some(typ), Ok(mut log)) = (candidate_type_of(&candidate), self.candidates.lock()) {
                    log.received.insert(typ);
                }
                let init = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index: sdp_m_line_index,
                    username_fragment,
                };
                if self.has_remote {
                    self.pc.add_ice_candidate(init).await?;
                } else if self.held.len() < 256 {
                    self.held.push(init);
                }
                Ok(None)
            }
            // webrtc 0.17 needs no end-of-candidates; sealed payloads are not used yet.
            // The engine acts on `restart_ice`; nothing for the connection itself.
            SignalPayload::EndOfCandidates { .. }
            | SignalPayload::Sealed { .. }
            | SignalPayload::RestartIce => Ok(None),
        }
    }

    /// Whether the peer restarted ICE (an offer with new credentials) since the last call.
    pub(crate) fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }

    async fn release_held(&mut self) -> Result<(), PeerError> {
        self.has_remote = true;
        for init in std::mem::take(&mut self.held) {
            self.pc.add_ice_candidate(init).await?;
        }
        Ok(())
    }

    /// A new `file` channel to the peer, to send one file on.
    pub(crate) async fn file_channel(&self) -> Result<Arc<RTCDataChannel>, PeerError> {
        let init = RTCDataChannelInit { ordered: Some(true), ..Default::default() };
        Ok(self.pc.create_data_channel(crate::files::FILE_LABEL, Some(init)).await?)
    }

    /// Sends a text message on the data channel; before it opens, the message waits (up to 64).
    /// Everything goes through the queue, so messages leave in the order they were given.
    pub(crate) async fn send_data(&self, text: &str) {
        {
            let mut unsent = self.unsent.lock().await;
            if unsent.len() < 64 {
                unsent.push(text.to_owned());
            }
        }
        self.flush_data().await;
    }

    /// Sends messages that waited for the data channel, if it is open now (a safety net for an
    /// open notification that came before the handler, or not at all).
    pub(crate) async fn flush_data(&self) {
        if let Some(channel) = open_channel(&self.data) {
            flush(&channel, &self.unsent).await;
        }
    }

    /// The selected pair's path, once connected.
    pub(crate) async fn path(&self) -> Option<Path> {
        let pair = self.pc.dtls_transport().ice_transport().get_selected_candidate_pair().await?;
        let local = candidate_type(pair.local.typ)?;
        let relay = (local == CandidateType::Relay)
            .then(|| RelayTransport::from_relay_priority(pair.local.priority).unwrap_or(RelayTransport::Udp));
        Some(Path { local, remote: candidate_type(pair.remote.typ)?, relay })
    }

    /// Asks the peer for a keyframe on each of its video tracks (a recording starts).
    pub(crate) fn request_keyframes(&self) {
        self.received.keyframes_wanted.fetch_add(1, Ordering::Relaxed);
    }

    /// The candidate types gathered here and received from the peer.
    pub(crate) fn candidate_types(
        &self,
    ) -> (std::collections::BTreeSet<&'static str>, std::collections::BTreeSet<&'static str>) {
        self.candidates
            .lock()
            .map_or_else(|_| Default::default(), |log| (log.gathered.clone(), log.received.clone()))
    }

    /// The candidate types gathered here and received from the peer, for a failure's detail:
    /// "gathered here: host, srflx; from the peer: host".
    pub(crate) fn candidate_summary(&self) -> String {
        let list = |set: &std::collections::BTreeSet<&str>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                set.iter().copied().collect::<Vec<_>>().join(", ")
            }
        };
        self.candidates.lock().map_or_else(
            |_| String::new(),
            |log| {
                format!(
                    "candidates gathered here: {}; from the peer: {}",
                    list(&log.gathered),
                    list(&log.received)
                )
            },
        )
    }

    /// Closes the connection.
    /// Closes the connection, waiting at most 5 s (a stack that does not finish closing must not
    /// hold up leaving or the rest of the call).
    pub(crate) async fn close(&self) {
        if tokio::time::timeout(Duration::from_secs(5), self.pc.close()).await.is_err() {
            tracing::warn!("a peer connection did not close within 5 s; left behind");
        }
        // Its readers end with it; any still waiting for the engine is stopped, and each is
        // waited for (they hold nothing that takes long to let go).
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// The machine's interface addresses, as ICE sees them when it gathers host candidates: a change
/// means the network changed (Wi-Fi to Ethernet, a VPN up, a new address).
/// The machine's addresses that a call can use: IPv6 link-local ones are left out (no candidate
/// is gathered on them, and one appears with every new interface, which is not a new network).
pub(crate) fn local_addresses() -> std::collections::BTreeSet<std::net::IpAddr> {
    let usable = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
        std::net::IpAddr::V4(_) => true,
    };
    webrtc::util::ifaces::ifaces()
        .map(|list| list.into_iter().filter_map(|i| i.addr.map(|a| a.ip())).filter(usable).collect())
        .unwrap_or_default()
}

/// The data channel's label (docs/PROTOCOL.md section 10).
const DATA_LABEL: &str = "confer";

type DataSlot = Arc<std::sync::Mutex<Option<Arc<RTCDataChannel>>>>;

/// The data channel, if it is there and open.
fn open_channel(slot: &DataSlot) -> Option<Arc<RTCDataChannel>> {
    use webrtc::data_channel::data_channel_state::RTCDataChannelState;
    let channel = slot.lock().ok()?.clone()?;
    (channel.ready_state() == RTCDataChannelState::Open).then_some(channel)
}

/// Sends what waited.
/// Messages for the data channel, in order. Held while sending, so a message given later never
/// overtakes one that waited (the crate runs the open handler as a task of its own, so a direct
/// send could otherwise slip in before the queue is flushed).
type Outbox = Arc<tokio::sync::Mutex<Vec<String>>>;

/// Sends what waited, in order.
async fn flush(channel: &RTCDataChannel, unsent: &tokio::sync::Mutex<Vec<String>>) {
    let mut waiting = unsent.lock().await;
    for text in waiting.drain(..) {
        let _ = channel.send_text(text).await;
    }
}

/// What a data channel is connected to once there is one.
#[derive(Clone)]
struct DataWiring {
    slot: DataSlot,
    unsent: Outbox,
    events: PeerEvents,
    who: PeerId,
}

impl DataWiring {
    /// Makes `channel` the peer's data channel: what waited goes out when it opens, and what
    /// arrives is handed to the engine.
    fn take(&self, channel: &Arc<RTCDataChannel>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(Arc::clone(channel));
        }
        let (opened, unsent) = (Arc::clone(channel), Arc::clone(&self.unsent));
        channel.on_open(Box::new(move || Box::pin(async move { flush(&opened, &unsent).await })));
        let (tx, who) = (self.events.clone(), self.who.clone());
        channel.on_message(Box::new(move |message: DataChannelMessage| {
            if message.is_string {
                let text = String::from_utf8_lossy(&message.data).into_owned();
                // Not waiting: a stalled reader would close the peer's SCTP window.
                tx.peer_said(&who, PeerEvent::Data(text));
            }
            Box::pin(async {})
        }));
    }
}

/// Reassembles H.264 access units from RTP packets as soon as a frame's last packet (the one
/// with the marker bit) and every packet before it are in: no waiting for the next frame, as
/// webrtc's `SampleBuilder` does (a whole frame interval of latency). Packets of one frame may
/// arrive out of order (a NACK retransmission); a frame with a hole is dropped once a later frame
/// completes, and reported so the receiver asks for a keyframe.
///
/// Padding-only packets (no payload: browsers send them between frames to probe bandwidth, with
/// the timestamp of the frame before) take sequence numbers but belong to no frame: each counts
/// as an empty frame of its own, so it neither breaks the frame after it nor joins the one before.
#[derive(Debug, Default)]
struct FrameAssembler {
    /// Packets not yet assembled.
    pending: Vec<Held>,
    /// The sequence number of the last packet handed out (or passed over, for padding).
    last_end: Option<u16>,
}

#[derive(Debug)]
struct Held {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
}

impl Held {
    fn is_padding(&self) -> bool {
        self.payload.is_empty()
    }

    /// The last packet of a frame, or padding (its own empty frame).
    fn ends_frame(&self) -> bool {
        self.marker || self.is_padding()
    }
}

/// Packets held at most (a few frames' worth).
const MAX_PENDING: usize = 512;

impl FrameAssembler {
    /// Takes one packet; returns the access units now complete (Annex B) and whether a frame
    /// was lost.
    fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    ) -> (Vec<(u32, Vec<u8>)>, bool) {
        let stale = self.last_end.is_some_and(|end| (sequence.wrapping_sub(end) as i16) <= 0);
        if stale || self.pending.iter().any(|p| p.sequence == sequence) {
            return (Vec::new(), false);
        }
        self.pending.push(Held { sequence, timestamp, marker, payload });
        let mut damaged = false;
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
            return (Vec::new(), true);
        }
        let mut out = Vec::new();
        loop {
            // The earliest frame whose last packet has arrived (sequence numbers wrap: compare
            // distances from the last frame handed out, or from the oldest packet held).
            let oldest = self
                .pending
                .iter()
                .map(|p| p.sequence)
                .min_by(|a, b| (a.wrapping_sub(*b) as i16).cmp(&0))
                .unwrap_or(sequence);
            let base = self.last_end.unwrap_or_else(|| oldest.wrapping_sub(1));
            let Some(last) =
                self.pending.iter().filter(|p| p.ends_frame()).min_by_key(|p| p.sequence.wrapping_sub(base))
            else {
                break;
            };
            let (end, ts, padding) = (last.sequence, last.timestamp, last.is_padding());
            let mut frame: Vec<&Held> = if padding {
                vec![last]
            } else {
                self.pending.iter().filter(|p| p.timestamp == ts && !p.is_padding()).collect()
            };
            frame.sort_by_key(|p| std::cmp::Reverse(end.wrapping_sub(p.sequence)));
            let first = frame.first().map_or(end, |p| p.sequence);
            let contiguous = frame.windows(2).all(|w| w[1].sequence == w[0].sequence.wrapping_add(1))
                && frame.last().is_some_and(|p| p.sequence == end)
                && self.last_end.is_none_or(|last| first == last.wrapping_add(1));
            if contiguous && !padding {
                let mut depacketizer = H264Packet::default();
                let mut access_unit = Vec::new();
                let mut ok = true;
                for packet in &frame {
                    match depacketizer.depacketize(&Bytes::copy_from_slice(&packet.payload)) {
                        Ok(nal) => access_unit.extend_from_slice(&nal),
                        Err(_) => ok = false,
                    }
                }
                if ok && !access_unit.is_empty() {
                    out.push((ts, access_unit));
                } else {
                    damaged = true;
                }
            } else if !contiguous {
                // A hole: wait while the frame is the newest, drop it when a later one is done.
                let later_done = self
                    .pending
                    .iter()
                    .any(|p| p.marker && !p.is_padding() && (p.sequence.wrapping_sub(end) as i16) > 0);
                if !later_done {
                    break;
                }
                damaged = true;
            }
            self.pending.retain(|p| {
                (p.timestamp != ts || p.is_padding()) && (p.sequence.wrapping_sub(end) as i16) > 0
            });
            self.last_end = Some(end);
        }
        (out, damaged)
    }
}

/// Reads RTCP for one of our senders: keyframe requests and the peer's loss reports (of our
/// camera, for its layer; of our audio, for the Opus encoder's FEC). This loop
/// must run: it also feeds NACKs to the retransmitting interceptor.
async fn watch_rtcp(
    sender: Arc<RTCRtpSender>,
    ssrc: Option<u32>,
    who: PeerId,
    events: PeerEvents,
    sent: Sent,
) {
    while let Ok((packets, _)) = sender.read_rtcp().await {
        for packet in packets {
            let any = packet.as_any();
            if sent != Sent::Audio
                && (any.downcast_ref::<PictureLossIndication>().is_some_and(|p| Some(p.media_ssrc) == ssrc)
                    || any.downcast_ref::<FullIntraRequest>().is_some())
            {
                let screen = sent == Sent::Screen;
                events.peer_said(&who, PeerEvent::KeyframeRequested { screen });
            } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                for block in report.reports.iter().filter(|b| Some(b.ssrc) == ssrc) {
                    let now = unix2ntp(SystemTime::now());
                    if let Some(rtt) = round_trip(now, block.last_sender_report, block.delay) {
                        events.peer_said(&who, PeerEvent::RoundTrip(rtt));
                    }
                    if sent == Sent::Camera {
                        let report = PeerEvent::SendReport {
                            loss: f64::from(block.fraction_lost) / 256.0,
                            // In RTP timestamp units: 90 kHz for video.
                            jitter_ms: f64::from(block.jitter) / 90.0,
                        };
                        events.peer_said(&who, report);
                    } else if sent == Sent::Audio {
                        let loss = f64::from(block.fraction_lost) / 256.0;
                        events.peer_said(&who, PeerEvent::AudioLoss(loss));
                    }
                }
            }
        }
    }
}

/// Round-trip time from a receiver report block (RFC 3550 §6.4.1): now, minus when our sender
/// report it answers left (`lsr`, the middle 32 bits of its NTP time), minus how long the peer
/// held it (`dlsr`), all in 1/65536 s. `None` before the peer has had a sender report from us, or
/// when the clock arithmetic makes no sense (more than a minute, or negative).
fn round_trip(now_ntp: u64, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let now = (now_ntp >> 16) as u32;
    let rtt = now.wrapping_sub(lsr).wrapping_sub(dlsr);
    (rtt < 60 << 16).then(|| Duration::from_secs_f64(f64::from(rtt) / 65_536.0))
}

/// Reads one remote track until it ends: H.264 access units (asking for a keyframe first and
/// after loss) or Opus packets.
async fn read_track(
    track: Arc<TrackRemote>,
    pc: std::sync::Weak<RTCPeerConnection>,
    who: PeerId,
    events: PeerEvents,
    received: Arc<Received>,
) {
    let mime = track.codec().capability.mime_type.to_ascii_lowercase();
    let screen = track.id() == SCREEN_TRACK;
    let mut sequence = SequenceCounter::default();
    let mut count = |packet: &webrtc::rtp::packet::Packet, bytes: &AtomicU64| {
        bytes.fetch_add(12 + packet.payload.len() as u64, Ordering::Relaxed);
        received.packets.fetch_add(1, Ordering::Relaxed);
        received.expected.fetch_add(sequence.expected(packet.header.sequence_number), Ordering::Relaxed);
    };
    if mime == MIME_TYPE_H264.to_ascii_lowercase() {
        let media_ssrc = track.ssrc();
        let mut last_pli: Option<tokio::time::Instant> = None;
        let ask_keyframe = |last: &mut Option<tokio::time::Instant>| {
            let now = tokio::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < PLI_INTERVAL) {
                return None;
            }
            *last = Some(now);
            pc.upgrade()
        };
        if let Some(pc) = ask_keyframe(&mut last_pli) {
            let _ = pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]).await;
        }
        let mut assembler = FrameAssembler::default();
        let mut keyframes_asked = received.keyframes_wanted.load(Ordering::Relaxed);
        while let Ok((packet, _)) = track.read_rtp().await {
            count(&packet, &received.video_bytes);
            let wanted = received.keyframes_wanted.load(Ordering::Relaxed);
            if wanted != keyframes_asked {
                keyframes_asked = wanted;
                last_pli = None;
                if let Some(pc) = ask_keyframe(&mut last_pli) {
                    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
                    let _ = pc.write_rtcp(&[Box::new(pli)]).await;
                }
            }
            let header = &packet.header;
            let (complete, damaged) = assembler.push(
                header.sequence_number,
                header.timestamp,
                header.marker,
                packet.payload.to_vec(),
            );
            if damaged && let Some(pc) = ask_keyframe(&mut last_pli) {
                let _ =
                    pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]).await;
            }
            for (rtp_timestamp, access_unit) in complete {
                let event = PeerEvent::Video { access_unit, screen, rtp_timestamp };
                if !events.peer_sent(&who, event).await {
                    return;
                }
            }
        }
    } else {
        let mut depacketizer = OpusPacket;
        while let Ok((packet, _)) = track.read_rtp().await {
            count(&packet, &received.audio_bytes);
            let Ok(payload) = depacketizer.depacketize(&packet.payload) else { continue };
            let event =
                PeerEvent::Audio { rtp_timestamp: packet.header.timestamp, payload: payload.to_vec() };
            if !events.peer_sent(&who, event).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single-NAL packet (type 1, a P slice) carrying `n`.
    fn nal(n: u8) -> Vec<u8> {
        vec![0x41, n, n]
    }

    #[test]
    fn a_restart_offer_is_told_by_its_new_ice_credentials() {
        let offer = |ufrag: &str| {
            format!(
                "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:x\r\n"
            )
        };
        assert_eq!(ice_ufrag(&offer("abcd")).as_deref(), Some("abcd"));
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    #[test]
    fn round_trip_time_comes_from_the_report_timestamps() {
        // Our sender report left at NTP 1000.5 s; the peer held it 0.25 s; now it is 1000.8 s.
        let ntp = |secs: f64| ((secs * 65_536.0) as u64) << 16;
        let lsr = (ntp(1_000.5) >> 16) as u32;
        let rtt = round_trip(ntp(1_000.8), lsr, 65_536 / 4).unwrap();
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
        // No sender report received yet: no figure rather than a wrong one.
        assert_eq!(round_trip(ntp(1_000.8), 0, 0), None);
        // A report that claims to have been held longer than it has been out: nonsense.
        assert_eq!(round_trip(ntp(1_000.8), lsr, 65_536), None);
        // The 32-bit middle of NTP time wraps every 18 hours; the difference still holds.
        let before_wrap = (u32::MAX - 65_536 / 10) as u64;
        assert!(round_trip((before_wrap + 65_536 / 5) << 16, before_wrap as u32, 0).is_some());
    }

    #[test]
    fn a_frame_is_handed_out_on_its_last_packet_even_out_of_order() {
        let mut assembler = FrameAssembler::default();
        // Frame at ts 100: packets 10, 11, 12 (marker), arriving 10, 12, 11.
        assert_eq!(assembler.push(10, 100, false, nal(1)), (vec![], false));
        assert_eq!(assembler.push(12, 100, true, nal(3)), (vec![], false));
        let (frames, damaged) = assembler.push(11, 100, false, nal(2));
        assert!(!damaged);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 100, "with its RTP timestamp");
        let start_codes = frames[0].1.windows(4).filter(|w| *w == [0, 0, 0, 1]).count();
        assert_eq!(start_codes, 3, "three NAL units in order: {:?}", frames[0]);
        // The next frame comes out at once on its single marked packet.
        let (frames, _) = assembler.push(13, 200, true, nal(4));
        assert_eq!(frames.len(), 1);
        // A duplicate or a packet from the past is ignored.
        assert_eq!(assembler.push(12, 100, true, nal(3)), (vec![], false));
    }

    #[test]
    fn a_frame_with_a_hole_is_dropped_when_a_later_one_completes_and_reported() {
        let mut assembler = FrameAssembler::default();
        assert_eq!(assembler.push(1, 100, true, nal(1)).0.len(), 1);
        // Frame 200 loses packet 2; 3 is its last.
        assert_eq!(assembler.push(3, 200, true, nal(3)), (vec![], false), "still waiting for 2");
        let (frames, damaged) = assembler.push(4, 300, true, nal(4));
        assert!(damaged, "the loss is reported");
        assert_eq!(frames.len(), 1, "the later frame still comes out");
        // Sequence numbers wrap around.
        let mut assembler = FrameAssembler::default();
        assert_eq!(assembler.push(65_535, 1, false, nal(1)), (vec![], false));
        assert_eq!(assembler.push(0, 1, true, nal(2)).0.len(), 1);
        assert_eq!(assembler.push(1, 2, true, nal(3)).0.len(), 1);
    }

    #[test]
    fn loss_is_counted_from_sequence_numbers() {
        let mut counter = SequenceCounter::default();
        let expected: Vec<u64> =
            [100, 101, 104, 103, 104, 105].iter().map(|&s| counter.expected(s)).collect();
        // 102 and 103 missing at 104 (3 expected); 103 late, 104 repeated: nothing more.
        assert_eq!(expected, [1, 1, 3, 0, 0, 1]);
        // Wrapping, and a restart far ahead that is not counted as a huge loss.
        let mut counter = SequenceCounter::default();
        assert_eq!([65_534u16, 65_535, 1].map(|s| counter.expected(s)), [1, 1, 2]);
        assert_eq!(counter.expected(30_000), 1);
    }

    #[test]
    fn candidate_types_are_read_from_candidate_lines() {
        assert_eq!(candidate_type_of("candidate:1 1 udp 2130706431 192.0.2.10 50000 typ host"), Some("host"));
        let srflx = "candidate:2 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 0.0.0.0 rport 0";
        assert_eq!(candidate_type_of(srflx), Some("srflx"));
        assert_eq!(candidate_type_of("candidate:3 1 udp 1 203.0.113.1 3478 typ relay"), Some("relay"));
        assert_eq!(candidate_type_of("candidate:4 1 udp 1 203.0.113.1 3478 typ"), None);
        assert_eq!(candidate_type_of("candidate:5 1 udp 1 203.0.113.1 3478 typ wormhole"), None);
        assert_eq!(candidate_type_of("garbage"), None);
    }

    #[test]
    fn padding_between_frames_breaks_nothing() {
        let mut assembler = FrameAssembler::default();
        assert_eq!(assembler.push(1, 100, true, nal(1)).0.len(), 1);
        // Padding after frame 100, carrying its timestamp, as browsers send it.
        assert_eq!(assembler.push(2, 100, false, vec![]), (vec![], false));
        assert_eq!(assembler.push(3, 100, false, vec![]), (vec![], false));
        let (frames, damaged) = assembler.push(4, 200, true, nal(4));
        assert_eq!((frames.len(), damaged), (1, false), "the frame after padding is whole");
        // Padding that arrives before the end of the frame it follows.
        assert_eq!(assembler.push(5, 300, false, nal(5)), (vec![], false));
        assert_eq!(assembler.push(7, 300, false, vec![]), (vec![], false));
        let (frames, damaged) = assembler.push(6, 300, true, nal(6));
        assert_eq!((frames.len(), damaged), (1, false));
        let (frames, damaged) = assembler.push(8, 400, true, nal(8));
        assert_eq!((frames.len(), damaged), (1, false));
        // A frame lost next to padding is still reported.
        assert_eq!(assembler.push(9, 400, false, vec![]), (vec![], false));
        assert_eq!(assembler.push(12, 500, true, nal(12)), (vec![], false), "10 and 11 may come yet");
        let (frames, damaged) = assembler.push(13, 600, true, nal(13));
        assert_eq!((frames.len(), damaged), (1, true), "frame 500 lost 10 and 11; 600 comes out");
    }
}
