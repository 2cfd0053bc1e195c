//! The room in fake time: no sockets, no clock, every decision checked from its outputs.

use std::time::{Duration, Instant};

use confer_proto::{
    ClientMessage, ErrorCode, LeaveReason, PeerId, Role, RoomId, ServerMessage, SignalPayload,
};

use super::*;

const GRACE: Duration = Duration::from_secs(20);
const KEEP_READ: Duration = Duration::from_secs(10);

fn settings() -> RoomSettings {
    RoomSettings {
        capacity: 3,
        grace: GRACE,
        knock_timeout: Duration::from_secs(300),
        replay_messages: 4,
        replay_bytes: 64 * 1024,
        keep_read: KEEP_READ,
    }
}

fn peer(n: u8) -> PeerId {
    PeerId::parse(&format!("peer{n:07}")).unwrap()
}

fn request(conn: ConnId, role: Role) -> JoinRequest {
    JoinRequest {
        conn,
        peer: peer(u8::try_from(conn).unwrap()),
        role,
        name: format!("P{conn}"),
        muted: false,
        camera: false,
        welcome: Welcome {
            ice_servers: Vec::new(),
            resume_token: format!("resume-{conn}"),
            resume_issued_ms: 1_000,
        },
    }
}

/// A resume with the token the seat got when it joined (issued at 1,000 ms); the new token is
/// issued at `1_000 + conn`.
fn resume_request(conn: ConnId, seat: u8, last_seq: u64) -> ResumeRequest {
    ResumeRequest {
        conn,
        peer: peer(seat),
        role: Role::Guest,
        last_seq,
        token_issued_ms: 1_000,
        name: None,
        muted: false,
        camera: false,
        may_recreate: false,
        welcome: Welcome {
            ice_servers: Vec::new(),
            resume_token: "new".into(),
            resume_issued_ms: 1_000 + conn,
        },
    }
}

/// Drains the outputs as (conn, message) pairs; closes appear as an `error` with fatal=true.
fn drain(room: &mut Room) -> Vec<(ConnId, ServerMessage)> {
    let mut out = Vec::new();
    while let Some(output) = room.poll_output() {
        match output {
            Output::Send { conn, frame } => {
                out.push((conn, confer_proto::decode_server(frame.as_str()).unwrap()));
            }
            Output::Reject { conn, code, detail } => {
                out.push((conn, ServerMessage::Error { code, message: detail, fatal: false }));
            }
            Output::Close { conn, error: Some((code, detail)) } => {
                out.push((conn, ServerMessage::Error { code, message: detail, fatal: true }));
            }
            Output::Close { conn, error: None } => out.push((conn, ServerMessage::Pong { nonce: u64::MAX })),
        }
    }
    out
}

fn room_with(now: Instant, seats: &[(ConnId, Role)]) -> Room {
    let mut room = Room::new(RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap(), settings(), false, now);
    for &(conn, role) in seats {
        room.join(now, request(conn, role));
    }
    drain(&mut room);
    room
}

fn signal(to: u8, n: u32) -> ClientMessage {
    ClientMessage::Signal {
        to: peer(to),
        payload: SignalPayload::Candidate {
            candidate: format!("candidate:{n}"),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        },
    }
}

#[test]
fn a_dropped_seat_is_kept_for_exactly_the_grace_period() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.disconnect(t0, 2);
    assert_eq!(drain(&mut room), [(1, ServerMessage::PeerReconnecting { peer: peer(2) })]);
    assert_eq!(room.next_deadline(), Some(t0 + GRACE));

    room.timeout(t0 + GRACE - Duration::from_millis(1));
    assert!(drain(&mut room).is_empty(), "nothing happens before the grace period ends");
    assert_eq!(room.seated(), 2);

    room.timeout(t0 + GRACE);
    assert_eq!(
        drain(&mut room),
        [(1, ServerMessage::PeerLeft { peer: peer(2), reason: LeaveReason::Timeout })]
    );
    assert_eq!(room.seated(), 1);
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn resume_replays_exactly_the_signals_after_last_seq_and_reports_a_gap_when_some_were_dropped() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.disconnect(t0, 2);
    drain(&mut room);
    // Six signals while away; the buffer holds four (seq 3..=6).
    for n in 1..=6 {
        room.message(t0, 1, signal(2, n));
    }
    assert!(drain(&mut room).is_empty(), "nothing is sent to a dropped seat");

    room.resume(resume_request(9, 2, 2));
    let out = drain(&mut room);
    match &out[0] {
        (9, ServerMessage::Resumed { replayed: 4, gap: false, .. }) => {}
        other => panic!("{other:?}"),
    }
    let seqs: Vec<u64> = out[1..5]
        .iter()
        .map(|(_, m)| if let ServerMessage::Signal { seq, .. } = m { *seq } else { 0 })
        .collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert!(matches!(&out[5], (1, ServerMessage::PeerResumed { .. })));

    // Away again; this time the client had seen only seq 1, and 2 is gone.
    room.disconnect(t0, 9);
    drain(&mut room);
    room.resume(ResumeRequest { token_issued_ms: 1_009, ..resume_request(10, 2, 1) });
    assert!(matches!(drain(&mut room)[0], (10, ServerMessage::Resumed { gap: true, .. })));
}

#[test]
fn signals_a_connected_seat_has_had_for_a_while_are_given_up_and_a_resume_that_wants_them_hears_gap() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    drain(&mut room);
    for n in 1..=3 {
        room.message(t0, 1, signal(2, n));
    }
    assert_eq!(drain(&mut room).len(), 3, "sent to the connected guest");
    assert_eq!(room.next_deadline(), Some(t0 + KEEP_READ), "the room wakes to give them up");
    room.timeout(t0 + KEEP_READ - Duration::from_millis(1));
    assert!(room.snapshot(true).seats.iter().any(|s| s.replay.len() == 3), "kept until then");
    room.timeout(t0 + KEEP_READ);
    assert!(room.snapshot(true).seats.iter().all(|s| s.replay.is_empty()), "given up after");
    assert_eq!(room.next_deadline(), None, "and nothing more to wake for");

    // The guest read all three: its resume is whole. Had it read only one, it would hear `gap`.
    let t1 = t0 + KEEP_READ + Duration::from_secs(1);
    room.disconnect(t1, 2);
    drain(&mut room);
    room.resume(resume_request(9, 2, 3));
    assert!(matches!(drain(&mut room)[0], (9, ServerMessage::Resumed { gap: false, replayed: 0, .. })));
    room.disconnect(t1, 9);
    drain(&mut room);
    room.resume(ResumeRequest { token_issued_ms: 1_009, ..resume_request(10, 2, 1) });
    assert!(matches!(drain(&mut room)[0], (10, ServerMessage::Resumed { gap: true, .. })));
}

#[test]
fn a_dropped_seat_keeps_its_signals_for_its_whole_grace_period() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 1, signal(2, 1));
    room.disconnect(t0, 2);
    room.message(t0, 1, signal(2, 2));
    drain(&mut room);
    // Past the keep of read signals, within the grace period: nothing is given up.
    let t1 = t0 + KEEP_READ + Duration::from_secs(5);
    assert!(t1 < t0 + GRACE);
    assert_eq!(room.next_deadline(), Some(t0 + GRACE));
    room.timeout(t1);
    room.resume(resume_request(9, 2, 0));
    assert!(matches!(drain(&mut room)[0], (9, ServerMessage::Resumed { gap: false, replayed: 2, .. })));
}

#[test]
fn a_resume_replaces_a_live_connection_without_presence_noise() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.resume(resume_request(7, 2, 0));
    let out = drain(&mut room);
    assert!(matches!(&out[0], (2, ServerMessage::Error { code: ErrorCode::Replaced, fatal: true, .. })));
    assert!(matches!(&out[1], (7, ServerMessage::Resumed { .. })));
    assert_eq!(out.len(), 2, "the others are not told anything: {out:?}");
    // The old connection's late disconnect changes nothing.
    room.disconnect(t0, 2);
    assert!(drain(&mut room).is_empty());
    room.message(t0, 1, signal(2, 1));
    assert!(matches!(drain(&mut room)[..], [(7, ServerMessage::Signal { .. })]));
}

#[test]
fn capacity_counts_reconnecting_seats_and_admission_respects_it() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest), (3, Role::Guest)]);
    room.disconnect(t0, 3);
    drain(&mut room);
    room.join(t0, request(4, Role::Guest));
    assert!(matches!(
        drain(&mut room)[..],
        [(4, ServerMessage::Error { code: ErrorCode::RoomFull, fatal: true, .. })]
    ));

    // Locked: a guest knocks even though the room is full; the admit is refused to the host.
    room.message(t0, 1, ClientMessage::Lock);
    drain(&mut room);
    room.join(t0, request(5, Role::Guest));
    drain(&mut room);
    room.message(t0, 1, ClientMessage::Admit { peer: peer(5) });
    assert!(matches!(
        drain(&mut room)[..],
        [(1, ServerMessage::Error { code: ErrorCode::RoomFull, fatal: false, .. })]
    ));
    // The reconnecting seat times out; now the admit works.
    room.timeout(t0 + GRACE);
    drain(&mut room);
    room.message(t0 + GRACE, 1, ClientMessage::Admit { peer: peer(5) });
    let out = drain(&mut room);
    assert!(out.iter().any(|(c, m)| *c == 5 && matches!(m, ServerMessage::Joined { .. })), "{out:?}");
}

#[test]
fn knockers_time_out_and_hosts_are_told() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 1, ClientMessage::Lock);
    drain(&mut room);
    room.join(t0, request(3, Role::Guest));
    let out = drain(&mut room);
    assert_eq!(out.len(), 2, "the knocker is told to wait, only the host sees the knock: {out:?}");
    assert_eq!(room.next_deadline(), Some(t0 + Duration::from_secs(300)));
    room.timeout(t0 + Duration::from_secs(300));
    let out = drain(&mut room);
    assert!(matches!(&out[0], (3, ServerMessage::Error { code: ErrorCode::KnockTimeout, fatal: true, .. })));
    assert_eq!(out[1], (1, ServerMessage::KnockEnded { peer: peer(3) }));
}

#[test]
fn an_empty_room_expires_only_after_its_ttl_and_a_knocker_keeps_it_alive() {
    let t0 = Instant::now();
    let ttl = Duration::from_secs(600);
    let mut room = room_with(t0, &[(1, Role::Host)]);
    assert!(!room.is_empty_for(t0 + ttl, ttl));
    room.message(t0, 1, ClientMessage::Leave);
    drain(&mut room);
    assert!(!room.is_empty_for(t0 + ttl - Duration::from_secs(1), ttl));
    assert!(room.is_empty_for(t0 + ttl, ttl));

    let mut waiting = Room::new(RoomId::parse("BBBBBBBBBBBBBBBBBBBBBB").unwrap(), settings(), true, t0);
    waiting.join(t0, request(2, Role::Guest));
    drain(&mut waiting);
    assert!(!waiting.is_empty_for(t0 + ttl, ttl), "someone is knocking");
}

#[test]
fn a_seat_lost_in_a_restart_is_rebuilt_only_when_allowed() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host)]);
    room.resume(resume_request(2, 7, 0));
    assert!(matches!(
        drain(&mut room)[..],
        [(2, ServerMessage::Error { code: ErrorCode::ResumeFailed, .. })]
    ));

    room.resume(ResumeRequest { may_recreate: true, name: Some("Back".into()), ..resume_request(3, 7, 41) });
    let out = drain(&mut room);
    assert!(matches!(&out[0], (3, ServerMessage::Resumed { gap: true, .. })), "{out:?}");
    assert!(matches!(&out[1], (1, ServerMessage::PeerJoined { peer }) if peer.name == "Back"));
    // Sequence numbers carry on from what the client had seen.
    room.message(t0, 1, signal(7, 1));
    assert!(matches!(drain(&mut room)[..], [(3, ServerMessage::Signal { seq: 42, .. })]));
}

#[test]
fn host_actions_on_unknown_peers_and_by_guests_are_refused() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 2, ClientMessage::Remove { peer: peer(1) });
    assert!(matches!(
        drain(&mut room)[..],
        [(2, ServerMessage::Error { code: ErrorCode::RoleForbidden, .. })]
    ));
    for msg in [
        ClientMessage::Admit { peer: peer(9) },
        ClientMessage::Deny { peer: peer(9) },
        ClientMessage::Remove { peer: peer(9) },
        signal(9, 1),
    ] {
        room.message(t0, 1, msg);
        assert!(matches!(
            drain(&mut room)[..],
            [(1, ServerMessage::Error { code: ErrorCode::PeerNotFound, .. })]
        ));
    }
    assert_eq!(room.seated(), 2);
}

#[test]
fn only_the_newest_resume_token_and_the_one_before_it_work() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    // Resume with the join token (1,000): new token 1,005. Then with 1,005: new token 1,006.
    room.resume(resume_request(5, 2, 0));
    drain(&mut room);
    room.resume(ResumeRequest { token_issued_ms: 1_005, ..resume_request(6, 2, 0) });
    assert!(matches!(
        drain(&mut room)[..],
        [(5, ServerMessage::Error { code: ErrorCode::Replaced, .. }), (6, ServerMessage::Resumed { .. })]
    ));
    // The join token is two tokens old now: refused, and the live connection is untouched.
    room.resume(resume_request(7, 2, 0));
    assert!(matches!(
        drain(&mut room)[..],
        [(7, ServerMessage::Error { code: ErrorCode::ResumeFailed, fatal: true, .. })]
    ));
    room.message(t0, 1, signal(2, 1));
    assert!(matches!(drain(&mut room)[..], [(6, ServerMessage::Signal { .. })]));
    // The one before the newest (1,005) still works, for a client that missed `resumed`.
    room.resume(ResumeRequest { token_issued_ms: 1_005, ..resume_request(8, 2, 0) });
    assert!(matches!(drain(&mut room)[1], (8, ServerMessage::Resumed { .. })));
}

#[test]
fn a_seat_that_ended_is_never_rebuilt_even_right_after_a_restart() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest), (3, Role::Guest)]);
    room.message(t0, 1, ClientMessage::Remove { peer: peer(2) });
    room.message(t0, 3, ClientMessage::Leave);
    drain(&mut room);
    for seat in [2, 3] {
        room.resume(ResumeRequest { may_recreate: true, ..resume_request(9, seat, 0) });
        assert!(matches!(
            drain(&mut room)[..],
            [(9, ServerMessage::Error { code: ErrorCode::ResumeFailed, .. })]
        ));
    }
    assert_eq!(room.seated(), 1);
}

#[test]
fn sequence_numbers_saturate_instead_of_overflowing() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host)]);
    room.resume(ResumeRequest { may_recreate: true, ..resume_request(2, 7, u64::MAX) });
    drain(&mut room);
    room.message(t0, 1, signal(7, 1));
    room.message(t0, 1, signal(7, 2));
    assert_eq!(drain(&mut room).len(), 2);
}

#[test]
fn a_room_just_opened_is_not_evicted_but_one_that_was_used_is() {
    let t0 = Instant::now();
    let fresh = Room::new(RoomId::parse("CCCCCCCCCCCCCCCCCCCCCC").unwrap(), settings(), false, t0);
    assert!(!fresh.is_evictable(t0 + Duration::from_secs(4)), "a join may be about to use it");
    assert!(fresh.is_evictable(t0 + Duration::from_secs(5)));
    let mut used = room_with(t0, &[(1, Role::Host)]);
    assert!(!used.is_evictable(t0), "someone is in it");
    used.message(t0, 1, ClientMessage::Leave);
    drain(&mut used);
    assert!(used.is_evictable(t0));
}

/// Who `outputs` say shares, as each `peer_updated` told it (the last word per peer).
fn sharing_told(outputs: &[(ConnId, ServerMessage)], to: ConnId) -> Vec<(PeerId, bool)> {
    outputs
        .iter()
        .filter_map(|(conn, m)| match m {
            ServerMessage::PeerUpdated { peer } if *conn == to => Some((peer.id.clone(), peer.sharing)),
            _ => None,
        })
        .collect()
}

#[test]
fn one_screen_share_at_a_time_unless_a_host_allows_several_and_a_host_can_stop_one() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest), (3, Role::Guest)]);
    // P2 shares: granted, and everyone (P2 too) is told.
    room.message(t0, 2, ClientMessage::Share { on: true });
    let out = drain(&mut room);
    for conn in [1, 2, 3] {
        assert_eq!(sharing_told(&out, conn), [(peer(2), true)], "conn {conn}: {out:?}");
    }
    // P3 asks too: refused with the sharer's name, and nothing changes for anyone.
    room.message(t0, 3, ClientMessage::Share { on: true });
    match &drain(&mut room)[..] {
        [(3, ServerMessage::Error { code: ErrorCode::ShareTaken, message, fatal: false })] => {
            assert!(message.contains("P2 is sharing"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A guest may not stop another's share or change the rule.
    room.message(t0, 3, ClientMessage::StopShare { peer: peer(2) });
    room.message(t0, 3, ClientMessage::SharePolicy { several: true });
    assert!(matches!(
        drain(&mut room)[..],
        [
            (3, ServerMessage::Error { code: ErrorCode::RoleForbidden, .. }),
            (3, ServerMessage::Error { code: ErrorCode::RoleForbidden, .. })
        ]
    ));
    // The host allows several: P3's share is granted beside P2's.
    room.message(t0, 1, ClientMessage::SharePolicy { several: true });
    room.message(t0, 3, ClientMessage::Share { on: true });
    let out = drain(&mut room);
    assert!(
        out.iter().any(|(c, m)| *c == 2 && matches!(m, ServerMessage::SharePolicy { several: true, .. }))
    );
    assert_eq!(sharing_told(&out, 2), [(peer(3), true)]);
    // The host stops P2's share: P2 learns it from its own update, as everyone does.
    room.message(t0, 1, ClientMessage::StopShare { peer: peer(2) });
    assert_eq!(sharing_told(&drain(&mut room), 2), [(peer(2), false)]);
    room.message(t0, 1, ClientMessage::StopShare { peer: peer(9) });
    assert!(matches!(
        drain(&mut room)[..],
        [(1, ServerMessage::Error { code: ErrorCode::PeerNotFound, .. })]
    ));
    // Back to one at a time: P3 keeps its share; P2 may not start another while it lasts, and
    // may once P3 stops (or leaves).
    room.message(t0, 1, ClientMessage::SharePolicy { several: false });
    drain(&mut room);
    room.message(t0, 2, ClientMessage::Share { on: true });
    assert!(matches!(drain(&mut room)[..], [(2, ServerMessage::Error { code: ErrorCode::ShareTaken, .. })]));
    room.message(t0, 3, ClientMessage::Leave);
    drain(&mut room);
    room.message(t0, 2, ClientMessage::Share { on: true });
    assert_eq!(sharing_told(&drain(&mut room), 1), [(peer(2), true)]);
}

#[test]
fn a_sharer_who_reconnects_keeps_the_share() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 2, ClientMessage::Share { on: true });
    drain(&mut room);
    room.disconnect(t0, 2);
    room.resume(resume_request(5, 2, 0));
    let out = drain(&mut room);
    let resumed = out.iter().find_map(|(c, m)| match m {
        ServerMessage::PeerResumed { peer } if *c == 1 => Some(peer.sharing),
        _ => None,
    });
    assert_eq!(resumed, Some(true), "{out:?}");
    room.message(t0, 1, ClientMessage::Share { on: true });
    assert!(matches!(drain(&mut room)[..], [(1, ServerMessage::Error { code: ErrorCode::ShareTaken, .. })]));
}

#[test]
fn raised_hands_queue_in_the_order_they_went_up() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest), (3, Role::Guest)]);
    let hand =
        |up: bool| ClientMessage::Update { name: None, muted: None, camera: None, hand_raised: Some(up) };
    let order_told = |out: &[(ConnId, ServerMessage)]| {
        out.iter()
            .find_map(|(c, m)| match m {
                ServerMessage::PeerUpdated { peer } if *c == 1 => Some((peer.id.clone(), peer.hand_order)),
                _ => None,
            })
            .unwrap()
    };
    room.message(t0, 3, hand(true));
    let cid = order_told(&drain(&mut room));
    room.message(t0, 2, hand(true));
    let bob = order_told(&drain(&mut room));
    assert_eq!(cid.0, peer(3));
    assert!(cid.1.unwrap() < bob.1.unwrap(), "P3 raised first: {cid:?} {bob:?}");
    // Raising again keeps the place; a mute does not move it.
    room.message(t0, 3, hand(true));
    assert_eq!(order_told(&drain(&mut room)), cid);
    room.message(
        t0,
        3,
        ClientMessage::Update { name: None, muted: Some(true), camera: None, hand_raised: None },
    );
    assert_eq!(order_told(&drain(&mut room)), cid);
    // Lowered and raised again: to the back of the queue.
    room.message(t0, 3, hand(false));
    assert_eq!(order_told(&drain(&mut room)), (peer(3), None));
    room.message(t0, 3, hand(true));
    let again = order_told(&drain(&mut room));
    assert!(again.1.unwrap() > bob.1.unwrap(), "{again:?} after {bob:?}");
}

#[test]
fn everyone_is_told_who_records_newcomers_included_and_a_repeat_is_answered_to_its_sender_only() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    let recording_told = |out: &[(ConnId, ServerMessage)], to: ConnId| -> Vec<(PeerId, bool)> {
        out.iter()
            .filter_map(|(c, m)| match m {
                ServerMessage::PeerUpdated { peer } if *c == to => Some((peer.id.clone(), peer.recording)),
                _ => None,
            })
            .collect()
    };
    // A guest may record (it records what it already receives); everyone, itself too, is told.
    room.message(t0, 2, ClientMessage::Record { on: true });
    let out = drain(&mut room);
    for conn in [1, 2] {
        assert_eq!(recording_told(&out, conn), [(peer(2), true)], "conn {conn}: {out:?}");
    }
    room.message(t0, 2, ClientMessage::Record { on: true });
    let out = drain(&mut room);
    assert_eq!(recording_told(&out, 2), [(peer(2), true)], "a repeat is answered to its sender");
    assert!(recording_told(&out, 1).is_empty(), "and to nobody else: {out:?}");
    // A newcomer sees it in the room's list.
    room.join(t0, request(3, Role::Guest));
    let out = drain(&mut room);
    let listed = out.iter().find_map(|(c, m)| match m {
        ServerMessage::Joined { participants, .. } if *c == 3 => {
            participants.iter().find(|p| p.id == peer(2)).map(|p| p.recording)
        }
        _ => None,
    });
    assert_eq!(listed, Some(true), "{out:?}");
    // It keeps recording through a reconnect, and stops when it says so.
    room.disconnect(t0, 2);
    room.resume(resume_request(5, 2, 0));
    let out = drain(&mut room);
    let resumed = out.iter().find_map(|(c, m)| match m {
        ServerMessage::PeerResumed { peer } if *c == 1 => Some(peer.recording),
        _ => None,
    });
    assert_eq!(resumed, Some(true), "{out:?}");
    room.message(t0, 5, ClientMessage::Record { on: false });
    let out = drain(&mut room);
    for conn in [1, 3, 5] {
        assert_eq!(recording_told(&out, conn), [(peer(2), false)], "conn {conn}: {out:?}");
    }
}

#[test]
fn a_room_handed_to_another_holder_keeps_its_seats_their_signals_its_lock_and_its_grace() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 1, ClientMessage::Lock);
    room.message(t0, 1, signal(2, 1));
    room.message(
        t0,
        2,
        ClientMessage::Update { name: None, muted: None, camera: None, hand_raised: Some(true) },
    );
    drain(&mut room);

    // Through JSON, as it travels through Redis.
    let json = serde_json::to_string(&room.snapshot(true)).unwrap();
    let t1 = t0 + Duration::from_secs(5);
    let id = RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let mut taken = Room::restore(id, settings(), serde_json::from_str(&json).unwrap(), t1);
    assert_eq!(taken.seated(), 2);
    assert_eq!(taken.next_deadline(), Some(t1 + GRACE), "every seat reconnecting, grace from the handover");

    // The guest resumes having read nothing: the signal is replayed, nothing is missing.
    taken.resume(resume_request(3, 2, 0));
    let out = drain(&mut taken);
    match &out[0] {
        (3, ServerMessage::Resumed { replayed, gap, participants, locked, .. }) => {
            assert_eq!((*replayed, *gap, *locked), (1, false, true));
            assert_eq!(participants.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[1], (3, ServerMessage::Signal { seq: 1, .. })), "{out:?}");
    // The room is still locked: a newcomer knocks. The hand queue came along.
    taken.join(t1, request(4, Role::Guest));
    let out = drain(&mut taken);
    assert!(out.iter().any(|(conn, m)| *conn == 4 && matches!(m, ServerMessage::Knocking { .. })), "{out:?}");
    let snapshot = taken.snapshot(true);
    assert!(snapshot.seats.iter().any(|s| s.peer == peer(2) && s.hand_raised && s.hand_order.is_some()));
    // The host never comes back: its seat ends when the new grace period does.
    taken.timeout(t1 + GRACE);
    assert_eq!(taken.seated(), 1);
}

#[test]
fn signals_leave_a_room_unchanged_for_periodic_snapshots_which_hold_none_of_them() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    let before = room.version();
    for n in 1..=10 {
        room.message(t0, 1, signal(2, n));
    }
    room.message(t0, 2, ClientMessage::Ping { nonce: 1 });
    drain(&mut room);
    assert_eq!(room.version(), before, "signals and pings need no new snapshot");
    assert!(room.snapshot(false).seats.iter().all(|s| s.replay.is_empty()), "periodic: no kept signals");
    let exact = room.snapshot(true);
    let kept = exact.seats.iter().find(|s| s.peer == peer(2)).unwrap();
    assert_eq!(kept.replay.len(), 4, "a drain's snapshot keeps them (4 per seat in these settings)");
    room.message(
        t0,
        2,
        ClientMessage::Update { name: None, muted: Some(true), camera: None, hand_raised: None },
    );
    assert!(room.version() > before, "a change of presence does");
}

#[test]
fn a_room_restored_from_a_periodic_snapshot_reports_a_gap_and_numbers_past_what_it_lost() {
    let t0 = Instant::now();
    let mut room = room_with(t0, &[(1, Role::Host), (2, Role::Guest)]);
    room.message(t0, 1, signal(2, 1));
    drain(&mut room);
    let snapshot = room.snapshot(false);
    // After the snapshot the holder numbered more signals, then died: the snapshot lacks them.
    room.message(t0, 1, signal(2, 2));
    drain(&mut room);

    let id = RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let mut taken = Room::restore(id, settings(), snapshot, t0);
    // The guest read signal 2 (seq 2), which the new holder never knew.
    taken.resume(resume_request(3, 2, 2));
    let out = drain(&mut taken);
    match &out[0] {
        (3, ServerMessage::Resumed { gap, replayed, .. }) => {
            assert!(*gap, "what was sent after the snapshot may be lost: the client is told");
            assert_eq!(*replayed, 0);
        }
        other => panic!("{other:?}"),
    }
    taken.message(t0, 3, signal(1, 1));
    taken.resume(resume_request(4, 1, 0));
    drain(&mut taken);
    taken.message(t0, 4, signal(2, 3));
    let out = drain(&mut taken);
    match &out[..] {
        [(3, ServerMessage::Signal { seq, .. })] => {
            assert!(*seq > 2, "seq {seq} must not repeat one the guest has read");
        }
        other => panic!("{other:?}"),
    }
    // A second resume of the same seat has no gap any more.
    taken.disconnect(t0, 3);
    drain(&mut taken);
    let last = match &out[0] {
        (_, ServerMessage::Signal { seq, .. }) => *seq,
        _ => unreachable!(),
    };
    taken.resume(resume_request(5, 2, last));
    match &drain(&mut taken)[0] {
        (5, ServerMessage::Resumed { gap, .. }) => assert!(!gap),
        other => panic!("{other:?}"),
    }
}
