//! Invite tokens: forged, expired, wrong-room and wrong-role tokens are refused with their codes.

use confer_proto::{ClientMessage, ErrorCode, Role};
use confer_relay::token::{InviteClaims, TokenKey, new_room_id, unix_now};

use crate::support::{Relays, token_key};

async fn join_fails(relay: &Relays, msg: ClientMessage, code: ErrorCode) {
    let mut client = relay.connect().await;
    client.send(&msg).await;
    client.expect_fatal(code).await;
}

fn join_with(room: &confer_proto::RoomId, token: String) -> ClientMessage {
    ClientMessage::Join { room: room.clone(), token, name: "Mallory".into(), muted: false, camera: false }
}

on_one_relay_and_on_three!(forged_tokens_are_refused);
async fn forged_tokens_are_refused(relay: &Relays) {
    let room = new_room_id();
    let claims =
        InviteClaims { room: room.clone(), role: Role::Host, waiting_room: false, expires: unix_now() + 60 };
    // Signed with another key.
    join_fails(relay, join_with(&room, claims.sign(&TokenKey::generate())), ErrorCode::TokenInvalid).await;
    // Not a token at all.
    join_fails(relay, join_with(&room, "hello.world".into()), ErrorCode::TokenInvalid).await;
    // A real guest token with its role byte flipped to host.
    let links = relay.create_room(false).await;
    let (claims_b64, mac) = links.guest.token.split_once('.').unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut raw = b64.decode(claims_b64).unwrap();
    raw[17] = b'h';
    let forged = format!("{}.{mac}", b64.encode(raw));
    join_fails(relay, join_with(&links.guest.room, forged), ErrorCode::TokenInvalid).await;
    // A resume token is not an invite.
    let seat = relay.join(&links.guest, "Real").await;
    join_fails(relay, join_with(&links.guest.room, seat.resume_token), ErrorCode::TokenInvalid).await;
}

on_one_relay_and_on_three!(expired_tokens_are_refused);
async fn expired_tokens_are_refused(relay: &Relays) {
    let room = new_room_id();
    let claims =
        InviteClaims { room: room.clone(), role: Role::Guest, waiting_room: false, expires: unix_now() - 1 };
    join_fails(relay, join_with(&room, claims.sign(&token_key())), ErrorCode::TokenExpired).await;
    // The same claims, not yet expired, work: the relay signs with the key the test knows.
    let fresh = InviteClaims { expires: unix_now() + 60, ..claims };
    let mut client = relay.connect().await;
    client.send(&join_with(&room, fresh.sign(&token_key()))).await;
    client.expect_joined().await;
}

on_one_relay_and_on_three!(a_token_for_another_room_is_refused);
async fn a_token_for_another_room_is_refused(relay: &Relays) {
    let first = relay.create_room(false).await;
    let second = relay.create_room(false).await;
    let msg = join_with(&second.guest.room, first.guest.token.clone());
    join_fails(relay, msg, ErrorCode::TokenWrongRoom).await;
}

on_one_relay_and_on_three!(a_guest_token_cannot_do_what_a_host_does);
async fn a_guest_token_cannot_do_what_a_host_does(relay: &Relays) {
    let links = relay.create_room(false).await;
    let mut host = relay.join(&links.host, "Host").await;
    let mut guest = relay.join(&links.guest, "Guest").await;
    host.client.recv().await; // Guest joined
    for action in [
        ClientMessage::Lock,
        ClientMessage::Unlock,
        ClientMessage::Remove { peer: host.id.clone() },
        ClientMessage::Admit { peer: host.id.clone() },
        ClientMessage::Deny { peer: host.id.clone() },
    ] {
        guest.client.send(&action).await;
        guest.client.expect_error(ErrorCode::RoleForbidden).await;
    }
    // Nothing happened: the host is still there and the room unlocked.
    let newcomer = relay.join(&links.guest, "Newcomer").await;
    assert!(newcomer.participants.iter().any(|p| p.id == host.id));
}
