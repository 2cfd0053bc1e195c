//! Lock, knock, admit, deny, waiting room and remove.

use std::time::Duration;

use confer_proto::{ClientMessage, ErrorCode, LeaveReason, ServerMessage};

use crate::support::{Relays, join_message};

on_one_relay_and_on_three!(a_locked_room_makes_newcomers_knock_and_the_host_admits_or_denies);
async fn a_locked_room_makes_newcomers_knock_and_the_host_admits_or_denies(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut host = relay.join(&links.host, "Host").await;
    let mut early = relay.join(&links.guest, "Early").await;
    host.client.recv().await; // Early joined

    host.client.send(&ClientMessage::Lock).await;
    let host_id = host.id.clone();
    for seat in [&mut host, &mut early] {
        match seat.client.recv().await {
            ServerMessage::RoomLocked { locked: true, by } => assert_eq!(by, host_id),
            other => panic!("{other:?}"),
        }
    }

    // A guest knocks: it waits, the host sees the knock, the guest members see nothing.
    let mut knocker = relay.connect().await;
    knocker.send(&join_message(&links.guest, "Knocker")).await;
    let knocker_id = match knocker.recv().await {
        ServerMessage::Knocking { peer_id } => peer_id,
        other => panic!("{other:?}"),
    };
    match host.client.recv().await {
        ServerMessage::Knock { peer } => {
            assert_eq!((peer.id, peer.name.as_str()), (knocker_id.clone(), "Knocker"));
        }
        other => panic!("{other:?}"),
    }
    early.client.expect_silence(Duration::from_millis(200)).await;
    // A knocker cannot signal anyone yet.
    knocker
        .send(&ClientMessage::Signal {
            to: host.id.clone(),
            payload: confer_proto::SignalPayload::EndOfCandidates { username_fragment: None },
        })
        .await;
    knocker.expect_error(ErrorCode::NotJoined).await;

    host.client.send(&ClientMessage::Admit { peer: knocker_id.clone() }).await;
    let admitted = knocker.expect_joined().await;
    assert_eq!(admitted.id, knocker_id, "the knocker keeps its id");
    assert_eq!(admitted.participants.len(), 2);
    let ended = host.client.recv().await;
    assert!(matches!(ended, ServerMessage::KnockEnded { ref peer } if *peer == knocker_id), "{ended:?}");
    assert!(matches!(host.client.recv().await, ServerMessage::PeerJoined { peer } if peer.id == knocker_id));
    assert!(matches!(early.client.recv().await, ServerMessage::PeerJoined { peer } if peer.id == knocker_id));

    // Another knocks and is denied.
    let mut unwanted = relay.connect().await;
    unwanted.send(&join_message(&links.guest, "Unwanted")).await;
    let unwanted_id = match unwanted.recv().await {
        ServerMessage::Knocking { peer_id } => peer_id,
        other => panic!("{other:?}"),
    };
    host.client.recv().await; // knock
    host.client.send(&ClientMessage::Deny { peer: unwanted_id }).await;
    unwanted.expect_fatal(ErrorCode::KnockDenied).await;

    // Hosts never knock; unlocking lets guests straight in again.
    let _second_host = relay.join(&links.host, "Co-host").await;
    host.client.send(&ClientMessage::Unlock).await;
    relay.join(&links.guest, "After unlock").await;
}

on_one_relay_and_on_three!(a_room_with_a_waiting_room_makes_guests_knock_and_tells_a_late_host);
async fn a_room_with_a_waiting_room_makes_guests_knock_and_tells_a_late_host(relay: &Relays) {
    let links = relay.create_room(true).await;
    let mut guest = relay.connect().await;
    guest.send(&join_message(&links.guest, "Early guest")).await;
    let guest_id = match guest.recv().await {
        ServerMessage::Knocking { peer_id } => peer_id,
        other => panic!("{other:?}"),
    };
    // The host arrives after the knock and finds it waiting in `joined`.
    let mut host = relay.connect().await;
    host.send(&join_message(&links.host, "Host")).await;
    match host.recv().await {
        ServerMessage::Joined { knocking, .. } => {
            assert_eq!(knocking.len(), 1);
            assert_eq!(knocking[0].id, guest_id);
        }
        other => panic!("{other:?}"),
    }
    host.send(&ClientMessage::Admit { peer: guest_id }).await;
    guest.expect_joined().await;
}

on_one_relay_and_on_three!(the_host_removes_a_participant);
async fn the_host_removes_a_participant(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut host = relay.join(&links.host, "Host").await;
    let mut stays = relay.join(&links.guest, "Stays").await;
    let mut goes = relay.join(&links.guest, "Goes").await;
    for _ in 0..2 {
        host.client.recv().await;
    }
    stays.client.recv().await;

    host.client.send(&ClientMessage::Remove { peer: goes.id.clone() }).await;
    goes.client.expect_fatal(ErrorCode::Removed).await;
    for seat in [&mut host, &mut stays] {
        match seat.client.recv().await {
            ServerMessage::PeerLeft { peer, reason } => {
                assert_eq!(peer, goes.id);
                assert_eq!(reason, LeaveReason::Removed);
            }
            other => panic!("{other:?}"),
        }
    }
    // The removed seat cannot be resumed.
    let mut back = relay.connect().await;
    back.send(&ClientMessage::Resume {
        token: goes.resume_token,
        last_seq: 0,
        name: None,
        muted: false,
        camera: false,
    })
    .await;
    back.expect_fatal(ErrorCode::ResumeFailed).await;
    host.client.send(&ClientMessage::Remove { peer: goes.id }).await;
    host.client.expect_error(ErrorCode::PeerNotFound).await;
}
