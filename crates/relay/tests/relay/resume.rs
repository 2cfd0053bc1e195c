//! Dropped connections: the seat is kept for the grace period, queued signals are delivered on
//! resume, the seat is given up after it; dead connections are found by heartbeat; a relay
//! restart does not cost anyone their seat.

use std::time::{Duration, Instant};

use confer_proto::{ClientMessage, ErrorCode, LeaveReason, PeerState, ServerMessage, SignalPayload};

use crate::support::{Seat, TestRelay};

fn resume(token: &str, last_seq: u64) -> ClientMessage {
    ClientMessage::Resume { token: token.to_owned(), last_seq, name: None, muted: false, camera: false }
}

fn candidate(n: u32) -> SignalPayload {
    SignalPayload::Candidate {
        candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 40_000 + n),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    }
}

async fn expect_reconnecting(seat: &mut Seat, who: &confer_proto::PeerId) {
    match seat.client.recv().await {
        ServerMessage::PeerReconnecting { peer } => assert_eq!(&peer, who),
        other => panic!("expected reconnecting, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resume_within_the_grace_period_keeps_the_seat_and_delivers_what_was_sent_meanwhile() {
    let relay = TestRelay::start(&["--grace", "20"]).await;
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let b = relay.join(&links.guest, "B").await;
    a.client.recv().await; // B joined

    // B receives one signal, then its socket drops without a close frame.
    let mut b_client = b.client;
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: candidate(1) }).await;
    let seq1 = match b_client.recv().await {
        ServerMessage::Signal { seq, .. } => seq,
        other => panic!("{other:?}"),
    };
    drop(b_client);
    expect_reconnecting(&mut a, &b.id).await;

    // A keeps signalling B during the gap.
    for n in 2..=4 {
        a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: candidate(n) }).await;
    }
    a.client.assert_alive().await;

    let mut back = relay.connect().await;
    back.send(&resume(&b.resume_token, seq1)).await;
    let new_token = match back.recv().await {
        ServerMessage::Resumed { peer_id, participants, replayed, gap, resume_token, .. } => {
            assert_eq!(peer_id, b.id, "the seat keeps its id");
            assert_eq!(participants.len(), 1);
            assert_eq!(participants[0].id, a.id);
            assert_eq!(replayed, 3);
            assert!(!gap);
            assert_ne!(resume_token, b.resume_token, "resume tokens rotate");
            resume_token
        }
        other => panic!("{other:?}"),
    };
    for n in 2..=4u32 {
        match back.recv().await {
            ServerMessage::Signal { from, seq, payload } => {
                assert_eq!(from, a.id);
                assert_eq!(seq, u64::from(n));
                assert_eq!(payload, candidate(n));
            }
            other => panic!("{other:?}"),
        }
    }
    match a.client.recv().await {
        ServerMessage::PeerResumed { peer } => {
            assert_eq!(peer.id, b.id);
            assert_eq!(peer.state, PeerState::Active);
        }
        other => panic!("{other:?}"),
    }
    // Live again: new signals flow straight through.
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: candidate(5) }).await;
    assert!(matches!(back.recv().await, ServerMessage::Signal { seq: 5, .. }));
    assert!(!new_token.is_empty());
}

#[tokio::test]
async fn after_the_grace_period_the_others_see_left_and_the_seat_cannot_be_resumed() {
    let relay = TestRelay::start(&["--grace", "1"]).await;
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let b = relay.join(&links.guest, "B").await;
    a.client.recv().await;
    drop(b.client);
    expect_reconnecting(&mut a, &b.id).await;
    match a.client.recv().await {
        ServerMessage::PeerLeft { peer, reason } => {
            assert_eq!(peer, b.id);
            assert_eq!(reason, LeaveReason::Timeout);
        }
        other => panic!("{other:?}"),
    }
    let mut late = relay.connect().await;
    late.send(&resume(&b.resume_token, 0)).await;
    late.expect_fatal(ErrorCode::ResumeFailed).await;
}

#[tokio::test]
async fn a_second_connection_for_the_same_participant_replaces_the_first() {
    let relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let mut b = relay.join(&links.guest, "B").await;
    a.client.recv().await;

    let mut second = relay.connect().await;
    second.send(&resume(&b.resume_token, 0)).await;
    assert!(matches!(second.recv().await, ServerMessage::Resumed { peer_id, .. } if peer_id == b.id));
    b.client.expect_fatal(ErrorCode::Replaced).await;
    // For the others nothing changed: B never left.
    a.client.expect_silence(Duration::from_millis(300)).await;
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: candidate(1) }).await;
    assert!(matches!(second.recv().await, ServerMessage::Signal { .. }));
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_found_by_heartbeat() {
    let relay = TestRelay::start(&["--heartbeat-interval", "1", "--heartbeat-timeout", "2"]).await;
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    // B joins, then never reads again: it answers no ping, like a machine that lost power.
    let b = relay.join(&links.guest, "B").await;
    a.client.recv().await;
    let started = Instant::now();
    expect_reconnecting(&mut a, &b.id).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "declared dead before the timeout: {waited:?}");
    // A, which answers pings, stays.
    a.client.expect_silence(Duration::from_millis(2500)).await;
    a.client.assert_alive().await;
    drop(b);
}

#[tokio::test]
async fn a_relay_restart_loses_nobody() {
    let relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let b = relay.join(&links.guest, "B").await;
    a.client.recv().await;
    let old_pin = relay.pin;
    let state = relay.into_state_dir();

    // Same state directory: same token secret, same certificate, so the links stay valid.
    let relay = TestRelay::start_in(state, "127.0.0.1:0", &[]).await;
    assert_eq!(relay.pin, old_pin, "the pinned certificate survives a restart");
    let mut a2 = relay.connect().await;
    a2.send(&ClientMessage::Resume {
        token: a.resume_token.clone(),
        last_seq: 0,
        name: Some("A".into()),
        muted: true,
        camera: false,
    })
    .await;
    match a2.recv().await {
        ServerMessage::Resumed { peer_id, gap, replayed: 0, .. } => {
            assert_eq!(peer_id, a.id);
            assert!(gap, "signals in flight during the restart may be lost, and the client is told so");
        }
        other => panic!("{other:?}"),
    }
    let mut b2 = relay.connect().await;
    b2.send(&ClientMessage::Resume {
        token: b.resume_token.clone(),
        last_seq: 0,
        name: Some("B".into()),
        muted: false,
        camera: true,
    })
    .await;
    match b2.recv().await {
        ServerMessage::Resumed { peer_id, participants, .. } => {
            assert_eq!(peer_id, b.id);
            assert_eq!(participants.len(), 1);
            assert_eq!((participants[0].id.clone(), participants[0].name.as_str()), (a.id.clone(), "A"));
            assert!(participants[0].muted, "state the client re-sent is restored");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(a2.recv().await, ServerMessage::PeerJoined { peer } if peer.id == b.id));
    // Signalling works across the restart.
    a2.send(&ClientMessage::Signal { to: b.id.clone(), payload: candidate(9) }).await;
    assert!(matches!(b2.recv().await, ServerMessage::Signal { from, .. } if from == a.id));
    a.client = a2; // keep the types honest: the old socket is dead
}
