//! Screen sharing's costs: capture + encode CPU of a 1920x1080 window at 5 and 15 fps, for a
//! still page of text and a scrolling one, the bitrate each makes, and the glass-to-glass
//! latency of a share in a real call (from the moment a picture is painted into the shared
//! window to its decode at the receiver).
//!
//! The window is a real X window on Xvfb, painted 20 times a second with the synthetic page
//! (stamped with its paint time); it is captured through XComposite and encoded in screen
//! content mode, as `confer join --share window:ID` does. CPU is this process's and the X
//! server's, less what they spend with the window painting and nothing captured.
//!
//! `cargo bench -p confer-tests --bench share` (release build).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_media::{H264Config, H264Encoder, ScreenShare};
use confer_mesh::engine::quantile;
use confer_tests::desktop::Xvfb;
use confer_tests::screen::PatternWindow;
use confer_tests::{Relay, SMALL, binary, cpu_seconds, report_of, spawn_synthetic};

const SECONDS: u64 = 8;
const SIZE: (u16, u16) = (1920, 1080);

/// CPU seconds of this process and of the X server.
fn cpu(xvfb: &Xvfb) -> f64 {
    cpu_seconds(std::process::id()) + cpu_seconds(xvfb.pid())
}

struct Encoded {
    cpu_percent: f64,
    kbps: f64,
    encode_ms: (f64, f64),
    frames: usize,
}

fn capture_and_encode(xvfb: &Xvfb, window: &PatternWindow, fps: u32, idle_percent: f64) -> Encoded {
    let share = ScreenShare::open(&window.share_id(), fps).unwrap();
    let mut encoder =
        H264Encoder::new(H264Config::screen(fps as f32, confer_mesh::share::SHARE_BITRATE)).unwrap();
    // The first second: the keyframe and the encoder settling, not counted.
    let warm = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warm {
        if let Ok(Some(captured)) = share.next_frame(Duration::from_millis(100)) {
            let _ = encoder.encode(&captured.frame);
        }
    }
    let (start, cpu_before) = (Instant::now(), cpu(xvfb));
    let (mut bytes, mut times, mut frames) = (0usize, Vec::new(), 0usize);
    while start.elapsed() < Duration::from_secs(SECONDS) {
        let Ok(Some(captured)) = share.next_frame(Duration::from_millis(100)) else { continue };
        let began = Instant::now();
        if let Ok(Some(encoded)) = encoder.encode(&captured.frame) {
            bytes += encoded.data.len();
        }
        times.push(began.elapsed().as_secs_f64() * 1000.0);
        frames += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_percent = (cpu(xvfb) - cpu_before) / elapsed * 100.0 - idle_percent;
    Encoded {
        cpu_percent,
        kbps: bytes as f64 * 8.0 / elapsed / 1000.0,
        encode_ms: (quantile(&times, 0.5).unwrap_or(0.0), quantile(&times, 0.95).unwrap_or(0.0)),
        frames,
    }
}

/// A share in a real call: Ann (the real `confer`) shares the window, Bob receives it; Bob's
/// report gives the glass-to-glass latency of the share.
fn call_latency(xvfb: &Xvfb, window: &PatternWindow, fps: u32) -> (Option<f64>, Option<f64>, u64) {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let ann = std::process::Command::new(binary("confer-cli", "confer"))
        .args(["join", &host_link, "--name", "Ann", "--synthetic", "--duration", "12", "--report", "json"])
        .args(["--size", SMALL.0, "--fps", &SMALL.1.to_string(), "--share", &window.share_id()])
        .args(["--share-fps", &fps.to_string()])
        .env("DISPLAY", &xvfb.display)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bob = spawn_synthetic(&invite, "Bob", 3, 11.0, SMALL, &[]);
    let (report, log) = report_of(bob);
    let _ = report_of(ann);
    let Some(ann) = report["peers"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "Ann")) else {
        eprintln!("Bob did not see Ann: {report}\n{log}");
        return (None, None, 0);
    };
    let latency = &ann["share_latency_ms"];
    (latency["p50"].as_f64(), latency["p95"].as_f64(), ann["share_frames_decoded"].as_u64().unwrap_or(0))
}

fn main() {
    let xvfb = Xvfb::start_sized(u32::from(SIZE.0), u32::from(SIZE.1));
    #[allow(unsafe_code)]
    // SAFETY: single-threaded at this point: no thread has been spawned yet.
    unsafe {
        std::env::set_var("DISPLAY", &xvfb.display);
        std::env::remove_var("XDG_SESSION_TYPE");
    }
    println!(
        "| page | fps | capture + encode CPU (% of a core) | encode p50 / p95 (ms) | bitrate (kbit/s) | frames |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (label, scroll) in [("still", 0), ("scrolling 160 px/s", 8)] {
        let window = PatternWindow::open_page(&xvfb.display, "Page", 71, scroll, (0, 0), SIZE);
        std::thread::sleep(Duration::from_secs(1));
        let before = (Instant::now(), cpu(&xvfb));
        std::thread::sleep(Duration::from_secs(4));
        let idle = (cpu(&xvfb) - before.1) / before.0.elapsed().as_secs_f64() * 100.0;
        for fps in [5, 15] {
            let e = capture_and_encode(&xvfb, &window, fps, idle);
            println!(
                "| {label} | {fps} | {:.0} | {:.1} / {:.1} | {:.0} | {} |",
                e.cpu_percent, e.encode_ms.0, e.encode_ms.1, e.kbps, e.frames
            );
        }
    }
    println!();
    println!("| share in a call | glass-to-glass p50 / p95 (ms) | pictures decoded in ~10 s |");
    println!("| --- | ---: | ---: |");
    let window = PatternWindow::open_page(&xvfb.display, "Page", 72, 8, (0, 0), SIZE);
    for fps in [5, 15] {
        let (p50, p95, frames) = call_latency(&xvfb, &window, fps);
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        println!("| 1920x1080 window, {fps} fps | {} / {} | {frames} |", ms(p50), ms(p95));
    }
}
