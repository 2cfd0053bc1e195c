//! The desktop app as a user runs it: the real app (Tauri, WebKitGTK) in a real window on a
//! virtual X display, driven through WebDriver, in a real call with the real relay and two
//! headless `confer` participants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::I420Frame;
use confer_media::synthetic::read_stamp;
use confer_tests::desktop::{AppHome, Driver, Xvfb, desktop_app};
use confer_tests::{Relay, SMALL, report_of, spawn_synthetic};
use serde_json::{Value, json};

fn settings(pattern: u32) -> Value {
    json!({
        "name": "Desk",
        "camera": "synthetic",
        "microphone": "synthetic",
        "speaker": "synthetic",
        "video_quality": "low",
        "synthetic_pattern": pattern,
    })
}

/// A tile's drawn pixels, as the page reads them back from its canvas.
struct Shot {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

fn snapshot(driver: &Driver, tile: &str) -> Shot {
    let value = driver.execute("return window.__confer.snapshot(arguments[0])", &[json!(tile)]);
    let rgba =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value["rgba"].as_str().unwrap())
            .unwrap();
    Shot {
        width: value["width"].as_u64().unwrap() as usize,
        height: value["height"].as_u64().unwrap() as usize,
        rgba,
    }
}

/// The synthetic camera's pattern id, read from what the tile drew (luma from RGBA, BT.601).
fn pattern_in(shot: &Shot) -> Option<u32> {
    let luma: Vec<u8> = shot
        .rgba
        .chunks_exact(4)
        .map(|p| {
            (16.0 + 0.257 * f64::from(p[0]) + 0.504 * f64::from(p[1]) + 0.098 * f64::from(p[2])).round() as u8
        })
        .collect();
    let chroma = vec![128u8; (shot.width / 2) * (shot.height / 2)];
    let (w, h) = (shot.width, shot.height);
    let frame = I420Frame::from_planes(w, h, (&luma, &chroma, &chroma), (w, w / 2, w / 2)).ok()?;
    read_stamp(&frame).map(|stamp| stamp.id)
}

fn peer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

#[test]
fn the_app_joins_a_call_shows_live_tiles_mutes_leaves_and_names_failures() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let app = desktop_app();
    let alice = spawn_synthetic(&host_link, "Alice", 2, 45.0, SMALL, &[]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 45.0, SMALL, &[]);

    let xvfb = Xvfb::start();
    let home = AppHome::new();
    home.settings(&settings(4));
    let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);

    // Home → lobby → call, by the invite link.
    driver.type_into("[data-testid=link]", &invite);
    driver.click("[data-testid=join]");
    // The lobby fills in the name and devices from the saved settings.
    driver.wait_for(
        "the lobby shows the saved name",
        "return document.querySelector('[data-testid=name]')?.value === 'Desk' && !document.querySelector('[data-testid=join-now]').disabled",
        Duration::from_secs(10),
    );
    driver.click("[data-testid=join-now]");
    driver.wait_for(
        "three tiles (self, Alice, Bob)",
        "return document.querySelectorAll('[data-testid=tile]').length === 3",
        Duration::from_secs(30),
    );
    let tiles = driver.wait_for(
        "both remote tiles drawing video",
        "const t = window.__confer.tiles().filter(t => t.id !== 'self' && t.drawn >= 15); return t.length === 2 && t",
        Duration::from_secs(30),
    );
    eprintln!("tiles: {tiles}");
    for tile in tiles.as_array().unwrap() {
        let id = tile["id"].as_str().unwrap();
        let name = driver.execute(
            "return document.querySelector(`[data-tile='${arguments[0]}']`).getAttribute('aria-label')",
            &[json!(id)],
        );
        let first = snapshot(&driver, id);
        std::thread::sleep(Duration::from_millis(700));
        let second = snapshot(&driver, id);
        assert_eq!((first.width, first.height), (320, 180), "{name}'s tile draws its video at its size");
        let changed = first.rgba.iter().zip(&second.rgba).filter(|(a, b)| a != b).count();
        assert!(changed > 500, "{name}'s tile moves: {changed} bytes changed in 0.7 s");
        let expected = if name == "Alice" { 2 } else { 3 };
        assert_eq!(
            pattern_in(&second),
            Some(expected),
            "{name}'s tile shows {name}'s camera (kind {})",
            tile["kind"]
        );
    }

    // Mute in the app: the others see it (their reports at the end say so).
    driver.click("[data-testid=mute]");
    driver.wait_for(
        "the self tile shows muted",
        "return !!document.querySelector(\"[data-tile='self'] [data-testid=muted]\")",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(2));
    driver.click("[data-testid=leave]");
    driver.find("[data-testid=ended]", Duration::from_secs(10));

    let reports = [report_of(alice), report_of(bob)];
    for (report, log) in &reports {
        eprintln!("--- {report}\n{log}");
        let desk = peer(report, "Desk");
        assert_eq!(desk["muted"], true, "the app's mute reached the others: {desk}");
        assert_eq!(desk["pattern_id"], 4, "the app's synthetic camera reached the others: {desk}");
        assert!(desk["video_frames_decoded"].as_u64().unwrap() > 30, "{desk}");
    }

    // A bad link and an unreachable relay each say which part failed.
    driver.click("[data-testid=ended] button");
    driver.type_into("[data-testid=link]", "confer://join?room=nonsense");
    driver.click("[data-testid=join]");
    driver.click("[data-testid=join-now]");
    driver.find("[data-testid=error][data-code=bad_link]", Duration::from_secs(10));
    driver.click("[data-testid=error] button");
    driver.click("[data-testid=back]");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The same invite, naming a port nothing listens on.
    let unreachable = invite.replace(&format!("%3A{}&", relay.port), &format!("%3A{closed}&"));
    assert_ne!(unreachable, invite, "the link names the relay's port");
    driver.type_into("[data-testid=link]", &unreachable);
    driver.click("[data-testid=join]");
    driver.click("[data-testid=join-now]");
    driver.find("[data-testid=error][data-code=relay_unreachable]", Duration::from_secs(30));
    let message = driver.text("[data-testid=error]");
    assert!(message.contains("Can't reach the meeting server"), "{message}");
    eprintln!("app log:\n{}", home.log());
}
