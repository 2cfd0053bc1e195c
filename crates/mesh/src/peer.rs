//! One WebRTC peer connection per remote participant, through the `webrtc` crate (pinned to
//! 0.17.2). This is the only module that touches that crate, so moving to another WebRTC stack
//! changes this file and nothing else.
//!
//! What it does: H.264 (constrained baseline, packetization mode 1) and Opus, shared local tracks
//! (the engine encodes once and every peer connection sends the same samples), NACK
//! retransmission (the crate's default interceptors), PLI both ways (the receiver asks on the
//! first packet and after loss; the sender reports requests so the encoder makes a keyframe),
//! trickle ICE with candidates held until the remote description is set, ICE restart, one
//! ordered data channel (negotiated, id 0) for chat and state, and the selected candidate pair.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use confer_proto::{IceServer, PeerId, SignalPayload};
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
use webrtc::ice_transport::ice_server::RTCIceServer;
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
use webrtc::rtp::packetizer::Depacketizer as _;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::stats::StatsReportType;
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
        settings.set_relay_acceptance_min_wait(Some(Duration::from_millis(200)));
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        Ok(Self { api })
    }
}

/// The local tracks every peer connection sends: encoded once, written once.
#[derive(Clone)]
pub(crate) struct LocalTracks {
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
}

impl std::fmt::Debug for LocalTracks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalTracks")
    }
}

impl LocalTracks {
    pub(crate) fn new() -> Self {
        Self {
            video: Arc::new(TrackLocalStaticSample::new(h264(), "video".into(), "confer".into())),
            audio: Arc::new(TrackLocalStaticSample::new(opus(), "audio".into(), "confer".into())),
        }
    }

    /// Sends one H.264 access unit (Annex B, SPS/PPS before every IDR) to every peer.
    pub(crate) async fn send_video(&self, access_unit: Vec<u8>, duration: Duration) {
        let sample = Sample { data: Bytes::from(access_unit), duration, ..Default::default() };
        let _ = self.video.write_sample(&sample).await;
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

/// What a peer connection reports to the engine.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    /// Send this to the peer through the relay.
    Signal(SignalPayload),
    /// The ICE transport changed state.
    Ice(crate::decide::IceEvent),
    /// An H.264 access unit arrived (Annex B). After loss a keyframe has been asked for.
    Video { access_unit: Vec<u8> },
    /// An Opus packet arrived.
    Audio { rtp_timestamp: u32, payload: Vec<u8> },
    /// A data channel message.
    Data(String),
    /// The peer asked for a keyframe.
    KeyframeRequested,
    /// Loss the peer reports for what we send (0..1), from its receiver reports.
    SendLoss(f64),
}

/// One peer connection.
pub(crate) struct Peer {
    pc: Arc<RTCPeerConnection>,
    data: Arc<RTCDataChannel>,
    /// Messages sent before the data channel opened, sent when it does.
    unsent: Arc<std::sync::Mutex<Vec<String>>>,
    offerer: bool,
    /// Remote candidates that came before the remote description.
    held: Vec<RTCIceCandidateInit>,
    has_remote: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("offerer", &self.offerer).finish_non_exhaustive()
    }
}

fn ice_servers(servers: &[IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .map(|s| RTCIceServer {
            // webrtc 0.17 gathers relay candidates over UDP only: keep what it can use.
            urls: s
                .urls
                .iter()
                .filter(|u| !u.starts_with("turns:") && !u.contains("transport=tcp"))
                .cloned()
                .collect(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .filter(|s| !s.urls.is_empty())
        .collect()
}

impl Peer {
    /// A peer connection to `remote` sending `tracks`, reporting on `events` (tagged with the
    /// remote's id). `relay_only` restricts ICE to TURN candidates.
    pub(crate) async fn new(
        stack: &Stack,
        servers: &[IceServer],
        relay_only: bool,
        tracks: &LocalTracks,
        remote: PeerId,
        offerer: bool,
        events: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    ) -> Result<Self, PeerError> {
        let config = RTCConfiguration {
            ice_servers: ice_servers(servers),
            ice_transport_policy: if relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            },
            ..Default::default()
        };
        let pc = Arc::new(stack.api.new_peer_connection(config).await?);
        let video_sender =
            pc.add_track(Arc::clone(&tracks.video) as Arc<dyn TrackLocal + Send + Sync>).await?;
        let audio_sender =
            pc.add_track(Arc::clone(&tracks.audio) as Arc<dyn TrackLocal + Send + Sync>).await?;
        watch_rtcp(video_sender, remote.clone(), events.clone(), true);
        watch_rtcp(audio_sender, remote.clone(), events.clone(), false);
        let data = pc
            .create_data_channel(
                "confer",
                Some(RTCDataChannelInit { ordered: Some(true), negotiated: Some(0), ..Default::default() }),
            )
            .await?;

        let tx = events.clone();
        let who = remote.clone();
        pc.on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
            let (tx, who) = (tx.clone(), who.clone());
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
                let _ = tx.send((who, PeerEvent::Signal(payload)));
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
                let _ = tx.send((who.clone(), PeerEvent::Ice(event)));
            }
            Box::pin(async {})
        }));

        let unsent: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (channel, queue) = (Arc::clone(&data), Arc::clone(&unsent));
        data.on_open(Box::new(move || {
            Box::pin(async move {
                let waiting = queue.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
                for text in waiting {
                    let _ = channel.send_text(text).await;
                }
            })
        }));

        let tx = events.clone();
        let who = remote.clone();
        data.on_message(Box::new(move |message: DataChannelMessage| {
            if message.is_string {
                let text = String::from_utf8_lossy(&message.data).into_owned();
                let _ = tx.send((who.clone(), PeerEvent::Data(text)));
            }
            Box::pin(async {})
        }));

        let tx = events;
        let who = remote;
        let weak = Arc::downgrade(&pc);
        pc.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
            let (tx, who, weak) = (tx.clone(), who.clone(), weak.clone());
            // Reading runs in its own task: a handler's future holds the connection's lock.
            tokio::spawn(read_track(track, weak, who, tx));
            Box::pin(async {})
        }));

        Ok(Self { pc, data, unsent, offerer, held: Vec::new(), has_remote: false })
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
                self.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
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
            SignalPayload::EndOfCandidates { .. } | SignalPayload::Sealed { .. } => Ok(None),
        }
    }

    async fn release_held(&mut self) -> Result<(), PeerError> {
        self.has_remote = true;
        for init in std::mem::take(&mut self.held) {
            self.pc.add_ice_candidate(init).await?;
        }
        Ok(())
    }

    /// Sends a text message on the data channel; before it opens, the message waits (up to 64).
    pub(crate) async fn send_data(&self, text: &str) {
        use webrtc::data_channel::data_channel_state::RTCDataChannelState;
        if self.data.ready_state() == RTCDataChannelState::Open {
            let _ = self.data.send_text(text.to_owned()).await;
            return;
        }
        if let Ok(mut unsent) = self.unsent.lock()
            && unsent.len() < 64
        {
            unsent.push(text.to_owned());
        }
        // The channel may have opened (and flushed) between the check and the push.
        if self.data.ready_state() == RTCDataChannelState::Open {
            let waiting = self.unsent.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
            for text in waiting {
                let _ = self.data.send_text(text).await;
            }
        }
    }

    /// Sends messages that waited for the data channel, if it is open now (a safety net for an
    /// open notification that came before the handler, or not at all).
    pub(crate) async fn flush_data(&self) {
        use webrtc::data_channel::data_channel_state::RTCDataChannelState;
        if self.data.ready_state() != RTCDataChannelState::Open {
            return;
        }
        let waiting = self.unsent.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
        for text in waiting {
            let _ = self.data.send_text(text).await;
        }
    }

    /// The type of the local candidate of the selected pair, once connected.
    pub(crate) async fn candidate_type(&self) -> Option<CandidateType> {
        let pair = self.pc.dtls_transport().ice_transport().get_selected_candidate_pair().await?;
        match pair.local.typ {
            RTCIceCandidateType::Host => Some(CandidateType::Host),
            RTCIceCandidateType::Srflx => Some(CandidateType::Srflx),
            RTCIceCandidateType::Prflx => Some(CandidateType::Prflx),
            RTCIceCandidateType::Relay => Some(CandidateType::Relay),
            RTCIceCandidateType::Unspecified => None,
        }
    }

    /// Round-trip time from the peer's receiver reports, ms.
    pub(crate) async fn rtt_ms(&self) -> Option<f64> {
        let report = self.pc.get_stats().await;
        report
            .reports
            .values()
            .filter_map(|r| match r {
                StatsReportType::RemoteInboundRTP(s) => s.round_trip_time,
                _ => None,
            })
            .reduce(f64::min)
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Reassembles H.264 access units from RTP packets as soon as a frame's last packet (the one
/// with the marker bit) and every packet before it are in: no waiting for the next frame, as
/// webrtc's `SampleBuilder` does (a whole frame interval of latency). Packets of one frame may
/// arrive out of order (a NACK retransmission); a frame with a hole is dropped once a later frame
/// completes, and reported so the receiver asks for a keyframe.
#[derive(Debug, Default)]
struct FrameAssembler {
    /// Packets not yet assembled: (sequence, timestamp, marker, payload).
    pending: Vec<(u16, u32, bool, Vec<u8>)>,
    /// The sequence number of the last packet of the last frame handed out.
    last_end: Option<u16>,
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
    ) -> (Vec<Vec<u8>>, bool) {
        let stale = self.last_end.is_some_and(|end| (sequence.wrapping_sub(end) as i16) <= 0);
        if stale || self.pending.iter().any(|p| p.0 == sequence) {
            return (Vec::new(), false);
        }
        self.pending.push((sequence, timestamp, marker, payload));
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
                .map(|p| p.0)
                .min_by(|a, b| (a.wrapping_sub(*b) as i16).cmp(&0))
                .unwrap_or(sequence);
            let base = self.last_end.unwrap_or_else(|| oldest.wrapping_sub(1));
            let Some(&(end, ts, _, _)) =
                self.pending.iter().filter(|p| p.2).min_by_key(|p| p.0.wrapping_sub(base))
            else {
                break;
            };
            let mut frame: Vec<&(u16, u32, bool, Vec<u8>)> =
                self.pending.iter().filter(|p| p.1 == ts).collect();
            frame.sort_by_key(|p| std::cmp::Reverse(end.wrapping_sub(p.0)));
            let first = frame.first().map_or(end, |p| p.0);
            let contiguous = frame.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1))
                && frame.last().is_some_and(|p| p.0 == end)
                && self.last_end.is_none_or(|last| first == last.wrapping_add(1));
            if contiguous {
                let mut depacketizer = H264Packet::default();
                let mut access_unit = Vec::new();
                let mut ok = true;
                for packet in &frame {
                    match depacketizer.depacketize(&Bytes::copy_from_slice(&packet.3)) {
                        Ok(nal) => access_unit.extend_from_slice(&nal),
                        Err(_) => ok = false,
                    }
                }
                if ok && !access_unit.is_empty() {
                    out.push(access_unit);
                } else {
                    damaged = true;
                }
            } else {
                // A hole: wait while the frame is the newest, drop it when a later one is done.
                let later_done = self.pending.iter().any(|p| p.2 && (p.0.wrapping_sub(end) as i16) > 0);
                if !later_done {
                    break;
                }
                damaged = true;
            }
            self.pending.retain(|p| p.1 != ts && (p.0.wrapping_sub(end) as i16) > 0);
            self.last_end = Some(end);
        }
        (out, damaged)
    }
}

/// Reads RTCP for one of our senders: keyframe requests and the peer's loss reports. This loop
/// must run: it also feeds NACKs to the retransmitting interceptor.
fn watch_rtcp(
    sender: Arc<RTCRtpSender>,
    who: PeerId,
    events: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
    video: bool,
) {
    tokio::spawn(async move {
        let ssrc = sender.get_parameters().await.encodings.first().map(|e| e.ssrc);
        while let Ok((packets, _)) = sender.read_rtcp().await {
            for packet in packets {
                let any = packet.as_any();
                if video
                    && (any
                        .downcast_ref::<PictureLossIndication>()
                        .is_some_and(|p| Some(p.media_ssrc) == ssrc)
                        || any.downcast_ref::<FullIntraRequest>().is_some())
                {
                    let _ = events.send((who.clone(), PeerEvent::KeyframeRequested));
                } else if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                    for block in report.reports.iter().filter(|b| Some(b.ssrc) == ssrc) {
                        if video {
                            let _ = events.send((
                                who.clone(),
                                PeerEvent::SendLoss(f64::from(block.fraction_lost) / 256.0),
                            ));
                        }
                    }
                }
            }
        }
    });
}

/// Reads one remote track until it ends: H.264 access units (asking for a keyframe first and
/// after loss) or Opus packets.
async fn read_track(
    track: Arc<TrackRemote>,
    pc: std::sync::Weak<RTCPeerConnection>,
    who: PeerId,
    events: mpsc::UnboundedSender<(PeerId, PeerEvent)>,
) {
    let mime = track.codec().capability.mime_type.to_ascii_lowercase();
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
        while let Ok((packet, _)) = track.read_rtp().await {
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
            for access_unit in complete {
                if events.send((who.clone(), PeerEvent::Video { access_unit })).is_err() {
                    return;
                }
            }
        }
    } else {
        let mut depacketizer = OpusPacket;
        while let Ok((packet, _)) = track.read_rtp().await {
            let Ok(payload) = depacketizer.depacketize(&packet.payload) else { continue };
            let event =
                PeerEvent::Audio { rtp_timestamp: packet.header.timestamp, payload: payload.to_vec() };
            if events.send((who.clone(), event)).is_err() {
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
    fn a_frame_is_handed_out_on_its_last_packet_even_out_of_order() {
        let mut assembler = FrameAssembler::default();
        // Frame at ts 100: packets 10, 11, 12 (marker), arriving 10, 12, 11.
        assert_eq!(assembler.push(10, 100, false, nal(1)), (vec![], false));
        assert_eq!(assembler.push(12, 100, true, nal(3)), (vec![], false));
        let (frames, damaged) = assembler.push(11, 100, false, nal(2));
        assert!(!damaged);
        assert_eq!(frames.len(), 1);
        let start_codes = frames[0].windows(4).filter(|w| *w == [0, 0, 0, 1]).count();
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
}
