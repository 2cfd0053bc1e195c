//! Offers, answers and candidates go to the named peer and nobody else.

use std::time::Duration;

use confer_proto::{ClientMessage, ErrorCode, ServerMessage, SignalPayload};

use crate::support::Relays;

fn offer() -> SignalPayload {
    SignalPayload::Offer { sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned() }
}

on_one_relay_and_on_three!(offer_answer_and_candidates_reach_only_the_named_peer);
async fn offer_answer_and_candidates_reach_only_the_named_peer(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let mut b = relay.join(&links.guest, "B").await;
    let mut c = relay.join(&links.guest, "C").await;
    // Drain the presence messages.
    for _ in 0..2 {
        a.client.recv().await;
    }
    b.client.recv().await;

    let candidate = SignalPayload::Candidate {
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".to_owned(),
        sdp_mid: Some("0".to_owned()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("ufrag".to_owned()),
    };
    let sent = [offer(), candidate.clone(), SignalPayload::EndOfCandidates { username_fragment: None }];
    for payload in &sent {
        a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: payload.clone() }).await;
    }
    for (i, expected) in sent.iter().enumerate() {
        match b.client.recv().await {
            ServerMessage::Signal { from, seq, payload } => {
                assert_eq!(from, a.id);
                assert_eq!(seq, i as u64 + 1, "seq counts per receiver from 1");
                assert_eq!(&payload, expected, "the payload arrives unchanged");
            }
            other => panic!("{other:?}"),
        }
    }
    let answer = SignalPayload::Answer { sdp: "v=0\r\n".to_owned() };
    b.client.send(&ClientMessage::Signal { to: a.id.clone(), payload: answer.clone() }).await;
    match a.client.recv().await {
        ServerMessage::Signal { from, payload, seq: 1 } => {
            assert_eq!(from, b.id);
            assert_eq!(payload, answer);
        }
        other => panic!("{other:?}"),
    }
    // A sealed payload is forwarded just the same.
    let sealed = SignalPayload::Sealed { data: "c2VhbGVk".to_owned() };
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: sealed.clone() }).await;
    assert!(matches!(b.client.recv().await, ServerMessage::Signal { payload, .. } if payload == sealed));

    c.client.expect_silence(Duration::from_millis(300)).await;
}

on_one_relay_and_on_three!(a_signal_to_a_peer_of_another_room_is_refused);
async fn a_signal_to_a_peer_of_another_room_is_refused(relay: &Relays) {
    let first = relay.create_room(false).await;
    let second = relay.create_room(false).await;
    let mut a = relay.join(&first.host, "A").await;
    let mut stranger = relay.join(&second.host, "Stranger").await;

    a.client.send(&ClientMessage::Signal { to: stranger.id.clone(), payload: offer() }).await;
    a.client.expect_error(ErrorCode::PeerNotFound).await;
    stranger.client.expect_silence(Duration::from_millis(300)).await;
    // A host cannot reach into another room either: removing or admitting its participant.
    a.client.send(&ClientMessage::Remove { peer: stranger.id.clone() }).await;
    a.client.expect_error(ErrorCode::PeerNotFound).await;
    a.client.send(&ClientMessage::Admit { peer: stranger.id.clone() }).await;
    a.client.expect_error(ErrorCode::PeerNotFound).await;
    stranger.client.expect_silence(Duration::from_millis(300)).await;
    stranger.client.assert_alive().await;
    // The sender keeps its seat.
    a.client.assert_alive().await;
    assert!(relay.metrics().await.contains("confer_relay_rejections_total{reason=\"peer_not_found\"} 3\n"));
}
