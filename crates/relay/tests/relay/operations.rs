//! What operators and invitees touch over HTTP: health, metrics, room creation, the invite page,
//! TURN credentials, and a graceful shutdown.

use base64::Engine as _;
use confer_proto::{ErrorCode, ServerMessage};
use hmac::Mac as _;

use crate::support::TestRelay;

/// A guest invite for `room` that expired five seconds ago, signed with the test relay's key.
fn expired_invite(room: &confer_proto::RoomId) -> String {
    confer_relay::token::InviteClaims {
        room: room.clone(),
        role: confer_proto::Role::Guest,
        waiting_room: false,
        expires: confer_relay::token::unix_now() - 5,
    }
    .sign(&crate::support::token_key())
}

#[tokio::test]
async fn health_and_metrics_report_the_relay_state() {
    let relay = TestRelay::start(&[]).await;
    let health = relay.http("GET", "/healthz", &[], "").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let links = relay.create_room(false).await;
    let mut a = relay.join(&links.host, "A").await;
    let b = relay.join(&links.guest, "B").await;
    a.client.recv().await;
    drop(b);
    let metrics = relay.http("GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for line in [
        "confer_relay_rooms 1\n",
        "confer_relay_participants 2\n",
        "confer_relay_rooms_created_total 1\n",
        "# TYPE confer_relay_forward_latency_seconds histogram\n",
        "confer_relay_rejections_total{reason=\"room_full\"} 0\n",
    ] {
        assert!(metrics.body.contains(line), "missing {line:?} in\n{}", metrics.body);
    }
}

#[tokio::test]
async fn only_api_key_holders_create_rooms_when_keys_are_configured() {
    let relay = TestRelay::start(&["--api-key", "k1-secret", "--api-key", "k2-secret"]).await;
    let anonymous = relay.http("POST", "/rooms", &[], "").await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body.contains("\"code\":\"unauthorized\""));
    let wrong = relay.http("POST", "/rooms", &[("Authorization", "Bearer k3-secret")], "").await;
    assert_eq!(wrong.status, 401);
    let ok = relay.http("POST", "/rooms", &[("Authorization", "Bearer k2-secret")], "").await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let bad_body = relay.http("POST", "/rooms", &[("Authorization", "Bearer k1-secret")], "{nope").await;
    assert_eq!(bad_body.status, 400);
    // The relay never logs a key or a token.
    assert!(!relay.log().contains("k2-secret"));
}

#[tokio::test]
async fn the_invite_page_opens_the_app_and_explains_expired_or_broken_links() {
    let relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let web = links.guest.web_link();
    let path = &web[web.find("/j/").unwrap()..];
    let page = relay.http("GET", path, &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&links.guest.app_link().replace('&', "&amp;")), "{}", page.body);
    assert!(page.body.contains("Install"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"), "the URL holds a token");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    // A crafted pin in the URL is not reflected: the page pins the relay's own certificate.
    let bare = path.split('?').next().unwrap();
    let crafted = relay.http("GET", &format!("{bare}?fp={}", "ab".repeat(32)), &[], "").await;
    assert!(crafted.body.contains(&format!("fp={}", relay.pin.unwrap())));
    assert!(!crafted.body.contains(&"ab".repeat(32)));

    let expired = expired_invite(&links.guest.room);
    let gone = relay.http("GET", &format!("/j/{}/{expired}", links.guest.room), &[], "").await;
    assert_eq!(gone.status, 410);
    assert!(gone.body.contains("expired"));
    let broken = relay.http("GET", &format!("/j/{}/garbage", links.guest.room), &[], "").await;
    assert_eq!(broken.status, 404);
    assert!(broken.body.contains("not valid"));
}

#[tokio::test]
async fn the_network_check_gives_ice_servers_to_invite_holders_only() {
    let relay = TestRelay::start(&[
        "--stun-url",
        "stun:127.0.0.1:3478",
        "--turn-url",
        "turn:127.0.0.1:3478?transport=udp",
        "--turn-secret",
        "shared-with-coturn",
    ])
    .await;
    let links = relay.create_room(false).await;
    let mut host = relay.join(&links.host, "Host").await;
    let path = format!("/check/{}/{}", links.guest.room, links.guest.token);
    let check = relay.http("GET", &path, &[], "").await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(check.header("cache-control"), Some("no-store"), "TURN credentials must not be cached");
    let json: serde_json::Value = serde_json::from_str(&check.body).unwrap();
    let servers = json["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{json}");
    assert_eq!(servers[0]["urls"][0], "stun:127.0.0.1:3478");
    let username = servers[1]["username"].as_str().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert!(confer_proto::PeerId::parse(peer).is_ok(), "{username}");
    let expiry: u64 = expiry.parse().unwrap();
    let now = confer_relay::token::unix_now();
    assert!((now..=now + 61).contains(&expiry), "a check's TURN credentials last a minute: {username}");
    // A guest who must knock gets STUN only: a relay for media is for those let in.
    let waiting = relay.create_room(true).await;
    let knocker =
        relay.http("GET", &format!("/check/{}/{}", waiting.guest.room, waiting.guest.token), &[], "").await;
    let json: serde_json::Value = serde_json::from_str(&knocker.body).unwrap();
    assert_eq!(json["ice_servers"].as_array().unwrap().len(), 1, "{json}");
    assert!(json["ice_servers"][0]["username"].is_null(), "{json}");
    let host_check =
        relay.http("GET", &format!("/check/{}/{}", waiting.host.room, waiting.host.token), &[], "").await;
    let json: serde_json::Value = serde_json::from_str(&host_check.body).unwrap();
    assert_eq!(json["ice_servers"].as_array().unwrap().len(), 2, "the host may use TURN: {json}");
    // Nobody in the room hears of a check.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), host.client.recv()).await.is_err(),
        "the host heard of a network check"
    );
    // Once the host locks the room, its guests must knock: no TURN for them either.
    host.client.send(&confer_proto::ClientMessage::Lock).await;
    assert!(matches!(host.client.recv().await, ServerMessage::RoomLocked { locked: true, .. }));
    let locked = relay.http("GET", &path, &[], "").await;
    let json: serde_json::Value = serde_json::from_str(&locked.body).unwrap();
    assert_eq!(json["ice_servers"].as_array().unwrap().len(), 1, "STUN only in a locked room: {json}");

    let other = relay.create_room(false).await;
    let wrong_room =
        relay.http("GET", &format!("/check/{}/{}", links.guest.room, other.guest.token), &[], "").await;
    assert_eq!(wrong_room.status, 404);
    assert!(wrong_room.body.contains("token_wrong_room"), "{}", wrong_room.body);
    let forged = relay.http("GET", &format!("/check/{}/garbage", links.guest.room), &[], "").await;
    assert_eq!(forged.status, 404);
    assert!(forged.body.contains("token_invalid"));
    let expired = expired_invite(&links.guest.room);
    let gone = relay.http("GET", &format!("/check/{}/{expired}", links.guest.room), &[], "").await;
    assert_eq!(gone.status, 410);
    // Each check mints credentials: one address gets 10 at once, then one every 6 s.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(relay.http("GET", &path, &[], "").await.status);
    }
    assert!(statuses.contains(&429), "checks are rate-limited: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
}

/// The lobby's upload measurement: an invite holder's bytes are counted and timed (far past the
/// 4 KiB other requests may carry), anyone else is refused before a byte is read.
#[tokio::test]
async fn the_upload_measurement_times_an_invite_holders_bytes_only() {
    let relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let path = format!("/check/{}/{}/upload", links.guest.room, links.guest.token);
    let body = "u".repeat(256 * 1024);
    let measured = relay.http("POST", &path, &[("Content-Type", "application/octet-stream")], &body).await;
    assert_eq!(measured.status, 200, "{}", measured.body);
    assert_eq!(measured.header("cache-control"), Some("no-store"));
    let json: serde_json::Value = serde_json::from_str(&measured.body).unwrap();
    assert_eq!(json["bytes"], 256 * 1024, "{json}");
    assert!(json["ms"].is_u64(), "{json}");
    // Loopback takes 256 KiB in a few ms: a rate, at least the bound for 5 ms (400 Mbit/s).
    assert!(json["kbps"].as_u64().unwrap() > 10_000, "{json}");

    let other = relay.create_room(false).await;
    // Refusals come before the body is read, and the connection closes: small bodies here, so
    // this client's writing is done by then (the app's client reads the answer either way).
    let wrong_room = relay
        .http("POST", &format!("/check/{}/{}/upload", links.guest.room, other.guest.token), &[], "x")
        .await;
    assert_eq!(wrong_room.status, 404);
    assert!(wrong_room.body.contains("token_wrong_room"), "{}", wrong_room.body);
    let forged = relay.http("POST", &format!("/check/{}/garbage/upload", links.guest.room), &[], "x").await;
    assert!(forged.body.contains("token_invalid"), "{}", forged.body);
    let expired = expired_invite(&links.guest.room);
    let gone = relay.http("POST", &format!("/check/{}/{expired}/upload", links.guest.room), &[], "x").await;
    assert_eq!(gone.status, 410);
    assert_eq!(relay.http("GET", &path, &[], "").await.status, 405, "only POST measures");
}

#[tokio::test]
async fn joined_carries_turn_credentials_coturn_accepts() {
    let relay = TestRelay::start(&[
        "--stun-url",
        "stun:127.0.0.1:3478",
        "--turn-url",
        "turn:127.0.0.1:3478?transport=udp",
        "--turn-url",
        "turns:127.0.0.1:5349?transport=tcp",
        "--turn-secret",
        "shared-with-coturn",
        "--turn-ttl",
        "600",
    ])
    .await;
    let links = relay.create_room(false).await;
    let seat = relay.join(&links.guest, "Guest").await;
    assert_eq!(seat.ice_servers.len(), 2);
    assert_eq!(seat.ice_servers[0].urls, ["stun:127.0.0.1:3478"]);
    assert_eq!(seat.ice_servers[0].username, None);
    let turn = &seat.ice_servers[1];
    assert_eq!(turn.urls.len(), 2);
    let username = turn.username.as_deref().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(peer, seat.id.as_str());
    let expiry: u64 = expiry.parse().unwrap();
    let now = confer_relay::token::unix_now();
    assert!((now + 590..=now + 610).contains(&expiry), "expiry {expiry} is not now + 600");
    // The TURN REST password: base64(HMAC-SHA1(secret, username)).
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"shared-with-coturn").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(turn.credential.as_deref(), Some(expected.as_str()));
    assert!(!relay.log().contains("shared-with-coturn"));
}

#[tokio::test]
async fn sigterm_tells_clients_to_reconnect_and_exits_cleanly() {
    let mut relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let mut seat = relay.join(&links.host, "Host").await;
    let mut fresh = relay.connect().await;
    let port = relay.port;
    let terminate = std::thread::spawn(move || {
        let clean = relay.terminate();
        (clean, relay)
    });
    for client in [&mut seat.client, &mut fresh] {
        match client.recv().await {
            ServerMessage::Reconnect { after_ms } => assert!(after_ms < 2_000),
            other => panic!("{other:?}"),
        }
        client.expect_fatal(ErrorCode::ShuttingDown).await;
    }
    let (clean, relay) = terminate.join().unwrap();
    assert!(clean, "the relay exits with status 0 after SIGTERM");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no longer listening");
    drop(relay);
}
