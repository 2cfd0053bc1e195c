//! What recording a call costs: the Matroska writer fed a call's worth of real H.264 and Opus
//! (synthetic cameras at 640x360, 30 fps, 800 kbit/s; 20 ms Opus packets), per block and per
//! second of call, for 2 to 8 participants (a camera and a microphone each), written to a file.
//!
//! `cargo bench -p confer-media --bench record`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use confer_media::synthetic::{SyntheticCamera, SyntheticMic};
use confer_media::{FRAME_SAMPLES, H264Config, H264Encoder, OpusConfig, OpusEncoder, Recording, TrackKind};

fn main() {
    let seconds: u64 = if std::env::args().any(|a| a == "--quick") { 10 } else { 60 };
    // One participant's media, encoded once: 3 s of video and audio, replayed for each.
    let mut camera = SyntheticCamera::new(1, 640, 360).unwrap();
    let mut encoder = H264Encoder::new(H264Config::camera(30.0, 800_000)).unwrap();
    let pictures: Vec<Vec<u8>> =
        (0..90).map(|n| encoder.encode(&camera.next_frame(n * 33).0).unwrap().unwrap().data).collect();
    let mut mic = SyntheticMic::new(1);
    let mut opus = OpusEncoder::new(OpusConfig::default()).unwrap();
    let packets: Vec<Vec<u8>> =
        (0..150).map(|_| opus.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap()).collect();

    println!(
        "| participants | call recorded | blocks | file | write time | per block | write time per second of call |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for participants in [2usize, 4, 8] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.mkv");
        let start = Instant::now();
        let mut recording = Recording::create(&path, "bench").unwrap();
        let tracks: Vec<_> = (0..participants)
            .map(|p| {
                let video = recording.add_track(TrackKind::Video, &format!("P{p}: camera"), 1).unwrap();
                let audio = recording.add_track(TrackKind::Audio, &format!("P{p}: microphone"), 1).unwrap();
                (video, audio)
            })
            .collect();
        // Every 20 ms: a packet from everyone, and a picture from everyone every 33 ms; each
        // participant a few ms apart, as arrivals are.
        for tick in 0..seconds * 50 {
            let ms = tick * 20;
            for (p, (video, audio)) in tracks.iter().enumerate() {
                let at = Duration::from_millis(ms + p as u64 * 3);
                recording.audio(*audio, at, &packets[tick as usize % packets.len()]).unwrap();
                let picture = ms / 33;
                if (ms % 33) < 20 && picture * 33 >= ms.saturating_sub(19) {
                    recording.video(*video, at, &pictures[picture as usize % pictures.len()]).unwrap();
                }
            }
        }
        let summary = recording.finish().unwrap();
        let took = start.elapsed();
        println!(
            "| {participants} | {} s | {} | {:.1} MB | {:.0} ms | {:.1} µs | {:.2} ms ({:.3} % of a core) |",
            summary.duration.as_secs(),
            summary.blocks,
            summary.bytes as f64 / 1e6,
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / summary.blocks as f64,
            took.as_secs_f64() * 1e3 / seconds as f64,
            took.as_secs_f64() * 100.0 / seconds as f64,
        );
    }
}
