//! The path from a decoded frame to a drawn tile, alone: the app (release build) in a window on
//! Xvfb shows N tiles whose synthetic cameras publish frames to the frame socket at a fixed rate
//! (the app's `bench_tiles` command; no network, no codec). Prints, per configuration, the frames
//! each tile drew per second, the delay from a frame's publication to its drawing (p50 / p95),
//! and the CPU and memory of all the app's processes (the synthetic cameras' painting included:
//! it stands in for the decoders).
//!
//! Each configuration runs twice, side by side: the tiles on the page's one shared WebGL surface
//! (`ui/src/lib/surface.ts`, the app's way) and each tile on its own canvas and WebGL context
//! (the way before it). The web process's own CPU (WebKit's page: uploads, drawing, compositing)
//! is printed apart from the total.
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
    webcodecs(&app);
    println!(
        "| round | tiles | size | fps asked | drawing | drawn per tile (min / mean) | publish to drawn p50 / p95 (ms) | CPU, all (% of one core) | CPU, web process | web process CPU per drawn frame (ms) | memory (PSS, MiB) | surface passes/s |"
    );
    println!("| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    // Two rounds, the two ways alternating: on a shared 2-core machine runs minutes apart differ
    // by more than the ways do, so each pair is read side by side and the second round says how
    // far one run is from the next.
    let configurations = [(4, 640, 360, 30), (8, 640, 360, 30), (8, 320, 180, 30)];
    let runs = (1..=2).flat_map(|round| {
        configurations.into_iter().flat_map(move |c| [(round, c, false), (round, c, true)])
    });
    for (round, (count, width, height, fps), shared) in runs {
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
            "window.__confer.bench(arguments[0], arguments[1], arguments[2], arguments[3], 30, arguments[4]); return null",
            &[json!(count), json!(fps), json!(width), json!(height), json!(shared)],
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
        let surface_before = driver.execute("return window.__confer.surface()", &[]);
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let elapsed = window.elapsed().as_secs_f64();
        let after = procs::drawn(&driver);
        let surface_after = driver.execute("return window.__confer.surface()", &[]);
        let surface = |key: &str| {
            (surface_after[key].as_f64().unwrap() - surface_before[key].as_f64().unwrap()) / elapsed
        };
        let passes = if shared {
            format!("{:.0} ({:.0} tiles drawn/s)", surface("passes"), surface("tilesDrawn"))
        } else {
            "–".to_owned()
        };
        let usage: Vec<(u32, f64)> = processes
            .iter()
            .zip(&cpu_before)
            .map(|(p, b)| (*p, (procs::cpu_seconds(*p) - b) / elapsed * 100.0))
            .collect();
        let cpu: f64 = usage.iter().map(|(_, c)| c).sum();
        // `comm` holds 15 bytes: "WebKitWebProces".
        let page: f64 =
            usage.iter().filter(|(p, _)| procs::name(*p).starts_with("WebKitWebProc")).map(|(_, c)| c).sum();
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
        let drawing = if shared { "one shared surface" } else { "a canvas per tile" };
        // % of a core is ms per 100 ms: per drawn frame, 10 x % / frames drawn a second.
        let per_frame = 10.0 * page / rates.iter().sum::<f64>().max(1e-9);
        println!(
            "| {round} | {count} | {width}x{height} | {fps} | {drawing} | {min:.1} / {mean:.1} | {:.0} / {:.0} | {cpu:.0} | {page:.0} | {per_frame:.2} | {pss:.0} | {passes} |",
            quantile(&latencies, 0.5).unwrap_or(f64::NAN),
            quantile(&latencies, 0.95).unwrap_or(f64::NAN),
        );
    }
}

/// Whether this webview could take H.264 itself (WebCodecs), the other path for frames to the
/// page: printed, as the benchmark's note on what this WebKitGTK offers.
fn webcodecs(app: &std::path::Path) {
    let xvfb = Xvfb::start();
    let home = AppHome::new();
    home.settings(&json!({ "name": "Bench" }));
    let driver = Driver::start(app, &["--automation"], &xvfb.display, &home);
    driver.wait_for("the page", "return !!window.__confer", Duration::from_secs(20));
    driver.execute(
        "window.__webcodecs = null;
         const agent = navigator.userAgent;
         if (typeof VideoDecoder === 'undefined') { window.__webcodecs = { agent, decoder: false }; return null; }
         const configs = ['avc1.42E01E', 'avc1.640028', 'vp8', 'vp09.00.10.08'];
         Promise.all(configs.map(codec => VideoDecoder.isConfigSupported({ codec, codedWidth: 640, codedHeight: 360 })
             .then(r => [codec, !!r.supported], e => [codec, String(e)])))
           .then(results => { window.__webcodecs = { agent, decoder: true, results }; });
         return null;",
        &[],
    );
    driver.wait_for("the codec answers", "return window.__webcodecs !== null", Duration::from_secs(20));
    let found = driver.execute("return window.__webcodecs", &[]);
    println!("WebCodecs in this webview: {found}");
    println!();
}
