//! Noise suppression on the microphone path, as a listener would notice it: a steady hiss under
//! the voice gets quieter while the voice stays.
//!
//! Automatic gain is not tested here: AGC2 moves its gain only while its neural voice detector
//! hears speech, and neither a tone nor shaped noise is speech to it (a quiet tone came out
//! exactly as quiet). Testing it needs a recorded voice.
#![allow(clippy::expect_used)]

use confer_media::synthetic::{SyntheticMic, tone_hz, tone_level};
use confer_media::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig, dbfs};

/// White noise, deterministic.
struct Hiss(u64);

impl Hiss {
    fn frame(&mut self, amplitude: f64) -> Vec<i16> {
        (0..PROCESSING_FRAME)
            .map(|_| {
                self.0 =
                    self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((((self.0 >> 33) as f64 / f64::from(1u32 << 31)) * 2.0 - 1.0) * amplitude) as i16
            })
            .collect()
    }
}

const NS_ONLY: ProcessingConfig = ProcessingConfig {
    echo_cancellation: false,
    noise_suppression: true,
    auto_gain: false,
    music_mode: false,
};

#[test]
fn noise_suppression_lowers_a_steady_hiss_and_keeps_the_voice() {
    let mut processor = AudioProcessor::new(NS_ONLY);
    let mut hiss = Hiss(3);
    let mut voice = SyntheticMic::tone_only(4);
    let (mut noise_in, mut noise_out, mut voice_in, mut voice_out) = (vec![], vec![], vec![], vec![]);
    // 3 s of hiss alone, then 2 s of voice over the hiss.
    for n in 0..500 {
        let noise = hiss.frame(1_000.0);
        let talking = n >= 300;
        let tone = voice.next_samples(PROCESSING_FRAME);
        let mut frame: Vec<i16> = noise
            .iter()
            .zip(&tone)
            .map(|(&h, &t)| if talking { h.saturating_add(t / 2) } else { h })
            .collect();
        let before = frame.clone();
        processor.process_capture(&mut frame).expect("frame");
        if (150..300).contains(&n) {
            noise_in.extend(before);
            noise_out.extend(frame);
        } else if n >= 350 {
            voice_in.extend(before);
            voice_out.extend(frame);
        }
    }
    let hiss_drop = dbfs(&noise_in) - dbfs(&noise_out);
    let voice_kept = tone_level(&voice_out, tone_hz(4)) / tone_level(&voice_in, tone_hz(4));
    println!("hiss lowered by {hiss_drop:.1} dB, voice kept {voice_kept:.2}");
    assert!(hiss_drop >= 6.0, "the hiss dropped by only {hiss_drop:.1} dB");
    assert!(voice_kept > 0.7, "the voice lost too much: {voice_kept:.2}");
}
