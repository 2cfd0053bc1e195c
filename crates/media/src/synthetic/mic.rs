//! The synthetic microphone plays a tone whose frequency comes from the participant's pattern
//! id; [`tone_level`] tells how strongly a given frequency is present in received audio, so a
//! receiver can name whose voice it hears.

/// Samples per second of everything Confer's audio path carries.
pub const SAMPLE_RATE: u32 = 48_000;

/// The tone for a pattern id: one of 24 frequencies 50 Hz apart from 400 to 1,550 Hz. A 20 ms
/// frame holds a whole number of cycles of each, so over one frame the tones are orthogonal and
/// a detector tells neighbours apart.
pub fn tone_hz(id: u32) -> f64 {
    400.0 + 50.0 * f64::from(id % 24)
}

/// A microphone that needs no hardware: a steady sine tone at a third of full scale.
#[derive(Debug)]
pub struct SyntheticMic {
    hz: f64,
    phase: f64,
}

impl SyntheticMic {
    /// The microphone of pattern `id`.
    pub fn new(id: u32) -> Self {
        Self { hz: tone_hz(id), phase: 0.0 }
    }

    /// The next `samples` samples (mono, 48 kHz).
    pub fn next_samples(&mut self, samples: usize) -> Vec<i16> {
        let step = std::f64::consts::TAU * self.hz / f64::from(SAMPLE_RATE);
        (0..samples)
            .map(|_| {
                let sample = (self.phase.sin() * 10_000.0) as i16;
                self.phase = (self.phase + step) % std::f64::consts::TAU;
                sample
            })
            .collect()
    }
}

/// Amplitude of the `hz` component in `samples` (Goertzel), scaled so a full-length sine of
/// amplitude A reads about A.
pub fn tone_level(samples: &[i16], hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let coefficient = 2.0 * (std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tone_is_found_at_its_frequency_and_not_at_a_neighbours() {
        let samples = SyntheticMic::new(3).next_samples(960);
        let own = tone_level(&samples, tone_hz(3));
        assert!((own - 10_000.0).abs() < 1_000.0, "{own}");
        assert!(tone_level(&samples, tone_hz(4)) < own / 5.0);
        assert_eq!(tone_level(&[], 440.0), 0.0);
        assert!(tone_level(&[0; 960], 440.0) < 1.0);
    }
}
