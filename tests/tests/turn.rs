//! Relay-only ICE through a real TURN server: Debian's coturn, started here with the shared
//! secret the relay signs TURN credentials with. The call connects, media flows, and the
//! selected candidate pair is of type relay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use confer_media::synthetic::tone_hz;
use confer_tests::{Relay, Turn, report_of, spawn_confer};

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
    let args = |link: &str, name: &str, pattern: &str| -> Vec<String> {
        [
            "join",
            link,
            "--name",
            name,
            "--synthetic",
            "--pattern-id",
            pattern,
            "--duration",
            "10",
            "--report",
            "json",
        ]
        .iter()
        .chain(&["--size", "320x180", "--fps", "15", "--relay-only"])
        .map(|s| (*s).to_owned())
        .collect()
    };
    let spawn = |args: Vec<String>| spawn_confer(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ann = spawn(args(&host_link, "Ann", "2"));
    let bob = spawn(args(&invite, "Bob", "3"));
    for (me, other, pattern, child) in [("Ann", "Bob", 3, ann), ("Bob", "Ann", 2, bob)] {
        let (report, log) = report_of(child);
        eprintln!("--- {me}: {report}\n{log}");
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other);
        assert_eq!(seen["candidate_type"], "relay", "{me} reached {other} without the TURN relay");
        assert_eq!(seen["pattern_id"], pattern, "{me} saw {other}'s video through the relay");
        assert_eq!(seen["audio_tone_hz"], tone_hz(pattern), "{me} heard {other} through the relay");
        assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 60);
    }
}
