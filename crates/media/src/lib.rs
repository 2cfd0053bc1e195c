//! Confer's media: everything between a device and an encoded packet, and between a decoded
//! packet and a speaker or a screen. It does no networking.
//!
//! So far: the I420 frame type and the synthetic camera with its detector, which let the rest of
//! Confer run end to end (and prove whose video arrived, intact and how late) on a machine with no
//! camera.

mod audio_io;
mod camera;
mod convert;
mod frame;
mod h264;
mod opus_codec;
mod playout;
pub mod preview;
mod processing;
mod record;
mod resample;
mod screen;
pub mod synthetic;

pub use audio_io::{
    AudioDeviceInfo, AudioError, AudioEvent, AudioFrame, Channels, DeviceChoice, DeviceWatcher, Microphone,
    SYNTHETIC_DEVICE, Speaker, input_devices, output_devices,
};
pub use camera::{
    Camera, CameraChoice, CameraError, CameraEvent, CameraInfo, CaptureEnded, CapturedFrame,
    SYNTHETIC_CAMERA, cameras, nearest_format,
};
pub use convert::{ConvertError, PixelFormat, to_i420};
pub use frame::{FrameError, I420Frame};
pub use h264::{EncodedFrame, H264Config, H264Decoder, H264Encoder, H264Error, VideoContent};
pub use opus_codec::{FRAME_SAMPLES, OpusConfig, OpusDecoder, OpusEncoder, OpusError};
pub use playout::{JitterBuffer, JitterStats, LevelMeter, Playout, PlayoutFrame, StreamLevel, dbfs};
pub use processing::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig, ProcessingError, ProcessingStats};
pub use record::{
    CLUSTER_BYTES, CLUSTER_SPAN, MAX_BLOCK, MAX_PARAMETER_SET, MAX_TRACKS, REORDER, RecordError, Recording,
    RecordingSummary, TrackId, TrackKind,
};
pub use resample::{ResampleError, StreamResampler};
pub use screen::{
    MAX_SHARE_SIZE, SHARE_FPS, ScreenError, ScreenShare, ShareEnded, ShareKind, ShareSource, ShareTarget,
    share_sources, share_thumbnail, share_thumbnails,
};
