//! H.264 through openh264: constrained baseline, Annex B byte streams (what RTP packetization
//! mode 1 splits into NAL units), keyframes on request, bitrate changes while running.
//!
//! Encoding and decoding are CPU work: callers run them off the async runtime.

use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, Profile, RateControlMode, UsageType,
};
use openh264::formats::{YUVSlices, YUVSource as _};

use crate::I420Frame;

/// Why the codec failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum H264Error {
    /// openh264 refused the settings or failed to initialise.
    #[error("cannot start the H.264 encoder: {0}")]
    Init(String),
    /// A frame could not be encoded.
    #[error("cannot encode the frame: {0}")]
    Encode(String),
    /// The bitstream could not be decoded (corrupt or unsupported).
    #[error("cannot decode the H.264 data: {0}")]
    Decode(String),
    /// A decoded picture had an unusable size.
    #[error("the decoder produced an unusable picture: {0}")]
    Picture(#[from] crate::FrameError),
}

/// What a stream shows, which sets the encoder's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoContent {
    /// A camera: natural pictures, motion everywhere.
    #[default]
    Camera,
    /// A shared screen: text and flat areas, mostly still (openh264's screen content mode).
    Screen,
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H264Config {
    /// Frames per second the encoder plans for.
    pub fps: f32,
    /// Target bitrate, bits per second.
    pub bitrate_bps: u32,
    /// Camera or screen.
    pub content: VideoContent,
}

impl H264Config {
    /// A camera stream at `fps` and `bitrate_bps`.
    pub fn camera(fps: f32, bitrate_bps: u32) -> Self {
        Self { fps, bitrate_bps, content: VideoContent::Camera }
    }

    /// A screen share at `fps` and `bitrate_bps`.
    pub fn screen(fps: f32, bitrate_bps: u32) -> Self {
        Self { fps, bitrate_bps, content: VideoContent::Screen }
    }
}

impl Default for H264Config {
    fn default() -> Self {
        Self::camera(30.0, 800_000)
    }
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Annex B byte stream (start codes between NAL units).
    pub data: Vec<u8>,
    /// Whether it can be decoded on its own (IDR).
    pub keyframe: bool,
}

/// An H.264 encoder.
pub struct H264Encoder {
    encoder: Encoder,
    keyframe_requested: bool,
    bitrate_bps: u32,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// A constrained-baseline encoder; the picture size follows the frames it is given.
    pub fn new(config: H264Config) -> Result<Self, H264Error> {
        let settings = EncoderConfig::new()
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.fps))
            .skip_frames(false);
        let settings = match config.content {
            VideoContent::Camera => settings.usage_type(UsageType::CameraVideoRealTime),
            // Screen content mode has no adaptive quantisation or background detection (openh264
            // turns them off with a warning on stderr when asked).
            VideoContent::Screen => settings
                .usage_type(UsageType::ScreenContentRealTime)
                .adaptive_quantization(false)
                .background_detection(false),
        };
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), settings)
            .map_err(|e| H264Error::Init(e.to_string()))?;
        Ok(Self { encoder, keyframe_requested: false, bitrate_bps: config.bitrate_bps })
    }

    /// The next encoded frame is a keyframe (answer to a PLI, a new receiver).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate from the next frame on.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), H264Error> {
        use openh264_sys2::{
            ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
        };
        let target = i32::try_from(bps).unwrap_or(i32::MAX);
        // The encoder starts with its maximum equal to its target, and openh264 keeps the target
        // at or below the maximum: going up, move the maximum first; going down, the target.
        if bps >= self.bitrate_bps {
            self.set_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, target)?;
            self.set_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, target)?;
        } else {
            self.set_option(ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, target)?;
            self.set_option(ENCODER_OPTION_MAX_BITRATE, SPATIAL_LAYER_0, target)?;
        }
        self.bitrate_bps = bps;
        Ok(())
    }

    fn set_option(
        &mut self,
        option: openh264_sys2::ENCODER_OPTION,
        layer: openh264_sys2::LAYER_NUM,
        bps: i32,
    ) -> Result<(), H264Error> {
        let mut info = openh264_sys2::TagBitrateInfo { iLayer: layer, iBitrate: bps };
        #[allow(unsafe_code)]
        // SAFETY: the encoder is initialised (creating it succeeded); both bitrate options take a
        // pointer to an SBitrateInfo, which `info` is, and openh264 only reads it during the call.
        let status = unsafe { self.encoder.raw_api().set_option(option, (&raw mut info).cast()) };
        if status == 0 {
            Ok(())
        } else {
            Err(H264Error::Encode(format!("setting option {option} failed ({status})")))
        }
    }

    /// Encodes one frame. `None` if the encoder skipped it.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<EncodedFrame>, H264Error> {
        if std::mem::take(&mut self.keyframe_requested) {
            self.encoder.force_intra_frame();
        }
        let (w, h) = (frame.width(), frame.height());
        let source = YUVSlices::new((frame.y(), frame.u(), frame.v()), (w, h), (w, w / 2, w / 2));
        let stream = self.encoder.encode(&source).map_err(|e| H264Error::Encode(e.to_string()))?;
        let keyframe = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { data: stream.to_vec(), keyframe }))
    }
}

/// An H.264 decoder.
pub struct H264Decoder {
    decoder: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// A decoder.
    pub fn new() -> Result<Self, H264Error> {
        let decoder = Decoder::new().map_err(|e| H264Error::Init(e.to_string()))?;
        Ok(Self { decoder })
    }

    /// Decodes an Annex B access unit; `None` while the decoder needs more data.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, H264Error> {
        let Some(picture) = self.decoder.decode(data).map_err(|e| H264Error::Decode(e.to_string()))? else {
            return Ok(None);
        };
        let (w, h) = picture.dimensions();
        let frame = I420Frame::from_planes(w, h, (picture.y(), picture.u(), picture.v()), picture.strides())?;
        Ok(Some(frame))
    }
}
