//! What a 4-participant mesh call costs a Confer participant against a browser participant, in one
//! run: the real relay with four `confer join --synthetic` processes (release build, synthetic
//! 640x360 camera at 30 fps), then four headless Chromiums (Debian's) on `tests/browser/peer.html`
//! with Chromium's fake 640x360 30 fps camera and fake microphone, H.264 preferred, everything
//! received played and nothing read back. CPU is each participant's whole process tree (for
//! Chromium: the browser, its renderer, GPU and utility processes) over a steady 10 s window,
//! memory its PSS; frames received are what each decoded of each other.
//!
//! `cargo bench -p confer-tests --bench browser_cost`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_tests::browser::{Chromium, query_escape, serve_page, spki_pin};
use confer_tests::{Relay, report_of, spawn_synthetic};

#[path = "support/procs.rs"]
mod procs;

const PARTIES: usize = 4;
/// From the last joiner's start to the measured window, and the window.
const SETTLE: Duration = Duration::from_secs(12);
const WINDOW: Duration = Duration::from_secs(10);

/// `root` and its descendants.
fn tree(root: u32) -> Vec<u32> {
    let mut pids = procs::descendants(root);
    pids.push(root);
    pids
}

/// CPU seconds of `root`'s tree, and when they were read.
fn cpu_of(root: u32) -> (Instant, f64) {
    let cpu = tree(root).iter().map(|p| procs::cpu_seconds(*p)).sum();
    (Instant::now(), cpu)
}

/// The CPU (% of one core) each of `roots` used over the window, and their PSS at its end.
/// Each tree's CPU is divided by the time between its own two readings: walking /proc for 4 x 13
/// processes on a saturated machine takes long enough to matter (reading PSS along with the CPU
/// once stretched the windows so far that four trees seemed to use 300 % of 2 cores).
fn measure(roots: &[u32]) -> Vec<(f64, f64)> {
    let before: Vec<(Instant, f64)> = roots.iter().map(|r| cpu_of(*r)).collect();
    std::thread::sleep(WINDOW);
    let after: Vec<(Instant, f64)> = roots.iter().map(|r| cpu_of(*r)).collect();
    let pss = roots.iter().map(|r| tree(*r).iter().map(|p| procs::pss_mib(*p)).sum::<f64>());
    before
        .iter()
        .zip(after)
        .zip(pss)
        .map(|(((t0, c0), (t1, c1)), pss)| ((c1 - c0) / (t1 - *t0).as_secs_f64() * 100.0, pss))
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Prints the row; returns the mean CPU (% of a core) and the CPU per frame decoded (ms).
fn row(who: &str, usage: &[(f64, f64)], rates: &[f64], note: &str) -> (f64, f64) {
    let cpu: Vec<f64> = usage.iter().map(|u| u.0).collect();
    let pss: Vec<f64> = usage.iter().map(|u| u.1).collect();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "| {who} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.1} (min {:.1}) | {note} |",
        mean(&cpu),
        min(&cpu),
        max(&cpu),
        mean(&pss),
        min(&pss),
        max(&pss),
        mean(rates),
        min(rates),
    );
    // Each participant decodes PARTIES - 1 streams at the mean rate; % of a core is ms per 100 ms.
    // All of the participant's CPU (capture, encoding, sending, decoding) per frame decoded: a
    // participant that decodes fewer frames still captures and encodes at full rate.
    (mean(&cpu), 10.0 * mean(&cpu) / (mean(rates) * (PARTIES - 1) as f64).max(1e-9))
}

/// Four Confer participants; see [`row`].
fn confer() -> (f64, f64) {
    let seconds = (SETTLE + WINDOW).as_secs_f64() + 4.0;
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let mut children = Vec::new();
    for i in 0..PARTIES {
        let link = if i == 0 { &host_link } else { &invite };
        let name = format!("P{i}");
        children.push(spawn_synthetic(link, &name, i as u32 + 2, seconds, ("640x360", 30), &[]));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(SETTLE);
    let usage = measure(&children.iter().map(std::process::Child::id).collect::<Vec<_>>());
    let reports: Vec<serde_json::Value> = children.into_iter().map(|c| report_of(c).0).collect();
    let mut rates = Vec::new();
    for report in &reports {
        for peer in report["peers"].as_array().unwrap() {
            rates.push(peer["stats"]["frame_rate"].as_f64().unwrap_or(0.0));
        }
    }
    drop(relay);
    row(
        "Confer (`confer join --synthetic`)",
        &usage,
        &rates,
        "640x360 H.264 (openh264), Opus (frames/s: decoded in the last second)",
    )
}

/// Four Chromiums; see [`row`].
fn chromium() -> (f64, f64) {
    let seconds = (SETTLE + WINDOW).as_secs() + 4;
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (_, invite) = relay.host();
    let (port, results) = serve_page();
    let pin = spki_pin(&state.path().join("self-signed.crt"));
    // The fake camera runs at 20 fps unless told.
    let switches = ["--use-fake-device-for-media-stream=fps=30", "--use-fake-ui-for-media-stream"];
    let mut browsers = Vec::new();
    for i in 0..PARTIES {
        let url = format!(
            "http://127.0.0.1:{port}/?name=B{i}&pattern={}&seconds={seconds}&width=640&height=360&fps=30&source=fake&read=0&codec=h264&link={}",
            i + 2,
            query_escape(&invite)
        );
        browsers.push(Chromium::start(&url, &pin, &switches));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(SETTLE);
    let usage = measure(&browsers.iter().map(Chromium::pid).collect::<Vec<_>>());
    let mut rates = Vec::new();
    let mut shown = Vec::new();
    let mut codecs = std::collections::BTreeSet::new();
    let mut cameras = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    for _ in 0..PARTIES {
        let posted = results.recv_timeout(Duration::from_secs(40)).expect("every page reports");
        let result: serde_json::Value = serde_json::from_str(&posted).unwrap();
        // The first page to finish closes its connections: the others' data channels end with
        // "User-Initiated Abort", which is the end of the call, not a failure.
        errors.extend(
            result["errors"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !e.as_str().is_some_and(|e| e.contains("User-Initiated Abort"))),
        );
        let camera = &result["camera"];
        cameras.insert(format!("{}x{} at {}", camera["width"], camera["height"], camera["frameRate"]));
        for peer in result["peers"].as_object().unwrap().values() {
            // Frames decoded in the page's last 10 s (a peer whose connection ended first has none).
            if let Some(rate) = peer["decoded_fps_last_10s"].as_f64() {
                rates.push(rate);
                shown.push(peer["fps_last_10s"].as_f64().unwrap_or(0.0));
            }
            if peer["received_video_codec"].is_string() {
                codecs.insert(format!("{} / {}", peer["received_video_codec"], peer["received_audio_codec"]));
            }
        }
    }
    for browser in browsers {
        browser.stop();
    }
    drop(relay);
    assert!(errors.is_empty(), "the pages met errors: {errors:?}");
    let note = format!(
        "camera {}; received {} (frames/s: decoded in the last 10 s; shown {:.1})",
        cameras.into_iter().collect::<Vec<_>>().join(", "),
        codecs.into_iter().collect::<Vec<_>>().join(", "),
        mean(&shown)
    );
    row("Chromium (headless, fake devices)", &usage, &rates, &note)
}

fn main() {
    println!(
        "| 4-party mesh, each participant | CPU, % of one core (range) | memory, PSS MiB (range) | frames/s received per pair | what |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let ours = confer();
    let theirs = chromium();
    println!();
    println!("Confer's CPU per participant as a share of Chromium's: {:.2}x", ours.0 / theirs.0);
    println!(
        "All of a participant's CPU per frame it decoded (ms): Confer {:.1}, Chromium {:.1}",
        ours.1, theirs.1
    );
}
