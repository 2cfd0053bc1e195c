//! File transfer in real calls: a 20 MiB file reaches the other participant whole, checked by
//! its SHA-256, on a data channel of its own; a transfer to a participant who leaves mid-way is
//! reported to the sender with how far it got, and the receiver keeps no partial file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Write as _;

use confer_tests::{Relay, SMALL, one_at_a_time, report_of, spawn_synthetic};
use sha2::{Digest as _, Sha256};

/// A file of `size` pseudo-random bytes (incompressible, and different for each seed).
fn random_file(dir: &std::path::Path, name: &str, size: usize, seed: u64) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = seed | 1;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len());
        file.write_all(&block[..n]).unwrap();
        hasher.update(&block[..n]);
        left -= n;
    }
    file.flush().unwrap();
    (path, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn sha256_of(path: &std::path::Path) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut hasher).unwrap();
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_20_mib_file_arrives_whole_checked_by_its_hash() {
    let _serial = one_at_a_time();
    let scratch = tempfile::tempdir().unwrap();
    let (file, sha256) = random_file(scratch.path(), "slides.pdf", 20 * 1024 * 1024, 7);
    let downloads = scratch.path().join("bob-downloads");
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let file_arg = file.to_string_lossy().into_owned();
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        2,
        20.0,
        SMALL,
        &["--send-file", &file_arg, "--send-file-after", "2"],
    );
    let bob = spawn_synthetic(&invite, "Bob", 3, 20.0, SMALL, &["--downloads", downloads.to_str().unwrap()]);
    let (ann, ann_log) = report_of(ann);
    let (bob, bob_log) = report_of(bob);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}");
    let received = &bob["files_received"].as_array().unwrap()[..];
    let [got] = received else { panic!("Bob received {received:?}") };
    assert_eq!((got["name"].as_str(), got["size"].as_u64()), (Some("slides.pdf"), Some(20 * 1024 * 1024)));
    assert_eq!(got["sha256"], sha256, "the hash the sender announced is the file's");
    let saved = std::path::PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(saved, downloads.join("slides.pdf"));
    assert_eq!(sha256_of(&saved), sha256, "the saved file is the sent one, byte for byte");
    assert_eq!(names_in(&downloads), ["slides.pdf"], "nothing else left in the downloads");
    let sent = &ann["files_sent"].as_array().unwrap()[..];
    assert!(matches!(sent, [s] if s["name"] == "slides.pdf"), "Ann was told it arrived: {sent:?}");
    assert!(bob["file_progress_events"].as_u64().unwrap() >= 1, "Bob saw progress");
    let peer_bob = ann["peers"].as_array().unwrap().iter().find(|p| p["name"] == "Bob").unwrap();
    assert!(peer_bob["video_frames_decoded"].as_u64().unwrap() > 100, "the call went on during the transfer");
}

#[test]
fn a_transfer_to_a_participant_who_leaves_midway_is_reported_and_leaves_no_partial_file() {
    let _serial = one_at_a_time();
    let scratch = tempfile::tempdir().unwrap();
    let (file, _) = random_file(scratch.path(), "video.mkv", 300 * 1024 * 1024, 11);
    let downloads = scratch.path().join("bob-downloads");
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let file_arg = file.to_string_lossy().into_owned();
    let ann = spawn_synthetic(
        &host_link,
        "Ann",
        2,
        14.0,
        SMALL,
        &["--send-file", &file_arg, "--send-file-after", "2"],
    );
    // Bob leaves about 3 s into the transfer.
    let bob = spawn_synthetic(&invite, "Bob", 3, 5.0, SMALL, &["--downloads", downloads.to_str().unwrap()]);
    let (bob, bob_log) = report_of(bob);
    let (ann, ann_log) = report_of(ann);
    eprintln!("--- Ann: {ann}\n{ann_log}\n--- Bob: {bob}\n{bob_log}");
    assert_eq!(bob["files_received"], serde_json::json!([]));
    let failed = &ann["files_failed"].as_array().unwrap()[..];
    let [failure] = failed else { panic!("Ann's failures: {failed:?}") };
    assert_eq!((failure["name"].as_str(), failure["sending"].as_bool()), (Some("video.mkv"), Some(true)));
    let reason = failure["reason"].as_str().unwrap();
    assert!(
        reason.contains("the transfer stopped after") && reason.contains("of 314572800 bytes"),
        "{reason}"
    );
    assert_eq!(ann["files_sent"], serde_json::json!([]));
    let left: Vec<String> =
        names_in(&downloads).into_iter().filter(|n| n.ends_with(".part") || n == "video.mkv").collect();
    assert!(left.is_empty(), "Bob keeps no partial file: {left:?}");
}
