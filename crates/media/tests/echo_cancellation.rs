//! Echo cancellation on a synthetic echo: the far end's speech comes back through a room (delayed,
//! attenuated, smeared) into the microphone, with a near-end talker on top at times. The echo
//! must drop by at least 20 dB once the canceller has converged, and the near-end talker must
//! come through.
#![allow(clippy::expect_used)]

use confer_media::synthetic::{SpeechLike, SyntheticMic, tone_hz, tone_level};
use confer_media::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig};

const FRAMES_PER_SECOND: usize = 100;

/// The room: 40 ms of delay, then three reflections, about 12 dB down overall.
struct Room {
    history: Vec<f64>,
    at: usize,
}

impl Room {
    const TAPS: [(usize, f64); 4] = [(1_920, 0.22), (2_064, 0.09), (2_256, -0.05), (2_640, 0.03)];

    fn new() -> Self {
        Self { history: vec![0.0; 4_096], at: 0 }
    }

    fn echo(&mut self, played: f64) -> f64 {
        let len = self.history.len();
        self.history[self.at] = played;
        let echo =
            Self::TAPS.iter().map(|&(delay, gain)| gain * self.history[(self.at + len - delay) % len]).sum();
        self.at = (self.at + 1) % len;
        echo
    }
}

fn power(samples: &[i16]) -> f64 {
    samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

struct Run {
    /// Per 10 ms frame: echo-only capture, processed output, near-end tone in and out.
    echo_in: Vec<f64>,
    out: Vec<f64>,
    near_in: Vec<f64>,
    near_out: Vec<f64>,
}

/// 12 s: far end alone (0–6 s), near end alone (6–8 s), both (8–10 s), far end alone (10–12 s).
fn run(config: ProcessingConfig) -> (Run, AudioProcessor) {
    let mut processor = AudioProcessor::new(config);
    let mut far = SpeechLike::new(7).with_pauses();
    let mut room = Room::new();
    let mut near = SyntheticMic::new(5);
    let mut noise = SpeechLike::new(99).with_pauses();
    let mut run = Run { echo_in: vec![], out: vec![], near_in: vec![], near_out: vec![] };
    for frame_index in 0..12 * FRAMES_PER_SECOND {
        let second = frame_index / FRAMES_PER_SECOND;
        let far_on = !(6..8).contains(&second);
        let near_on = (6..10).contains(&second);
        let played: Vec<i16> =
            (0..PROCESSING_FRAME).map(|_| if far_on { far.sample() as i16 } else { 0 }).collect();
        let near_frame = near.next_samples(PROCESSING_FRAME);
        let mut echo_only = Vec::with_capacity(PROCESSING_FRAME);
        let mut captured = Vec::with_capacity(PROCESSING_FRAME);
        for (i, &p) in played.iter().enumerate() {
            // A microphone's own noise floor, about 60 dB below full scale.
            let hiss = noise.sample() / 12_000.0 * 30.0;
            let echo = room.echo(f64::from(p)) + hiss;
            echo_only.push(echo.clamp(-32_768.0, 32_767.0) as i16);
            let talker = if near_on { f64::from(near_frame[i]) / 2.0 } else { 0.0 };
            captured.push((echo + talker).clamp(-32_768.0, 32_767.0) as i16);
        }
        processor.process_render(&played).expect("render frame");
        let near_alone: Vec<i16> = near_frame.iter().map(|&s| if near_on { s / 2 } else { 0 }).collect();
        processor.process_capture(&mut captured).expect("capture frame");
        run.echo_in.push(power(&echo_only));
        run.out.push(power(&captured));
        run.near_in.push(tone_level(&near_alone, tone_hz(5)));
        run.near_out.push(tone_level(&captured, tone_hz(5)));
    }
    (run, processor)
}

/// ERLE over a range of 10 ms frames.
fn erle_db(run: &Run, frames: std::ops::Range<usize>) -> f64 {
    let echo: f64 = run.echo_in[frames.clone()].iter().sum();
    let out: f64 = run.out[frames].iter().sum();
    10.0 * (echo / out.max(1e-9)).log10()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

const AEC_ONLY: ProcessingConfig = ProcessingConfig {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
    music_mode: false,
};

#[test]
fn echo_drops_by_20_db_after_convergence_and_the_near_end_talker_survives() {
    let (run, processor) = run(AEC_ONLY);
    let converged = erle_db(&run, 300..600);
    // The processor's output lags its input by one 10 ms frame, so the first frame after the
    // near end falls silent still holds its voice: start 20 ms later.
    let after_double_talk = erle_db(&run, 1_002..1_200);
    let near_alone_kept = mean(&run.near_out[600..800]) / mean(&run.near_in[600..800]);
    let double_talk_kept = mean(&run.near_out[800..1000]) / mean(&run.near_in[800..1000]);
    let stats = processor.stats();
    println!(
        "ERLE 3-6 s {converged:.1} dB, 10.02-12 s {after_double_talk:.1} dB; near end kept {near_alone_kept:.2} \
         alone, {double_talk_kept:.2} in double talk; canceller reports {stats:?}"
    );
    assert!(converged >= 20.0, "ERLE after convergence {converged:.1} dB < 20 dB");
    assert!(after_double_talk >= 20.0, "ERLE after double talk {after_double_talk:.1} dB < 20 dB");
    assert!(near_alone_kept > 0.7, "the near-end talker alone lost too much: {near_alone_kept:.2}");
    assert!(double_talk_kept > 0.3, "the near-end talker was cut during double talk: {double_talk_kept:.2}");
}

#[test]
fn without_echo_cancellation_the_echo_stays() {
    let (run, _) = run(ProcessingConfig::OFF);
    let erle = erle_db(&run, 300..600);
    assert!(erle.abs() < 1.0, "music mode changed the echo by {erle:.1} dB");
}
