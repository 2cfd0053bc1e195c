//! H.264 encode and decode speed on the synthetic camera, and what the camera adds on top of
//! the encoder (the capture-to-packet pipeline next to the raw encoder, in one run).
//!
//! `cargo bench -p confer-media --bench codec`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use confer_media::synthetic::{SyntheticCamera, SyntheticMic};
use confer_media::{
    FRAME_SAMPLES, H264Config, H264Decoder, H264Encoder, I420Frame, OpusConfig, OpusDecoder, OpusEncoder,
};

/// Runs `step` until `budget` is spent; returns calls per second.
fn rate(budget: Duration, mut step: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        step(n);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_secs(if std::env::args().any(|a| a == "--quick") { 1 } else { 4 });
    println!(
        "| size | bitrate | camera (frames/s) | encode (frames/s) | decode (frames/s) | camera + encode (frames/s) | pipeline over encoder: from the parts / measured, interleaved |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (w, h, bps) in [(640, 360, 800_000), (1280, 720, 2_500_000)] {
        let mut camera = SyntheticCamera::new(1, w, h).unwrap();
        let camera_fps = rate(budget, |n| {
            std::hint::black_box(camera.next_frame(n as u64 * 33));
        });

        // The same 90 frames for the encoder alone, made beforehand.
        let frames: Vec<I420Frame> = (0..90).map(|n| camera.next_frame(n * 33).0).collect();
        let config = H264Config::camera(30.0, bps);
        let mut encoder = H264Encoder::new(config).unwrap();
        let mut stream = Vec::new();
        let encode_fps = rate(budget, |n| {
            let encoded = encoder.encode(&frames[n % frames.len()]).unwrap();
            if stream.len() < 300 {
                stream.extend(encoded.map(|e| e.data));
            }
        });

        let mut decoder = H264Decoder::new().unwrap();
        let mut decoded = 0;
        let start = Instant::now();
        while start.elapsed() < budget {
            decoder = H264Decoder::new().unwrap();
            for unit in &stream {
                decoded += usize::from(decoder.decode(unit).unwrap().is_some());
            }
        }
        let decode_fps = decoded as f64 / start.elapsed().as_secs_f64();
        drop(decoder);

        // Raw encoder and pipeline (camera, then encoder) in alternating blocks of 30 frames, so
        // that whatever else the machine does hits both sides alike.
        let mut raw = H264Encoder::new(config).unwrap();
        let mut piped = H264Encoder::new(config).unwrap();
        let (mut raw_time, mut piped_time, mut blocks) = (Duration::ZERO, Duration::ZERO, 0u64);
        let start = Instant::now();
        while start.elapsed() < budget * 2 {
            let t = Instant::now();
            for n in 0..30 {
                std::hint::black_box(raw.encode(&frames[(blocks as usize * 30 + n) % frames.len()]).unwrap());
            }
            raw_time += t.elapsed();
            let t = Instant::now();
            for n in 0..30u64 {
                let (frame, _) = camera.next_frame((blocks * 30 + n) * 33);
                std::hint::black_box(piped.encode(&frame).unwrap());
            }
            piped_time += t.elapsed();
            blocks += 1;
        }
        let pipeline_fps = (blocks * 30) as f64 / piped_time.as_secs_f64();
        let interleaved_overhead = (piped_time.as_secs_f64() / raw_time.as_secs_f64() - 1.0) * 100.0;
        // Two views of the pipeline's cost over the encoder: from the parts (the camera's time per
        // frame over the encoder's) and measured directly, interleaved.
        println!(
            "| {w}x{h} | {} kbit/s | {camera_fps:.0} | {encode_fps:.0} | {decode_fps:.0} | {pipeline_fps:.0} | {:+.1}% / {:+.1}% |",
            bps / 1000,
            encode_fps / camera_fps * 100.0,
            interleaved_overhead
        );
    }

    println!();
    println!(
        "| Opus, 48 kHz mono, 20 ms frames, 32 kbit/s | encode (µs/frame) | decode (µs/frame) | concealment (µs/frame) |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for fec in [false, true] {
        let config = OpusConfig { fec, ..OpusConfig::default() };
        let mut mic = SyntheticMic::new(5);
        let frames: Vec<Vec<i16>> = (0..250).map(|_| mic.next_samples(FRAME_SAMPLES)).collect();
        let mut encoder = OpusEncoder::new(config).unwrap();
        let mut packets = Vec::new();
        let encode = rate(budget, |n| {
            let packet = encoder.encode(&frames[n % frames.len()]).unwrap();
            if packets.len() < frames.len() {
                packets.push(packet);
            }
        });
        let mut decoder = OpusDecoder::new().unwrap();
        let decode = rate(budget, |n| {
            std::hint::black_box(decoder.decode(Some(&packets[n % packets.len()]), None).unwrap());
        });
        let conceal = rate(budget, |_| {
            std::hint::black_box(decoder.decode(None, None).unwrap());
        });
        let label = if fec { "in-band FEC on" } else { "FEC off" };
        println!("| {label} | {:.1} | {:.1} | {:.1} |", 1e6 / encode, 1e6 / decode, 1e6 / conceal);
    }
}
