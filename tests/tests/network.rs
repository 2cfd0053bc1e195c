//! A network change in the middle of a call: a new interface with a new address appears (what
//! plugging in a cable or starting a VPN looks like), in a network namespace the test makes for
//! the call. Both participants notice, the offerer restarts ICE, and the call goes on: nobody
//! leaves, nobody is unreachable, video keeps coming.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_tests::{Netns, Relay, SMALL, report_of, spawn_synthetic_in};

#[test]
fn a_network_change_moves_the_call_without_dropping_it() {
    let lab = Netns::new("netchange");
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab), state.path(), "127.0.0.1:0", &[]);
    let (host_link, invite) = relay.host();
    let ann = spawn_synthetic_in(Some(&lab), &host_link, "Ann", 2, 12.0, SMALL, &[]);
    let bob = spawn_synthetic_in(Some(&lab), &invite, "Bob", 3, 11.5, SMALL, &[]);
    std::thread::sleep(Duration::from_secs(5));
    // (A veth pair with both ends in the lab: this kernel may have no dummy interfaces.)
    lab.ip(&["link", "add", "confer0", "type", "veth", "peer", "name", "confer1"]);
    lab.ip(&["addr", "add", "10.77.0.1/24", "dev", "confer0"]);
    lab.ip(&["link", "set", "confer0", "up"]);
    lab.ip(&["link", "set", "confer1", "up"]);
    let mut restarts = 0;
    // Both reports first: an assertion about one must not leave the other running.
    let reports = [("Ann", "Bob", report_of(ann)), ("Bob", "Ann", report_of(bob))];
    for (me, other, (report, log)) in reports {
        eprintln!("--- {me}: {report}\n{log}");
        assert!(report["network_changes"].as_u64().unwrap() >= 1, "{me} did not notice the new address");
        // Leaving at the end is fine; a timeout or a reconnect is not.
        let left = report["left"].as_array().unwrap();
        assert!(left.iter().all(|l| l["reason"] == "left"), "{me} lost {other}: {left:?}");
        assert_eq!(report["reconnecting"], serde_json::json!([]), "{me} saw {other} reconnecting");
        assert_eq!(report["unreachable"], serde_json::json!([]), "{me} found no path to {other}");
        let seen = &report["peers"][0];
        assert_eq!(seen["name"], other);
        // About 11 s at 15 fps; a restart may cost a few frames, not seconds of them.
        let frames = seen["video_frames_decoded"].as_u64().unwrap();
        assert!(frames >= 130, "{me} decoded only {frames} frames of {other} across the change");
        restarts += seen["ice_restarts"].as_u64().unwrap();
    }
    assert!(restarts >= 1, "the offerer restarted ICE for the new network");
    drop(relay);
}
