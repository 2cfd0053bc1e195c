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
    let host = match address {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    // The links must name the port, so a free one is found first; if another program takes it
    // in between, the next try picks another.
    let mut attempt = 0;
    let relay = loop {
        attempt += 1;
        let probe = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(failed)?;
        let port = probe.local_addr().map_err(failed)?.port();
        drop(probe);
        let config = RelayConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            tls: Some(tls.clone()),
            public_url: Some(format!("wss://{host}:{port}")),
            ..RelayConfig::default()
        };
        match Relay::bind(config).await {
            Ok(relay) => break relay,
            Err(err) if attempt >= 3 => return Err(failed(err)),
            Err(_) => continue,
        }
    };
    let handle = relay.handle();
    tracing::info!("meeting server on this machine at {}", handle.origin());
    tokio::spawn(relay.run());
    *slot = Some(handle.clone());
    Ok(handle)
}
