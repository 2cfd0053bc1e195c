//! Relays sharing rooms through a real Redis, behind a real load balancer (HAProxy), in a real
//! call: a rolling upgrade restarts every instance, one after the other, and the call goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_tests::{
    LoadBalancer, Redis, Relay, SMALL, free_tcp_port, one_at_a_time, peer, report_of, spawn_synthetic,
};

#[test]
fn a_rolling_upgrade_of_every_relay_behind_a_load_balancer_drops_no_call() {
    let _serial = one_at_a_time();
    let redis = Redis::start();
    // Two instances with one state (token secret and certificate), reached through one address.
    let state = tempfile::tempdir().unwrap();
    let (port_a, port_b, public) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let public_url = format!("wss://localhost:{public}");
    let flags = ["--redis-url", &redis.url(), "--public-url", &public_url];
    let start = |port: u16| Relay::start_with(state.path(), &format!("127.0.0.1:{port}"), &flags);
    let mut a = start(port_a);
    let mut b = start(port_b);
    let _balancer = LoadBalancer::start(public, &[port_a, port_b]);
    std::thread::sleep(Duration::from_secs(1)); // both pass their first health check
    let (host_link, invite) = a.host();
    assert!(
        host_link.contains(&format!("localhost%3A{public}")),
        "links name the load balancer: {host_link}"
    );

    let ann = spawn_synthetic(&host_link, "Ann", 2, 16.0, SMALL, &[]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 15.0, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(5));
    // Upgrade A: SIGTERM (it hands its rooms over and tells its clients to resume), then the
    // new version starts on the same port. Then the same for B.
    a.terminate();
    a = start(port_a);
    std::thread::sleep(Duration::from_secs(4));
    b.terminate();
    b = start(port_b);

    let (bob_report, bob_log) = report_of(bob);
    let (ann_report, ann_log) = report_of(ann);
    let bob_left = bob_report["left_at_unix_ms"].as_u64().unwrap();
    for (me, other, report, log) in [("Ann", "Bob", ann_report, ann_log), ("Bob", "Ann", bob_report, bob_log)]
    {
        eprintln!("--- {me}: {report}\n{log}");
        assert!(report["ended"].is_null(), "{me}'s call ended: {report}");
        let early =
            report["left"].as_array().unwrap().iter().any(|l| l["at_unix_ms"].as_u64().unwrap() < bob_left);
        assert!(!early, "{me} saw someone leave during the upgrade: {report}");
        assert!(report["relay_resumes"].as_u64().unwrap() >= 1, "{me} never moved to another relay");
        // 15 fps for about 13 s connected: the pictures kept coming through both restarts.
        let seen = peer(&report, other);
        let frames = seen["video_frames_decoded"].as_u64().unwrap();
        assert!(frames >= 150, "{me} decoded only {frames} frames of {other} across the upgrade");
        let gap = seen["longest_video_gap_ms"].as_u64().unwrap();
        assert!(gap < 1_000, "{me}'s picture of {other} froze for {gap} ms during the upgrade");
        eprintln!(
            "{me}: {frames} frames of {other}, longest gap {gap} ms, {} relay moves",
            report["relay_resumes"]
        );
    }
    drop((a, b));
}
