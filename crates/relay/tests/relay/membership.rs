//! Joining, presence and leaving among several participants.

use std::time::Duration;

use confer_proto::{ClientMessage, ErrorCode, LeaveReason, PeerState, Role, ServerMessage};

use crate::support::{Relays, Seat, join_message};

on_one_relay_and_on_three!(three_participants_see_each_other_join_change_and_leave);
async fn three_participants_see_each_other_join_change_and_leave(relay: &Relays) {
    let links = relay.create_room(false).await;

    let mut hana = relay.join(&links.host, "Hana").await;
    assert!(hana.participants.is_empty());

    let mut gus = relay.join(&links.guest, "Gus").await;
    assert_eq!(gus.participants.len(), 1);
    assert_eq!(gus.participants[0].id, hana.id);
    assert_eq!(gus.participants[0].name, "Hana");
    assert_eq!(gus.participants[0].role, Role::Host);
    assert_eq!(gus.participants[0].state, PeerState::Active);
    match hana.client.recv().await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!((peer.id, peer.name.as_str(), peer.role), (gus.id.clone(), "Gus", Role::Guest));
            assert!(peer.camera, "Gus joined with the camera on");
        }
        other => panic!("{other:?}"),
    }

    let mut ivy = relay.join(&links.guest, "  Ivy  ").await;
    let mut names: Vec<_> = ivy.participants.iter().map(|p| p.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["Gus", "Hana"]);
    for seat in [&mut hana, &mut gus] {
        match seat.client.recv().await {
            ServerMessage::PeerJoined { peer } => assert_eq!(peer.name, "Ivy", "names are trimmed"),
            other => panic!("{other:?}"),
        }
    }

    // Ivy mutes and raises her hand: everyone, Ivy included, sees the new state.
    ivy.client
        .send(&ClientMessage::Update { name: None, muted: Some(true), camera: None, hand_raised: Some(true) })
        .await;
    for seat in [&mut hana, &mut gus, &mut ivy] {
        match seat.client.recv().await {
            ServerMessage::PeerUpdated { peer } => {
                assert_eq!(peer.name, "Ivy");
                assert!(peer.muted && peer.hand_raised && peer.camera);
            }
            other => panic!("{other:?}"),
        }
    }

    // Gus leaves: the others see "left" at once, not "reconnecting".
    gus.client.send(&ClientMessage::Leave).await;
    for seat in [&mut hana, &mut ivy] {
        match seat.client.recv().await {
            ServerMessage::PeerLeft { peer, reason } => {
                assert_eq!(peer, gus.id);
                assert_eq!(reason, LeaveReason::Left);
            }
            other => panic!("{other:?}"),
        }
    }

    // A newcomer now sees only Hana and Ivy.
    let late = relay.join(&links.guest, "Late").await;
    let ids: Vec<_> = late.participants.iter().map(|p| p.id.clone()).collect();
    assert!(ids.contains(&hana.id) && ids.contains(&ivy.id) && ids.len() == 2);

    // Tokens are credentials: the relay (logging at debug level here) never writes one down.
    let log = relay.log();
    for secret in [&links.host.token, &links.guest.token, &hana.resume_token, &late.resume_token] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
    }
}

on_one_relay_and_on_three!(
    a_full_room_refuses_the_next_participant_and_keeps_the_others,
    "--room-capacity",
    "2"
);
async fn a_full_room_refuses_the_next_participant_and_keeps_the_others(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let _b = relay.join(&links.guest, "B").await;
    a.client.recv().await; // B joined

    let mut c = relay.connect().await;
    c.send(&join_message(&links.guest, "C")).await;
    c.expect_fatal(ErrorCode::RoomFull).await;

    a.client.expect_silence(Duration::from_millis(300)).await;
    a.client.assert_alive().await;
}

on_one_relay_and_on_three!(messages_before_join_are_refused_but_ping_works);
async fn messages_before_join_are_refused_but_ping_works(relay: &Relays) {
    let mut client = relay.connect().await;
    client.assert_alive().await;
    client.send(&ClientMessage::Lock).await;
    client.expect_error(ErrorCode::NotJoined).await;
    let links = relay.create_room(false).await;
    client.send(&join_message(&links.host, "Late starter")).await;
    let mut seat = client.expect_joined().await;
    seat.client.send(&join_message(&links.host, "Twice")).await;
    seat.client.expect_error(ErrorCode::AlreadyJoined).await;
}

on_one_relay_and_on_three!(
    a_storm_of_people_leaving_and_hanging_up_at_once_frees_their_seats_at_once,
    "--room-capacity",
    "8",
    "--max-connections-per-ip",
    "1000"
);
/// Leaving and closing at once, with messages still unread (a window closed mid-call): the
/// client's kernel resets the connection, and a write of the relay's to it fails while the `leave`
/// is still unread. The seat must end as left, at once, not linger through the grace period as a
/// dropped connection's does: the next person finds it free.
async fn a_storm_of_people_leaving_and_hanging_up_at_once_frees_their_seats_at_once(relay: &Relays) {
    let mut rooms = Vec::new();
    let mut seats = Vec::new();
    for _ in 0..12 {
        let links = relay.create_room(false).await;
        for _ in 0..8 {
            seats.push(Some(relay.join(&links.guest, "x").await));
        }
        rooms.push(links);
    }
    for storm in 0..3 {
        let leaving: Vec<usize> = (0..seats.len()).filter(|i| (i * 7 + storm) % 3 == 0).collect();
        for &i in &leaving {
            // Unread presence messages in its buffer; dropped right after sending.
            let mut seat: Seat = seats[i].take().unwrap();
            seat.client.send(&ClientMessage::Leave).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let joins = leaving.iter().map(|&i| {
            let link = rooms[i / 8].guest.clone();
            async move {
                let mut client = relay.connect().await;
                client.send(&join_message(&link, "x")).await;
                (i, client.recv().await, client)
            }
        });
        for (i, answer, client) in futures_util::future::join_all(joins).await {
            match answer {
                ServerMessage::Joined { peer_id, resume_token, participants, ice_servers, .. } => {
                    seats[i] = Some(Seat { client, id: peer_id, resume_token, participants, ice_servers });
                }
                other => panic!("storm {storm}: seat {i} of room {}: {other:?}", i / 8),
            }
        }
    }
}
