//! Synthetic sources: what stands in for a camera and a microphone on a machine that has none
//! (tests, demos, bots), and the detectors that read back what they sent.

mod camera;
mod font;
mod mic;
mod screen;
mod speech;

pub use camera::{FrameStamp, SyntheticCamera, read_stamp};
pub use mic::{MARKER_HZ, MarkerDetector, SAMPLE_RATE, SyntheticMic, tone_hz, tone_level};
pub use screen::SyntheticScreen;
pub use speech::SpeechLike;
