//! The call engine in this process, as an app uses it (through `confer_mesh::engine`), against
//! the real relay binary: what it holds for an app that stops reading, and what it leaves behind
//! when the call ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_mesh::engine::{self, EngineConfig, EngineEvent, EngineEvents, EngineHandle};
use confer_mesh::queues::PICTURE_EVENTS;
use confer_mesh::rooms;
use confer_proto::{Fingerprint, PeerId};
use confer_tests::Relay;

const PATIENCE: Duration = Duration::from_secs(20);

/// Reads `events` until one matches, within [`PATIENCE`].
async fn until(
    events: &mut EngineEvents,
    what: &str,
    mut want: impl FnMut(&EngineEvent) -> bool,
) -> EngineEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the call's events ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }
}

/// Ann (host) and Bob (guest) in a call, each seeing the other's video.
async fn two_in_a_call(relay: &Relay) -> [(EngineHandle, EngineEvents, PeerId); 2] {
    let pin = Fingerprint::parse(&relay.fingerprint).unwrap();
    let room = rooms::create_room(&relay.url(), Some(pin), None, false).await.unwrap();
    let mut joined = Vec::new();
    for (link, name, pattern) in [(&room.host, "Ann", 1), (&room.guest, "Bob", 2)] {
        let mut config = EngineConfig::synthetic(name, pattern);
        (config.width, config.height, config.fps) = (320, 180, 30);
        config.probe = false;
        let (handle, mut events) = engine::join(link, config).await.unwrap();
        let EngineEvent::Joined { peer_id, .. } =
            until(&mut events, "the seat", |e| matches!(e, EngineEvent::Joined { .. })).await
        else {
            unreachable!()
        };
        joined.push((handle, events, peer_id));
    }
    let [mut ann, mut bob]: [_; 2] = joined.try_into().unwrap();
    let (ann_id, bob_id) = (ann.2.clone(), bob.2.clone());
    until(
        &mut ann.1,
        "Bob's video",
        |e| matches!(e, EngineEvent::VideoFrame { from, .. } if *from == bob_id),
    )
    .await;
    until(
        &mut bob.1,
        "Ann's video",
        |e| matches!(e, EngineEvent::VideoFrame { from, .. } if *from == ann_id),
    )
    .await;
    [ann, bob]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stops_reading_holds_a_few_frames_and_still_hears_who_left() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let [(_ann, mut ann_events, _), (bob, mut bob_events, bob_id)] = two_in_a_call(&relay).await;

    // Ann's app stops reading for 3 s (a stalled page, a debugger), while Bob's video (30 fps)
    // comes on; a second in, Bob leaves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bob.leave();
    until(&mut bob_events, "Bob's end", |e| matches!(e, EngineEvent::Ended(_))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (mut pictures, mut left) = (0, false);
    while let Some(event) = ann_events.try_recv() {
        match event {
            EngineEvent::VideoFrame { .. } | EngineEvent::AudioLevels { .. } | EngineEvent::Stats(_) => {
                pictures += 1;
            }
            EngineEvent::ParticipantLeft { id, .. } => left |= id == bob_id,
            _ => {}
        }
    }
    eprintln!("waiting for Ann's app after 3 s: {pictures} pictures, Bob's leaving: {left}");
    // Unbounded, 3 s of Bob's video would wait (90 frames of 320x180, and levels, statistics).
    assert!(pictures <= PICTURE_EVENTS, "{pictures} pictures held for a stalled app");
    assert!(left, "Bob's leaving was lost while Ann's app was not reading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_ended_leaves_no_task_running() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let [(ann, mut ann_events, _), (bob, mut bob_events, _)] = two_in_a_call(&relay).await;
    let during = runtime.num_alive_tasks();
    for (handle, events) in [(&ann, &mut ann_events), (&bob, &mut bob_events)] {
        handle.leave();
        until(events, "the end", |e| matches!(e, EngineEvent::Ended(_))).await;
    }
    // The engine's task says `Ended` as its last act; give the tasks it stopped a moment to go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut after = runtime.num_alive_tasks();
    while after > before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = runtime.num_alive_tasks();
    }
    eprintln!("tasks: {before} before the call, {during} during it, {after} after it");
    assert!(during > before + 10, "the call's tasks were not counted ({before} → {during})");
    assert_eq!(after, before, "tasks left running after both left the call");
}
