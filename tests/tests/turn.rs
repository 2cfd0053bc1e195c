//! Relay-only ICE through a real TURN server: Debian's coturn, started here with the shared
//! secret the relay signs TURN credentials with. The call connects, media flows, and the
//! selected candidate pair is of type relay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::{
    Relay, SMALL, Turn, assert_told_within_15_s, check_in, report_and_code_of, report_of, spawn_synthetic,
    unix_ms,
};

/// The lobby's network check, as `confer check` runs it: before joining, the relay answers, coturn
/// gives this machine's address over STUN and a relayed address over TURN (UDP and TCP); a TURN
/// server that is silent, one that is down (its machine refuses), a TCP port that refuses, a TLS
/// handshake that fails, and credentials that are refused are each named with the reason; nobody
/// in the room hears of any of it.
#[test]
fn the_network_check_tries_each_stun_and_turn_server_before_joining() {
    let turn = Turn::start();
    let state = tempfile::tempdir().unwrap();
    let (stun_url, turn_url) =
        (format!("stun:127.0.0.1:{}", turn.port), format!("turn:127.0.0.1:{}", turn.port));
    let tcp_url = format!("turn:127.0.0.1:{}?transport=tcp", turn.port);
    // A UDP socket that reads nothing and answers nothing (a firewall that drops looks the same);
    // and a UDP port where nothing listens, which this machine refuses (the server is down).
    let deaf = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = format!("turn:127.0.0.1:{}", deaf.local_addr().unwrap().port());
    let down = format!("turn:127.0.0.1:{}?transport=udp", confer_tests::free_udp_port());
    let closed_tcp = format!("turn:127.0.0.1:{}?transport=tcp", confer_tests::free_udp_port());
    // coturn runs with --no-tls: a TLS client on its port gets no handshake.
    let not_tls = format!("turns:127.0.0.1:{}?transport=tcp", turn.port);
    // A TLS server on the relay's host whose certificate is not the one the link pins (another
    // relay's, with its own self-signed certificate).
    let other_state = tempfile::tempdir().unwrap();
    let other = Relay::start_with(other_state.path(), "127.0.0.1:0", &["--turn", "off"]);
    let wrong_pin = format!("turns:127.0.0.1:{}?transport=tcp", other.port);
    // A TCP server that accepts and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("turn:127.0.0.1:{}?transport=tcp", mute.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let held: Vec<_> = mute.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &[
            "--stun-url",
            &stun_url,
            "--turn-url",
            &turn_url,
            "--turn-url",
            &silent,
            "--turn-url",
            &down,
            "--turn-url",
            &tcp_url,
            "--turn-url",
            &closed_tcp,
            "--turn-url",
            &not_tls,
            "--turn-url",
            &wrong_pin,
            "--turn-url",
            &mute_url,
            "--turn-secret",
            &turn.secret,
        ],
    );
    let (host_link, invite) = relay.host();
    let (code, report) = check_in(None, &invite);
    eprintln!("{report}");
    assert!(report["relay"]["ok"].as_bool().unwrap(), "{report}");
    let servers = report["servers"].as_array().unwrap();
    let by_url =
        |url: &str| servers.iter().find(|s| s["url"] == url).unwrap_or_else(|| panic!("{url} in {report}"));
    let stun = by_url(&stun_url);
    assert_eq!(stun["ok"], true, "{stun}");
    assert!(stun["address"].as_str().unwrap().contains(':'), "STUN gave an address: {stun}");
    let relayed = by_url(&turn_url);
    assert_eq!(relayed["ok"], true, "coturn allocated a relay: {relayed}");
    assert!(relayed["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{relayed}");
    let dead = by_url(&silent);
    assert_eq!(dead["ok"], false);
    assert_eq!(dead["code"], "silent", "{dead}");
    assert!(dead["error"].as_str().unwrap().starts_with("server silent"), "{dead}");
    let stopped = by_url(&down);
    assert_eq!(stopped["code"], "udp_refused", "{stopped}");
    assert!(stopped["error"].as_str().unwrap().contains("is the server running?"), "{stopped}");
    let tcp = by_url(&tcp_url);
    assert_eq!(tcp["ok"], true, "coturn allocated a relay over TCP: {tcp}");
    assert!(tcp["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{tcp}");
    let refused = by_url(&closed_tcp);
    assert_eq!(refused["code"], "tcp_refused", "{refused}");
    assert!(refused["error"].as_str().unwrap().starts_with("TCP refused"), "{refused}");
    let tls = by_url(&not_tls);
    assert_eq!(tls["code"], "tls_failed", "{tls}");
    assert!(tls["error"].as_str().unwrap().starts_with("TLS handshake failed: "), "{tls}");
    let pinned = by_url(&wrong_pin);
    assert_eq!(pinned["code"], "tls_failed", "{pinned}");
    assert!(pinned["error"].as_str().unwrap().contains("does not match the invite link's pin"), "{pinned}");
    let mute = by_url(&mute_url);
    assert_eq!(mute["code"], "silent", "{mute}");
    assert!(mute["error"].as_str().unwrap().contains("connected, and no answer within 5 s"), "{mute}");
    assert_eq!(code, 1, "servers did not answer: the check fails");

    // Credentials coturn refuses (another secret) are a failed TURN check, not a pass.
    let state2 = tempfile::tempdir().unwrap();
    let wrong = Relay::start_with(
        state2.path(),
        "127.0.0.1:0",
        &["--turn-url", &turn_url, "--turn-secret", "not-coturns-secret"],
    );
    let (_, wrong_invite) = wrong.host();
    let (code, report) = check_in(None, &wrong_invite);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["servers"][0]["ok"], false, "{report}");
    assert_eq!(report["servers"][0]["code"], "credentials_refused", "coturn's 401, read: {report}");
    assert!(
        report["summary"].as_str().unwrap().contains("relay refused our credentials: tell its operator"),
        "{report}"
    );

    // A check is not a join: the host who joins now is alone, and the link still works.
    let host = spawn_synthetic(&host_link, "Ann", 2, 2.0, SMALL, &[]);
    let (host_report, _) = report_of(host);
    assert_eq!(host_report["peers"].as_array().unwrap().len(), 0, "{host_report}");

    // A relay that is not there: named, and no servers are tried.
    drop(relay);
    let (code, report) = check_in(None, &invite);
    assert_eq!(code, 1);
    assert_eq!(report["relay"]["ok"], false);
    assert!(report["relay"]["error"].as_str().unwrap().contains("unreachable"), "{report}");
    assert!(report["servers"].as_array().unwrap().is_empty());
}

/// Relay-only with no TURN server: instead of a spinner, each side says there is no path and why.
#[test]
fn relay_only_without_a_turn_server_says_why_there_is_no_path() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(state.path(), "127.0.0.1:0", &["--embedded-turn", "false"]);
    let (host_link, invite) = relay.host();
    // The check says so before anyone joins, and its exit code is the warning's.
    let (code, report) = check_in(None, &invite);
    assert_eq!(report["verdict"], "no_servers", "{report}");
    assert_eq!(code, 3, "no relay at all: a warning, not a pass: {report}");
    let started = unix_ms();
    let ann = spawn_synthetic(&host_link, "Ann", 2, 6.0, SMALL, &["--relay-only"]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 5.0, SMALL, &["--relay-only"]);
    for (me, child) in [("Ann", ann), ("Bob", bob)] {
        let (report, log, code) = report_and_code_of(child);
        eprintln!("--- {me}: {report}\n{log}");
        let unreachable = report["unreachable"].as_array().unwrap();
        assert_eq!(unreachable.len(), 1, "{me} names the one peer it cannot reach");
        let detail = unreachable[0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("no ICE candidates gathered here") && detail.contains("TURN"),
            "{me}: {detail}"
        );
        assert_eq!(unreachable[0]["cause"], "nothing_gathered", "{me}");
        let after = unreachable[0]["at_unix_ms"].as_u64().unwrap() - started;
        assert!(after < 15_000, "{me} was told after {after} ms");
        assert_eq!(report["peers"][0]["video_frames_decoded"], 0);
        assert_eq!(code, 4, "{me}: a participant stayed unreachable: exit 4");
    }
}

/// Relay only, and the relay offered does not answer: within 15 s each side is told that the
/// meeting server's relay could not be reached (while ICE restarts go on), and exits 4.
#[test]
fn relay_only_with_a_silent_turn_server_names_the_relay_within_15_s() {
    let state = tempfile::tempdir().unwrap();
    let deaf = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = format!("turn:127.0.0.1:{}?transport=udp", deaf.local_addr().unwrap().port());
    let relay =
        Relay::start_with(state.path(), "127.0.0.1:0", &["--turn-url", &silent, "--turn-secret", "s"]);
    assert_told_within_15_s(
        &relay,
        [None, None],
        &["--relay-only"],
        "relay_unreachable",
        "relay could not be reached",
    );
}

/// Relay only, and the TURN server refuses the meeting server's credentials (another secret):
/// within 15 s each side is told the relay refused our credentials, as the check says it.
#[test]
fn relay_only_with_refused_credentials_says_so_in_the_call() {
    let turn = Turn::start();
    let state = tempfile::tempdir().unwrap();
    let turn_url = format!("turn:127.0.0.1:{}", turn.port);
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &["--turn-url", &turn_url, "--turn-secret", "not-coturns"],
    );
    assert_told_within_15_s(
        &relay,
        [None, None],
        &["--relay-only"],
        "relay_credentials_refused",
        "credentials refused",
    );
}

#[test]
fn a_relay_only_call_connects_through_coturn() {
    let turn = Turn::start();
    let state = tempfile::tempdir().unwrap();
    let turn_url = format!("turn:127.0.0.1:{}", turn.port);
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &["--turn-url", &turn_url, "--turn-secret", &turn.secret],
    );
    let (host_link, invite) = relay.host();
    assert_relayed_call(&host_link, &invite, "udp");
}

/// coturn offered over TCP only: the call's relay candidates come through TURN over TCP
/// (RFC 6062 framing on the engine's side), and the report says so.
#[test]
fn a_relay_only_call_connects_through_coturn_over_tcp() {
    let turn = Turn::start();
    let state = tempfile::tempdir().unwrap();
    let turn_url = format!("turn:127.0.0.1:{}?transport=tcp", turn.port);
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &["--turn-url", &turn_url, "--turn-secret", &turn.secret],
    );
    let (host_link, invite) = relay.host();
    assert_relayed_call(&host_link, &invite, "tcp");
}

/// coturn offered over TLS only, serving the relay's own certificate (so the invite link's pin
/// covers it, as it would for an operator who gives both the same certificate): the call's relay
/// candidates come through TURN over TLS.
#[test]
fn a_relay_only_call_connects_through_coturn_over_tls() {
    let state = tempfile::tempdir().unwrap();
    let tls_port = confer_tests::free_tcp_port();
    let secret = format!("coturn-tls-{tls_port}");
    let turn_url = format!("turns:127.0.0.1:{tls_port}?transport=tcp");
    let relay =
        Relay::start_with(state.path(), "127.0.0.1:0", &["--turn-url", &turn_url, "--turn-secret", &secret]);
    let _turn = Turn::start_tls(
        tls_port,
        &secret,
        &state.path().join("self-signed.crt"),
        &state.path().join("self-signed.key"),
    );
    let (host_link, invite) = relay.host();
    assert_relayed_call(&host_link, &invite, "tls");
}

/// The relay's own TURN server offered only over TCP, then only over TLS on the relay's port
/// (the link's pin covers it): each relay-only call connects through that transport.
#[test]
fn a_relay_only_call_connects_over_tcp_or_tls_when_nothing_else_is_offered() {
    for transport in ["tcp", "tls"] {
        let state = tempfile::tempdir().unwrap();
        let relay = Relay::start_with(
            state.path(),
            "127.0.0.1:0",
            &[
                "--turn-listen",
                "127.0.0.1:0",
                "--turn-allow-peer",
                "127.0.0.0/8",
                "--turn-transports",
                transport,
            ],
        );
        let (host_link, invite) = relay.host();
        let (_, report) = check_in(None, &invite);
        let urls: Vec<&str> =
            report["servers"].as_array().unwrap().iter().map(|s| s["url"].as_str().unwrap()).collect();
        assert_eq!(urls.len(), 2, "STUN and the one TURN URL: {report}");
        let expected = if transport == "tls" { "turns:" } else { "turn:" };
        assert!(urls[1].starts_with(expected) && urls[1].ends_with("?transport=tcp"), "{urls:?}");
        assert_relayed_call(&host_link, &invite, transport);
    }
}

/// A relay-only call between Ann and Bob: both connect through TURN (reached over `protocol`),
/// see and hear each other.
fn assert_relayed_call(host_link: &str, invite: &str, protocol: &str) {
    let ann = spawn_synthetic(host_link, "Ann", 2, 10.0, SMALL, &["--relay-only"]);
    let bob = spawn_synthetic(invite, "Bob", 3, 10.0, SMALL, &["--relay-only"]);
    for (me, other, pattern, child) in [("Ann", "Bob", 3, ann), ("Bob", "Ann", 2, bob)] {
        let (report, log) = report_of(child);
        eprintln!("--- {me}: {report}\n{log}");
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other);
        assert_eq!(seen["candidate_type"], "relay", "{me} reached {other} without the TURN relay");
        // The other end is relay-only too: all it showed of its network is its relay (the
        // selected pair may still name that address peer-reflexive, when its checks arrived
        // before its candidate did).
        assert_eq!(seen["candidates_received"], serde_json::json!(["relay"]), "{me}: {other}'s end");
        assert_eq!(seen["relay_protocol"], protocol, "{me} reaches its TURN server over {protocol}");
        assert_eq!(seen["pattern_id"], pattern, "{me} saw {other}'s video through the relay");
        assert_eq!(seen["audio_tone_hz"], tone_hz(pattern), "{me} heard {other} through the relay");
        assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 60);
        // The last second's statistics: 15 fps of video and a voice's worth of audio arriving,
        // nothing lost on loopback, a round trip measured.
        let stats = &seen["stats"];
        let number = |key: &str| stats[key].as_f64().unwrap_or_else(|| panic!("{me}: no {key} in {stats}"));
        assert!(number("frame_rate") >= 8.0, "{me}: {stats}");
        assert!(number("receive_video_kbps") > 30.0, "{me}: {stats}");
        assert!((10.0..200.0).contains(&number("receive_audio_kbps")), "{me}: {stats}");
        assert!(number("send_kbps") > 30.0, "{me}: {stats}");
        assert!(number("receive_loss") < 0.05, "{me}: {stats}");
        assert!(number("rtt_ms") < 1_000.0, "{me}: {stats}");
        assert!(number("send_loss") < 0.05, "{me}: {stats}");
        assert_eq!(stats["candidate_type"], "relay");
    }
}

/// The relay's own STUN/TURN server, with no TURN flags at all: a relay-only call connects
/// through it, and its metrics count the allocations and the bytes relayed.
#[test]
fn a_relay_only_call_connects_through_the_relays_own_turn_server() {
    let state = tempfile::tempdir().unwrap();
    // Both participants are on this machine's loopback, which the built-in server refuses to
    // relay to unless told (the CVE-2020-26262 class): allow it for this test.
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &["--turn-listen", "127.0.0.1:0", "--turn-allow-peer", "127.0.0.0/8"],
    );
    let (host_link, invite) = relay.host();
    // It offers STUN, and TURN over UDP, TCP and (on the relay's own port, with its certificate,
    // which the link pins) TLS; the check gets a relayed address through each.
    let (code, report) = check_in(None, &invite);
    eprintln!("{report}");
    assert_eq!(code, 0, "{report}");
    let servers = report["servers"].as_array().unwrap();
    let urls: Vec<&str> = servers.iter().map(|s| s["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), 4, "{report}");
    assert!(urls[0].starts_with("stun:") && urls[1].ends_with("?transport=udp"), "{urls:?}");
    assert!(urls[2].ends_with("?transport=tcp"), "{urls:?}");
    assert_eq!(urls[3], format!("turns:127.0.0.1:{}?transport=tcp", relay.port), "{urls:?}");
    assert!(servers.iter().all(|s| s["ok"] == true), "{report}");
    assert_eq!(report["verdict"], "direct", "{report}");
    assert_eq!(report["relay_transport"], "udp", "{report}");
    // With UDP, TCP and TLS all offered and UDP open, the call relays over UDP.
    assert_relayed_call(&host_link, &invite, "udp");
    let metrics = relay_metrics(&relay);
    eprintln!("{metrics}");
    assert!(metric(&metrics, "confer_turn_allocations_total") >= 2.0, "{metrics}");
    // Two ~300 kbit/s streams for ten seconds, each counted as it enters and leaves the relay.
    assert!(metric(&metrics, "confer_turn_relayed_bytes_total") > 500_000.0, "{metrics}");
    assert_eq!(metric(&metrics, "confer_turn_permissions_refused_total"), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "confer_turn_refused_peer_datagrams_total"), 0.0, "{metrics}");
}

/// Ann hides her IP address (relay only), Bob does not: they still see each other, and every
/// candidate of Ann's that reached Bob is a relay candidate, while Bob's host address reached Ann.
#[test]
fn a_relay_only_participant_shows_others_no_address_of_hers() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        state.path(),
        "127.0.0.1:0",
        &["--turn-listen", "127.0.0.1:0", "--turn-allow-peer", "127.0.0.0/8"],
    );
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic(&host_link, "Ann", 2, 8.0, SMALL, &["--relay-only"]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 8.0, SMALL, &[]);
    let (ann_report, ann_log) = report_of(ann);
    let (bob_report, bob_log) = report_of(bob);
    eprintln!("--- Ann: {ann_report}\n{ann_log}\n--- Bob: {bob_report}\n{bob_log}");
    let (ann_sees, bob_sees) = (&ann_report["peers"][0], &bob_report["peers"][0]);
    assert_eq!(ann_sees["pattern_id"], 3, "Ann sees Bob");
    assert_eq!(bob_sees["pattern_id"], 2, "Bob sees Ann");
    assert_eq!(bob_sees["candidates_received"], serde_json::json!(["relay"]), "only Ann's relay reached Bob");
    // Her end of the path is her relay (Bob may know that address as peer-reflexive: it is the
    // relay's, learned from the packets before her candidate arrived).
    assert_eq!(ann_sees["candidate_type"], "relay", "Ann sends through her relay");
    let from_bob = ann_sees["candidates_received"].as_array().unwrap();
    assert!(from_bob.iter().any(|c| c == "host"), "Bob did not hide his: {from_bob:?}");
}

/// The built-in TURN server refuses to relay into its own network: with its default peer
/// filter, a relay-only call between two loopback addresses gets allocations but never connects:
/// each side's permission for the other's relayed address is answered 403, and counted.
#[test]
fn the_relays_turn_server_does_not_relay_to_loopback() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(state.path(), "127.0.0.1:0", &["--turn-listen", "127.0.0.1:0"]);
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic(&host_link, "Ann", 2, 8.0, SMALL, &["--relay-only"]);
    let bob = spawn_synthetic(&invite, "Bob", 3, 8.0, SMALL, &["--relay-only"]);
    for (me, child) in [("Ann", ann), ("Bob", bob)] {
        let (report, log) = report_of(child);
        eprintln!("--- {me}: {report}\n{log}");
        let seen = &report["peers"][0];
        assert_eq!(seen["video_frames_decoded"], 0, "{me} got video through a refused peer");
        assert!(seen["connected_ms"].is_null(), "{me} connected through a refused peer: {report}");
    }
    let metrics = relay_metrics(&relay);
    assert!(metric(&metrics, "confer_turn_allocations_total") >= 2.0, "{metrics}");
    assert!(metric(&metrics, "confer_turn_permissions_refused_total") > 0.0, "{metrics}");
}

/// The relay's `/metrics` text (with curl: the certificate is the relay's self-signed one).
fn relay_metrics(relay: &Relay) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sSk", "--max-time", "5", &format!("https://127.0.0.1:{}/metrics", relay.port)])
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The value of a metric: the sum of its series over all labels.
fn metric(text: &str, name: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value =
                if rest.starts_with('{') { rest.rsplit_once(' ')?.1 } else { rest.strip_prefix(' ')? };
            value.trim().parse().ok()
        })
        .collect();
    assert!(!values.is_empty(), "no {name} in {text}");
    values.iter().sum()
}
