//! A 4-participant call on this machine: the real relay and four `confer` processes with
//! synthetic 640x360 video at 30 fps. Prints CPU per participant, join-to-first-frame, glass-to-
//! glass video latency (from the capture time stamped into every frame) and audio latency (from
//! the synthetic microphone's markers).
//!
//! `cargo bench -p confer-tests --bench call` (release build of the binaries it runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_mesh::engine::quantile;
use confer_tests::{Relay, cpu_seconds, report_of, spawn_synthetic};

fn main() {
    let seconds = 20.0;
    let (size, fps) = ("640x360", 30);
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let start = Instant::now();
    let mut joined_at = Vec::new();
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let duration = seconds - 0.3 * i as f64;
        joined_at.push(start.elapsed().as_secs_f64() * 1_000.0);
        children.push(spawn_synthetic(link, name, i as u32 + 2, duration, (size, fps), &[]));
        std::thread::sleep(Duration::from_millis(300));
    }
    // CPU over a steady 10 s window, once everyone is connected.
    std::thread::sleep(Duration::from_secs(6));
    let before: Vec<f64> = children.iter().map(|c| cpu_seconds(c.id())).collect();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let elapsed = window.elapsed().as_secs_f64();
    let cpu: Vec<f64> =
        children.iter().zip(&before).map(|(c, b)| (cpu_seconds(c.id()) - b) / elapsed * 100.0).collect();
    let reports: Vec<serde_json::Value> = children.into_iter().map(|c| report_of(c).0).collect();

    let mut first_frames = Vec::new();
    let mut pairs = Vec::new();
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    println!(
        "| participant | CPU (% of one core) | frames decoded (3 peers) | video glass-to-glass p50 / p95 (ms) | audio latency p50 / p95 (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, report) in reports.iter().enumerate() {
        let peers = report["peers"].as_array().unwrap();
        let mut frames = Vec::new();
        let (mut v50, mut v95, mut a50, mut a95) = (vec![], vec![], vec![], vec![]);
        for peer in peers {
            let j = names.iter().position(|n| peer["name"] == *n).unwrap();
            // Join to first frame, counted from when both were in the call.
            if let Some(ms) = peer["first_frame_ms"].as_f64() {
                let since_both = (joined_at[j] - joined_at[i]).max(0.0);
                first_frames.push(ms - since_both);
                pairs.push(format!(
                    "{}←{}: connected {:.0} ms, first frame {:.0} ms",
                    names[i],
                    names[j],
                    peer["connected_ms"].as_f64().unwrap_or(f64::NAN) - since_both,
                    ms - since_both
                ));
            }
            frames.push(peer["video_frames_decoded"].as_u64().unwrap_or(0).to_string());
            let take = |key: &str, q: &str| peer[key][q].as_f64();
            v50.extend(take("video_latency_ms", "p50"));
            v95.extend(take("video_latency_ms", "p95"));
            a50.extend(take("audio_latency_ms", "p50"));
            a95.extend(take("audio_latency_ms", "p95"));
        }
        video.extend(v50.iter().copied());
        audio.extend(a50.iter().copied());
        let fmt = |v: &[f64]| quantile(v, 0.5).map_or("–".into(), |x| format!("{x:.0}"));
        println!(
            "| {} | {:.0} | {} | {} / {} | {} / {} |",
            names[i],
            cpu[i],
            frames.join(", "),
            fmt(&v50),
            fmt(&v95),
            fmt(&a50),
            fmt(&a95)
        );
    }
    println!();
    println!("{}", pairs.join("\n"));
    println!();
    println!(
        "join to first frame: p50 {:.0} ms, p95 {:.0} ms over {} pairs; video glass-to-glass p50 {:.0} ms (median of the pairs' medians); audio p50 {:.0} ms",
        quantile(&first_frames, 0.5).unwrap_or(f64::NAN),
        quantile(&first_frames, 0.95).unwrap_or(f64::NAN),
        first_frames.len(),
        quantile(&video, 0.5).unwrap_or(f64::NAN),
        quantile(&audio, 0.5).unwrap_or(f64::NAN),
    );
    drop(relay);
}
