//! Recording a real call: a headless `confer` records a 3-party call (with a screen share in
//! it) into a Matroska file, and an independent player, Debian's ffmpeg, reads it: ffprobe lists
//! every participant's camera and microphone and the share with the right sizes and duration,
//! ffmpeg decodes every picture and packet without an error, and the pictures it decodes are
//! each participant's own (their synthetic pattern read back). Everyone is told of the recording
//! before it starts, and told when it ends; a recording that cannot be written says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;

use confer_media::I420Frame;
use confer_media::synthetic::read_stamp;
use confer_tests::{
    Relay, SMALL, ffmpeg_complaints, ffprobe, one_at_a_time, report_of, spawn_synthetic, stream_titles,
};
use serde_json::Value;

/// The first entry of `report`'s recording log that is `event` (and, for a peer, `recording`
/// turning `to`).
fn logged<'a>(report: &'a Value, event: &str, to: Option<bool>) -> Option<&'a Value> {
    report["recording"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == event && to.is_none_or(|to| e["recording"] == to))
}

/// The middle picture of video stream `index`, as ffmpeg decodes it (all of the stream is
/// decoded: where a track starts in the file depends on when its media first arrived).
fn middle_picture(path: &Path, index: u64, width: usize, height: usize) -> I420Frame {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", &format!("0:{index}"), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = width * height * 3 / 2;
    let pictures = out.stdout.len() / size;
    assert!(pictures > 0, "stream {index}: no picture decoded");
    let middle = &out.stdout[pictures / 2 * size..][..size];
    let (y, rest) = middle.split_at(width * height);
    let (u, v) = rest.split_at(width * height / 4);
    I420Frame::from_planes(width, height, (y, u, v), (width, width / 2, width / 2)).unwrap()
}

#[test]
fn a_recorded_three_party_call_plays_in_ffmpeg_with_everyones_tracks_and_pictures() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let recordings = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let dir = recordings.path().to_str().unwrap();
    // Ann records from 2 s for 7 s; Bob shares his synthetic page from 3 s for 3 s.
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        21,
        12.0,
        SMALL,
        &["--record-after", "2", "--record-for", "7", "--recordings", dir],
    );
    let bob = spawn_synthetic(
        &invite,
        "Bob",
        22,
        12.0,
        SMALL,
        &["--share", "synthetic:44", "--share-after", "3", "--share-for", "3", "--share-fps", "5"],
    );
    let cid = spawn_synthetic(&invite, "Cid", 23, 12.0, SMALL, &[]);
    let (ann, ann_log) = report_of(ann);
    let (bob, bob_log) = report_of(bob);
    let (cid, cid_log) = report_of(cid);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}\n--- Cid: {cid}\n{cid_log}");

    let started = logged(&ann, "started", None).expect("Ann's recording started");
    let stopped = logged(&ann, "stopped", None).expect("Ann's recording stopped");
    assert_eq!(stopped["reason"], Value::Null, "stopped as asked");
    let path = Path::new(started["path"].as_str().unwrap());
    assert_eq!(path.parent(), Some(recordings.path()));
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("mkv"));
    let started_at = started["at_unix_ms"].as_u64().unwrap();
    // Everyone is told when the recording starts (the relay tells all at once; Ann writes only
    // once it told her) and when it ends.
    for (report, me) in [(&bob, "Bob"), (&cid, "Cid")] {
        let on = logged(report, "peer", Some(true)).unwrap_or_else(|| panic!("{me} was told Ann records"));
        let off = logged(report, "peer", Some(false)).unwrap_or_else(|| panic!("{me} was told it ended"));
        let told = on["at_unix_ms"].as_u64().unwrap();
        eprintln!("{me} was told {} ms before Ann started writing", started_at as i64 - told as i64);
        assert!(told <= started_at + 250, "{me} told at {told}, Ann writing since {started_at}");
        assert!(off["at_unix_ms"].as_u64().unwrap() >= told);
    }

    let probe = ffprobe(path);
    eprintln!("ffprobe: {probe}");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((6.0..=7.6).contains(&duration), "a 7 s recording lasts {duration} s");
    let said = stopped["duration_ms"].as_f64().unwrap();
    assert!((said - duration * 1_000.0).abs() <= 50.0, "Ann said {said} ms, ffprobe {duration} s");
    let streams = probe["streams"].as_array().unwrap();
    let by_title = |title: &str| {
        streams
            .iter()
            .find(|s| s["tags"]["title"] == title)
            .unwrap_or_else(|| panic!("no track {title} in {probe}"))
    };
    assert_eq!(
        stream_titles(&probe),
        [
            "Ann: camera",
            "Ann: microphone",
            "Bob: camera",
            "Bob: microphone",
            "Bob: screen",
            "Cid: camera",
            "Cid: microphone"
        ]
    );
    for name in ["Ann", "Bob", "Cid"] {
        let camera = by_title(&format!("{name}: camera"));
        assert_eq!((camera["codec_name"].as_str(), camera["width"].as_u64()), (Some("h264"), Some(320)));
        let microphone = by_title(&format!("{name}: microphone"));
        assert_eq!(
            (microphone["codec_name"].as_str(), microphone["sample_rate"].as_str()),
            (Some("opus"), Some("48000"))
        );
    }
    assert_eq!(by_title("Bob: screen")["width"], 1280);

    // ffmpeg decodes all of it, with nothing to complain about.
    let complaints = ffmpeg_complaints(path);
    assert!(complaints.is_empty(), "ffmpeg: {complaints}");

    // The pictures are each participant's own, the share's too.
    for (name, pattern) in [("Ann", 21), ("Bob", 22), ("Cid", 23)] {
        let index = by_title(&format!("{name}: camera"))["index"].as_u64().unwrap();
        let frame = middle_picture(path, index, 320, 180);
        assert_eq!(read_stamp(&frame).map(|s| s.id), Some(pattern), "{name}'s camera in the recording");
    }
    let index = by_title("Bob: screen")["index"].as_u64().unwrap();
    let frame = middle_picture(path, index, 1280, 720);
    assert_eq!(read_stamp(&frame).map(|s| s.id), Some(44), "Bob's share in the recording");
}

#[test]
fn a_recording_that_cannot_be_written_says_why_and_everyone_is_told_it_ended() {
    let _serial = one_at_a_time();
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    // A file where the recordings' folder should be.
    let blocked = tempfile::NamedTempFile::new().unwrap();
    let dir = blocked.path().join("recordings");
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        31,
        6.0,
        SMALL,
        &["--record-after", "1", "--recordings", dir.to_str().unwrap()],
    );
    let bob = spawn_synthetic(&invite, "Bob", 32, 6.0, SMALL, &[]);
    let (ann, ann_log) = report_of(ann);
    let (bob, bob_log) = report_of(bob);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}");
    assert!(logged(&ann, "started", None).is_none(), "nothing could be written");
    let stopped = logged(&ann, "stopped", None).expect("Ann is told the recording did not start");
    let reason = stopped["reason"].as_str().unwrap();
    assert!(reason.contains("could not write the recording") && reason.contains("recordings"), "{reason}");
    // Bob was told Ann records (before she could know it would fail) and that it ended.
    assert!(logged(&bob, "peer", Some(true)).is_some());
    assert!(logged(&bob, "peer", Some(false)).is_some(), "Bob still thinks Ann records: {bob}");
    assert_eq!(bob["peers"][0]["recording"], false);
}
