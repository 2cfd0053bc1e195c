//! The meeting server built into the app: with no relay configured, "New meeting" starts the
//! same relay the server binary runs, inside this process, listening on every interface with a
//! self-signed certificate whose pin goes into the links. People on the same network join by
//! the link; it lives as long as the app.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use confer_relay::{Relay, RelayConfig, RelayHandle};

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
/// an outside address (a UDP "connect" sends nothing), or loopback with no network.
pub fn lan_address() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| {
            socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            socket.local_addr()
        })
        .map(|addr| addr.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
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
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await.map_err(failed)?;
    let handle = relay.handle();
    tracing::info!("meeting server on this machine at {}", handle.origin());
    tokio::spawn(relay.run());
    *slot = Some(handle.clone());
    Ok(handle)
}
