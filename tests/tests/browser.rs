//! Interoperability with a browser: Debian's Chromium, headless, runs `tests/browser/peer.html`
//! (a participant written from docs/PROTOCOL.md alone), joins the room through the real relay
//! over WSS and calls a `confer` participant. Both must decode what the other sends, H.264 and
//! Opus, and read the other's stamp, tone and data-channel messages, and the browser receives
//! Confer's screen share on its own track.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::browser::{Chromium, query_escape, serve_page, spki_pin};
use confer_tests::{Relay, SMALL, report_of, spawn_synthetic};

#[test]
fn chromium_and_confer_see_and_hear_each_other() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let (port, results) = serve_page();
    let pin = spki_pin(&state.path().join("self-signed.crt"));

    let confer = spawn_synthetic(
        &host_link,
        "Confer",
        2,
        16.0,
        SMALL,
        &["--chat", "hello from Confer", "--chat-after", "5", "--share", "synthetic:41", "--share-fps", "5"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let url = format!(
        "http://127.0.0.1:{port}/?name=Chromium&pattern=7&seconds=12&mute_after=8&link={}",
        query_escape(&invite)
    );
    let chromium = Chromium::start(&url, &pin, &[]);
    let posted = results.recv_timeout(Duration::from_secs(40));
    let page_log = chromium.stop();
    let (report, log) = report_of(confer);
    eprintln!("--- Chromium's page:\n{page_log}\n--- Confer: {report}\n{log}");
    let posted = posted.expect("the page reported what it saw");
    let browser: serde_json::Value = serde_json::from_str(&posted).unwrap();
    eprintln!("--- Chromium saw: {browser:#}");

    // What Chromium got from Confer.
    assert_eq!(browser["errors"], serde_json::json!([]), "the page met errors");
    let peers = browser["peers"].as_object().unwrap();
    assert_eq!(peers.len(), 1, "Chromium sees one other participant");
    let confer_seen = peers.values().next().unwrap();
    eprintln!(
        "roles: Chromium {} the offer; Chromium → Confer video latency p50 {} ms",
        if confer_seen["offered"] == true { "made" } else { "answered" },
        report["peers"][0]["video_latency_ms"]["p50"]
    );
    assert_eq!(confer_seen["name"], "Confer");
    assert_eq!(confer_seen["received_video_codec"], "video/H264", "Chromium decodes Confer's H.264");
    assert_eq!(confer_seen["received_audio_codec"], "audio/opus", "Chromium decodes Confer's Opus");
    assert_eq!(confer_seen["pattern_id"], 2, "Chromium reads Confer's stamped video");
    assert!(confer_seen["stamped_frames"].as_u64().unwrap() >= 60, "Chromium saw too few of Confer's frames");
    assert_eq!(confer_seen["audio_tone_hz"], tone_hz(2), "Chromium hears Confer's tone");
    assert_eq!(
        confer_seen["chat"],
        serde_json::json!(["hello from Confer"]),
        "Confer's chat reaches Chromium"
    );
    assert_eq!(confer_seen["state"]["muted"], false, "Confer tells its state on the data channel");

    // Confer's screen share, on the third m-line (section 10), told apart by its stream id.
    let share = &confer_seen["share"];
    eprintln!("Confer → Chromium share: {share}");
    assert_eq!(share["pattern_id"], 41, "Chromium reads Confer's shared page");
    assert!(share["stamped_frames"].as_u64().unwrap() >= 20, "Chromium saw too few pictures of the share");

    // What Confer got from Chromium.
    let seen = &report["peers"][0];
    assert_eq!(seen["name"], "Chromium");
    assert_eq!(seen["pattern_id"], 7, "Confer reads Chromium's stamped canvas video");
    assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 60, "Confer decoded too little of Chromium");
    assert_eq!(seen["audio_tone_hz"], tone_hz(7), "Confer hears Chromium's Web Audio tone");
    assert_eq!(seen["muted"], true, "Chromium's mute, said only on the data channel, reaches Confer");
    assert_eq!(seen["hand_raised"], true, "and so does its raised hand");
    let chats = report["chat"].as_array().unwrap();
    assert!(
        chats.iter().any(|c| c["text"] == "hello from Chromium"),
        "Chromium's chat reaches Confer: {chats:?}"
    );
}
