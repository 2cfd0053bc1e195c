//! The NAT lab's topologies as a benchmark: for each, 5 two-participant calls through real NAT
//! and firewalls in network namespaces (see `confer_tests::lab`), with the path each took, join
//! to first frame and glass-to-glass video latency; and 5 moves to another network mid-call, with
//! the longest freeze of video. 640x360 at 30 fps, release build.
//!
//! `cargo bench -p confer-tests --bench nat_lab` (as root: it makes network namespaces);
//! `-- WORDS` runs only the topologies whose label contains WORDS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::Duration;

use confer_mesh::engine::quantile;
use confer_tests::lab::{Firewall, Lab, Nat, RELAY_IP};
use confer_tests::{Relay, SeenFigures, spawn_synthetic_in};

const RUNS: usize = 5;
const SECONDS: f64 = 8.0;
const SIZE: (&str, u32) = ("640x360", 30);

/// What one topology measured over its runs.
#[derive(Default)]
struct Figures {
    seen: SeenFigures,
    freeze_ms: Vec<f64>,
    /// "local/remote (relay protocol)" → how many participant-runs took it.
    paths: BTreeMap<String, usize>,
}

/// One call between hosts `a` and `b` (Ann with `extra_a`); moves Ann to another network after
/// 4 s if `move_ann`.
fn run(lab: &mut Lab, a: usize, b: usize, extra_a: &[&str], move_ann: bool, figures: &mut Figures) {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), &[]);
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic_in(Some(lab.host(a)), &host_link, "Ann", 2, SECONDS, SIZE, extra_a);
    let bob = spawn_synthetic_in(Some(lab.host(b)), &invite, "Bob", 3, SECONDS, SIZE, &[]);
    if move_ann {
        std::thread::sleep(Duration::from_secs(4));
        lab.move_host(a, Nat::Masquerade);
    }
    for child in [ann, bob] {
        let Some(peer) = figures.seen.take(child) else { continue };
        let last = peer["last_frame_ms"].as_f64().unwrap_or(0.0);
        // A call whose video stopped for good froze until the end.
        let stopped = (SECONDS * 1_000.0 - last).max(0.0);
        figures.freeze_ms.push(peer["longest_video_gap_ms"].as_f64().unwrap_or(0.0).max(stopped));
        let text = |key: &str| peer[key].as_str().unwrap_or("?").to_owned();
        let mut path = format!("{}/{}", text("candidate_type"), text("remote_candidate_type"));
        if let Some(protocol) = peer["relay_protocol"].as_str() {
            path.push_str(&format!(" ({protocol})"));
        }
        *figures.paths.entry(path).or_default() += 1;
    }
}

fn main() {
    println!(
        "| topology | runs connected | paths taken (local/remote, participant-runs) | join to first frame p50 / p95 (ms) | glass-to-glass video p50 / p95 (ms, median of runs) | longest freeze p50 / p95 (ms) |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: |");
    type Build = fn(&mut Lab) -> (usize, usize);
    let topologies: [(&str, Build, &[&str], bool); 8] = [
        (
            "same LAN",
            |lab| {
                let hosts = lab.site(Nat::Masquerade, Firewall::Open, 2);
                (hosts[0], hosts[1])
            },
            &[],
            false,
        ),
        ("two cone NATs", |lab| two(lab, Nat::Masquerade, Firewall::Open), &[], false),
        ("two symmetric NATs (TURN/UDP)", |lab| two(lab, Nat::Symmetric, Firewall::Open), &[], false),
        (
            "symmetric NAT and an open host",
            |lab| (lab.site(Nat::Symmetric, Firewall::Open, 1)[0], lab.open_host()),
            &[],
            false,
        ),
        ("UDP blocked at both (TURN/TCP)", |lab| two(lab, Nat::Masquerade, Firewall::NoUdp), &[], false),
        ("only TCP 443 (TURN/TLS)", |lab| two(lab, Nat::Masquerade, Firewall::Only443), &[], false),
        (
            "cone NATs, Ann relay-only",
            |lab| two(lab, Nat::Masquerade, Firewall::Open),
            &["--relay-only"],
            false,
        ),
        ("cone NATs, Ann moves network at 4 s", |lab| two(lab, Nat::Masquerade, Firewall::Open), &[], true),
    ];
    // `cargo bench … -- WORDS`: only the topologies whose label contains WORDS.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    for (i, (label, build, extra_a, move_ann)) in topologies.into_iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|words| label.contains(words.as_str())) {
            continue;
        }
        let mut figures = Figures::default();
        for run_index in 0..RUNS {
            // A fresh lab per run: a move leaves the lab changed, and no run inherits another's
            // connection tracking.
            let mut lab = Lab::new(&format!("b{i}r{run_index}"));
            let (a, b) = build(&mut lab);
            run(&mut lab, a, b, extra_a, move_ann, &mut figures);
        }
        let median = |v: &[f64]| quantile(v, 0.5).unwrap_or(f64::NAN);
        let p95 = |v: &[f64]| quantile(v, 0.95).unwrap_or(f64::NAN);
        let paths: Vec<String> = figures.paths.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
        println!(
            "| {label} | {}/{} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
            figures.seen.first_frame_ms.len(),
            2 * RUNS,
            paths.join(", "),
            median(&figures.seen.first_frame_ms),
            p95(&figures.seen.first_frame_ms),
            median(&figures.seen.video_p50),
            median(&figures.seen.video_p95),
            median(&figures.freeze_ms),
            p95(&figures.freeze_ms),
        );
    }
}

/// Two sites with one host each.
fn two(lab: &mut Lab, nat: Nat, firewall: Firewall) -> (usize, usize) {
    (lab.site(nat, firewall, 1)[0], lab.site(nat, firewall, 1)[0])
}
