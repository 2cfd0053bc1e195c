//! The path from a decoded frame to a drawn tile, alone: the app (release build) in a window on
//! Xvfb shows N tiles whose synthetic cameras publish frames to the frame socket at a fixed rate
//! (the app's `bench_tiles` command; no network, no codec). Prints, per configuration, the frames
//! each tile drew per second, the delay from a frame's publication to its drawing (p50 / p95),
//! and the CPU and memory of all the app's processes (the synthetic cameras' painting included:
//! it stands in for the decoders).
//!
//! `cargo bench -p confer-tests --bench tiles`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_mesh::engine::quantile;
use confer_tests::desktop::{AppHome, Driver, Xvfb, desktop_app};
use serde_json::json;

#[path = "support/procs.rs"]
mod procs;

fn main() {
    let app = desktop_app();
    println!(
        "| tiles | size | fps asked | drawn per tile (min / mean) | publish to drawn p50 / p95 (ms) | CPU (% of one core) | memory (PSS, MiB) |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for (count, width, height, fps) in [(4, 640, 360, 30), (8, 640, 360, 30), (8, 320, 180, 30)] {
        let xvfb = Xvfb::start();
        let home = AppHome::new().with_env("CONFER_BENCH_TILES", "1");
        home.settings(&json!({ "name": "Bench" }));
        let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);
        driver.wait_for(
            "the page",
            "return !!(window.__confer && window.__confer.bench)",
            Duration::from_secs(20),
        );
        driver.execute(
            "window.__confer.bench(arguments[0], arguments[1], arguments[2], arguments[3], 30); return null",
            &[json!(count), json!(fps), json!(width), json!(height)],
        );
        driver.wait_for(
            "every tile drawing",
            &format!("return window.__confer.tiles().filter(t => t.id.startsWith('bench-') && t.drawn > 30).length === {count}"),
            Duration::from_secs(30),
        );
        std::thread::sleep(Duration::from_secs(3));
        let processes = procs::descendants(driver.pid());
        let cpu_before: Vec<f64> = processes.iter().map(|p| procs::cpu_seconds(*p)).collect();
        let before = procs::drawn(&driver);
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let elapsed = window.elapsed().as_secs_f64();
        let after = procs::drawn(&driver);
        let cpu: f64 = processes
            .iter()
            .zip(&cpu_before)
            .map(|(p, b)| (procs::cpu_seconds(*p) - b) / elapsed * 100.0)
            .sum();
        let pss: f64 = processes.iter().map(|p| procs::pss_mib(*p)).sum();
        let rates: Vec<f64> = after
            .iter()
            .filter(|(id, _)| id.starts_with("bench-"))
            .map(|(id, n)| (n - before.get(id).copied().unwrap_or(0.0)) / elapsed)
            .collect();
        let mut latencies = Vec::new();
        for i in 1..=count {
            let samples = driver
                .execute("return window.__confer.latencies(arguments[0])", &[json!(format!("bench-{i}"))]);
            latencies.extend(samples.as_array().unwrap().iter().filter_map(serde_json::Value::as_f64));
        }
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        println!(
            "| {count} | {width}x{height} | {fps} | {min:.1} / {mean:.1} | {:.0} / {:.0} | {cpu:.0} | {pss:.0} |",
            quantile(&latencies, 0.5).unwrap_or(f64::NAN),
            quantile(&latencies, 0.95).unwrap_or(f64::NAN),
        );
    }
}
