//! TURN over a byte stream: what lets a call connect from a network that blocks UDP (TURN over
//! TCP) or allows only HTTPS-looking traffic on 443 (TURN over TLS).
//!
//! The `turn` crate (client and server) speaks through a `webrtc_util::Conn`, a datagram
//! interface. Over TCP and TLS, RFC 6062 §4 and RFC 8656 §5 carry the same messages on the
//! stream back to back: STUN messages as they are (their header gives the length) and ChannelData
//! messages padded to a multiple of four bytes. This crate turns a stream into such a `Conn` in
//! both directions:
//! - [`dial`] connects to a TURN server over TCP or TLS (rustls; the web's roots, or a
//!   configuration registered for that server with [`trust`], such as the relay's pinned
//!   certificate) and returns a [`StreamConn`] for the `turn` client. The patched `webrtc-ice`
//!   in `vendor/` uses it to gather relay candidates from `turn:…?transport=tcp` and `turns:` URLs.
//! - [`StreamServer`] accepts TURN clients on a TCP listener (TLS optional), and streams other
//!   listeners hand it ([`StreamIntake`]: the relay passes on TLS connections to its HTTPS port
//!   that begin with STUN, see [`Prefixed`]), and shows them to the `turn` server as one `Conn`,
//!   each client by its address.
//!
//! Nothing on the media path blocks: reads run in a task per stream and are handed over whole;
//! writes go through a bounded queue per stream and are dropped when it is full, as a congested
//! UDP path would drop them (TCP would otherwise queue seconds of stale media behind a slow link).

mod client;
mod frame;
mod prefixed;
mod server;

pub use client::{DialError, StreamConn, dial, trust};
pub use frame::{FrameError, MAX_FRAME, read_frame};
pub use prefixed::{Prefixed, starts_as_stun};
pub use server::{StreamIntake, StreamServer, StreamServerLimits, TurnStream};

/// How a relay candidate reaches its TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelayTransport {
    /// `turn:` over UDP.
    Udp,
    /// `turn:…?transport=tcp`.
    Tcp,
    /// `turns:` (TLS over TCP).
    Tls,
}

impl RelayTransport {
    /// The ICE local preference a relay candidate gets (RFC 8445 §5.1.2.1): UDP highest, then TCP,
    /// then TLS, as browsers rank them, so that a call takes a UDP path whenever one works and a
    /// stream only when nothing else does.
    pub fn local_preference(self) -> u16 {
        match self {
            Self::Udp => 65_535,
            Self::Tcp => 49_151,
            Self::Tls => 32_767,
        }
    }

    /// The candidate priority of a relay candidate of component `component` through this transport.
    pub fn relay_priority(self, component: u16) -> u32 {
        // Relay candidates have type preference 0.
        (1 << 8) * u32::from(self.local_preference()) + (256 - u32::from(component.min(256)))
    }

    /// Which transport a relay candidate of this priority was gathered through (`None`: a
    /// priority this scheme does not make, such as a remote browser's).
    pub fn from_relay_priority(priority: u32) -> Option<Self> {
        let preference = (priority >> 8) & 0xffff;
        [Self::Udp, Self::Tcp, Self::Tls].into_iter().find(|t| u32::from(t.local_preference()) == preference)
    }

    /// `udp`, `tcp` or `tls`, as WebRTC statistics name a relay protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

impl std::fmt::Display for RelayTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RelayTransport;

    #[test]
    fn udp_relays_rank_above_tcp_and_tcp_above_tls() {
        let [udp, tcp, tls] =
            [RelayTransport::Udp, RelayTransport::Tcp, RelayTransport::Tls].map(|t| t.relay_priority(1));
        assert!(udp > tcp && tcp > tls, "{udp} {tcp} {tls}");
        // The default priority webrtc-ice gives a UDP relay candidate is the UDP one here.
        assert_eq!(udp, 65_535 * 256 + 255);
        // Every relay candidate still ranks below any server-reflexive one (type preference 100).
        assert!(udp < 100 << 24);
        for t in [RelayTransport::Udp, RelayTransport::Tcp, RelayTransport::Tls] {
            assert_eq!(RelayTransport::from_relay_priority(t.relay_priority(1)), Some(t));
        }
        assert_eq!(RelayTransport::from_relay_priority(12_345 << 8), None);
    }
}
