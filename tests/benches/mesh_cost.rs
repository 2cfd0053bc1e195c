//! What a mesh call costs each participant, by how many take part and what they show each other:
//! the real relay and 4 or 8 `confer join --synthetic` processes (release build) on this machine,
//! 640x360 at 30 fps captured, each either showing the others full size (every sender encodes
//! its top layer) or as thumbnails (`--view`: every sender encodes only the layer that fills
//! them). Prints CPU and RSS per participant and the frame rate and size each receives.
//!
//! `cargo bench -p confer-tests --bench mesh_cost`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_tests::{Relay, cpu_seconds, report_of, spawn_synthetic};

/// Resident memory of process `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// One call of `parties` participants, each asking the others for `view` (or nothing); prints
/// its row.
fn call(parties: usize, view: Option<&str>) {
    let (size, fps) = ("640x360", 30);
    let seconds = 22.0;
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let mut children = Vec::new();
    for i in 0..parties {
        let link = if i == 0 { &host_link } else { &invite };
        let name = format!("P{i}");
        let extra: Vec<&str> = view.map(|v| vec!["--view", v]).unwrap_or_default();
        children.push(spawn_synthetic(
            link,
            &name,
            i as u32 + 2,
            seconds - 0.2 * i as f64,
            (size, fps),
            &extra,
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    // A steady 10 s window once everyone is connected.
    std::thread::sleep(Duration::from_secs(6));
    let before: Vec<f64> = children.iter().map(|c| cpu_seconds(c.id())).collect();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let elapsed = window.elapsed().as_secs_f64();
    let cpu: Vec<f64> =
        children.iter().zip(&before).map(|(c, b)| (cpu_seconds(c.id()) - b) / elapsed * 100.0).collect();
    let rss: Vec<f64> = children.iter().map(|c| rss_mib(c.id())).collect();
    let reports: Vec<serde_json::Value> = children.into_iter().map(|c| report_of(c).0).collect();
    let mut rates = Vec::new();
    let mut sizes = std::collections::BTreeSet::new();
    for report in &reports {
        for peer in report["peers"].as_array().unwrap() {
            rates.push(peer["stats"]["frame_rate"].as_f64().unwrap_or(0.0));
            if let Some(last) = peer["video_sizes"].as_array().and_then(|s| s.last()) {
                sizes.insert(last.as_str().unwrap_or("?").to_owned());
            }
        }
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "| {parties} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.1} (min {:.0}) | {} |",
        view.map_or("full size (nothing asked)".to_owned(), |v| format!("`--view {v}`")),
        mean(&cpu),
        min(&cpu),
        max(&cpu),
        mean(&rss),
        min(&rss),
        max(&rss),
        mean(&rates),
        min(&rates),
        sizes.into_iter().collect::<Vec<_>>().join(", "),
    );
    drop(relay);
}

fn main() {
    println!(
        "| participants | what each shows the others | CPU per participant, % of one core (range) | RSS per participant, MiB (range) | frames/s received per pair, last second | sizes received |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | --- |");
    call(4, None);
    call(4, Some("320x180"));
    call(8, None);
    call(8, Some("160x90"));
}
