//! Each peer is sent the layer of our camera that suits it: real calls on loopback between
//! headless `confer` participants (the real relay, real WebRTC peer connections), where some ask
//! for a small picture or none, as a thumbnail or a minimised window would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::lab::{Lab, RELAY_IP};
use confer_tests::{
    Relay, SMALL, one_at_a_time, peer, report_of, spawn_synthetic, spawn_synthetic_in, unix_ms,
};

/// Ann and Bob show everyone as they come; Cid, 5 s in, shows everyone in 160x90 thumbnails;
/// Dee, 5 s in, minimises the window (a `0x0` view). Every sender then sends Cid its smallest
/// layer and Dee no video at all, while Ann and Bob keep getting each other's full picture; Cid
/// sees the switch without a freeze, Dee keeps hearing everyone.
#[test]
fn each_peer_gets_the_layer_its_tile_asks_for_switched_without_a_freeze() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let extra: &[&str] = match *name {
            "Cid" => &["--view", "160x90", "--view-after", "5"],
            "Dee" => &["--view", "0x0", "--view-after", "5"],
            _ => &[],
        };
        children.push(spawn_synthetic(link, name, i as u32 + 2, 13.0, ("640x360", 15), extra));
    }
    let reports: Vec<(serde_json::Value, String)> = children.into_iter().map(report_of).collect();
    for ((report, log), me) in reports.iter().zip(names) {
        eprintln!("--- {me}: {report}\n{log}");
    }
    let report = |name: &str| &reports[names.iter().position(|n| *n == name).unwrap()].0;
    for (j, sender) in names.iter().enumerate() {
        let sent = report(sender);
        for receiver in names.iter().filter(|n| *n != sender) {
            let layer = &peer(sent, receiver)["stats"]["send_layer"];
            let seen = peer(report(receiver), sender);
            let sizes = &seen["video_sizes"];
            match *receiver {
                "Cid" => {
                    assert_eq!(layer, "160x90", "{sender} sends Cid its thumbnail's layer");
                    assert_eq!(sizes[0], "640x360", "Cid saw {sender} full size first: {sizes}");
                    assert_eq!(sizes.as_array().unwrap().last().unwrap(), "160x90", "Cid: {sizes}");
                    let gap = seen["longest_video_gap_ms"].as_u64().unwrap();
                    assert!(gap < 400, "Cid's picture of {sender} froze {gap} ms (at the switch?)");
                }
                "Dee" => {
                    assert!(layer.is_null(), "{sender} still sends Dee video: {layer}");
                    let video = seen["stats"]["receive_video_kbps"].as_f64().unwrap();
                    assert!(video < 1.0, "Dee, minimised, still gets {video} kbit/s of {sender}'s video");
                    assert_eq!(seen["audio_tone_hz"], tone_hz(j as u32 + 2), "Dee still hears {sender}");
                    assert!(seen["stats"]["receive_audio_kbps"].as_f64().unwrap() > 10.0, "{seen}");
                }
                _ => {
                    assert_eq!(layer, "640x360", "{sender} sends {receiver} the full picture");
                    assert_eq!(sizes, &serde_json::json!(["640x360"]), "{receiver} of {sender}");
                    let frames = seen["stats"]["frame_rate"].as_f64().unwrap();
                    assert!(frames >= 10.0, "{receiver} decodes {frames} fps of {sender}");
                }
            }
        }
    }
}

/// The layer a sender's report says `receiver` got at Unix time `at_ms` (the last change before).
fn layer_at(sender: &serde_json::Value, receiver: &str, at_ms: u64) -> serde_json::Value {
    let changes = peer(sender, receiver)["send_layers"].as_array().unwrap().clone();
    changes
        .iter()
        .take_while(|change| change["at_ms"].as_u64().unwrap() <= at_ms)
        .last()
        .map_or(serde_json::Value::Null, |change| change["size"].clone())
}

/// The Opus encoder's tuning in effect at `at_ms` (Unix): (kbit/s, FEC, loss %), from its
/// retunings; before the first, the start (32 kbit/s, no FEC until a loss is reported).
fn audio_tuning_at(report: &serde_json::Value, at_ms: u64) -> (u64, bool, u64) {
    report["audio_tunings"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|t| t["at_unix_ms"].as_u64().unwrap() <= at_ms)
        .last()
        .map_or((32, false, 0), |t| {
            (
                t["bitrate_kbps"].as_u64().unwrap(),
                t["fec"].as_bool().unwrap(),
                t["loss_percent"].as_u64().unwrap(),
            )
        })
}

/// A 4-party call in a lab where Dee's link becomes a poor hotel link (300 kbit/s each way, 5 %
/// of UDP lost) 6 s in, for 16 s: everyone sends Dee a small layer while Ann, Bob and Cid keep
/// sending each other the full picture; Dee keeps hearing everyone; once the link is given back,
/// everyone sends Dee the full picture again within 10 s. Everyone's Opus encoder (one for all
/// its peers, Dee's link the worst of them) carries FEC tuned for the loss while it lasts, and
/// drops it once the link has been clean for a while.
#[test]
fn a_poor_link_gets_a_small_layer_and_nobody_else_suffers() {
    let _serial = one_at_a_time();
    let mut lab = Lab::new("layers");
    let hosts: Vec<usize> = (0..4).map(|_| lab.open_host()).collect();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(Some(&lab.wan), state.path(), &format!("{RELAY_IP}:443"), &[]);
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let netns = Some(lab.host(hosts[i]));
        children.push(spawn_synthetic_in(netns, link, name, i as u32 + 2, 40.0, ("640x360", 15), &[]));
    }
    std::thread::sleep(Duration::from_secs(6));
    lab.limit_link(hosts[3], Some((300, 0.05)));
    std::thread::sleep(Duration::from_secs(16));
    let lifted = unix_ms();
    lab.limit_link(hosts[3], None);
    let reports: Vec<(serde_json::Value, String)> = children.into_iter().map(report_of).collect();
    for ((report, log), me) in reports.iter().zip(names) {
        eprintln!("--- {me}: {report}\n{log}");
    }
    let report = |name: &str| &reports[names.iter().position(|n| *n == name).unwrap()].0;
    for name in names {
        let tunings = &report(name)["audio_tunings"];
        let (kbps, fec, loss) = audio_tuning_at(report(name), lifted);
        assert!(
            fec && loss >= 3,
            "{name}'s Opus at the end of the limit: FEC {fec} for {loss} % loss: {tunings}"
        );
        assert!((16..=32).contains(&kbps), "{name}'s Opus at {kbps} kbit/s: {tunings}");
        let left = report(name)["left_at_unix_ms"].as_u64().unwrap();
        assert_eq!(
            audio_tuning_at(report(name), left),
            (32, false, 0),
            "{name}'s Opus after the lift: {tunings}"
        );
    }
    for (j, sender) in names.iter().enumerate() {
        for receiver in names.iter().filter(|n| *n != sender) {
            let changes = &peer(report(sender), receiver)["send_layers"];
            if *receiver == "Dee" {
                // The last 8 s of the limit: a small layer, never the full picture (a pause of
                // video while the link is at its worst is allowed: audio goes first).
                let window: Vec<serde_json::Value> =
                    (0..=8).map(|s| layer_at(report(sender), "Dee", lifted - s * 1_000)).collect();
                assert!(
                    window.iter().all(|l| l != "640x360")
                        && window.iter().any(|l| l == "320x180" || l == "160x90"),
                    "{sender} sent Dee {window:?} in the last 8 s of the limit: {changes}"
                );
                let back = layer_at(report(sender), "Dee", lifted + 10_000);
                assert_eq!(back, "640x360", "{sender} to Dee 10 s after the limit was lifted: {changes}");
                let heard = &peer(report("Dee"), sender)["audio_tone_hz"];
                assert_eq!(heard, &tone_hz(j as u32 + 2), "Dee hears {sender}");
            } else if *sender != "Dee" {
                assert_eq!(
                    changes.as_array().unwrap().iter().map(|c| c["size"].clone()).collect::<Vec<_>>(),
                    ["640x360"],
                    "{sender} to {receiver}, untouched by Dee's link"
                );
            }
        }
    }
    drop(relay);
}

/// Ann knows her uplink carries 900 kbit/s (as the lobby's check measures it; 720 planned on):
/// her 640x360 picture at 15 fps (415 kbit/s a peer with audio and headers) fits one of her two
/// peers, so the one later in id order gets 320x180 (130 kbit/s) and the other the full
/// picture; Bob and Cid, with no such limit, send everyone the full picture.
#[test]
fn a_known_uplink_keeps_what_everyone_is_sent_within_it() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let extra: &[&str] = if *name == "Ann" { &["--upload-kbps", "900"] } else { &[] };
        children.push(spawn_synthetic(link, name, i as u32 + 2, 12.0, ("640x360", 15), extra));
    }
    let reports: Vec<(serde_json::Value, String)> = children.into_iter().map(report_of).collect();
    for ((report, log), me) in reports.iter().zip(names) {
        eprintln!("--- {me}: {report}\n{log}");
    }
    let report = |name: &str| &reports[names.iter().position(|n| *n == name).unwrap()].0;
    let id = |name: &str| report(name)["peer_id"].as_str().unwrap().to_owned();
    let (first, second) = if id("Bob") < id("Cid") { ("Bob", "Cid") } else { ("Cid", "Bob") };
    let sent = |from: &str, to: &str| peer(report(from), to)["stats"]["send_layer"].clone();
    assert_eq!(sent("Ann", first), "640x360", "Ann keeps the full picture for {first}");
    assert_eq!(sent("Ann", second), "320x180", "Ann's uplink leaves {second} the half-size one");
    for (from, to) in [("Bob", "Ann"), ("Bob", "Cid"), ("Cid", "Ann"), ("Cid", "Bob")] {
        assert_eq!(sent(from, to), "640x360", "{from} to {to}: no limit");
    }
    // What she sent them matches what they decoded last.
    let sizes = &peer(report(second), "Ann")["video_sizes"];
    assert_eq!(sizes.as_array().unwrap().last().unwrap(), "320x180", "{second} decoded of Ann: {sizes}");
    drop(relay);
}

/// Eight people in a call on this 2-core machine (debug build), each showing the others as
/// thumbnails (160x90, as a gallery of eight would): each sender encodes its 160x90 layer
/// only, everyone decodes everyone, and everyone's audio reaches everyone.
#[test]
fn eight_participants_in_thumbnails_each_see_and_hear_all_seven_others() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay", "Gus", "Hal"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let extra = ["--view", "160x90"];
        children.push(spawn_synthetic(link, name, i as u32 + 2, 24.0 - 0.3 * i as f64, SMALL, &extra));
        std::thread::sleep(Duration::from_millis(300));
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
            let frames = seen["video_frames_decoded"].as_u64().unwrap();
            assert!(frames >= 100, "{me} decoded {frames} frames of {other}");
            let sizes = seen["video_sizes"].as_array().unwrap();
            assert_eq!(sizes.last().unwrap(), "160x90", "{me} gets {other}'s thumbnail layer: {sizes:?}");
            assert_eq!(seen["stats"]["send_layer"], "160x90", "{me} sends {other} its thumbnail layer");
            // Audio arrives from everyone (naming each tone is the 4-party test's job: with eight
            // debug-build processes on two cores the playout conceals now and then).
            let audio = seen["stats"]["receive_audio_kbps"].as_f64().unwrap();
            assert!(audio > 10.0, "{me} gets {audio} kbit/s of {other}'s audio");
            assert_eq!(seen["pattern_id"], j as u64 + 2, "{me} reads {other}'s video pattern");
        }
    }
}
