//! The STUN and TURN servers of a meeting, parsed once where they arrive (the relay's `joined`,
//! `resumed` or network-check answer) into [`IceRoutes`]: the network check, the trust of the
//! relay's own TURN-over-TLS certificate, the diagnosis of a failed call and the peer connections
//! all read the same typed URLs ([`IceUrl`]), and a malformed one is set aside once, by name,
//! instead of reaching the WebRTC stack (which would refuse the whole configuration).

use confer_proto::{IceScheme, IceServer, IceTransport, IceUrl, IceUrlError};
use confer_turn_stream::RelayTransport;
use webrtc::ice_transport::ice_server::RTCIceServer;

/// One URL of the meeting's, with the credentials of the server entry it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceRoute {
    /// The URL.
    pub url: IceUrl,
    /// TURN username (TURN REST scheme: `expiry:peer`).
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

impl IceRoute {
    /// How the URL reaches its server: UDP, TCP, or TLS (`turns:`/`stuns:` over TCP). `None`
    /// for DTLS (`turns:…?transport=udp`), which Confer does not use.
    pub fn transport(&self) -> Option<RelayTransport> {
        match (self.url.scheme, self.url.transport) {
            (IceScheme::Stun | IceScheme::Turn, IceTransport::Udp) => Some(RelayTransport::Udp),
            (IceScheme::Stun | IceScheme::Turn, IceTransport::Tcp) => Some(RelayTransport::Tcp),
            (IceScheme::Stuns | IceScheme::Turns, IceTransport::Tcp) => Some(RelayTransport::Tls),
            (IceScheme::Stuns | IceScheme::Turns, IceTransport::Udp) => None,
        }
    }

    /// What Confer's WebRTC stack cannot use, in words; `None` when it can: STUN over TLS, and
    /// anything over DTLS.
    pub fn unsupported(&self) -> Option<&'static str> {
        match (self.url.scheme, self.url.transport) {
            (IceScheme::Stuns, _) => Some("STUN over TLS"),
            (IceScheme::Turns, IceTransport::Udp) => Some("TURN over DTLS"),
            _ => None,
        }
    }
}

/// The meeting's ICE servers, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceRoutes {
    /// Every well-formed URL, in the relay's order.
    pub routes: Vec<IceRoute>,
    /// The URLs that are not, and why.
    pub refused: Vec<(String, IceUrlError)>,
}

impl IceRoutes {
    /// Parses every URL of `servers`.
    pub fn parse(servers: &[IceServer]) -> Self {
        let mut parsed = Self::default();
        for server in servers {
            for text in &server.urls {
                match IceUrl::parse(text) {
                    Ok(url) => parsed.routes.push(IceRoute {
                        url,
                        username: server.username.clone(),
                        credential: server.credential.clone(),
                    }),
                    Err(why) => {
                        let shown: String = text.chars().take(80).collect();
                        tracing::warn!(url = %shown, %why, "the relay offered an ICE server URL that is not one: set aside");
                        parsed.refused.push((text.clone(), why));
                    }
                }
            }
        }
        parsed
    }

    /// The TURN URLs (servers that relay).
    pub fn turn(&self) -> impl Iterator<Item = &IceRoute> {
        self.routes.iter().filter(|route| route.url.is_turn())
    }

    /// Whether any TURN URL is offered.
    pub fn offers_turn(&self) -> bool {
        self.turn().next().is_some()
    }

    /// The servers as the WebRTC stack takes them: one per usable URL (the patched webrtc-ice
    /// gathers relay candidates over UDP, TCP and TLS; STUN over TLS and DTLS it cannot use).
    pub(crate) fn for_webrtc(&self) -> Vec<RTCIceServer> {
        self.routes
            .iter()
            .filter(|route| route.unsupported().is_none())
            .map(|route| RTCIceServer {
                urls: vec![route.url.as_str().to_owned()],
                username: route.username.clone().unwrap_or_default(),
                credential: route.credential.clone().unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str], user: Option<&str>) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: user.map(str::to_owned),
            credential: user.map(|_| "secret".to_owned()),
        }
    }

    #[test]
    fn urls_are_parsed_once_with_their_credentials_and_bad_ones_set_aside() {
        let routes = IceRoutes::parse(&[
            server(&["stun:relay.example:3478", "stuns:relay.example"], None),
            server(
                &[
                    "turn:relay.example:3478?transport=udp",
                    "turn:relay.example:3478?transport=tcp",
                    "turn:bad host",
                ],
                Some("1:x"),
            ),
            server(
                &["turns:relay.example:443?transport=tcp", "turns:relay.example?transport=udp"],
                Some("2:y"),
            ),
        ]);
        assert_eq!(routes.refused.len(), 1);
        assert_eq!(routes.refused[0], ("turn:bad host".to_owned(), IceUrlError::Host));
        let transports: Vec<Option<RelayTransport>> = routes.routes.iter().map(IceRoute::transport).collect();
        assert_eq!(
            transports,
            [
                Some(RelayTransport::Udp),
                Some(RelayTransport::Tls),
                Some(RelayTransport::Udp),
                Some(RelayTransport::Tcp),
                Some(RelayTransport::Tls),
                None
            ]
        );
        assert!(routes.offers_turn());
        assert_eq!(routes.turn().count(), 4);
        assert_eq!(routes.turn().next().unwrap().username.as_deref(), Some("1:x"));
        // The WebRTC stack gets the usable ones only, each with its own credentials.
        let rtc = routes.for_webrtc();
        let urls: Vec<&str> = rtc.iter().map(|s| s.urls[0].as_str()).collect();
        assert_eq!(
            urls,
            [
                "stun:relay.example:3478",
                "turn:relay.example:3478?transport=udp",
                "turn:relay.example:3478?transport=tcp",
                "turns:relay.example:443?transport=tcp"
            ]
        );
        assert_eq!(rtc[3].username, "2:y");
        assert!(!IceRoutes::parse(&[server(&["stun:a"], None)]).offers_turn());
    }
}
