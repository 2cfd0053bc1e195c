//! The desktop app in a 4-participant call on this machine: the real relay, three `confer`
//! processes with synthetic 640x360 video at 30 fps, and the app (release build, its own
//! synthetic camera at the same size) in a window on Xvfb, driven through WebDriver. Prints the
//! app's CPU and memory, all its processes included (the app, WebKit's web and network
//! processes), and the frame rate each tile actually draws. The call is made twice, side by
//! side: the tiles on the page's one shared WebGL surface (the app's way) and each tile on its
//! own canvas and WebGL context (the way before it).
//!
//! `cargo bench -p confer-tests --bench desktop`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_tests::desktop::{AppHome, Driver, Xvfb, desktop_app};
use confer_tests::{Relay, report_of, spawn_synthetic};
use serde_json::json;

#[path = "support/procs.rs"]
mod procs;
use procs::{cpu_seconds, descendants, drawn, name, pss_mib};

fn main() {
    for shared in [false, true] {
        let drawing = if shared { "one shared WebGL surface" } else { "a canvas and WebGL context per tile" };
        println!("#### Tiles drawn on {drawing}");
        println!();
        call(shared);
        println!();
    }
}

fn call(shared: bool) {
    let seconds = 45.0;
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let app = desktop_app();
    let mut children = Vec::new();
    for (i, who) in ["Ann", "Bob", "Cid"].iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        children.push(spawn_synthetic(link, who, i as u32 + 2, seconds, ("640x360", 30), &[]));
    }
    let xvfb = Xvfb::start();
    let home = AppHome::new();
    home.settings(&json!({
        "name": "Desk", "camera": "synthetic", "microphone": "synthetic", "speaker": "synthetic",
        "video_quality": "standard", "synthetic_pattern": 5,
    }));
    let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);
    driver.wait_for("the page", "return !!window.__confer", Duration::from_secs(20));
    driver.execute("window.__confer.useSurface(arguments[0]); return null", &[json!(shared)]);
    driver.open_lobby(&invite, "Desk");
    driver.click("[data-testid=join-now]");
    driver.wait_for(
        "three remote tiles drawing",
        "return window.__confer.tiles().filter(t => t.id !== 'self' && t.drawn > 30).length === 3",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(5));

    let kinds = driver.execute("return [...new Set(window.__confer.tiles().map(t => t.kind))]", &[]);
    assert_eq!(kinds, json!([if shared { "shared-webgl" } else { "webgl" }]), "the tiles draw as asked");
    driver.execute("return window.__confer.animationFrames()", &[]);
    std::thread::sleep(Duration::from_secs(1));
    let processes = descendants(driver.pid());
    let cpu_before: Vec<f64> = processes.iter().map(|p| cpu_seconds(*p)).collect();
    let drawn_before = drawn(&driver);
    let frames_before = driver.execute("return window.__confer.animationFrames()", &[]).as_f64().unwrap();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    let elapsed = window.elapsed().as_secs_f64();
    let drawn_after = drawn(&driver);
    let frames_after = driver.execute("return window.__confer.animationFrames()", &[]).as_f64().unwrap();
    let cpu: Vec<f64> =
        processes.iter().zip(&cpu_before).map(|(p, b)| (cpu_seconds(*p) - b) / elapsed * 100.0).collect();
    let pss: Vec<f64> = processes.iter().map(|p| pss_mib(*p)).collect();

    println!("| process | CPU (% of one core) | memory (PSS, MiB) |");
    println!("| --- | ---: | ---: |");
    for ((pid, cpu), pss) in processes.iter().zip(&cpu).zip(&pss) {
        println!("| {} | {cpu:.1} | {pss:.0} |", name(*pid));
    }
    println!(
        "| **all of the app** | **{:.1}** | **{:.0}** |",
        cpu.iter().sum::<f64>(),
        pss.iter().sum::<f64>()
    );
    println!();
    // How often the page was composited: no tile is seen more often than this.
    println!("The page's animation frames: {:.1} a second", (frames_after - frames_before) / elapsed);
    println!();
    // What the engine decoded per participant in its last second, beside what the tile drew:
    // tells a page that cannot keep up from senders that send less.
    let decoded = driver.execute("return window.__confer.decoded()", &[]);
    println!("| tile | frames drawn per second | frames decoded per second (engine, last second) |");
    println!("| --- | ---: | ---: |");
    let mut tiles: Vec<_> = drawn_after.iter().collect();
    tiles.sort_by(|a, b| a.0.cmp(b.0));
    for (id, after) in tiles {
        let rate = (after - drawn_before.get(id).copied().unwrap_or(0.0)) / elapsed;
        let who = if id == "self" { "self view".to_owned() } else { format!("remote {id}") };
        let decoded = decoded[id.as_str()].as_f64().map_or_else(|| "–".to_owned(), |r| format!("{r:.1}"));
        println!("| {who} | {rate:.1} | {decoded} |");
    }
    drop(driver);
    for child in children {
        let _ = report_of(child);
    }
}
