//! Relays sharing rooms through a real Redis, behind a real load balancer (HAProxy), in real
//! calls: every instance drained (a rolling upgrade) or killed, one after the other, and the call
//! goes on; participants spread over three instances; the deployment files as shipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::{
    LoadBalancer, Redis, Relay, SMALL, free_tcp_port, one_at_a_time, peer, report_of, spawn_synthetic,
};

/// How a relay is taken down in the middle of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGTERM: it hands its rooms over and tells its clients to resume (a rolling upgrade).
    Drain,
    /// SIGKILL: no hand-over, no goodbye (a crash).
    Kill,
}

/// Ann and Bob call through HAProxy in front of two relays with one state (token secret and
/// certificate) sharing rooms through Redis. 5 s in, each relay in turn is taken down and started
/// again on its port, 4 s apart, so that the one holding the room is among them. Checks that the
/// call went on for both (nobody left, no call ended, the pictures kept coming); returns each
/// time a participant came back into the room: who, and how many ms after its relay went down.
fn call_across_outages(outage: Outage) -> Vec<(&'static str, u64)> {
    let _serial = one_at_a_time();
    let redis = Redis::start();
    let state = tempfile::tempdir().unwrap();
    let ports = [free_tcp_port(), free_tcp_port()];
    let public = free_tcp_port();
    let public_url = format!("wss://localhost:{public}");
    let flags = ["--redis-url", &redis.url(), "--public-url", &public_url];
    let start = |port: u16| Relay::start_with(state.path(), &format!("127.0.0.1:{port}"), &flags);
    let mut relays = ports.map(start);
    let _balancer = LoadBalancer::start(public, &ports);
    std::thread::sleep(Duration::from_secs(1)); // both pass their first health check
    let (host_link, invite) = relays[0].host();
    assert!(
        host_link.contains(&format!("localhost%3A{public}")),
        "links name the load balancer: {host_link}"
    );

    let ann = spawn_synthetic(&host_link, "Ann", 2, 16.0, SMALL, &[]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 15.0, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(5));
    let mut downs = Vec::new();
    for (relay, port) in relays.iter_mut().zip(ports) {
        downs.push(confer_tests::unix_ms());
        match outage {
            Outage::Drain => relay.terminate(),
            Outage::Kill => relay.kill(),
        }
        *relay = start(port);
        std::thread::sleep(Duration::from_secs(4));
    }

    let (bob_report, bob_log) = report_of(bob);
    let (ann_report, ann_log) = report_of(ann);
    let bob_left = bob_report["left_at_unix_ms"].as_u64().unwrap();
    let mut backs = Vec::new();
    for (me, other, report, log) in [("Ann", "Bob", ann_report, ann_log), ("Bob", "Ann", bob_report, bob_log)]
    {
        eprintln!("--- {me}: {report}\n{log}");
        assert!(report["ended"].is_null(), "{me}'s call ended ({outage:?}): {report}");
        let early =
            report["left"].as_array().unwrap().iter().any(|l| l["at_unix_ms"].as_u64().unwrap() < bob_left);
        assert!(!early, "{me} saw someone leave ({outage:?}): {report}");
        // 15 fps for about 13 s connected: the pictures kept coming through both outages.
        let seen = peer(&report, other);
        let frames = seen["video_frames_decoded"].as_u64().unwrap();
        assert!(frames >= 150, "{me} decoded only {frames} frames of {other} ({outage:?})");
        let gap = seen["longest_video_gap_ms"].as_u64().unwrap();
        assert!(gap < 1_000, "{me}'s picture of {other} froze for {gap} ms ({outage:?})");
        eprintln!("{me}: {frames} frames of {other}, longest gap {gap} ms");
        for back in report["relay_back"].as_array().unwrap() {
            let at = back["at_unix_ms"].as_u64().unwrap();
            let down = downs.iter().rev().find(|&&d| d <= at).copied().unwrap_or(at);
            backs.push((me, at - down));
        }
    }
    eprintln!("back in the room after a relay went down ({outage:?}; who, ms): {backs:?}");
    backs
}

#[test]
fn a_rolling_upgrade_of_every_relay_behind_a_load_balancer_drops_no_call() {
    let backs = call_across_outages(Outage::Drain);
    for me in ["Ann", "Bob"] {
        assert!(backs.iter().any(|(who, _)| *who == me), "{me} never moved to another relay: {backs:?}");
    }
    for (me, took) in &backs {
        assert!(*took < 5_000, "{me} took {took} ms to get back after a drain");
    }
}

#[test]
fn relays_killed_mid_call_behind_the_load_balancer_cost_nobody_the_call() {
    let backs = call_across_outages(Outage::Kill);
    assert!(backs.len() >= 2, "both relays were killed: both participants had to come back: {backs:?}");
    for (me, took) in &backs {
        assert!(*took < 10_000, "{me} took {took} ms to get back after a crash");
    }
}

#[test]
fn four_people_each_on_another_of_three_relays_hold_one_call() {
    let _serial = one_at_a_time();
    let redis = Redis::start();
    let state = tempfile::tempdir().unwrap();
    let public = free_tcp_port();
    let public_url = format!("wss://localhost:{public}");
    let flags = ["--redis-url", &redis.url(), "--public-url", &public_url];
    let relays: Vec<Relay> = (0..3).map(|_| Relay::start_with(state.path(), "127.0.0.1:0", &flags)).collect();
    let (host_link, invite) = relays[0].host();
    // Each participant goes to its own instance (the links name the shared address; pointing one
    // at an instance directly is what a load balancer would do).
    let at = |link: &str, relay: &Relay| {
        link.replace(&format!("localhost%3A{public}"), &format!("localhost%3A{}", relay.port))
    };
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = at(if i == 0 { &host_link } else { &invite }, &relays[i % 3]);
        assert!(!link.contains(&format!("%3A{public}")), "{link}");
        let chat = format!("hello from {name}");
        let extra = ["--chat", chat.as_str(), "--chat-after", "6"];
        children.push(spawn_synthetic(&link, name, i as u32 + 2, 10.0 - 0.2 * i as f64, SMALL, &extra));
    }
    let reports: Vec<(serde_json::Value, String)> = children.into_iter().map(report_of).collect();
    for ((report, log), me) in reports.iter().zip(names) {
        eprintln!("--- {me}: {report}\n{log}");
    }
    for ((report, _), me) in reports.iter().zip(names) {
        assert!(report["ended"].is_null(), "{me}'s call ended: {report}");
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
            let chats = report["chat"].as_array().unwrap();
            let said = format!("hello from {other}");
            assert!(
                chats.iter().any(|c| c["text"] == said.as_str()),
                "{me} got no chat from {other}: {report}"
            );
        }
    }
}

#[test]
fn the_deployment_systemd_unit_is_one_systemd_accepts_without_a_complaint() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/confer-relay.service"))
            .unwrap();
    assert!(shipped.contains("ExecStart=/usr/bin/confer-relay "), "the unit runs the packaged binary");
    // The unit as shipped, run against the binary built here (verify checks that it exists).
    let relay = confer_tests::binary("confer-relay", "confer-relay");
    let unit =
        shipped.replace("ExecStart=/usr/bin/confer-relay ", &format!("ExecStart={} ", relay.display()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confer-relay.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (scripts/test installs Debian's systemd)");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
}
