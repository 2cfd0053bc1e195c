//! The synthetic microphone plays a tone whose frequency comes from the participant's pattern
//! id; [`tone_level`] tells how strongly a given frequency is present in received audio, so a
//! receiver can name whose voice it hears.
//!
//! Latency marker: for the first 10 ms of every whole second of the capture clock (Unix time),
//! the tone gives way to a 3 kHz burst. A receiver whose clock agrees with the sender's (the
//! same machine, or NTP-synchronised ones) hands what it plays or receives to a
//! [`MarkerDetector`] with the time of the first sample; the detector finds each burst's onset,
//! and how far past the whole second it lies is the audio latency (up to 1 s).

/// Samples per second of everything Confer's audio path carries.
pub const SAMPLE_RATE: u32 = 48_000;

/// The tone for a pattern id: one of 24 frequencies 50 Hz apart from 400 to 1,550 Hz. A 20 ms
/// frame holds a whole number of cycles of each, so over one frame the tones are orthogonal and
/// a detector tells neighbours apart.
pub fn tone_hz(id: u32) -> f64 {
    400.0 + 50.0 * f64::from(id % 24)
}

/// The latency marker's frequency: far above every participant's tone.
pub const MARKER_HZ: f64 = 3_000.0;
/// How long the marker lasts, microseconds.
const MARKER_US: u64 = 10_000;
const US_PER_SECOND: u64 = 1_000_000;

/// A microphone that needs no hardware: a steady sine tone at a third of full scale, with the
/// latency marker at every whole second.
#[derive(Debug)]
pub struct SyntheticMic {
    hz: f64,
    phase: f64,
    marker_phase: f64,
    /// Capture time of the next sample, in samples at 48 kHz since the Unix epoch (or since the
    /// microphone started, if nobody gave a time).
    clock: u64,
    markers: bool,
}

impl SyntheticMic {
    /// The microphone of pattern `id`.
    pub fn new(id: u32) -> Self {
        Self { hz: tone_hz(id), phase: 0.0, marker_phase: 0.0, clock: 0, markers: true }
    }

    /// The microphone of pattern `id` without latency markers: an unbroken tone.
    pub fn tone_only(id: u32) -> Self {
        Self { markers: false, ..Self::new(id) }
    }

    /// The next `samples` samples (mono, 48 kHz), continuing the microphone's own clock.
    pub fn next_samples(&mut self, samples: usize) -> Vec<i16> {
        let step = std::f64::consts::TAU * self.hz / f64::from(SAMPLE_RATE);
        let marker_step = std::f64::consts::TAU * MARKER_HZ / f64::from(SAMPLE_RATE);
        (0..samples)
            .map(|_| {
                let us =
                    (u128::from(self.clock) * u128::from(US_PER_SECOND) / u128::from(SAMPLE_RATE)) as u64;
                self.clock += 1;
                self.phase = (self.phase + step) % std::f64::consts::TAU;
                if self.markers && us % US_PER_SECOND < MARKER_US {
                    self.marker_phase = (self.marker_phase + marker_step) % std::f64::consts::TAU;
                    (self.marker_phase.sin() * 10_000.0) as i16
                } else {
                    self.marker_phase = 0.0;
                    (self.phase.sin() * 10_000.0) as i16
                }
            })
            .collect()
    }

    /// The next `samples` samples, the first captured at `first_sample_us` (Unix microseconds):
    /// markers fall on the whole seconds of that clock.
    pub fn next_samples_at(&mut self, samples: usize, first_sample_us: u64) -> Vec<i16> {
        self.clock =
            (u128::from(first_sample_us) * u128::from(SAMPLE_RATE) / u128::from(US_PER_SECOND)) as u64;
        self.next_samples(samples)
    }
}

/// Finds latency markers in a stream of audio.
#[derive(Debug, Default)]
pub struct MarkerDetector {
    /// Samples not yet searched, and the time of the first of them (µs).
    pending: Vec<i16>,
    pending_start_us: u64,
    /// No new onset is reported before this time (one marker is one onset).
    quiet_until_us: u64,
}

/// Window of the marker search: 2 ms, six cycles of the marker.
const MARKER_WINDOW: usize = 96;
/// Step between windows: 0.5 ms.
const MARKER_STEP: usize = 24;

impl MarkerDetector {
    /// A detector with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `samples` whose first sample was played or received at `first_sample_us` (Unix
    /// microseconds, the receiver's clock); returns the latency in ms of each marker whose
    /// onset lies in them. A gap or overlap in the times restarts the search.
    pub fn push(&mut self, samples: &[i16], first_sample_us: u64) -> Vec<f64> {
        let expected =
            self.pending_start_us + self.pending.len() as u64 * US_PER_SECOND / u64::from(SAMPLE_RATE);
        if self.pending.is_empty() || first_sample_us.abs_diff(expected) > 2_000 {
            self.pending.clear();
            self.pending_start_us = first_sample_us;
        }
        self.pending.extend_from_slice(samples);
        let mut found = Vec::new();
        let mut at = 0;
        while at + MARKER_WINDOW <= self.pending.len() {
            let window = &self.pending[at..at + MARKER_WINDOW];
            let time_us = self.pending_start_us + at as u64 * US_PER_SECOND / u64::from(SAMPLE_RATE);
            if time_us >= self.quiet_until_us && is_marker(window) {
                // The window is the first to be mostly marker: the onset lies about its middle.
                let onset_us = time_us + (MARKER_WINDOW as u64 / 2) * US_PER_SECOND / u64::from(SAMPLE_RATE);
                found.push((onset_us % US_PER_SECOND) as f64 / 1_000.0);
                self.quiet_until_us = onset_us + US_PER_SECOND / 2;
            }
            at += MARKER_STEP;
        }
        self.pending.drain(..at);
        self.pending_start_us += at as u64 * US_PER_SECOND / u64::from(SAMPLE_RATE);
        found
    }
}

/// Whether the marker carries most of a window's energy.
fn is_marker(window: &[i16]) -> bool {
    let rms = (window.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / window.len() as f64).sqrt();
    let marker = tone_level(window, MARKER_HZ);
    // A pure sine of amplitude A has RMS A/√2 and reads A: mostly marker reads near √2·RMS.
    rms > 300.0 && marker > 0.9 * rms
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
    fn the_marker_is_found_and_tells_the_delay() {
        // Captured from 12.400 s (Unix), delayed by 73.5 ms on the way, received in 10 ms blocks.
        let mut mic = SyntheticMic::new(4);
        let mut detector = MarkerDetector::new();
        let start_us = 12_400_000u64;
        let mut latencies = Vec::new();
        for block in 0..300u64 {
            let captured_us = start_us + block * 10_000;
            let samples = mic.next_samples_at(480, captured_us);
            latencies.extend(detector.push(&samples, captured_us + 73_500));
        }
        // 3 s of audio holds the markers of 13, 14 and 15 s.
        assert_eq!(latencies.len(), 3, "{latencies:?}");
        for latency in latencies {
            assert!((latency - 73.5).abs() <= 1.0, "measured {latency} ms for 73.5");
        }
        // The tone is still there around the markers.
        let samples = mic.next_samples_at(960, 20_500_000);
        assert!(tone_level(&samples, tone_hz(4)) > 9_000.0);
    }

    #[test]
    fn tones_and_silence_hold_no_marker() {
        let mut detector = MarkerDetector::new();
        for id in 0..24 {
            // Between markers: from 0.1 s to 0.9 s of the capture clock.
            let samples = SyntheticMic::new(id).next_samples_at(38_400, 100_000);
            assert!(detector.push(&samples, 100_000).is_empty(), "tone {id} looked like a marker");
        }
        assert!(detector.push(&[0; 4_800], 5_000_000).is_empty());
    }

    #[test]
    fn the_tone_is_found_at_its_frequency_and_not_at_a_neighbours() {
        // Half a second in: away from the marker.
        let samples = SyntheticMic::new(3).next_samples_at(960, 500_000);
        let own = tone_level(&samples, tone_hz(3));
        assert!((own - 10_000.0).abs() < 1_000.0, "{own}");
        assert!(tone_level(&samples, tone_hz(4)) < own / 5.0);
        assert_eq!(tone_level(&[], 440.0), 0.0);
        assert!(tone_level(&[0; 960], 440.0) < 1.0);
    }
}
