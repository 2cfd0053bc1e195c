//! Why no network path to a peer was found, as far as this side can tell, so that the person is
//! told the missing part ("the meeting server offers no relay, and both networks need one")
//! instead of a list of candidate types. Decided from what this side gathered, what the peer
//! sent, and whether the meeting server offers a relay; no IO.

use std::collections::BTreeSet;

/// The cause a failure is put down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoPathCause {
    /// Nothing was gathered here at all: no usable network interface, or relay candidates only
    /// and no relay answered.
    NothingGathered,
    /// The peer sent no candidates: its network is down, or its side failed before gathering.
    PeerSentNothing,
    /// The meeting server offers no relay (TURN), and neither side has one: the two networks do
    /// not let a direct path through (strict NATs or firewalls on both), and only a relay would.
    NoRelayOffered,
    /// The meeting server offers a relay, and it could not be reached from here (UDP blocked and
    /// its TCP/TLS transports failed too, or it refused us).
    RelayUnreachable,
    /// The meeting server's relay answered and refused our credentials (its 401): its TURN
    /// secret does not match the meeting server's, or its clock is wrong.
    RelayCredentialsRefused,
    /// The meeting server's relay gave out relayed addresses, and nothing sent to them arrives:
    /// a firewall closes its relayed ports (found by the engine's own test of the relay).
    RelayPortsBlocked,
    /// Both sides had addresses, a relay among them, and no pair of them got through.
    Blocked,
}

impl NoPathCause {
    /// What this side knows: the candidate types it gathered and received (`host`, `srflx`,
    /// `prflx`, `relay`), whether the meeting server offered any TURN URL, and whether this side
    /// uses relay candidates only.
    pub fn diagnose(
        gathered: &BTreeSet<&str>,
        received: &BTreeSet<&str>,
        relay_offered: bool,
        relay_only: bool,
    ) -> Self {
        if gathered.is_empty() {
            // Relay only, and the relay offered gave nothing: it is the relay that failed.
            if relay_only && relay_offered { Self::RelayUnreachable } else { Self::NothingGathered }
        } else if received.is_empty() {
            Self::PeerSentNothing
        } else if gathered.contains("relay") || received.contains("relay") {
            Self::Blocked
        } else if relay_offered {
            Self::RelayUnreachable
        } else {
            Self::NoRelayOffered
        }
    }

    /// A stable name for the UI, which words it in the user's language (`call.no_path.<code>`).
    pub fn code(self) -> &'static str {
        match self {
            Self::NothingGathered => "nothing_gathered",
            Self::PeerSentNothing => "peer_sent_nothing",
            Self::NoRelayOffered => "no_relay_offered",
            Self::RelayUnreachable => "relay_unreachable",
            Self::RelayCredentialsRefused => "relay_credentials_refused",
            Self::RelayPortsBlocked => "relay_ports_blocked",
            Self::Blocked => "blocked",
        }
    }

    /// The cause in English, naming the peer `name` (for the CLI and logs).
    pub fn describe(self, name: &str) -> String {
        match self {
            Self::NothingGathered => "no network address could be gathered here (no usable network interface, or relay only and no relay answered)".to_owned(),
            Self::PeerSentNothing => format!("{name}'s side sent no network addresses (its network may be down)"),
            Self::NoRelayOffered => format!("the meeting server offers no relay, and your network and {name}'s both need one"),
            Self::RelayUnreachable => "the meeting server's relay could not be reached from here over UDP, TCP or TLS (run the network check)".to_owned(),
            Self::RelayCredentialsRefused => "the meeting server's relay refused our credentials (credentials refused: tell its operator; its clock may be wrong)".to_owned(),
            Self::RelayPortsBlocked => "the meeting server's relay gives out addresses that nothing can reach (a firewall closes its relayed ports: tell its operator)".to_owned(),
            Self::Blocked => format!("no path to {name} got through, direct or relayed (a firewall between you?)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(types: &[&'a str]) -> BTreeSet<&'a str> {
        types.iter().copied().collect()
    }

    #[test]
    fn the_missing_part_is_named() {
        use NoPathCause::*;
        let diagnose = |here: &[&str], there: &[&str], offered| {
            NoPathCause::diagnose(&set(here), &set(there), offered, false)
        };
        assert_eq!(diagnose(&[], &["host"], true), NothingGathered);
        // Relay only: nothing gathered means the relay failed, if one was offered.
        assert_eq!(NoPathCause::diagnose(&set(&[]), &set(&["host"]), true, true), RelayUnreachable);
        assert_eq!(NoPathCause::diagnose(&set(&[]), &set(&["host"]), false, true), NothingGathered);
        assert_eq!(diagnose(&["host", "srflx"], &[], true), PeerSentNothing);
        // Two symmetric NATs and no TURN: only a relay would have helped, and there is none.
        assert_eq!(diagnose(&["host", "srflx"], &["host", "srflx"], false), NoRelayOffered);
        // TURN offered but nothing relayed gathered here: it could not be reached.
        assert_eq!(diagnose(&["host"], &["host", "srflx"], true), RelayUnreachable);
        // A relay on either side and still nothing: blocked somewhere between.
        assert_eq!(diagnose(&["host", "relay"], &["host"], true), Blocked);
        assert_eq!(diagnose(&["host"], &["relay"], false), Blocked);
        assert!(NoRelayOffered.describe("Alice").contains("your network and Alice's both need one"));
        assert_eq!(RelayUnreachable.code(), "relay_unreachable");
    }
}
