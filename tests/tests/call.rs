//! Real calls on loopback: the real relay binary, headless `confer` participants with synthetic
//! media, real WebRTC peer connections between them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::{Relay, SMALL, one_at_a_time, peer, report_of, spawn_synthetic};

#[test]
fn four_participants_see_and_hear_each_other_chat_react_queue_hands_and_see_mute() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let chat = format!("hello from {name}");
        // Everyone greets everyone at 7 s, when all four are in the call.
        let mut extra = vec!["--chat", chat.as_str(), "--chat-after", "7"];
        if *name == "Bob" {
            extra.extend(["--mute-after", "7", "--react", "👏"]);
        }
        // Cid raises a hand at 5 s, Ann at 6 s: the queue keeps that order for everyone.
        if *name == "Cid" {
            extra.extend(["--raise-hand-after", "5"]);
        }
        if *name == "Ann" {
            extra.extend(["--raise-hand-after", "6"]);
        }
        // Dee joins late: 3 s after the others, and stays as long.
        if *name == "Dee" {
            std::thread::sleep(Duration::from_secs(3));
        }
        let seconds = if *name == "Dee" { 9.0 } else { 12.0 - 0.2 * i as f64 };
        children.push(spawn_synthetic(link, name, i as u32 + 2, seconds, SMALL, &extra));
    }
    let reports: Vec<(serde_json::Value, String)> = children.into_iter().map(report_of).collect();
    for ((report, log), me) in reports.iter().zip(names) {
        eprintln!("--- {me}: {report}\n{log}");
    }
    for ((report, _), me) in reports.iter().zip(names) {
        for (j, other) in names.iter().enumerate() {
            if *other == me {
                continue;
            }
            let seen = peer(report, other);
            assert_eq!(seen["pattern_id"], j as u64 + 2, "{me} reads {other}'s video pattern");
            assert_eq!(seen["audio_tone_hz"], tone_hz(j as u32 + 2), "{me} hears {other}'s tone");
            assert!(
                seen["video_frames_decoded"].as_u64().unwrap() >= 30,
                "{me} decoded too little of {other}"
            );
            assert_eq!(seen["candidate_type"], "host");
            let rtt = seen["rtt_ms"].as_f64().unwrap_or_else(|| panic!("{me} has no RTT to {other}"));
            assert!((0.0..1_000.0).contains(&rtt), "{me}'s RTT to {other} on loopback: {rtt} ms");
            let chats = report["chat"].as_array().unwrap();
            assert!(
                chats.iter().any(|c| c["text"] == format!("hello from {other}")),
                "{me} did not get {other}'s chat: {chats:?}"
            );
            if *other == "Cid" && me != "Ann" {
                let (cid, ann) = (seen["hand_order"].as_u64(), peer(report, "Ann")["hand_order"].as_u64());
                assert!(
                    cid.is_some() && ann.is_some() && cid < ann,
                    "{me}'s queue: Cid {cid:?}, then Ann {ann:?}"
                );
            }
            if *other == "Bob" {
                assert_eq!(seen["muted"], true, "{me} does not see Bob muted");
                let reactions = report["reactions"].as_array().unwrap();
                assert!(
                    reactions.iter().any(|r| r["from"] == seen["id"] && r["emoji"] == "👏"),
                    "{me} did not get Bob's applause: {reactions:?}"
                );
            }
        }
    }
}

#[test]
fn leaving_and_crashing_participants_disappear_from_the_others() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    // A 3 s grace period, so a crashed participant's seat ends quickly.
    let relay = Relay::start_with(state.path(), "127.0.0.1:0", &["--grace", "3"]);
    let (host_link, invite) = relay.host();
    let stayer = spawn_synthetic(&host_link, "Stay", 2, 12.0, SMALL, &[]);
    let leaver = spawn_synthetic(&invite, "Leave", 3, 4.0, SMALL, &[]);
    let mut crasher = spawn_synthetic(&invite, "Crash", 4, 30.0, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(5));
    crasher.kill().unwrap();
    let _ = crasher.wait();
    let (leaver_report, _) = report_of(leaver);
    let (report, log) = report_of(stayer);
    eprintln!("{report}\n{log}");
    let left_at = |name: &str| -> u64 {
        let id = peer(&report, name)["id"].as_str().unwrap().to_owned();
        report["left"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{name} never left: {report}"))["at_unix_ms"]
            .as_u64()
            .unwrap()
    };
    let took = left_at("Leave").saturating_sub(leaver_report["left_at_unix_ms"].as_u64().unwrap());
    assert!(took <= 2_000, "a participant that left was gone from the others only after {took} ms");
    // The crashed one: first reconnecting (its seat is kept), then gone after the grace period.
    let crash_id = peer(&report, "Crash")["id"].as_str().unwrap().to_owned();
    let reconnecting =
        report["reconnecting"].as_array().unwrap().iter().find(|r| r["id"] == crash_id.as_str());
    let reconnecting_at = reconnecting
        .unwrap_or_else(|| panic!("the crash never showed as reconnecting: {report}"))["at_unix_ms"]
        .as_u64()
        .unwrap();
    let gone_at = left_at("Crash");
    assert!(gone_at > reconnecting_at, "left before reconnecting");
    assert!(
        (2_500..8_000).contains(&(gone_at - reconnecting_at)),
        "gone {} ms after reconnecting, grace is 3 s",
        gone_at - reconnecting_at
    );
}

#[test]
fn a_relay_restart_mid_call_keeps_media_flowing_and_nobody_drops() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(state.path(), "127.0.0.1:0");
    let port = relay.port;
    let (host_link, invite) = relay.host();
    // Bob leaves first, at the end; until then nobody may leave.
    let ann = spawn_synthetic(&host_link, "Ann", 2, 13.0, SMALL, &[]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 12.0, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(4));
    relay.terminate();
    std::thread::sleep(Duration::from_millis(500));
    let _relay = Relay::start(state.path(), &format!("127.0.0.1:{port}"));
    let (bob_report, bob_log) = report_of(bob);
    let (ann_report, ann_log) = report_of(ann);
    let bob_left = bob_report["left_at_unix_ms"].as_u64().unwrap();
    for (me, other, report, log) in [("Ann", "Bob", ann_report, ann_log), ("Bob", "Ann", bob_report, bob_log)]
    {
        eprintln!("--- {me}: {report}\n{log}");
        assert!(report["relay_resumes"].as_u64().unwrap() >= 1, "{me} never resumed signaling");
        let early =
            report["left"].as_array().unwrap().iter().any(|l| l["at_unix_ms"].as_u64().unwrap() < bob_left);
        assert!(!early, "{me} saw someone leave during the call: {report}");
        assert!(report["ended"].is_null(), "{me}'s call ended: {report}");
        let seen = peer(&report, other);
        // 15 fps for about 11 s connected: most frames arrived across the restart.
        let frames = seen["video_frames_decoded"].as_u64().unwrap();
        assert!(frames >= 120, "{me} decoded only {frames} frames of {other} across the restart");
    }
}

#[test]
fn devices_are_switched_in_the_call_and_a_missing_one_changes_nothing() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    // At 4 s Ann first asks for a camera that is not there, then switches to pattern 9's
    // synthetic camera and microphone.
    let switch = ["--switch-after", "4", "--try-camera", "/dev/video-nowhere", "--switch-pattern", "9"];
    let ann = spawn_synthetic(&host_link, "Ann", 2, 10.0, SMALL, &switch);
    let bob = spawn_synthetic(&invite, "Bob", 3, 9.5, SMALL, &[]);
    let (ann_report, ann_log) = report_of(ann);
    let (bob_report, bob_log) = report_of(bob);
    eprintln!("--- Ann: {ann_report}\n{ann_log}\n--- Bob: {bob_report}\n{bob_log}");
    let errors = ann_report["device_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "the missing camera is reported once: {errors:?}");
    assert_eq!(errors[0]["device"], "camera");
    assert!(errors[0]["reason"].as_str().unwrap().contains("video-nowhere"), "{errors:?}");
    let mut switched: Vec<&str> =
        ann_report["device_switches"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    switched.sort_unstable();
    assert_eq!(switched, ["camera", "microphone"]);
    let seen = peer(&bob_report, "Ann");
    assert_eq!(seen["pattern_id"], 9, "Bob sees Ann's new camera");
    assert_eq!(seen["audio_tone_hz"], tone_hz(9), "Bob hears Ann's new microphone");
    // About 9 s at 15 fps: the switch costs a frame or two, not seconds.
    let frames = seen["video_frames_decoded"].as_u64().unwrap();
    assert!(frames >= 110, "Bob decoded only {frames} frames of Ann across the switch");
}
