//! Audio path costs per frame: echo cancellation, noise suppression and gain control per 10 ms
//! (sonora), resampling, and playout (jitter buffers, decoding and mixing) per 20 ms.
//!
//! `cargo bench -p confer-media --bench audio` (`-- --quick` for a 1 s budget per row)
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use confer_media::synthetic::{SpeechLike, SyntheticMic};
use confer_media::{
    AudioProcessor, FRAME_SAMPLES, OpusConfig, OpusEncoder, PROCESSING_FRAME, Playout, ProcessingConfig,
    StreamResampler,
};

/// Runs `step` until `budget` is spent; returns microseconds per call.
fn micros_per_call(budget: Duration, mut step: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        step(n);
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Speech-like noise with a syllable envelope, and its echo 40 ms later, 12 dB down, with
/// a near-end tone on top: a realistic load for the canceller (it adapts all the time).
fn scenario(seconds: usize) -> (Vec<Vec<i16>>, Vec<Vec<i16>>) {
    let total = seconds * 48_000;
    let mut speech = SpeechLike::new(7);
    let far: Vec<f64> = (0..total).map(|_| speech.sample()).collect();
    let mut near = SyntheticMic::new(5);
    let near = near.next_samples(total);
    let render: Vec<i16> = far.iter().map(|&s| s as i16).collect();
    let capture: Vec<i16> = (0..total)
        .map(|n| {
            let echo = if n >= 1_920 { 0.25 * far[n - 1_920] } else { 0.0 };
            (echo + f64::from(near[n]) / 2.0).clamp(-32_768.0, 32_767.0) as i16
        })
        .collect();
    (
        render.chunks(PROCESSING_FRAME).map(<[i16]>::to_vec).collect(),
        capture.chunks(PROCESSING_FRAME).map(<[i16]>::to_vec).collect(),
    )
}

fn main() {
    let budget = Duration::from_secs(if std::env::args().any(|a| a == "--quick") { 1 } else { 4 });
    let (render, capture) = scenario(10);

    println!("| audio processing, per 10 ms frame (render + capture) | µs | share of real time |");
    println!("| --- | ---: | ---: |");
    let configs = [
        (
            "echo cancellation only",
            ProcessingConfig {
                echo_cancellation: true,
                noise_suppression: false,
                auto_gain: false,
                music_mode: false,
            },
        ),
        ("echo cancellation + noise suppression + gain (default)", ProcessingConfig::default()),
        ("music mode (all off)", ProcessingConfig::OFF),
    ];
    for (label, config) in configs {
        let mut processor = AudioProcessor::new(config);
        let mut frame = vec![0i16; PROCESSING_FRAME];
        let us = micros_per_call(budget, |n| {
            let i = n % render.len();
            processor.process_render(&render[i]).unwrap();
            frame.copy_from_slice(&capture[i]);
            processor.process_capture(&mut frame).unwrap();
            std::hint::black_box(&frame);
        });
        println!("| {label} | {us:.1} | {:.2}% |", us / 10_000.0 * 100.0);
    }

    println!();
    println!("| resampling, per 10 ms of mono audio | µs |");
    println!("| --- | ---: |");
    for (from, to) in [(44_100u32, 48_000u32), (48_000, 44_100), (16_000, 48_000)] {
        let mut resampler = StreamResampler::new(from, to).unwrap();
        let input: Vec<f32> = (0..from as usize / 100).map(|n| (n as f32 * 0.05).sin() * 0.3).collect();
        let us = micros_per_call(budget, |_| {
            resampler.push(input.iter().copied());
            std::hint::black_box(resampler.take(usize::MAX).count());
        });
        println!("| {from} Hz → {to} Hz | {us:.1} |");
    }

    println!();
    println!(
        "| playout, per 20 ms frame: jitter buffers, Opus decode, mix, levels | µs | share of real time |"
    );
    println!("| --- | ---: | ---: |");
    for streams in [1usize, 3, 7] {
        // 10 s of packets per stream, pushed just in time as a network would deliver them.
        let packets: Vec<Vec<(u32, Vec<u8>)>> = (0..streams)
            .map(|s| {
                let mut mic = SyntheticMic::new(s as u32);
                let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
                (0..500)
                    .map(|n| {
                        (
                            (n * FRAME_SAMPLES) as u32,
                            encoder.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap(),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut playout: Playout<usize> = Playout::new();
        for s in 0..streams {
            playout.add_stream(s).unwrap();
        }
        let mut round = 0u32;
        let us = micros_per_call(budget, |n| {
            let i = n % 500;
            if i == 0 {
                // A new round: fresh timestamps so the buffers see one continuous stream.
                round += 1;
            }
            for (s, stream) in packets.iter().enumerate() {
                let (ts, payload) = &stream[i];
                let ts = ts.wrapping_add(round * 500 * FRAME_SAMPLES as u32);
                playout.push(&s, ts, payload.clone(), n as u64 * 20_000);
            }
            std::hint::black_box(playout.next_frame());
        });
        println!("| {streams} remote stream(s) | {us:.1} | {:.2}% |", us / 20_000.0 * 100.0);
    }
}
