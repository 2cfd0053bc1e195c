//! Malformed JSON, binary frames and unknown types get documented errors and never hurt the relay.

use confer_proto::ErrorCode;
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Relays;

on_one_relay_and_on_three!(garbage_gets_documented_errors_and_the_relay_keeps_serving);
async fn garbage_gets_documented_errors_and_the_relay_keeps_serving(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut seat = relay.join(&links.host, "Host").await;
    let cases: &[(&str, ErrorCode)] = &[
        ("{", ErrorCode::MalformedJson),
        ("null", ErrorCode::InvalidMessage),
        ("[\"join\"]", ErrorCode::InvalidMessage),
        (r#"{"type":"fly_to_moon"}"#, ErrorCode::UnknownType),
        (r#"{"no_type":1}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"signal","to":"AAAAAAAAAAA"}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"signal","to":12,"payload":{"kind":"offer","sdp":""}}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"signal","to":"AAAAAAAAAAA","payload":{"kind":"telepathy"}}"#, ErrorCode::InvalidMessage),
        (r#"{"type":"ping","nonce":-1}"#, ErrorCode::InvalidMessage),
        ("\u{feff}{\"type\":\"ping\"}", ErrorCode::MalformedJson),
    ];
    for (text, code) in cases {
        seat.client.send_raw(text).await;
        let message = seat.client.expect_error(*code).await;
        assert!(!message.contains("line "), "no parser positions on the wire: {message}");
    }
    seat.client.ws.send(Message::binary(vec![0u8, 159, 146, 150])).await.unwrap();
    seat.client.expect_error(ErrorCode::BinaryNotSupported).await;

    // Still seated, still served; a fresh client works too.
    seat.client.assert_alive().await;
    relay.join(&links.guest, "Guest").await;
    let metrics = relay.metrics().await;
    assert!(metrics.contains("confer_relay_rejections_total{reason=\"malformed_json\"} 2\n"), "{metrics}");
    assert!(metrics.contains("confer_relay_rejections_total{reason=\"unknown_type\"} 1\n"));
}

on_one_relay_and_on_three!(invalid_utf8_in_a_text_frame_closes_only_that_connection);
async fn invalid_utf8_in_a_text_frame_closes_only_that_connection(relay: &Relays) {
    let mut bystander = relay.connect().await;
    let mut bad = relay.connect().await;
    // A text frame holding bytes that are not UTF-8, written below the WebSocket library.
    let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xff, 0xfe, 0xfd],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    bad.expect_fatal(ErrorCode::MalformedJson).await;
    bystander.assert_alive().await;
}
