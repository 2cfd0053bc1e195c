//! Relays sharing rooms through a real Redis, behind a real load balancer (HAProxy), in real
//! calls: every instance drained (a rolling upgrade) or killed, one after the other, and the call
//! goes on; participants spread over three instances; the deployment files as shipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use confer_media::synthetic::tone_hz;
use confer_mesh::signaling::{self, Admission, JoinOptions, Signaling, SignalingEvent};
use confer_proto::{InviteLink, PeerId, SignalPayload};
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

/// A participant that stays in its room through everything and echoes back every signal it gets.
struct Resident {
    room: usize,
    signaling: Signaling,
    events: mpsc::Receiver<SignalingEvent>,
}

/// What a resident saw.
#[derive(Debug, Default)]
struct ResidentLog {
    echoed: usize,
    resumed: usize,
    /// Signals tagged for another room.
    misrouted: Vec<String>,
    /// Signals that arrived twice.
    duplicates: Vec<String>,
    /// Why its signaling ended before the test told it to leave.
    ended: Option<String>,
}

impl Resident {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> ResidentLog {
        let mut log = ResidentLog::default();
        let mut seen = std::collections::HashSet::new();
        loop {
            let event = tokio::select! {
                event = self.events.recv() => event,
                _ = stop.changed() => {
                    self.signaling.leave();
                    return log;
                }
            };
            match event {
                Some(SignalingEvent::Signal {
                    from,
                    payload: SignalPayload::Candidate { candidate, .. },
                }) => {
                    let tag = tag_of(&candidate);
                    if !tag.starts_with(&format!("r{}w", self.room)) {
                        log.misrouted.push(tag.clone());
                    }
                    if !seen.insert(tag.clone()) {
                        log.duplicates.push(tag.clone());
                    }
                    self.signaling.signal(from, candidate_tagged(&tag));
                    log.echoed += 1;
                }
                Some(SignalingEvent::Resumed { .. }) => log.resumed += 1,
                Some(SignalingEvent::Ended(why)) => {
                    log.ended = Some(format!("{why:?}"));
                    return log;
                }
                None => {
                    log.ended = Some("events closed".into());
                    return log;
                }
                Some(_) => {}
            }
        }
    }
}

/// A candidate whose foundation is `tag` (letters and digits, as ICE allows there).
fn candidate_tagged(tag: &str) -> SignalPayload {
    SignalPayload::Candidate {
        candidate: format!("candidate:{tag} 1 udp 1 127.0.0.1 9 typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

fn tag_of(candidate: &str) -> String {
    candidate.strip_prefix("candidate:").and_then(|c| c.split(' ').next()).unwrap_or_default().to_owned()
}

/// What one worker of the join/leave load saw.
#[derive(Debug, Default)]
struct WorkerLog {
    /// Joins that seated it (after retries).
    joins: usize,
    /// Every failed attempt, with its reason.
    failed_attempts: Vec<String>,
    /// Joins that still failed after 20 s of retrying.
    given_up: Vec<String>,
    /// Seated, but the resident of its room was not among the participants.
    wrong_room: Vec<String>,
    /// Signals to the resident never echoed within 15 s, resent on every resume.
    unanswered: Vec<String>,
}

/// Joins room `room` through `invite`, signals its resident and waits for the echo, leaves;
/// again and again until told to stop. A join that fails is retried every 250 ms, as the app's
/// lobby would on a relay that is restarting.
async fn join_leave_load(
    worker: usize,
    room: usize,
    invite: InviteLink,
    resident: PeerId,
    stop: watch::Receiver<bool>,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let mut cycle = 0;
    while !*stop.borrow() {
        cycle += 1;
        let give_up_at = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut options = JoinOptions::new(&format!("w{worker}"));
        options.reconnect_for = Duration::from_secs(20);
        let seated = loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(12), signaling::join(&invite, options.clone()));
            let reason = match attempt.await {
                Ok(Ok((signaling, Admission::Joined(session), events))) => {
                    break Some((signaling, session, events));
                }
                Ok(Ok((_, Admission::Knocking { .. }, _))) => "told to knock in an open room".to_owned(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => "no answer in 12 s".to_owned(),
            };
            log.failed_attempts.push(reason.clone());
            if tokio::time::Instant::now() > give_up_at {
                log.given_up.push(format!("worker {worker} cycle {cycle}: {reason}"));
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let Some((signaling, session, mut events)) = seated else { continue };
        log.joins += 1;
        if !session.participants.iter().any(|p| p.id == resident) {
            log.wrong_room.push(format!("worker {worker} cycle {cycle}: {:?}", session.participants));
        }
        let mut send = 0;
        let mut tag = format!("r{room}w{worker}c{cycle}s{send}");
        signaling.signal(resident.clone(), candidate_tagged(&tag));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let answered = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(SignalingEvent::Signal {
                    from,
                    payload: SignalPayload::Candidate { candidate, .. },
                })) if from == resident && tag_of(&candidate) == tag => {
                    break true;
                }
                // Back from a relay that went away: what was sent just before may be lost.
                Ok(Some(SignalingEvent::Resumed { .. })) => {
                    send += 1;
                    tag = format!("r{room}w{worker}c{cycle}s{send}");
                    signaling.signal(resident.clone(), candidate_tagged(&tag));
                }
                Ok(Some(SignalingEvent::Ended(why))) => {
                    log.unanswered.push(format!("{tag}: signaling ended: {why:?}"));
                    break false;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break false,
            }
        };
        if !answered && !log.unanswered.iter().any(|u| u.starts_with(&tag)) {
            log.unanswered.push(format!("{tag}: no echo in 15 s"));
        }
        signaling.leave();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(events.recv().await, Some(SignalingEvent::Ended(_)) | None) {}
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log
}

#[test]
fn a_rolling_restart_of_three_relays_under_join_leave_load_fails_no_join_that_a_retry_does_not_mend() {
    let _serial = one_at_a_time();
    let redis = Redis::start();
    let state = tempfile::tempdir().unwrap();
    let ports = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let public = free_tcp_port();
    let public_url = format!("wss://localhost:{public}");
    let flags = ["--redis-url", &redis.url(), "--public-url", &public_url, "--grace", "30"];
    let start = |port: u16| Relay::start_with(state.path(), &format!("127.0.0.1:{port}"), &flags);
    let mut relays = ports.map(start);
    let _balancer = LoadBalancer::start(public, &ports);
    std::thread::sleep(Duration::from_secs(1)); // all pass their first health check
    let links: Vec<(InviteLink, InviteLink)> = (0..3)
        .map(|r| {
            let (host, invite) = relays[r].host();
            (InviteLink::parse(&host).unwrap(), InviteLink::parse(&invite).unwrap())
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop_residents, residents_stop) = watch::channel(false);
    let (stop_load, load_stop) = watch::channel(false);
    let mut residents = Vec::new();
    let mut workers = Vec::new();
    for (room, (host, invite)) in links.iter().enumerate() {
        let (signaling, admission, events) = runtime
            .block_on(signaling::join(host, JoinOptions::new(&format!("resident{room}"))))
            .expect("the resident joins");
        let Admission::Joined(session) = admission else { panic!("the host knocks") };
        let resident = Resident { room, signaling, events };
        residents.push(runtime.spawn(resident.run(residents_stop.clone())));
        for worker in [2 * room, 2 * room + 1] {
            let load =
                join_leave_load(worker, room, invite.clone(), session.peer_id.clone(), load_stop.clone());
            workers.push(runtime.spawn(load));
        }
    }

    // Steady load, then each instance drained (SIGTERM) and started again on its port, 4 s apart.
    std::thread::sleep(Duration::from_secs(3));
    for (relay, port) in relays.iter_mut().zip(ports) {
        relay.terminate();
        *relay = start(port);
        std::thread::sleep(Duration::from_secs(4));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop_load.send(true).unwrap();
    let logs: Vec<WorkerLog> = runtime.block_on(async {
        let mut logs = Vec::new();
        for worker in workers {
            logs.push(tokio::time::timeout(Duration::from_secs(60), worker).await.unwrap().unwrap());
        }
        logs
    });
    stop_residents.send(true).unwrap();
    let resident_logs: Vec<ResidentLog> = runtime.block_on(async {
        let mut logs = Vec::new();
        for resident in residents {
            logs.push(tokio::time::timeout(Duration::from_secs(10), resident).await.unwrap().unwrap());
        }
        logs
    });

    let joins: usize = logs.iter().map(|l| l.joins).sum();
    let mut reasons: Vec<&String> = logs.iter().flat_map(|l| &l.failed_attempts).collect();
    reasons.sort();
    eprintln!("{joins} joins, {} failed attempts, all retried: {reasons:?}", reasons.len());
    for (worker, log) in logs.iter().enumerate() {
        assert!(log.given_up.is_empty(), "worker {worker}: joins a retry did not mend: {:?}", log.given_up);
        assert!(
            log.wrong_room.is_empty(),
            "worker {worker} seated without its resident: {:?}",
            log.wrong_room
        );
        assert!(log.unanswered.is_empty(), "worker {worker}: signals never answered: {:?}", log.unanswered);
        assert!(log.joins >= 5, "worker {worker} joined only {} times: the load was not steady", log.joins);
    }
    for (room, log) in resident_logs.iter().enumerate() {
        eprintln!("resident of room {room}: {log:?}");
        assert!(log.ended.is_none(), "the resident of room {room} lost its seat: {:?}", log.ended);
        assert!(log.misrouted.is_empty(), "signals of another room reached room {room}: {:?}", log.misrouted);
        assert!(log.duplicates.is_empty(), "signals delivered twice in room {room}: {:?}", log.duplicates);
        assert!(log.resumed >= 1, "the resident of room {room} was never moved: did its relay restart?");
        assert!(log.echoed >= 5, "room {room} saw only {} signals", log.echoed);
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
