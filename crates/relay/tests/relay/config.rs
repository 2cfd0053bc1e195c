//! How an operator configures the relay: certificate files, a TOML file, and the state kept
//! across restarts.

use std::process::Command;

use confer_proto::{ErrorCode, InviteLink};

use crate::support::{TestRelay, join_message};

#[tokio::test]
async fn a_configured_certificate_is_served_and_links_carry_no_pin() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("relay.crt"), dir.path().join("relay.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut relay =
        TestRelay::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    assert!(relay.origin.starts_with("wss://"));
    assert!(relay.pin.is_none(), "no self-signed certificate was generated");

    // A client that trusts the operator's certificate as a root (as it would a CA) connects.
    relay.client_tls = Some(crate::support::trusting(&[certified.cert.der().clone()]));
    relay.connect().await.assert_alive().await;
    // Links from a relay with a CA-style certificate carry no pin.
    let links = relay.create_room(false).await;
    assert_eq!(links.guest.fingerprint, None);
    relay.join(&links.guest, "Trusting").await;
}

#[tokio::test]
async fn a_toml_file_configures_the_relay_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "room_capacity = 1\npublic_url = \"wss://meet.example.org:9443\"\nstun_urls = [\"stun:stun.example.org:3478\"]\nembedded_turn = false\n",
    )
    .unwrap();
    let relay = TestRelay::start(&["--config", file.to_str().unwrap()]).await;
    assert_eq!(relay.origin, "wss://meet.example.org:9443", "links use the public URL");
    let response = relay.http("POST", "/rooms", &[], "").await;
    let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    let link = InviteLink::parse(json["guest"]["web"].as_str().unwrap()).unwrap();
    assert!(json["guest"]["web"].as_str().unwrap().starts_with("https://meet.example.org:9443/j/"));
    // Capacity 1 from the file: the second participant is refused.
    let mut first = relay.connect().await;
    first.send(&join_message(&link, "First")).await;
    let first = first.expect_joined().await;
    // The file's STUN server only: it turned the built-in STUN/TURN server off.
    assert_eq!(first.ice_servers.len(), 1);
    assert_eq!(first.ice_servers[0].urls, ["stun:stun.example.org:3478"]);
    let mut second = relay.connect().await;
    second.send(&join_message(&link, "Second")).await;
    second.expect_fatal(ErrorCode::RoomFull).await;

    // A flag wins over the file.
    let relay = TestRelay::start(&["--config", file.to_str().unwrap(), "--room-capacity", "2"]).await;
    let response = relay.http("POST", "/rooms", &[], "").await;
    let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    let link = InviteLink::parse(json["guest"]["app"].as_str().unwrap()).unwrap();
    relay.join(&link, "First").await;
    relay.join(&link, "Second").await;
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "room_capasity = 4\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_confer-relay"))
        .args(["--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("room_capasity"), "{stderr}");
}

#[tokio::test]
async fn the_generated_token_secret_is_private_and_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let relay =
        TestRelay::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", &["--plain", "true"]).await;
    let secret = relay.state_dir.path().join("token-secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the token secret");
    let links = relay.create_room(false).await;

    // Restarted on the same state: the invite from before still opens the room.
    let relay = TestRelay::start_with(relay.into_state_dir(), "127.0.0.1:0", &["--plain", "true"]).await;
    relay.join(&links.guest, "After restart").await;
    // And a relay with another secret refuses it.
    let other =
        TestRelay::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", &["--plain", "true"]).await;
    let mut client = other.connect().await;
    client.send(&join_message(&links.guest, "Elsewhere")).await;
    client.expect_fatal(ErrorCode::TokenInvalid).await;
}

#[test]
fn a_stun_or_turn_url_clients_could_not_use_stops_the_relay_at_start() {
    let state = tempfile::tempdir().unwrap();
    for (flags, said) in [
        (
            ["--turn-url", "turn:relay example:3478", "--turn-secret", "s3cret"],
            "the host is missing or malformed",
        ),
        (["--stun-url", "stun:relay.example:99999", "--turn", "false"], "the port is not a number"),
        (["--turn-url", "http://relay.example", "--turn-secret", "s3cret"], "not a STUN or TURN URL"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_confer-relay"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started: {stderr}");
        assert!(stderr.contains(flags[1]) && stderr.contains(said), "{flags:?}: {stderr}");
    }
}
