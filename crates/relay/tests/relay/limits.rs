//! Every size and rate limit triggers its documented error, and the relay keeps serving others.

use std::time::Duration;

use confer_proto::{ClientMessage, ErrorCode, SUBPROTOCOL, SignalPayload, limits};

use crate::support::{Relays, TestRelay, join_message};

on_one_relay_and_on_three!(an_oversized_message_closes_only_its_connection);
async fn an_oversized_message_closes_only_its_connection(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut bystander = relay.join(&links.host, "Bystander").await;
    let mut big = relay.join(&links.guest, "Big").await;
    bystander.client.recv().await;

    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(limits::MAX_MESSAGE_BYTES));
    big.client.send_raw(&huge).await;
    big.client.expect_fatal(ErrorCode::MessageTooLarge).await;
    bystander.client.assert_alive().await;
}

on_one_relay_and_on_three!(fields_over_their_limits_are_refused_and_the_connection_stays);
async fn fields_over_their_limits_are_refused_and_the_connection_stays(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let mut b = relay.join(&links.guest, "B").await;
    a.client.recv().await;

    let sdp = "s".repeat(limits::MAX_SDP_BYTES + 1);
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload: SignalPayload::Offer { sdp } }).await;
    a.client.expect_error(ErrorCode::FieldTooLong).await;
    let candidate = "c".repeat(limits::MAX_CANDIDATE_BYTES + 1);
    let payload = SignalPayload::Candidate {
        candidate,
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    };
    a.client.send(&ClientMessage::Signal { to: b.id.clone(), payload }).await;
    a.client.expect_error(ErrorCode::FieldTooLong).await;
    let name = "n".repeat(limits::MAX_NAME_CHARS + 1);
    a.client
        .send(&ClientMessage::Update { name: Some(name), muted: None, camera: None, hand_raised: None })
        .await;
    a.client.expect_error(ErrorCode::FieldTooLong).await;
    // None of it reached B; an SDP at the limit does.
    b.client.expect_silence(Duration::from_millis(200)).await;
    let sdp = "s".repeat(limits::MAX_SDP_BYTES);
    a.client
        .send(&ClientMessage::Signal { to: b.id.clone(), payload: SignalPayload::Offer { sdp: sdp.clone() } })
        .await;
    assert!(
        matches!(b.client.recv().await, confer_proto::ServerMessage::Signal { payload: SignalPayload::Offer { sdp: got }, .. } if got == sdp)
    );
}

on_one_relay_and_on_three!(
    a_client_over_its_message_rate_is_throttled_then_cut_off_while_others_are_served,
    "--message-rate",
    "5",
    "--message-burst",
    "10"
);
async fn a_client_over_its_message_rate_is_throttled_then_cut_off_while_others_are_served(relay: &Relays) {
    let mut calm = relay.connect().await;
    let mut noisy = relay.connect().await;
    for nonce in 0..12 {
        noisy.send(&ClientMessage::Ping { nonce }).await;
    }
    noisy.expect_error(ErrorCode::RateLimited).await;
    calm.assert_alive().await;
    // After a pause the rate allows messages again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    noisy.assert_alive().await;
    // Flooding far past the rate ends the connection.
    for nonce in 0..200 {
        // The relay may close the connection before the flood is over.
        if !noisy.try_send(&ClientMessage::Ping { nonce }).await {
            break;
        }
    }
    noisy.expect_fatal(ErrorCode::RateLimited).await;
    calm.assert_alive().await;
    assert!(relay.metrics().await.contains("confer_relay_rejections_total{reason=\"rate_limited\"}"));
}

#[tokio::test]
async fn connections_from_one_address_are_capped() {
    let relay = TestRelay::start(&["--max-connections-per-ip", "3"]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(relay.connect().await);
    }
    let refused = relay.try_connect(relay.tls_config(), &[SUBPROTOCOL]).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        Err(other) => panic!("expected HTTP 429, got {other}"),
        Ok(_) => panic!("a fourth connection was accepted"),
    }
    for client in &mut open {
        client.assert_alive().await;
    }
    // Closing one frees its place.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.connect().await.assert_alive().await;
}

on_one_relay_and_on_three!(a_socket_that_never_joins_is_closed_after_the_auth_timeout, "--auth-timeout", "1");
async fn a_socket_that_never_joins_is_closed_after_the_auth_timeout(relay: &Relays) {
    let mut idle = relay.connect().await;
    idle.expect_fatal(ErrorCode::AuthTimeout).await;
    // Joining in time is fine.
    let links = relay.create_room(false).await;
    let mut prompt = relay.connect().await;
    prompt.send(&join_message(&links.host, "Prompt")).await;
    let mut seat = prompt.expect_joined().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    seat.client.assert_alive().await;
}

on_one_relay_and_on_three!(
    a_participant_that_stops_reading_is_cut_off_as_a_slow_consumer_and_the_sender_is_unharmed,
    "--message-rate",
    "100000",
    "--message-burst",
    "100000"
);
async fn a_participant_that_stops_reading_is_cut_off_as_a_slow_consumer_and_the_sender_is_unharmed(
    relay: &Relays,
) {
    let links = relay.create_room(false).await;
    let mut sender = relay.join(&links.host, "Sender").await;
    // The receiver joins, then never reads: the kernel's buffers fill, then its queue.
    let stalled = relay.join(&links.guest, "Stalled").await;
    sender.client.recv().await;
    let sdp = "s".repeat(60 * 1024);
    let mut cut_off = false;
    for sent in 1..=2_000 {
        let payload = SignalPayload::Offer { sdp: sdp.clone() };
        sender.client.send(&ClientMessage::Signal { to: stalled.id.clone(), payload }).await;
        if sent % 50 == 0
            && relay.metrics().await.contains("confer_relay_rejections_total{reason=\"slow_consumer\"} 1\n")
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the stalled receiver was never cut off");
    // Its seat is kept for the grace period, as for any dropped connection.
    let reconnecting = sender
        .client
        .recv_until(|m| match m {
            confer_proto::ServerMessage::PeerReconnecting { peer } => Some(peer),
            _ => None,
        })
        .await;
    assert_eq!(reconnecting, stalled.id);
    sender.client.assert_alive().await;
    drop(stalled);
}

#[tokio::test]
async fn empty_rooms_are_dropped_after_their_ttl() {
    let relay = TestRelay::start(&["--empty-room-ttl", "1"]).await;
    let links = relay.create_room(false).await;
    let mut seat = relay.join(&links.host, "Only").await;
    assert!(relay.metrics().await.contains("confer_relay_rooms 1\n"));
    seat.client.send(&ClientMessage::Leave).await;
    let mut dropped = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if relay.metrics().await.contains("confer_relay_rooms 0\n") {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the empty room is still held");
    // The invite still works: a valid token reopens its room.
    relay.join(&links.host, "Back").await;
    assert!(relay.metrics().await.contains("confer_relay_rooms 1\n"));
}

#[tokio::test]
async fn the_relay_holds_at_most_max_rooms_and_drops_empty_ones_first() {
    let relay = TestRelay::start(&["--max-rooms", "1"]).await;
    let first = relay.create_room(false).await;
    let second = relay.create_room(false).await;
    let mut only = relay.join(&first.host, "Only").await;

    // The one room is in use: a second cannot open.
    let mut refused = relay.connect().await;
    refused.send(&join_message(&second.host, "Refused")).await;
    refused.expect_fatal(ErrorCode::RelayBusy).await;
    only.client.assert_alive().await;

    // Once the first room is empty it gives way, even before its TTL.
    only.client.send(&ClientMessage::Leave).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.join(&second.host, "Next").await;
}

#[tokio::test]
async fn keeping_the_socket_busy_with_pings_does_not_escape_the_auth_deadline() {
    let relay = TestRelay::start(&["--auth-timeout", "1"]).await;
    let mut busy = relay.connect().await;
    // Two seconds of WebSocket pings, 20 a second, never a join.
    for _ in 0..40 {
        use futures_util::SinkExt as _;
        if busy.ws.send(tokio_tungstenite::tungstenite::Message::Ping(Default::default())).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    busy.expect_fatal(ErrorCode::AuthTimeout).await;
}
