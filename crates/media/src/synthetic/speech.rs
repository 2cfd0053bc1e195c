//! Speech-like test audio: low-passed noise under a syllable envelope (about four a second), so
//! that an echo canceller or a noise suppressor sees something that starts, stops and changes
//! all the time, as a voice does. Deterministic for a given seed.

use std::f64::consts::PI;

/// A speech-like source at 48 kHz, peaking near 12,000 (of 32,767).
#[derive(Debug, Clone)]
pub struct SpeechLike {
    state: u64,
    low: f64,
    n: u64,
    pauses: bool,
}

impl SpeechLike {
    /// Talks without pause.
    pub fn new(seed: u64) -> Self {
        Self { state: seed, low: 0.0, n: 0, pauses: false }
    }

    /// Talks in phrases: 2.1 s of speech, then 0.4 s at -20 dB.
    #[must_use]
    pub fn with_pauses(mut self) -> Self {
        self.pauses = true;
        self
    }

    /// The next sample.
    pub fn sample(&mut self) -> f64 {
        self.state =
            self.state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let white = ((self.state >> 33) as f64 / f64::from(1u32 << 31)) * 2.0 - 1.0;
        // A gentle low-pass makes it voice-coloured rather than hiss.
        self.low = 0.6 * self.low + 0.4 * white;
        let t = self.n as f64 / 48_000.0;
        self.n += 1;
        let syllable = (PI * 4.0 * t).sin().abs();
        let phrase = if self.pauses && (t % 2.5) >= 2.1 { 0.1 } else { 1.0 };
        self.low * syllable * phrase * 12_000.0
    }

    /// The next `samples` samples.
    pub fn next_samples(&mut self, samples: usize) -> Vec<i16> {
        (0..samples).map(|_| self.sample() as i16).collect()
    }
}
