//! The microphone path's audio processing: echo cancellation, noise suppression and automatic
//! gain, in 10 ms frames at 48 kHz, through `sonora` (a pure-Rust port of WebRTC's audio
//! processing module: AEC3, NS, AGC2). Why sonora and not `webrtc-audio-processing`: see
//! `docs/BENCHMARKS.md` ("Audio processing").
//!
//! The echo canceller needs what the speakers actually play: hand every played 10 ms frame to
//! [`AudioProcessor::process_render`] (the playout mixer does), and every captured frame to
//! [`AudioProcessor::process_capture`], in the order they happen.
//!
//! Music mode turns all processing off: the captured audio passes through untouched, so an
//! instrument is not treated as noise or echo. It goes with a stereo, higher-bitrate Opus
//! encoder (see [`crate::OpusConfig::music`]).

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::synthetic::SAMPLE_RATE;

/// Samples in one 10 ms mono frame at 48 kHz: the unit of capture, processing and playout.
pub const PROCESSING_FRAME: usize = (SAMPLE_RATE / 100) as usize;

/// Which processing runs on the microphone path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// Remove what the speakers play from the microphone signal.
    pub echo_cancellation: bool,
    /// Remove steady background noise.
    pub noise_suppression: bool,
    /// Bring the voice to a steady level.
    pub auto_gain: bool,
    /// Process nothing (overrides the three above).
    pub music_mode: bool,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self { echo_cancellation: true, noise_suppression: true, auto_gain: true, music_mode: false }
    }
}

impl ProcessingConfig {
    /// Everything off: what music mode processes.
    pub const OFF: Self =
        Self { echo_cancellation: false, noise_suppression: false, auto_gain: false, music_mode: true };

    fn sonora(self) -> Config {
        if self.music_mode {
            return Config::default();
        }
        let any = self.echo_cancellation || self.noise_suppression || self.auto_gain;
        Config {
            high_pass_filter: any.then(HighPassFilter::default),
            echo_canceller: self.echo_cancellation.then(EchoCanceller::default),
            noise_suppression: self
                .noise_suppression
                .then(|| NoiseSuppression { level: NoiseSuppressionLevel::Moderate, ..Default::default() }),
            gain_controller2: self.auto_gain.then(|| GainController2 {
                adaptive_digital: Some(AdaptiveDigital::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessingError {
    /// Frames are 10 ms: [`PROCESSING_FRAME`] samples.
    #[error("audio processing takes {PROCESSING_FRAME}-sample frames, not {0}")]
    FrameLength(usize),
}

/// What the processor reports about the echo it sees.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessingStats {
    /// Echo return loss enhancement (how much echo the canceller removes), dB.
    pub erle_db: Option<f64>,
    /// The delay the canceller found between playing and hearing, ms.
    pub echo_delay_ms: Option<i32>,
}

/// Audio processing for one microphone, fed with what the speakers play.
#[derive(Debug)]
pub struct AudioProcessor {
    apm: AudioProcessing,
    config: ProcessingConfig,
    scratch: Vec<i16>,
}

impl AudioProcessor {
    /// A processor for 48 kHz mono capture and render.
    pub fn new(config: ProcessingConfig) -> Self {
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder()
            .config(config.sonora())
            .capture_config(stream)
            .render_config(stream)
            .build();
        Self { apm, config, scratch: vec![0; PROCESSING_FRAME] }
    }

    /// The processing in effect.
    pub fn config(&self) -> ProcessingConfig {
        self.config
    }

    /// Changes the processing while running (the echo canceller keeps what it learnt unless it
    /// is turned off and on again).
    pub fn set_config(&mut self, config: ProcessingConfig) {
        if config != self.config {
            self.apm.apply_config(config.sonora());
            self.config = config;
        }
    }

    /// Tells the canceller about one 10 ms frame the speakers are playing.
    pub fn process_render(&mut self, frame: &[i16]) -> Result<(), ProcessingError> {
        if frame.len() != PROCESSING_FRAME {
            return Err(ProcessingError::FrameLength(frame.len()));
        }
        if self.config.music_mode || !self.config.echo_cancellation {
            return Ok(());
        }
        self.apm
            .process_render_i16(frame, &mut self.scratch)
            .map_err(|_| ProcessingError::FrameLength(frame.len()))
    }

    /// Processes one captured 10 ms frame in place.
    pub fn process_capture(&mut self, frame: &mut [i16]) -> Result<(), ProcessingError> {
        if frame.len() != PROCESSING_FRAME {
            return Err(ProcessingError::FrameLength(frame.len()));
        }
        if self.config.music_mode {
            return Ok(());
        }
        self.scratch.copy_from_slice(frame);
        self.apm
            .process_capture_i16(&self.scratch, frame)
            .map_err(|_| ProcessingError::FrameLength(frame.len()))
    }

    /// What the canceller reports.
    pub fn stats(&self) -> ProcessingStats {
        let stats = self.apm.statistics();
        ProcessingStats { erle_db: stats.echo_return_loss_enhancement, echo_delay_ms: stats.delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_the_wrong_length_are_refused_and_change_nothing() {
        let mut processor = AudioProcessor::new(ProcessingConfig::default());
        let mut short = vec![7i16; 100];
        assert_eq!(processor.process_capture(&mut short), Err(ProcessingError::FrameLength(100)));
        assert!(short.iter().all(|&s| s == 7));
        assert_eq!(processor.process_render(&[0; 960]), Err(ProcessingError::FrameLength(960)));
    }

    #[test]
    fn music_mode_passes_audio_through_untouched() {
        let mut processor = AudioProcessor::new(ProcessingConfig::OFF);
        let original: Vec<i16> = (0..PROCESSING_FRAME).map(|i| ((i * 37) % 2_000) as i16 - 1_000).collect();
        let mut frame = original.clone();
        for _ in 0..50 {
            frame.copy_from_slice(&original);
            processor.process_render(&original).ok();
            processor.process_capture(&mut frame).ok();
        }
        assert_eq!(frame, original);
    }
}
