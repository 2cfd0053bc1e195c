//! Screen sharing in real calls: a headless `confer` shares a real X window (on Xvfb) whose
//! content the test paints, the others receive it on the share track beside the camera and read
//! the window's pattern back; closing the window ends the share for everyone within a second; a
//! participant who joins while a share runs receives it; a share stopped by its sharer ends for
//! everyone; the relay allows one share at a time (a second sharer is told who shares) and a
//! host can stop a share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::Duration;

use confer_tests::desktop::Xvfb;
use confer_tests::screen::PatternWindow;
use confer_tests::{Relay, SMALL, binary, one_at_a_time, peer, report_of, spawn_synthetic};
use serde_json::Value;

/// When `report`'s share log says `what` (`started`/`stopped` of its own share, or a peer's
/// `sharing` turning `to`), in Unix ms.
fn logged(report: &Value, event: &str, to: Option<bool>) -> Option<u64> {
    report["share"].as_array().unwrap().iter().find_map(|e| {
        (e["event"] == event && to.is_none_or(|to| e["sharing"] == to))
            .then(|| e["at_unix_ms"].as_u64().unwrap())
    })
}

#[test]
fn a_shared_window_reaches_everyone_and_closing_it_ends_the_share_within_a_second() {
    let _serial = one_at_a_time();
    let xvfb = Xvfb::start();
    let window = PatternWindow::open(&xvfb.display, "Slides", 91, (40, 40), (640, 360));
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let share_id = window.share_id();
    let ann = Command::new(binary("confer-cli", "confer"))
        .args(["join", &host_link, "--name", "Ann", "--synthetic", "--pattern-id", "2", "--duration", "13"])
        .args(["--report", "json", "--size", SMALL.0, "--fps", &SMALL.1.to_string()])
        .args(["--share", &share_id, "--share-fps", "10"])
        .env("DISPLAY", &xvfb.display)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bob = spawn_synthetic(&invite, "Bob", 3, 12.0, SMALL, &[]);
    let cid = spawn_synthetic(&invite, "Cid", 4, 12.0, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(7));
    let closed_at = confer_tests::unix_ms();
    window.close();
    let (ann, ann_log) = report_of(ann);
    eprintln!("--- Ann: {ann}\n{ann_log}");
    let started = logged(&ann, "started", None).expect("Ann's share started");
    let stopped = logged(&ann, "stopped", None).expect("Ann's share stopped when the window closed");
    let why = ann["share"].as_array().unwrap().iter().find(|e| e["event"] == "stopped").unwrap();
    assert_eq!(why["reason"], "the shared window was closed");
    eprintln!("Ann's share ran {} ms; stopped {} ms after the close", stopped - started, stopped - closed_at);
    for (child, me) in [(bob, "Bob"), (cid, "Cid")] {
        let (report, log) = report_of(child);
        eprintln!("--- {me}: {report}\n{log}");
        let seen = peer(&report, "Ann");
        assert_eq!(seen["share_pattern_id"], 91, "{me} reads the window's pattern from Ann's share");
        assert_eq!(seen["pattern_id"], 2, "{me} still sees Ann's camera beside her share");
        let frames = seen["share_frames_decoded"].as_u64().unwrap();
        assert!(frames >= 20, "{me} decoded {frames} pictures of a 10 fps share that ran for about 6 s");
        assert_eq!(seen["sharing"], false, "{me} knows the share ended");
        let on = logged(&report, "peer", Some(true)).expect("told that Ann shares");
        let off = logged(&report, "peer", Some(false)).expect("told that Ann stopped sharing");
        eprintln!(
            "{me}: told of the share {} ms after it started, of its end {} ms after the window closed; \
             glass-to-glass p50 {} ms",
            on.saturating_sub(started),
            off - closed_at,
            seen["share_latency_ms"]["p50"]
        );
        assert!(off - closed_at < 1_000, "{me} was told {} ms after the window closed", off - closed_at);
    }
}

#[test]
fn a_late_joiner_receives_a_share_in_progress_and_the_sharer_stopping_ends_it() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    // Ann shares once Cid is connected (about a second in), for 8 s.
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        7,
        13.0,
        SMALL,
        &["--share", "synthetic", "--share-fps", "5", "--share-for", "8"],
    );
    let cid = spawn_synthetic(&invite, "Cid", 9, 13.0, SMALL, &[]);
    // Bob comes 4 s later, while the share runs, and stays past its end.
    std::thread::sleep(Duration::from_secs(4));
    let bob = spawn_synthetic(&invite, "Bob", 8, 8.0, SMALL, &[]);
    let (ann, ann_log) = report_of(ann);
    let (bob, bob_log) = report_of(bob);
    let (cid, cid_log) = report_of(cid);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}\n--- Cid: {cid}\n{cid_log}");
    let started = logged(&ann, "started", None).expect("Ann's share started");
    let bob_joined = bob["peers"].as_array().unwrap().len();
    assert_eq!(bob_joined, 2, "Bob met Ann and Cid");
    let stopped = logged(&ann, "stopped", None).expect("Ann stopped her share");
    let why = ann["share"].as_array().unwrap().iter().find(|e| e["event"] == "stopped").unwrap();
    assert_eq!(why["reason"], Value::Null, "stopped because asked");
    let seen = peer(&bob, "Ann");
    assert_eq!(seen["share_pattern_id"], 7, "Bob, joining late, receives the share in progress");
    let first = seen["share_first_frame_ms"].as_u64().unwrap();
    eprintln!("Bob's first share picture {first} ms after joining");
    assert!(first < 3_000, "the late joiner waited {first} ms for the share");
    assert!(
        logged(&bob, "peer", Some(true)).is_some_and(|on| on > started + 2_000),
        "Bob joined well after the share started"
    );
    for (report, me) in [(&bob, "Bob"), (&cid, "Cid")] {
        let off =
            logged(report, "peer", Some(false)).unwrap_or_else(|| panic!("{me} told that the share ended"));
        eprintln!("{me} told {} ms after Ann stopped", off as i64 - stopped as i64);
        assert!(
            off.abs_diff(stopped) < 1_000,
            "{me} was told {} ms after Ann stopped",
            off as i64 - stopped as i64
        );
        assert_eq!(peer(report, "Ann")["sharing"], false);
    }
}

#[test]
fn one_share_at_a_time_the_second_is_told_who_shares_and_a_host_can_stop_a_share() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    // Ann (host) shares from the start for 6 s and stops every share at 11 s; Bob asks at 3 s,
    // while Ann's runs; Cid asks at 9 s, after it.
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        11,
        14.0,
        SMALL,
        &["--share", "synthetic", "--share-for", "6", "--host-stop-shares-after", "11"],
    );
    let bob =
        spawn_synthetic(&invite, "Bob", 12, 14.0, SMALL, &["--share", "synthetic", "--share-after", "3"]);
    let cid =
        spawn_synthetic(&invite, "Cid", 13, 14.0, SMALL, &["--share", "synthetic", "--share-after", "9"]);
    let (ann, ann_log) = report_of(ann);
    let (bob, bob_log) = report_of(bob);
    let (cid, cid_log) = report_of(cid);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}\n--- Cid: {cid}\n{cid_log}");
    // Bob was refused, told who shares, and sent nothing.
    assert_eq!(logged(&bob, "started", None), None, "Bob's share never started");
    let refused =
        bob["share"].as_array().unwrap().iter().find(|e| e["event"] == "stopped").expect("Bob told");
    let why = refused["reason"].as_str().unwrap();
    assert!(why.contains("Ann is sharing; one share at a time"), "{why}");
    for report in [&ann, &cid] {
        assert_eq!(peer(report, "Bob")["share_frames_decoded"], 0, "nobody received a share from Bob");
    }
    // Cid's share, after Ann's, was granted and reached the others...
    assert!(logged(&cid, "started", None).is_some(), "Cid shared once Ann had stopped");
    assert_eq!(peer(&bob, "Cid")["share_pattern_id"], 13);
    assert_eq!(peer(&ann, "Cid")["share_pattern_id"], 13);
    // ...until the host stopped it, which Cid was told by name.
    let stopped =
        cid["share"].as_array().unwrap().iter().find(|e| e["event"] == "stopped").expect("Cid's stop");
    assert_eq!(stopped["reason"], "a host stopped your share");
    assert_eq!(peer(&bob, "Cid")["sharing"], false);
}
