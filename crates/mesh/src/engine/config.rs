//! How to take part in a call ([`EngineConfig`]), and why joining can fail ([`EngineError`]).

use super::*;

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
