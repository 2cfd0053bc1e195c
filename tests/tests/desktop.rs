//! The desktop app as a user runs it: the real app (Tauri, WebKitGTK) in a real window on a
//! virtual X display, driven through WebDriver, in a real call with the real relay and two
//! headless `confer` participants; screen sharing both ways, with a real X window shared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use confer_media::I420Frame;
use confer_media::synthetic::read_stamp;
use confer_tests::desktop::{AppHome, Driver, SessionBus, Xvfb, desktop_app};
use confer_tests::screen::PatternWindow;
use confer_tests::{
    Relay, SMALL, ffmpeg_complaints, ffprobe, one_at_a_time, peer, report_of, spawn_synthetic, stream_titles,
};
use serde_json::{Value, json};

/// The app window's size (tauri.conf.json).
const WINDOW: (u32, u32) = (1200, 760);

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

#[test]
fn the_app_joins_a_call_shows_live_tiles_mutes_leaves_and_names_failures() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let app = desktop_app();
    // Alice records the call from the moment she meets Bob, past the app's own recording.
    let recordings = tempfile::tempdir().unwrap();
    let alice_records =
        ["--record-after", "0", "--record-for", "40", "--recordings", recordings.path().to_str().unwrap()];
    let alice = spawn_synthetic(&host_link, "Alice", 2, 45.0, SMALL, &alice_records);
    let bob = spawn_synthetic(&invite, "Bob", 3, 45.0, SMALL, &[]);

    let xvfb = Xvfb::start();
    let home = AppHome::new();
    home.settings(&settings(4));
    let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);

    // Home → lobby → call, by the invite link. The lobby fills in the name and devices from the
    // saved settings.
    driver.find("[data-testid=new-meeting]", Duration::from_secs(30));
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the home screen's accessibility audit: {problems:#?}");
    let camera = driver.open_lobby(&invite, "Desk");
    assert_eq!(camera, "Synthetic camera");
    // The lobby checks the devices before joining: the camera's picture (this app's pattern,
    // readable in what the preview drew), the microphone's level, a test sound on the speaker.
    driver.wait_for(
        "the lobby previews the camera",
        "return window.__confer.tiles().some(t => t.id === 'preview' && t.drawn >= 10)",
        Duration::from_secs(20),
    );
    assert_eq!(pattern_in(&snapshot(&driver, "preview")), Some(4), "the preview shows this app's camera");
    driver.wait_for(
        "the meter hears the synthetic microphone's speech",
        "return Number(document.querySelector('[data-testid=mic-level]').dataset.dbfs) > -40",
        Duration::from_secs(10),
    );
    driver.click("[data-testid=test-speaker]");
    let played = driver.wait_for(
        "the test sound played",
        "return document.querySelector('[data-testid=speaker-result]')?.textContent",
        Duration::from_secs(10),
    );
    assert!(played.as_str().unwrap().contains("Played 0.7 s"), "{played}");
    // ...and the network: the relay answers, and so does its own STUN/TURN server, which relays
    // over UDP, TCP and TLS (on the relay's port).
    let relay_line = driver.wait_for(
        "the network check's answer",
        "const r = document.querySelector('[data-testid=net-relay]'); return r && r.dataset.ok === 'true' && document.querySelectorAll('[data-testid=net-server]').length === 4 && r.textContent",
        Duration::from_secs(15),
    );
    assert!(relay_line.as_str().unwrap().contains("Meeting server reachable"), "{relay_line}");
    let servers = driver.execute(
        "return [...document.querySelectorAll('[data-testid=net-server]')].map(li => [li.dataset.ok, li.textContent])",
        &[],
    );
    let servers = servers.as_array().unwrap();
    assert!(servers.iter().all(|s| s[0] == "true"), "every STUN/TURN URL answers: {servers:?}");
    let relays = servers.iter().filter(|s| s[1].as_str().unwrap().contains("relays media")).count();
    assert_eq!(relays, 3, "TURN over UDP, TCP and TLS: {servers:?}");
    let verdict = driver.execute(
        "const v = document.querySelector('[data-testid=net-verdict]'); return [v.dataset.verdict, v.textContent]",
        &[],
    );
    assert_eq!(verdict[0], "direct", "{verdict}");
    assert!(verdict[1].as_str().unwrap().contains("Direct connections are possible"), "{verdict}");
    // The upload to the relay (loopback: far more than any call needs) and what it carries.
    let capacity = driver.execute(
        "const c = document.querySelector('[data-testid=net-capacity]'); return [Number(c.dataset.kbps), c.textContent]",
        &[],
    );
    assert!(capacity[0].as_f64().unwrap() > 20_000.0, "{capacity}");
    assert!(
        capacity[1].as_str().unwrap().contains("is enough for a video call of 25+ people at"),
        "{capacity}"
    );
    xvfb.screenshot("lobby", WINDOW);
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the lobby's accessibility audit: {problems:#?}");
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
    // Each remote tile says the path to that person and the round trip: on loopback, direct.
    let paths = driver.wait_for(
        "each remote tile's path and round trip",
        "const p = [...document.querySelectorAll('[data-testid=tile-path]')].map(e => [e.dataset.path, e.textContent]); return p.length === 2 && p.every(([, text]) => / · \\d+ ms$/.test(text)) && p",
        Duration::from_secs(10),
    );
    for path in paths.as_array().unwrap() {
        assert_eq!(path[0], "direct", "{paths}");
        assert!(path[1].as_str().unwrap().starts_with("Direct · "), "{paths}");
    }
    driver.wait_for(
        "the self view shows what the camera sends",
        "return window.__confer.tiles().some(t => t.id === 'self' && t.drawn >= 10)",
        Duration::from_secs(10),
    );
    // The lobby's preview closed when the call started: no more of its frames arrive.
    let previewed = || driver.execute("return window.__confer.feed().perTile.preview ?? 0", &[]);
    let before = previewed();
    std::thread::sleep(Duration::from_millis(600));
    assert!(before.as_u64().unwrap() > 0, "the lobby previewed the camera");
    assert_eq!(previewed(), before, "the preview's devices are closed in the call");
    xvfb.screenshot("call", WINDOW);
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the call's accessibility audit: {problems:#?}");
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

    // The window is hidden (as minimising it tells the page): the page says so, the app asks
    // Alice and Bob for no video, and their frames stop; shown again, they come back.
    let frames_of = |id: &str| {
        driver
            .execute("return window.__confer.feed().perTile[arguments[0]] ?? 0", &[json!(id)])
            .as_u64()
            .unwrap()
    };
    let remote: Vec<String> =
        tiles.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    let visibility = "Object.defineProperty(document, 'hidden', {value: arguments[0], configurable: true});                       document.dispatchEvent(new Event('visibilitychange'))";
    driver.execute(visibility, &[json!(true)]);
    std::thread::sleep(Duration::from_secs(2));
    let hidden_from: Vec<u64> = remote.iter().map(|id| frames_of(id)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let hidden_to: Vec<u64> = remote.iter().map(|id| frames_of(id)).collect();
    assert_eq!(hidden_from, hidden_to, "no video arrives while the window is hidden");
    driver.execute(visibility, &[json!(false)]);
    driver.wait_for(
        "video again once the window is shown",
        &format!(
            "const f = window.__confer.feed().perTile; return {remote:?}.every((id, i) => (f[id] ?? 0) > {hidden_to:?}[i] + 10)"
        ),
        Duration::from_secs(10),
    );

    // Alice records: the app, which joined after she started, shows it.
    let banner = driver.wait_for(
        "the app shows that Alice records",
        "const b = document.querySelector('[data-testid=recording-banner]'); return b && b.textContent",
        Duration::from_secs(10),
    );
    assert!(banner.as_str().unwrap().contains("Alice is recording this call."), "{banner}");

    // Mute in the app: the others see it (their reports at the end say so).
    driver.click("[data-testid=mute]");
    driver.wait_for(
        "the self tile shows muted",
        "return !!document.querySelector(\"[data-tile='self'] [data-testid=muted]\")",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(2));

    // The app records for about 4 s: everyone is told, and the file plays in ffmpeg with each
    // camera in it (and the others' microphones: the app is muted).
    driver.click("[data-testid=record]");
    let bar = driver.find("[data-testid=recording-bar]", Duration::from_secs(10));
    drop(bar);
    let recording = Instant::now();
    // The screenshot (when asked for) takes a second or two of the 4.
    xvfb.screenshot("recording", WINDOW);
    std::thread::sleep(Duration::from_secs(4).saturating_sub(recording.elapsed()));
    driver.click("[data-testid=stop-record]");
    let saved = driver.wait_for(
        "the app says where the recording was saved",
        "const s = document.querySelector('[data-testid=recording-saved]'); return s && s.dataset.path",
        Duration::from_secs(10),
    );
    let saved = std::path::PathBuf::from(saved.as_str().unwrap());
    assert!(
        saved.starts_with(home.videos().join("Confer")),
        "saved in the videos folder: {}",
        saved.display()
    );
    let probe = ffprobe(&saved);
    eprintln!("the app's recording: {probe}");
    assert_eq!(
        stream_titles(&probe),
        ["Alice: camera", "Alice: microphone", "Bob: camera", "Bob: microphone", "Desk: camera"]
    );
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((3.0..=6.0).contains(&duration), "about 4 s recorded: {duration} s");
    let complaints = ffmpeg_complaints(&saved);
    assert!(complaints.is_empty(), "ffmpeg: {complaints}");

    driver.click("[data-testid=leave]");
    driver.find("[data-testid=ended]", Duration::from_secs(10));

    let reports = [report_of(alice), report_of(bob)];
    for (report, log) in &reports {
        eprintln!("--- {report}\n{log}");
        let desk = peer(report, "Desk");
        assert_eq!(desk["muted"], true, "the app's mute reached the others: {desk}");
        assert_eq!(desk["pattern_id"], 4, "the app's synthetic camera reached the others: {desk}");
        assert!(desk["video_frames_decoded"].as_u64().unwrap() > 30, "{desk}");
        // Its tiles' sizes (320x180, what they send) and the hidden window reached them.
        let layers: Vec<Value> =
            desk["send_layers"].as_array().unwrap().iter().map(|c| c["size"].clone()).collect();
        assert_eq!(layers, [json!("320x180"), Value::Null, json!("320x180")], "{desk}");
        let told: Vec<bool> = report["recording"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "peer" && e["id"] == desk["id"])
            .map(|e| e["recording"].as_bool().unwrap())
            .collect();
        assert_eq!(told, [true, false], "told when the app started and stopped recording");
    }
    // Alice's own recording (the whole call as she had it) includes the app's camera too.
    let (alice_report, _) = &reports[0];
    let stopped =
        alice_report["recording"].as_array().unwrap().iter().find(|e| e["event"] == "stopped").unwrap();
    let titles = stream_titles(&ffprobe(std::path::Path::new(stopped["path"].as_str().unwrap())));
    assert!(titles.iter().any(|t| t == "Desk: camera"), "{titles:?}");

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
    // The lobby's network check says so before anyone tries to join...
    let checked = driver.wait_for(
        "the network check names the unreachable relay",
        "const r = document.querySelector('[data-testid=net-relay]'); return r && r.dataset.ok === 'false' && r.textContent",
        Duration::from_secs(30),
    );
    assert!(checked.as_str().unwrap().contains("unreachable"), "{checked}");
    // ...and joining anyway names it too.
    driver.click("[data-testid=join-now]");
    driver.find("[data-testid=error][data-code=relay_unreachable]", Duration::from_secs(30));
    let message = driver.text("[data-testid=error]");
    assert!(message.contains("Can't reach the meeting server"), "{message}");
    eprintln!("app log:\n{}", home.log());
}

#[test]
fn an_invite_link_starts_the_app_in_its_lobby_and_a_second_launch_hands_its_link_over() {
    let _serial = one_at_a_time();
    let app = desktop_app();
    let xvfb = Xvfb::start();
    let bus = SessionBus::start();
    let home = AppHome::new().with_bus(&bus);
    home.settings(&settings(6));
    let first = "confer://join?relay=wss%3A%2F%2F127.0.0.1%3A1111&room=AAAAAAAAAAAAAAAAAAAAAA&token=t";
    let second = "confer://join?relay=wss%3A%2F%2F127.0.0.1%3A2222&room=BBBBBBBBBBBBBBBBBBBBBB&token=t";
    // Started by the system with the link as its argument (what a click on it does).
    let driver = Driver::start(&app, &[first], &xvfb.display, &home);
    driver.wait_for(
        "the lobby of the first link",
        "return document.querySelector('[data-testid=lobby-server]')?.textContent.includes('127.0.0.1:1111')",
        Duration::from_secs(20),
    );
    // A second launch with another link hands it to the running app and exits.
    let started = Instant::now();
    let status = home
        .command(&app, &xvfb.display)
        .arg(second)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the second instance exits cleanly: {status}");
    eprintln!("second launch handed over and exited in {:?}", started.elapsed());
    driver.wait_for(
        "the running app shows the second link's lobby",
        "return document.querySelector('[data-testid=lobby-server]')?.textContent.includes('127.0.0.1:2222')",
        Duration::from_secs(10),
    );
    let windows = driver.execute("return 1", &[]);
    assert_eq!(windows, 1, "the first instance still answers");

    // The settings screen passes the accessibility audit too.
    driver.click("[data-testid=back]");
    driver.click("[data-testid=open-settings]");
    driver.find("[data-testid=save-settings]", Duration::from_secs(10));
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the settings screen's accessibility audit: {problems:#?}");
    driver.click("[data-testid=settings-back]");

    // "New meeting" with no meeting server configured: the app runs one itself.
    driver.click("[data-testid=new-meeting]");
    let invite = driver.wait_for(
        "the new meeting's links",
        "return document.querySelector('[data-testid=invite-link]')?.value",
        Duration::from_secs(20),
    );
    let invite = invite.as_str().unwrap();
    assert!(invite.starts_with("confer://join?relay=wss%3A%2F%2F"), "{invite}");
    assert!(invite.contains("&fp="), "the embedded server's certificate is pinned in the link: {invite}");
    driver.click("[data-testid=start]");
    driver.click("[data-testid=join-now]");
    driver.wait_for(
        "in the meeting, alone",
        "return !document.querySelector('[data-testid=phase]') && document.querySelectorAll('[data-testid=tile]').length === 1 && document.body.innerText.includes('only one here')",
        Duration::from_secs(30),
    );
    // Someone else joins by the invite link, through the embedded server.
    let guest = spawn_synthetic(invite, "Gus", 7, 12.0, SMALL, &[]);
    driver.wait_for(
        "the guest's tile drawing",
        "return window.__confer.tiles().some(t => t.id !== 'self' && t.drawn > 10)",
        Duration::from_secs(30),
    );
    let (report, log) = report_of(guest);
    let desk = peer(&report, "Desk");
    assert_eq!(desk["pattern_id"], 6, "the guest sees the app's camera: {desk}\n{log}");
}

/// The host's controls, end to end: the app joins by the host link, locks the room; a headless
/// guest knocks and the app admits it (its video arrives), another knocks and is denied (its
/// report says so), and the admitted one is removed (its report says so, and its tile goes).
#[test]
fn the_host_locks_the_room_admits_and_denies_knockers_and_removes_a_participant() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let app = desktop_app();
    let xvfb = Xvfb::start();
    let home = AppHome::new();
    home.settings(&settings(5));
    let driver = Driver::start(&app, &["--automation"], &xvfb.display, &home);
    driver.open_lobby(&host_link, "Desk");
    driver.click("[data-testid=join-now]");
    driver.wait_for(
        "in the meeting as its host, alone",
        "return !document.querySelector('[data-testid=phase]') && document.querySelectorAll('[data-testid=tile]').length === 1",
        Duration::from_secs(30),
    );
    driver.click("[data-testid=people-toggle]");
    driver.click("[data-testid=lock]");
    driver.wait_for(
        "the room shows locked",
        "return document.querySelector('[data-testid=lock]')?.getAttribute('aria-pressed') === 'true'",
        Duration::from_secs(10),
    );

    let kim = spawn_synthetic(&invite, "Kim", 2, 30.0, SMALL, &[]);
    driver.wait_for(
        "Kim knocks",
        "return document.querySelector('[data-testid=knocks]')?.textContent.includes('Kim')",
        Duration::from_secs(20),
    );
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the host's panel's accessibility audit: {problems:#?}");
    let label = driver
        .execute("return document.querySelector('[data-testid=admit]').getAttribute('aria-label')", &[]);
    assert_eq!(label, "Admit Kim", "a screen reader hears whom the button admits");
    driver.click("[data-testid=admit]");
    driver.wait_for(
        "Kim is in, her video drawing",
        "return window.__confer.tiles().some(t => t.id !== 'self' && t.drawn >= 10)",
        Duration::from_secs(30),
    );

    let lou = spawn_synthetic(&invite, "Lou", 3, 30.0, SMALL, &[]);
    driver.wait_for(
        "Lou knocks",
        "return document.querySelector('[data-testid=knocks]')?.textContent.includes('Lou')",
        Duration::from_secs(20),
    );
    driver.click("[data-testid=deny]");
    let (report, log) = report_of(lou);
    let ended = report["ended"].as_str().unwrap_or_default().to_lowercase();
    assert!(ended.contains("denied"), "Lou was turned away: {report}\n{log}");
    assert!(report["peers"].as_array().unwrap().is_empty(), "Lou saw nobody: {report}");

    driver.click("[data-testid=remove]");
    driver.wait_for(
        "Kim's tile is gone",
        "return document.querySelectorAll('[data-testid=tile]').length === 1",
        Duration::from_secs(15),
    );
    let (report, log) = report_of(kim);
    let ended = report["ended"].as_str().unwrap_or_default().to_lowercase();
    assert!(ended.contains("removed"), "Kim was removed: {report}\n{log}");
    // (A removed participant's engine stops at once, so its report lists nobody; its log says
    // it was connected to the app while it was in.)
    assert!(log.contains("connected to"), "Kim was connected while she was in:\n{log}");
}

#[test]
fn the_app_shares_a_window_picked_with_its_thumbnail_shows_a_peers_share_large_and_sends_a_file() {
    let _serial = one_at_a_time();
    let xvfb = Xvfb::start();
    // A window on the app's display whose picture the test paints: what the user will share.
    let slides = PatternWindow::open(&xvfb.display, "Slides", 61, (790, 520), (480, 270));
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    // Bob shares the synthetic page (pattern 55) for 20 s from the moment someone is there (the
    // app must join, get it and draw five of its frames first: on a loaded 2-core machine 12 s
    // was once not enough).
    let downloads = tempfile::tempdir().unwrap();
    let bob = spawn_synthetic(
        &host_link,
        "Bob",
        3,
        55.0,
        SMALL,
        &["--share", "synthetic:55", "--share-for", "20", "--downloads", downloads.path().to_str().unwrap()],
    );

    let home = AppHome::new();
    home.settings(&settings(4));
    let driver = Driver::start(&desktop_app(), &["--automation"], &xvfb.display, &home);
    driver.find("[data-testid=new-meeting]", Duration::from_secs(30));
    driver.open_lobby(&invite, "Desk");
    driver.click("[data-testid=join-now]");

    // Bob's share: a tile of its own, larger than the camera tiles, drawing his page.
    let share_tile = driver.wait_for(
        "Bob's share drawn",
        "const t = window.__confer.tiles().find(t => t.id.startsWith('share:') && t.drawn >= 5); return t && t.id",
        Duration::from_secs(30),
    );
    let share_tile = share_tile.as_str().unwrap().to_owned();
    let sizes = driver.execute(
        "return [...document.querySelectorAll('[data-testid=tile]')].map(t => [t.dataset.tile, t.getBoundingClientRect().width])",
        &[],
    );
    eprintln!("tiles and widths: {sizes}");
    let width_of = |id: &str| {
        sizes.as_array().unwrap().iter().find(|t| t[0] == id).map(|t| t[1].as_f64().unwrap()).unwrap()
    };
    let camera_width = width_of(share_tile.trim_start_matches("share:"));
    assert!(width_of(&share_tile) > 3.0 * camera_width, "the share is shown large: {sizes}");
    assert_eq!(pattern_in(&snapshot(&driver, &share_tile)), Some(55), "the share tile shows Bob's page");
    xvfb.screenshot("share-received", WINDOW);

    // While Bob shares, the app's share is refused (one at a time), and the page says who shares.
    driver.click("[data-testid=share]");
    driver.wait_for(
        "the picker lists the window",
        "return document.querySelectorAll('[data-testid=share-source]').length > 0",
        Duration::from_secs(15),
    );
    driver.click(&format!("[data-testid=share-source][data-source='{}']", slides.share_id()));
    let refused = driver.wait_for(
        "the refusal",
        "const n = document.querySelector('.notice'); return n && n.textContent.includes('Bob is sharing') && n.textContent",
        Duration::from_secs(10),
    );
    assert!(refused.as_str().unwrap().contains("one share at a time"), "{refused}");
    assert_eq!(driver.execute("return !!document.querySelector('[data-testid=sharing-bar]')", &[]), false);
    // Bob's share ends: its tile goes.
    driver.wait_for(
        "Bob's share ended",
        "return !document.querySelector(\"[data-tile^='share:']\")",
        Duration::from_secs(20),
    );

    // Speaker view: Bob's camera moves to the stage, large, and goes on drawing his picture.
    let bob_id = share_tile.trim_start_matches("share:").to_owned();
    driver.click("[data-testid=layout]");
    driver.wait_for(
        "Bob's camera on the stage",
        &format!("const t = document.querySelector('.stage > [data-testid=tile]'); return t && t.dataset.tile === '{bob_id}'"),
        Duration::from_secs(10),
    );
    driver.wait_for(
        "the staged tile drawing",
        &format!(
            "const t = window.__confer.tiles().find(t => t.id === '{bob_id}'); return t && t.drawn >= 10"
        ),
        Duration::from_secs(10),
    );
    let staged = driver.execute(
        "const t = document.querySelector('.stage > [data-testid=tile]'); return [t.dataset.tile, t.getBoundingClientRect().width]",
        &[],
    );
    assert_eq!(staged[0], bob_id.as_str(), "{staged}");
    assert!(staged[1].as_f64().unwrap() > 3.0 * camera_width, "Bob is large in speaker view: {staged}");
    assert_eq!(pattern_in(&snapshot(&driver, &bob_id)), Some(3), "the stage shows Bob's camera");
    driver.click("[data-testid=layout]");

    // Now the app may share. The picker lists the window by its title, with a thumbnail of what
    // it shows.
    driver.click("[data-testid=share]");
    let offered = driver.wait_for(
        "the picker lists the window",
        "const b = [...document.querySelectorAll('[data-testid=share-source]')].find(b => b.textContent.includes('Slides')); return b && [b.dataset.source, b.querySelector('img')?.src ?? null, b.textContent]",
        Duration::from_secs(15),
    );
    eprintln!("offered: {} {}", offered[0], offered[2]);
    assert_eq!(offered[0], slides.share_id());
    assert!(offered[2].as_str().unwrap().contains("480×270"), "{offered}");
    // Its thumbnail shows the window's own picture (the app's window covers most of it on screen).
    let jpeg = offered[1].as_str().expect("a thumbnail").strip_prefix("data:image/jpeg;base64,").unwrap();
    let jpeg = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, jpeg).unwrap();
    let thumbnail = confer_media::to_i420(confer_media::PixelFormat::Mjpeg, &jpeg, 0, 0).unwrap();
    assert_eq!(read_stamp(&thumbnail).map(|s| s.id), Some(61), "the thumbnail shows the window");
    let listed = driver.execute(
        "return [...document.querySelectorAll('[data-testid=share-source]')].map(b => b.textContent)",
        &[],
    );
    assert!(
        !listed.as_array().unwrap().iter().any(|t| t.as_str().unwrap().contains("Confer")),
        "the app does not offer its own window: {listed}"
    );
    let problems = driver.accessibility_violations();
    assert!(problems.is_empty(), "the share picker's accessibility audit: {problems:#?}");
    xvfb.screenshot("share-picker", WINDOW);
    driver.click(&format!("[data-testid=share-source][data-source='{}']", slides.share_id()));
    let bar = driver.wait_for(
        "the sharing bar",
        "const b = document.querySelector('[data-testid=sharing-bar]'); return b && b.textContent",
        Duration::from_secs(10),
    );
    assert!(bar.as_str().unwrap().contains("You are sharing “Slides” with everyone."), "{bar}");
    std::thread::sleep(Duration::from_secs(5));
    driver.click("[data-testid=stop-share]");
    driver.wait_for(
        "the sharing bar gone",
        "return !document.querySelector('[data-testid=sharing-bar]')",
        Duration::from_secs(5),
    );
    // A file sent from the app (the command a drop on the window runs) reaches Bob whole; the
    // chat lists it as sent.
    let bytes: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let outbox = tempfile::tempdir().unwrap();
    let sent_path = outbox.path().join("notes.bin");
    std::fs::write(&sent_path, &bytes).unwrap();
    driver.click("[data-testid=chat-toggle]");
    driver.execute(
        "window.__TAURI_INTERNALS__.invoke('send_file', { path: arguments[0] }); return true",
        &[json!(sent_path.to_str().unwrap())],
    );
    let line = driver.wait_for(
        "the transfer listed as sent",
        "const l = document.querySelector('[data-testid=transfers] li[data-state=done]'); return l && l.textContent",
        Duration::from_secs(20),
    );
    assert!(line.as_str().unwrap().contains("Sent notes.bin (3.0 MB) to Bob"), "{line}");
    driver.click("[data-testid=leave]");
    driver.find("[data-testid=ended]", Duration::from_secs(10));

    let received = std::fs::read(downloads.path().join("notes.bin")).expect("Bob saved the file");
    assert!(received == bytes, "Bob's copy is the app's file, byte for byte");
    let (report, log) = report_of(bob);
    eprintln!("--- Bob: {report}\n{log}");
    let desk = peer(&report, "Desk");
    assert_eq!(desk["share_pattern_id"], 61, "Bob receives the window the app shared: {desk}");
    assert!(desk["share_frames_decoded"].as_u64().unwrap() >= 10, "{desk}");
    let told: Vec<&Value> =
        report["share"].as_array().unwrap().iter().filter(|e| e["event"] == "peer").collect();
    assert_eq!(
        told.iter().map(|e| e["sharing"].clone()).collect::<Vec<_>>(),
        [json!(true), json!(false)],
        "{told:?}"
    );
    eprintln!("app log:\n{}", home.log());
}
