//! Real calls on loopback: the real relay binary, headless `confer` participants with synthetic
//! media, real WebRTC peer connections between them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::{Relay, report_of, spawn_confer};

/// A participant's command line: synthetic media at a size two cores can encode four times.
fn join_args(link: &str, name: &str, pattern: u32, seconds: f64, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "join",
        link,
        "--name",
        name,
        "--synthetic",
        "--pattern-id",
        &pattern.to_string(),
        "--duration",
        &seconds.to_string(),
        "--report",
        "json",
        "--size",
        "320x180",
        "--fps",
        "15",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn spawn(args: &[String]) -> std::process::Child {
    spawn_confer(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn peer<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the report: {report}"))
}

#[test]
fn four_participants_see_and_hear_each_other_chat_and_see_mute() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let names = ["Ann", "Bob", "Cid", "Dee"];
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let link = if i == 0 { &host_link } else { &invite };
        let chat = format!("hello from {name}");
        let mut extra = vec!["--chat", chat.as_str()];
        if *name == "Bob" {
            extra.extend(["--mute-after", "7"]);
        }
        // Dee joins late: 3 s after the others, and stays as long.
        if *name == "Dee" {
            std::thread::sleep(Duration::from_secs(3));
        }
        let seconds = if *name == "Dee" { 9.0 } else { 12.0 - 0.2 * i as f64 };
        children.push(spawn(&join_args(link, name, i as u32 + 2, seconds, &extra)));
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
            // Chat goes to whoever is in the call when it is sent: Dee, who came late, missed
            // the others' greetings, and everyone got Dee's.
            let chats = report["chat"].as_array().unwrap();
            if me != "Dee" {
                assert!(
                    chats.iter().any(|c| c["text"] == format!("hello from {other}")),
                    "{me} did not get {other}'s chat: {chats:?}"
                );
            }
            if *other == "Bob" {
                assert_eq!(seen["muted"], true, "{me} does not see Bob muted");
            }
        }
    }
}
