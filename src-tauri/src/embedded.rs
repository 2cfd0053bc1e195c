//! The meeting server built into the app: with no relay configured, "New meeting" starts the
//! same relay the server binary runs, inside this process, listening on every interface with a
//! self-signed certificate whose pin goes into the links, and its STUN/TURN server (UDP and TCP
//! on a free port, TLS on the relay's port) relaying within the private network this machine is
//! on. People on the same network join by the link; it lives as long as the app.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use confer_relay::{EmbeddedTurnConfig, IpRange, Relay, RelayConfig, RelayHandle};

use crate::dto::{ErrorCode, UiError};

/// The embedded relay, started on first use.
pub type Slot = tokio::sync::Mutex<Option<RelayHandle>>;

fn failed(what: impl std::fmt::Display) -> UiError {
    UiError::new(
        ErrorCode::EmbeddedRelay,
        format!("the meeting server on this machine could not start: {what}"),
    )
}

/// The address others on the network reach this machine at: the one the system would use for
/// an outside address (the relay's own `outward_ip`), or loopback with no network.
pub fn lan_address() -> IpAddr {
    confer_relay::stun_turn::outward_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The peers the app's TURN server may relay to besides public addresses: the private block
/// (RFC 1918, shared 100.64/10, IPv6 unique-local) the machine's address is in, since the people
/// it serves are on that network; nothing more (never loopback, unless the machine has no network
/// and everyone is on it).
pub fn lan_peers(address: IpAddr) -> Vec<IpRange> {
    let blocks =
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "127.0.0.0/8"];
    blocks.iter().filter_map(|block| IpRange::parse(block)).filter(|range| range.contains(address)).collect()
}

/// The running embedded relay, started if it is not.
pub async fn relay(slot: &Slot) -> Result<RelayHandle, UiError> {
    let mut slot = slot.lock().await;
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let address = lan_address();
    let names = vec!["localhost".to_owned(), address.to_string()];
    let (tls, _, _) = confer_relay::tls::self_signed(&names).map_err(failed)?;
    // Port 0: the system picks a free port, and the links name the one bound.
    let config = RelayConfig {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        tls: Some(tls),
        public_host: Some(address.to_string()),
        embedded_turn: Some(EmbeddedTurnConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            relay_ip: Some(address),
            allowed_peers: lan_peers(address),
            ..EmbeddedTurnConfig::default()
        }),
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await.map_err(failed)?;
    let handle = relay.handle();
    tracing::info!("meeting server on this machine at {}", handle.origin());
    tokio::spawn(relay.run());
    *slot = Some(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_relays_within_its_own_private_network_only() {
        let allowed = |me: &str, peer: &str| {
            let ranges = lan_peers(me.parse().unwrap());
            ranges.iter().any(|r| r.contains(peer.parse().unwrap()))
        };
        assert!(allowed("192.168.1.20", "192.168.1.77"));
        assert!(!allowed("192.168.1.20", "10.0.0.5"), "another private network");
        assert!(!allowed("192.168.1.20", "127.0.0.1"), "this machine's own services");
        assert!(!allowed("192.168.1.20", "169.254.169.254"));
        assert!(allowed("10.4.0.2", "10.200.0.1"));
        assert!(allowed("172.20.0.2", "172.31.0.1"));
        assert!(lan_peers("203.0.113.9".parse().unwrap()).is_empty(), "a public address needs nothing more");
    }

    /// "New meeting" on the app's own server: the lobby's check of that meeting gets a relayed
    /// address over UDP, TCP and TLS from the app's own TURN server (and STUN's answer).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_apps_own_meeting_server_hands_out_its_stun_and_turn() {
        let slot = Slot::default();
        let relay = relay(&slot).await.unwrap();
        let links = relay.create_room(false);
        let link = confer_proto::InviteLink::parse(&links.guest.app).unwrap();
        let report = confer_mesh::netcheck::check(&link).await;
        assert!(report.relay.is_ok(), "{report:?}");
        let urls: Vec<&str> = report.servers.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(urls.len(), 4, "{urls:?}");
        assert!(urls[0].starts_with("stun:"), "{urls:?}");
        assert!(urls[1].ends_with("?transport=udp") && urls[2].ends_with("?transport=tcp"), "{urls:?}");
        assert!(urls[3].starts_with("turns:"), "{urls:?}");
        for server in &report.servers {
            assert!(
                matches!(server.result, confer_mesh::netcheck::ServerResult::Answered { .. }),
                "{}: {:?}",
                server.url,
                server.result
            );
        }
        relay.shutdown();
    }
}
