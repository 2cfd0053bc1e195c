//! TLS with a pinned self-signed certificate, the subprotocol handshake, and plain ws:// rules.

use confer_proto::{Fingerprint, SUBPROTOCOL};
use tokio_tungstenite::tungstenite;

use crate::support::{TestRelay, pinned_tls};

#[tokio::test]
async fn the_pinned_self_signed_certificate_works_and_a_wrong_pin_is_refused() {
    let relay = TestRelay::start(&[]).await;
    let links = relay.create_room(false).await;
    let pin = links.guest.fingerprint.expect("links from a self-signed relay carry the pin");
    assert_eq!(Some(pin), relay.pin, "the link pins the certificate the relay serves");
    assert!(links.guest.relay.starts_with("wss://"));

    // With the pin from the link: connected over TLS.
    relay.try_connect(Some(pinned_tls(pin)), &[SUBPROTOCOL]).await.unwrap().assert_alive().await;

    // With another pin: the TLS handshake fails, nothing is sent.
    let mut wrong = pin.0;
    wrong[0] ^= 1;
    match relay.try_connect(Some(pinned_tls(Fingerprint(wrong))), &[SUBPROTOCOL]).await {
        Err(tungstenite::Error::Io(err)) => assert!(err.to_string().contains("certificate"), "{err}"),
        Err(other) => panic!("expected a certificate error, got {other}"),
        Ok(_) => panic!("a wrong pin was accepted"),
    }

    // A client that checks CA signatures instead of the pin refuses it too: no CA signed it.
    let no_ca_signed_it = crate::support::trusting(&[]);
    assert!(relay.try_connect(Some(no_ca_signed_it), &[SUBPROTOCOL]).await.is_err());
}

#[tokio::test]
async fn an_upgrade_without_the_confer_subprotocol_is_refused_with_a_reason() {
    let relay = TestRelay::start(&[]).await;
    for offered in [&[][..], &["confer.v0"][..]] {
        match relay.try_connect(relay.tls_config(), offered).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400);
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("unsupported_protocol"), "{body}");
            }
            Err(other) => panic!("expected HTTP 400, got {other}"),
            Ok(_) => panic!("accepted without {SUBPROTOCOL}"),
        }
    }
    // Offering several versions, one of them ours, works; the relay picks ours.
    let mut client = relay.try_connect(relay.tls_config(), &["confer.v9", SUBPROTOCOL]).await.unwrap();
    client.assert_alive().await;
}

#[tokio::test]
async fn plain_ws_is_served_on_loopback_only_when_asked_and_refused_on_other_addresses() {
    let relay = TestRelay::start(&["--plain", "true"]).await;
    assert!(relay.origin.starts_with("ws://"));
    let links = relay.create_room(false).await;
    assert_eq!(links.guest.fingerprint, None);
    relay.join(&links.host, "Plain").await;

    // The library refuses plain ws:// on an address other machines reach unless told otherwise.
    let config = confer_relay::RelayConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        tls: None,
        allow_plain: false,
        ..Default::default()
    };
    let err = confer_relay::Relay::bind(config.clone()).await.unwrap_err();
    assert!(matches!(err, confer_relay::RelayError::PlainNotAllowed(_)), "{err}");
    assert!(
        confer_relay::Relay::bind(confer_relay::RelayConfig { allow_plain: true, ..config }).await.is_ok()
    );
}

#[tokio::test]
async fn a_public_host_is_named_with_the_port_the_system_picked() {
    // The embedded relay's way: listen on port 0, name the host others reach; the links carry the
    // port actually bound, so nothing probes for a free port and nothing races for it.
    let config = confer_relay::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_host: Some("192.0.2.7".into()),
        ..Default::default()
    };
    let relay = confer_relay::Relay::bind(config.clone()).await.unwrap();
    let origin = relay.handle().origin().to_owned();
    let port: u16 = origin.strip_prefix("ws://192.0.2.7:").expect("the public host").parse().unwrap();
    assert_ne!(port, 0, "the bound port: {origin}");
    let v6 = confer_relay::RelayConfig { public_host: Some("2001:db8::7".into()), ..config.clone() };
    let origin = confer_relay::Relay::bind(v6).await.unwrap().handle().origin().to_owned();
    assert!(origin.starts_with("ws://[2001:db8::7]:"), "{origin}");
    let bad = confer_relay::RelayConfig { public_host: Some("not a host/".into()), ..config };
    assert!(matches!(confer_relay::Relay::bind(bad).await, Err(confer_relay::RelayError::PublicUrl(_))));
}
