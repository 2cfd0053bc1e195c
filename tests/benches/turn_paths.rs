//! A two-participant call through TURN over UDP, TCP and TLS (the relay's built-in server, on its
//! own port for TLS), against a direct call: join to first frame, glass-to-glass video latency,
//! and each participant's CPU, over 5 runs of each. Both participants are relay-only, so each
//! sends one stream to the relay and receives one through it; 640x360 at 30 fps.
//!
//! `cargo bench -p confer-tests --bench turn_paths` (release build of the binaries it runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_mesh::engine::quantile;
use confer_tests::{Relay, SeenFigures, cpu_seconds, spawn_synthetic};

const RUNS: usize = 5;
const SECONDS: f64 = 10.0;

/// What one configuration measured over its runs.
#[derive(Default)]
struct Figures {
    seen: SeenFigures,
    cpu: Vec<f64>,
    relay_protocols: Vec<String>,
}

fn run(transport: Option<&str>, figures: &mut Figures) {
    let state = tempfile::tempdir().unwrap();
    let mut flags = vec!["--turn-listen", "127.0.0.1:0", "--turn-allow-peer", "127.0.0.0/8"];
    if let Some(transport) = transport {
        flags.extend(["--turn-transports", transport]);
    }
    let relay = Relay::start_with(state.path(), "127.0.0.1:0", &flags);
    let (host_link, invite) = relay.host();
    let extra: &[&str] = if transport.is_some() { &["--relay-only"] } else { &[] };
    let size = ("640x360", 30);
    let ann = spawn_synthetic(&host_link, "Ann", 2, SECONDS, size, extra);
    let bob = spawn_synthetic(&invite, "Bob", 3, SECONDS, size, extra);
    // CPU over a steady window once both are connected.
    std::thread::sleep(Duration::from_secs(4));
    let before = [cpu_seconds(ann.id()), cpu_seconds(bob.id())];
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let elapsed = window.elapsed().as_secs_f64();
    figures.cpu.push((cpu_seconds(ann.id()) - before[0]) / elapsed * 100.0);
    figures.cpu.push((cpu_seconds(bob.id()) - before[1]) / elapsed * 100.0);
    for child in [ann, bob] {
        let Some(peer) = figures.seen.take(child) else { continue };
        figures.relay_protocols.push(peer["relay_protocol"].as_str().unwrap_or("direct").to_owned());
    }
}

fn main() {
    println!(
        "| path | runs connected | join to first frame p50 / p95 (ms) | glass-to-glass video p50 / p95 (ms, median of runs) | CPU per participant (% of a core, mean) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, transport) in [
        ("direct (host)", None),
        ("TURN/UDP", Some("udp")),
        ("TURN/TCP", Some("tcp")),
        ("TURN/TLS", Some("tls")),
    ] {
        let mut figures = Figures::default();
        for _ in 0..RUNS {
            run(transport, &mut figures);
        }
        let expected = transport.unwrap_or("direct");
        let wrong = figures.relay_protocols.iter().filter(|p| *p != expected).count();
        assert_eq!(wrong, 0, "{label}: paths taken {:?}", figures.relay_protocols);
        let median = |v: &[f64]| quantile(v, 0.5).unwrap_or(f64::NAN);
        let mean_cpu = figures.cpu.iter().sum::<f64>() / figures.cpu.len() as f64;
        println!(
            "| {label} | {}/{} | {:.0} / {:.0} | {:.0} / {:.0} | {mean_cpu:.0} |",
            figures.seen.first_frame_ms.len(),
            2 * RUNS,
            median(&figures.seen.first_frame_ms),
            quantile(&figures.seen.first_frame_ms, 0.95).unwrap_or(f64::NAN),
            median(&figures.seen.video_p50),
            median(&figures.seen.video_p95),
        );
    }
}
