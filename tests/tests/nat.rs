//! The NAT lab's first cases (issue 23; the rest of its table follows): real network namespaces, real NAT (iptables MASQUERADE, and
//! `--random-fully` for a symmetric NAT), the real relay with its built-in TURN on the lab's
//! "internet", and real `confer join` participants behind the routers. Each case asserts both
//! directions' video (the synthetic pattern read back) and the path the call took, and prints
//! join to first frame. Nothing here touches this machine's own network: every address, route and
//! rule is made inside the lab's namespaces (see `confer_tests::lab`), which are deleted after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use confer_tests::lab::{Firewall, Lab, Nat, RELAY_IP};
use confer_tests::{Relay, SMALL, report_of, spawn_synthetic_in};

/// A call between hosts `a` and `b` of `lab` through a relay on the lab's internet; returns each
/// side's (local, remote) candidate types after asserting both saw and heard each other.
fn call(lab: &Lab, a: usize, b: usize, extra: &[&str]) -> [(String, String); 2] {
    let state = tempfile::tempdir().unwrap();
    let listen = format!("{RELAY_IP}:443");
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &listen, &[]);
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic_in(Some(lab.host(a)), &host_link, "Ann", 2, 12.0, SMALL, extra);
    let bob = spawn_synthetic_in(Some(lab.host(b)), &invite, "Bob", 3, 12.0, SMALL, extra);
    // Both reports first: an assertion about one must not leave the other running.
    let reports = [("Ann", "Bob", 3, report_of(ann)), ("Bob", "Ann", 2, report_of(bob))];
    let mut paths = Vec::new();
    for (me, other, pattern, (report, log)) in reports {
        eprintln!("--- {me}: {report}\n{log}");
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other, "{me}");
        assert_eq!(seen["pattern_id"], pattern, "{me} saw {other}'s video");
        assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 30, "{me}: {seen}");
        eprintln!("{me}: join to first frame {} ms", seen["first_frame_ms"]);
        let types = |key: &str| seen[key].as_str().unwrap_or("?").to_owned();
        paths.push((types("candidate_type"), types("remote_candidate_type")));
    }
    drop(relay);
    [paths[0].clone(), paths[1].clone()]
}

/// Two hosts on one LAN behind one router: they connect on their host addresses.
#[test]
fn the_same_lan_connects_directly() {
    let mut lab = Lab::new("lan");
    let hosts = lab.site(Nat::Masquerade, Firewall::Open, 2);
    for (local, remote) in call(&lab, hosts[0], hosts[1], &[]) {
        assert_eq!(local, "host");
        // The peer's host address, whether its candidate or its first check arrived first (then
        // it is peer-reflexive): the router translates only what leaves by its uplink, so the
        // two hosts see each other's LAN addresses and nothing else.
        assert!(remote == "host" || remote == "prflx", "remote {remote}");
    }
}

/// Two sites behind symmetric NATs (a new port per destination): no direct pair can work, and
/// the call goes through the relay's built-in TURN server.
#[test]
fn two_symmetric_nats_connect_through_the_relay() {
    let mut lab = Lab::new("sym");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let paths = call(&lab, a, b, &[]);
    assert!(paths.iter().any(|(local, remote)| local == "relay" || remote == "relay"), "{paths:?}");
}
