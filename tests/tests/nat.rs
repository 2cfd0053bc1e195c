//! The NAT lab (issue 23): real network namespaces, real NAT (iptables MASQUERADE, and
//! `--random-fully` for a symmetric NAT) and firewalls, the real relay with its built-in TURN on
//! the lab's "internet", and real `confer join` participants behind the routers. Each case asserts
//! both directions' video (the synthetic pattern read back) and the path the call took, and prints
//! join to first frame. Nothing here touches this machine's own network: every address, route and
//! rule is made inside the lab's namespaces (see `confer_tests::lab`), which are deleted after.
//! The cases run one at a time: each call is short, and two calls at once on two cores would make
//! the timings they print meaningless.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use confer_tests::lab::{COTURN_IP, Firewall, Lab, Nat, RELAY_IP};
use confer_tests::{
    Relay, SMALL, Turn, assert_told_within_15_s, check_in, report_and_code_of, report_of, spawn_synthetic_in,
};

/// One case at a time (see the module's documentation).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LAB: Mutex<()> = Mutex::new(());
    LAB.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The path one side of a call took, from its report.
#[derive(Debug, Clone)]
struct Path {
    /// The selected pair's local candidate type.
    local: String,
    /// The selected pair's remote candidate type.
    remote: String,
    /// How this side reaches its TURN server when its local candidate is a relay one.
    relay_protocol: Option<String>,
    /// The types of the candidates the other side sent.
    received: Vec<String>,
}

impl Path {
    fn is_relayed(&self) -> bool {
        self.local == "relay" || self.remote == "relay"
    }
}

/// A call between hosts `a` (Ann, with `extra_a`) and `b` (Bob) of `lab` through a relay on the
/// lab's internet (on 443, started with `relay_flags`); returns each side's path after asserting
/// both saw each other.
fn call(lab: &Lab, a: usize, b: usize, relay_flags: &[&str], extra_a: &[&str]) -> [Path; 2] {
    let state = tempfile::tempdir().unwrap();
    let listen = format!("{RELAY_IP}:443");
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &listen, relay_flags);
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic_in(Some(lab.host(a)), &host_link, "Ann", 2, 12.0, SMALL, extra_a);
    let bob = spawn_synthetic_in(Some(lab.host(b)), &invite, "Bob", 3, 12.0, SMALL, &[]);
    // Both reports first: an assertion about one must not leave the other running.
    let reports = [("Ann", "Bob", 3, report_of(ann)), ("Bob", "Ann", 2, report_of(bob))];
    // Both logs before any assertion: a failure needs both sides' story.
    for (me, _, _, (report, log)) in &reports {
        eprintln!("--- {me}: {report}\n{log}");
    }
    let mut paths = Vec::new();
    for (me, other, pattern, (report, _)) in reports {
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other, "{me}");
        assert_eq!(seen["pattern_id"], pattern, "{me} saw {other}'s video");
        assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 30, "{me}: {seen}");
        let text = |key: &str| seen[key].as_str().map(str::to_owned);
        let path = Path {
            local: text("candidate_type").unwrap_or_default(),
            remote: text("remote_candidate_type").unwrap_or_default(),
            relay_protocol: text("relay_protocol"),
            received: seen["candidates_received"]
                .as_array()
                .map(|types| types.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        };
        eprintln!("{me}: join to first frame {} ms, path {path:?}", seen["first_frame_ms"]);
        paths.push(path);
    }
    drop(relay);
    [paths[0].clone(), paths[1].clone()]
}

/// Two hosts on one LAN behind one router: they connect on their host addresses.
#[test]
fn the_same_lan_connects_directly() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("lan");
    let hosts = lab.site(Nat::Masquerade, Firewall::Open, 2);
    for path in call(&lab, hosts[0], hosts[1], &[], &[]) {
        assert_eq!(path.local, "host", "{path:?}");
        // The peer's host address, whether its candidate or its first check arrived first (then
        // it is peer-reflexive): the router translates only what leaves by its uplink, so the
        // two hosts see each other's LAN addresses and nothing else.
        assert!(path.remote == "host" || path.remote == "prflx", "{path:?}");
    }
}

/// Two sites behind endpoint-independent NATs (home routers): the STUN-learned addresses punch
/// through both, and the call goes direct, not through the relay.
#[test]
fn two_cone_nats_connect_directly() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("cone");
    let a = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    for path in call(&lab, a, b, &[], &[]) {
        assert!(!path.is_relayed(), "{path:?}");
        // Each sees the other at its router's address: as the server-reflexive candidate it sent,
        // or learned from its checks first.
        assert!(path.remote == "srflx" || path.remote == "prflx", "{path:?}");
    }
}

/// Two sites behind symmetric NATs (a new port per destination): no direct pair can work, and
/// the call goes through the relay's built-in TURN server.
#[test]
fn two_symmetric_nats_connect_through_the_relay() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("sym");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let paths = call(&lab, a, b, &[], &[]);
    assert!(paths.iter().all(Path::is_relayed), "{paths:?}");
    // With UDP open, TURN is reached over UDP (TCP and TLS are for networks that block it).
    for path in paths.iter().filter(|p| p.local == "relay") {
        assert_eq!(path.relay_protocol.as_deref(), Some("udp"), "{path:?}");
    }
}

/// One side behind a symmetric NAT, the other on a public address of its own: the symmetric
/// side reaches the open one directly (its checks open their own mapping), or through TURN.
#[test]
fn a_symmetric_nat_reaches_an_open_host() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("half");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.open_host();
    let [ann, bob] = call(&lab, a, b, &[], &[]);
    if !ann.is_relayed() {
        // Direct: Ann sends to Bob's own (host) address; Bob answers the port her NAT gave
        // that flow, which he learned from her checks.
        assert_eq!(ann.remote, "host", "{ann:?}");
        assert!(bob.remote == "prflx" || bob.remote == "srflx", "{bob:?}");
    }
    assert_eq!(ann.is_relayed(), bob.is_relayed(), "both sides on one path: {ann:?} {bob:?}");
}

/// Ann has "Hide my IP address" on: the call goes through TURN, Bob is sent only relay
/// candidates, and nothing leaves Ann's machine for anywhere but the relay's address.
#[test]
fn relay_only_sends_nothing_but_to_the_relay() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("hide");
    let a = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    // Count every packet Ann's machine sends out, by destination.
    let ann_ns = lab.host(a);
    iptables_in(&ann_ns.name, &["-A", "OUTPUT", "-o", "eth0", "-d", RELAY_IP]);
    iptables_in(&ann_ns.name, &["-A", "OUTPUT", "-o", "eth0", "!", "-d", RELAY_IP]);
    let [ann, bob] = call(&lab, a, b, &[], &["--relay-only"]);
    assert_eq!(ann.local, "relay", "{ann:?}");
    // UDP is open: TURN over UDP, not the TCP or TLS offered beside it.
    assert_eq!(ann.relay_protocol.as_deref(), Some("udp"), "{ann:?}");
    // Bob reaches Ann at her relayed address: named as the relay candidate she sent, or as
    // peer-reflexive when her check through the relay arrived before that candidate (the counters
    // below show that nothing of hers went anywhere but the relay).
    assert!(bob.remote == "relay" || bob.remote == "prflx", "{bob:?}");
    assert!(bob.received.iter().all(|t| t == "relay"), "Bob was sent {:?}", bob.received);
    let counts = packet_counts(&ann_ns.name);
    eprintln!("Ann's packets out: to the relay {}, elsewhere {}", counts[0], counts[1]);
    assert!(counts[0] > 100, "the call went by the relay: {counts:?}");
    assert_eq!(counts[1], 0, "nothing leaves Ann's machine for anywhere but the relay");
}

/// UDP blocked at both sites, TCP open: the lobby's check says calls will be relayed over TCP,
/// and the call goes through the relay's TURN server over TCP.
#[test]
fn udp_blocked_connects_over_turn_tcp() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("noudp");
    let a = lab.site(Nat::Masquerade, Firewall::NoUdp, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::NoUdp, 1)[0];
    relayed_over(&lab, a, b, "tcp");
}

/// Only TCP to port 443 gets out (a hotel's or an office's network): TURN over TLS on the
/// relay's own port, the only one open, carries the call.
#[test]
fn only_443_connects_over_turn_tls_on_the_relays_port() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("only443");
    let a = lab.site(Nat::Masquerade, Firewall::Only443, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::Only443, 1)[0];
    relayed_over(&lab, a, b, "tls");
}

/// Checks what the lobby's network check tells Ann (calls relayed over `transport`), then calls
/// and asserts both sides reach TURN over `transport`.
fn relayed_over(lab: &Lab, a: usize, b: usize, transport: &str) {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), &[]);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("check: {report}");
    assert_eq!(report["verdict"], "relayed", "{report}");
    assert_eq!(report["relay_transport"], transport, "{report}");
    let summary = report["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("relayed over {}", transport.to_uppercase())), "{summary}");
    // Some servers (STUN, TURN over UDP) did not answer: the check says so with exit 1.
    assert_eq!(code, 1, "{report}");
    drop(relay);
    let paths = call(lab, a, b, &[], &[]);
    for path in &paths {
        assert_eq!(path.local, "relay", "{paths:?}");
        assert_eq!(path.relay_protocol.as_deref(), Some(transport), "{paths:?}");
    }
}

/// The lobby's check measures how fast this machine uploads to the meeting server and says how
/// many people a call can hold: behind a link limited to 2.5 Mbit/s it measures about that
/// (the relay's clock, not what the sender wrote into its buffers) and predicts the call sizes
/// from it; the limit lifted, it measures the link's full speed.
#[test]
fn the_network_check_measures_the_uplink_and_predicts_the_call_size() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("uplink");
    let a = lab.open_host();
    let (_state, relay) = lab_relay(&lab, &[]);
    let (_, invite) = relay.host();
    lab.limit_link(a, Some((2_500, 0.0)));
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("limited: {report}");
    assert_eq!(code, 0, "{report}");
    let kbps = report["uplink"]["kbps"].as_u64().unwrap();
    assert!((2_000..=2_900).contains(&kbps), "a 2,500 kbit/s link measured as {kbps} kbit/s: {report}");
    let expected = confer_mesh::netcheck::capacity(kbps as u32, &confer_mesh::netcheck::default_ladder());
    let predicted: Vec<(String, u64)> = report["capacity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["size"].as_str().unwrap().to_owned(), c["people"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> =
        expected.iter().map(|c| (format!("{}x{}", c.size.0, c.size.1), u64::from(c.people))).collect();
    assert_eq!(predicted, expected, "{report}");
    // 2.5 Mbit/s carries two others at 640x360 (796 kbit/s each with audio and headers, 80 % of
    // the link planned), several at 320x180.
    assert_eq!(predicted[0], ("640x360".to_owned(), 3), "{report}");
    let summary = report["summary"].as_str().unwrap();
    assert!(summary.contains("enough for a video call of 3 people at 640x360"), "{summary}");

    lab.limit_link(a, None);
    let (_, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("unlimited: {report}");
    let kbps = report["uplink"]["kbps"].as_u64().unwrap();
    assert!(kbps > 20_000, "the full link measured as {kbps} kbit/s: {report}");
    drop(relay);
}

/// Two symmetric NATs and a relay with its TURN server turned off: no path exists, and instead
/// of a spinner each side is told within 15 s that the meeting server offers no relay; the check
/// warned before anyone joined.
#[test]
fn symmetric_nats_without_turn_name_the_missing_relay() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("noturn");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), &["--turn", "off"]);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    assert_eq!(report["verdict"], "no_servers", "{report}");
    assert_eq!(code, 3, "{report}");
    let hosts = [Some(lab.host(a)), Some(lab.host(b))];
    assert_told_within_15_s(&relay, hosts, &[], "no_relay_offered", "offers no relay");
}

/// Ann's laptop moves from one home network to another in the middle of a call (her old link
/// and address go, a new router gives her a new one): she notices, ICE restarts, and video is
/// back both ways within 2 s; the longest freeze is measured and printed.
#[test]
fn a_move_to_another_network_mid_call_freezes_video_under_2_s() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("move");
    let a = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    move_mid_call(&mut lab, a, b, 5.0, 2_000);
}

/// Ann (host `a`) and Bob (host `b`) call for 14 s; Ann moves to a new network (open, behind a
/// cone NAT) after `move_after` seconds. Both must see each other's video to the end, with no
/// freeze longer than `max_freeze_ms`.
fn move_mid_call(lab: &mut Lab, a: usize, b: usize, move_after: f64, max_freeze_ms: u64) {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), &[]);
    let (host_link, invite) = relay.host();
    let seconds = 14.0;
    let ann = spawn_synthetic_in(Some(lab.host(a)), &host_link, "Ann", 2, seconds, SMALL, &[]);
    let bob = spawn_synthetic_in(Some(lab.host(b)), &invite, "Bob", 3, seconds, SMALL, &[]);
    std::thread::sleep(std::time::Duration::from_secs_f64(move_after));
    lab.move_host(a, Nat::Masquerade);
    let reports = [("Ann", "Bob", report_of(ann)), ("Bob", "Ann", report_of(bob))];
    // Both logs before any assertion: a failure needs both sides' story.
    for (me, _, (report, log)) in &reports {
        eprintln!("--- {me}: {report}\n{log}");
    }
    for (me, other, (report, _)) in reports {
        let left = report["left"].as_array().unwrap();
        assert!(left.iter().all(|l| l["reason"] == "left"), "{me} lost {other}: {left:?}");
        assert_eq!(report["unreachable"], serde_json::json!([]), "{me} found no path to {other}");
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other);
        let gap = seen["longest_video_gap_ms"].as_u64().unwrap();
        let last = seen["last_frame_ms"].as_u64().unwrap();
        eprintln!(
            "{me}: {other}'s video froze for at most {gap} ms across the move (last frame at {last} ms)"
        );
        assert!(gap < max_freeze_ms, "{me}: {other}'s video froze {gap} ms");
        // And it kept coming to the end, not only before the move.
        assert!(last as f64 > (seconds - 2.0) * 1_000.0, "{me}: {other}'s last frame at {last} ms");
    }
    drop(relay);
}

/// The relay hands out Debian's coturn (on another address of the lab's internet) as its TURN
/// server: two symmetric NATs connect through it.
#[test]
fn symmetric_nats_connect_through_coturn() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("coturn");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let _coturn = Turn::start_in(&lab.wan, COTURN_IP, "lab-secret");
    let flags = coturn_flags("lab-secret");
    let paths = call(&lab, a, b, &flags.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(paths.iter().all(Path::is_relayed), "{paths:?}");
}

/// The relay's flags for coturn on the lab's internet, with the shared secret `secret`.
fn coturn_flags(secret: &str) -> [String; 6] {
    [
        "--stun-url".into(),
        format!("stun:{COTURN_IP}:3478"),
        "--turn-url".into(),
        format!("turn:{COTURN_IP}:3478"),
        "--turn-secret".into(),
        secret.into(),
    ]
}

/// coturn does not share the relay's TURN secret (a misconfigured deployment): the check names
/// the refused credentials before anyone joins, and in the call each side is told within 15 s.
#[test]
fn a_wrong_turn_secret_is_named_credentials_refused() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("secret");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let _coturn = Turn::start_in(&lab.wan, COTURN_IP, "lab-secret");
    let flags = coturn_flags("not-coturns");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_state, relay) = lab_relay(&lab, &flags);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    let turn = &report["servers"][1];
    assert_eq!(turn["code"], "credentials_refused", "{report}");
    assert!(report["summary"].as_str().unwrap().contains("refused our credentials"), "{report}");
    assert_eq!(code, 1, "{report}");
    let hosts = [Some(lab.host(a)), Some(lab.host(b))];
    assert_told_within_15_s(&relay, hosts, &[], "relay_credentials_refused", "credentials refused");
}

/// The relay's TURN server (coturn, as the relay names it) is down, under symmetric NATs where
/// only it would do: the check says it is not running, and each side is told the relay could
/// not be reached, with the server's refusal.
#[test]
fn turn_down_under_symmetric_nats_is_named() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("turndown");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let flags = coturn_flags("lab-secret");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_state, relay) = lab_relay(&lab, &flags);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("check: {report}");
    // Its machine refuses on the port (ICMP port unreachable): the server is down, UDP is not
    // blocked, and the check says which.
    assert_eq!(report["servers"][1]["code"], "udp_refused", "{report}");
    assert_eq!(report["verdict"], "direct_no_relay", "{report}");
    assert_eq!(report["relay_transport"], Value::Null, "{report}");
    assert!(report["summary"].as_str().unwrap().contains("is not running"), "{report}");
    assert_eq!(code, 1, "{report}");
    let hosts = [Some(lab.host(a)), Some(lab.host(b))];
    assert_told_within_15_s(&relay, hosts, &[], "relay_unreachable", "could not be reached");
}

/// UDP is blocked, and the relay offers TURN over UDP only: the check says no call can leave
/// this network, and each side is told the relay could not be reached.
#[test]
fn udp_blocked_and_no_turn_over_tcp_is_named() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("udponly");
    let a = lab.site(Nat::Masquerade, Firewall::NoUdp, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::NoUdp, 1)[0];
    let (_state, relay) = lab_relay(&lab, &["--turn-transports", "udp"]);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("check: {report}");
    assert_eq!(report["verdict"], "no_path", "{report}");
    let summary = report["summary"].as_str().unwrap();
    assert!(summary.contains("blocks UDP and no relay could be reached over TCP or TLS"), "{summary}");
    assert_eq!(code, 1, "{report}");
    let hosts = [Some(lab.host(a)), Some(lab.host(b))];
    assert_told_within_15_s(&relay, hosts, &[], "relay_unreachable", "could not be reached");
}

/// The relay goes down in the middle of a call: the call goes on (media is peer to peer), each
/// side's report says the relay connection was lost and why; the check and a newcomer's join name
/// the relay as unreachable.
#[test]
fn a_relay_that_goes_down_is_named_and_the_call_goes_on() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("relaydown");
    let a = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let c = lab.site(Nat::Masquerade, Firewall::Open, 1)[0];
    let (state, relay) = lab_relay(&lab, &[]);
    let (host_link, invite) = relay.host();
    let seconds = 12.0;
    let ann = spawn_synthetic_in(Some(lab.host(a)), &host_link, "Ann", 2, seconds, SMALL, &[]);
    let bob = spawn_synthetic_in(Some(lab.host(b)), &invite, "Bob", 3, seconds, SMALL, &[]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    drop(relay);
    drop(state);
    let (code, report) = check_in(Some(lab.host(c)), &invite);
    assert_eq!(report["verdict"], "unreachable", "{report}");
    let error = report["relay"]["error"].as_str().unwrap();
    assert!(error.contains("refused"), "the check says why: {error}");
    assert_eq!(code, 1, "{report}");
    let cid = spawn_synthetic_in(Some(lab.host(c)), &invite, "Cid", 4, 2.0, SMALL, &[]);
    let output = cid.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a newcomer cannot join: {said}");
    assert!(said.contains("unreachable") && said.contains("refused"), "{said}");
    let reports = [("Ann", "Bob", report_and_code_of(ann)), ("Bob", "Ann", report_and_code_of(bob))];
    for (me, other, (report, log, _)) in reports {
        eprintln!("--- {me}: {report}\n{log}");
        let lost = report["relay_lost"].as_array().unwrap();
        assert!(!lost.is_empty(), "{me} was not told the relay connection was lost");
        eprintln!("{me}: relay lost: {}", lost[0]["cause"]);
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other);
        let last = seen["last_frame_ms"].as_u64().unwrap();
        let gap = seen["longest_video_gap_ms"].as_u64().unwrap();
        assert!(last as f64 > (seconds - 2.0) * 1_000.0, "{me}: {other}'s video stopped at {last} ms");
        assert!(gap < 1_000, "{me}: {other}'s video froze {gap} ms without the relay");
    }
}

/// A firewall in front of the relay closes its relayed ports (a cloud security group that lets
/// only 443 and 3478 in): allocations work, and nothing relayed arrives. The check tests its
/// allocation as a peer would and names the closed ports; in the call, each side is told so
/// within 15 s.
#[test]
fn relayed_ports_behind_a_firewall_are_named() {
    let _one = one_at_a_time();
    let mut lab = Lab::new("ports");
    let a = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    let b = lab.site(Nat::Symmetric, Firewall::Open, 1)[0];
    // Below the ephemeral range, so that the TURN server's own port is never among them.
    let (_state, relay) = lab_relay(&lab, &["--turn-ports", "20000-20099"]);
    lab.wan_iptables(&["-A", "INPUT", "-p", "udp", "--dport", "20000:20099", "-j", "DROP"]);
    let (_, invite) = relay.host();
    let (code, report) = check_in(Some(lab.host(a)), &invite);
    eprintln!("check: {report}");
    let servers = report["servers"].as_array().unwrap();
    let udp = servers.iter().find(|s| s["url"].as_str().unwrap().ends_with("transport=udp")).unwrap();
    assert_eq!(udp["code"], "relay_ports_blocked", "{report}");
    assert_eq!(report["verdict"], "direct_no_relay", "{report}");
    assert!(report["summary"].as_str().unwrap().contains("closes its relayed ports"), "{report}");
    assert_eq!(code, 1, "{report}");
    let hosts = [Some(lab.host(a)), Some(lab.host(b))];
    assert_told_within_15_s(&relay, hosts, &[], "relay_ports_blocked", "closes its relayed ports");
}

/// A relay on the lab's internet (port 443) with `flags`, and the directory of its state.
fn lab_relay(lab: &Lab, flags: &[&str]) -> (tempfile::TempDir, Relay) {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), flags);
    (state, relay)
}

fn iptables_in(netns: &str, args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "iptables"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "iptables {args:?}");
}

/// The packet counters of the OUTPUT chain's rules, in order.
fn packet_counts(netns: &str) -> Vec<u64> {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "iptables", "-L", "OUTPUT", "-v", "-x", "-n"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // Two header lines, then one line per rule: "pkts bytes target prot …".
    text.lines().skip(2).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}
