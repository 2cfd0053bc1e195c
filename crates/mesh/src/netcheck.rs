//! The lobby's network check: before joining, can this machine reach the meeting's relay, and do
//! the relay's STUN and TURN servers answer? The relay hands out the ICE servers a participant of
//! the room would get (`GET /check/{room}/{token}`, docs/PROTOCOL.md section 7), and each URL is
//! tried with a STUN Binding or a TURN Allocate of our own ([`crate::turn_probe`]) over UDP, TCP
//! or TLS as the URL says, so that a failure is named. Then this machine's upload speed to the
//! relay is measured (`POST /check/{room}/{token}/upload`, about 2 s), and from it how many
//! people a video call can hold ([`capacity`]): in a mesh every participant uploads one stream
//! per other participant, so the uplink is what runs out first. Nobody in the room hears of it.

use std::time::{Duration, Instant};

use confer_proto::{IceServer, InviteLink};
use confer_turn_stream::RelayTransport;

use crate::ice::IceRoutes;
use crate::layers::{LAYERS, Ladder};
use crate::rooms::{RoomError, exchange};
use crate::turn_probe::{ProbeFailure, probe};

/// How long one STUN or TURN URL has to answer.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the upload measurement sends.
pub const UPLOAD_TIME: Duration = Duration::from_secs(2);

/// The most it sends (under the relay's own bound of 4 MiB): 12 Mbit/s over [`UPLOAD_TIME`]; a
/// faster uplink is reported as at least what this took.
pub const UPLOAD_MAX_BYTES: usize = 3 * 1024 * 1024;

/// The most people a prediction names (past this a mesh runs out of CPU before uplink).
pub const MAX_PREDICTED: u32 = 25;

/// How fast this machine's uploads reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// Kilobits per second, as the relay saw the bytes arrive.
    pub kbps: u32,
    /// Bytes the relay received.
    pub bytes: u64,
    /// Over how long (from the first piece to the last), as the relay measured.
    pub over: Duration,
}

/// How many people a video call can hold when everyone is sent one layer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The layer's picture size.
    pub size: (u32, u32),
    /// The most participants (this one included; at most [`MAX_PREDICTED`]); 1: not even one
    /// other at this size.
    pub people: u32,
}

/// How many people a video call can hold at each size of `ladder` with an uplink of `kbps`:
/// each other participant costs what [`Ladder::peer_cost`] says, and the call plans to use
/// [`crate::layers::USABLE_UPLINK`] of the uplink (as the engine does with the same figure,
/// [`Ladder::fit_uplink`]).
pub fn capacity(kbps: u32, ladder: &Ladder) -> [Capacity; LAYERS] {
    std::array::from_fn(|layer| {
        let usable = f64::from(kbps) * 1_000.0 * crate::layers::USABLE_UPLINK;
        let others = (usable / ladder.peer_cost(Some(layer))).floor();
        let people = (others as u32).saturating_add(1).min(MAX_PREDICTED);
        Capacity { size: ladder.size(layer), people }
    })
}

/// The camera settings the prediction of `confer check` assumes: 640x360 at 30 fps, as
/// [`crate::engine::EngineConfig::synthetic`].
pub fn default_ladder() -> Ladder {
    Ladder::new(640, 360, 30, (300_000, 800_000, 1_500_000))
}

/// Measures how fast this machine's data reaches the relay behind `link`.
pub async fn measure_uplink(link: &InviteLink) -> Result<Uplink, String> {
    let path = format!("/check/{}/{}/upload", link.room, link.token);
    let answer =
        crate::rooms::upload(&link.relay, link.fingerprint, &path, UPLOAD_TIME, UPLOAD_MAX_BYTES).await;
    let body = match answer {
        Ok((200, body)) => body,
        // An older relay has no such path: it cannot measure, nothing is wrong.
        Ok((404 | 405, body)) if !body.contains("token_") => {
            return Err("this meeting server does not measure uploads".into());
        }
        Ok((status, body)) => return Err(refusal(status, &body)),
        Err(RoomError::Unreachable { reason, .. }) => return Err(format!("unreachable: {reason}")),
        Err(err) => return Err(err.to_string()),
    };
    parse_uplink(&body)
}

/// The relay's `{"bytes": N, "ms": T, "kbps": K}`, checked.
fn parse_uplink(body: &str) -> Result<Uplink, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        bytes: u64,
        ms: u64,
        kbps: Option<u64>,
    }
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| format!("the relay's answer is not a measurement: {e}"))?;
    let kbps = answer.kbps.ok_or("the upload was too short to measure")?;
    let kbps = u32::try_from(kbps).map_err(|_| format!("an upload of {kbps} kbit/s makes no sense"))?;
    if kbps == 0 {
        return Err("the upload did not get through".into());
    }
    Ok(Uplink { kbps, bytes: answer.bytes, over: Duration::from_millis(answer.ms) })
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkReport {
    /// The relay: round-trip time of the check request, or why it failed.
    pub relay: Result<Duration, String>,
    /// Each STUN and TURN URL the relay offers, in its order.
    pub servers: Vec<ServerCheck>,
    /// This machine's upload speed to the relay, or why it was not measured.
    pub uplink: Result<Uplink, String>,
}

/// One STUN or TURN URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCheck {
    /// The URL (`stun:…`, `turn:…`), as the relay gave it.
    pub url: String,
    /// TURN (a relay) rather than STUN.
    pub turn: bool,
    /// How it reaches its server; `None` for a URL that is malformed or over DTLS.
    pub transport: Option<RelayTransport>,
    /// What came of it.
    pub result: ServerResult,
}

/// What one URL's probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerResult {
    /// This machine's address as the STUN server saw it, or the relayed address the TURN server
    /// gave, and how long that took.
    Answered {
        /// `address:port`.
        address: String,
        /// From the start of gathering.
        after: Duration,
    },
    /// No answer, or no allocation: why.
    Failed {
        /// A stable name for the cause: `silent`, `udp_refused`, `tcp_refused`, `tcp_timeout`,
        /// `tls_failed`, `credentials_refused`, `relay_ports_blocked`, `refused`, `resolve`,
        /// `closed`, `malformed`, `network`, `bad_url`.
        code: &'static str,
        /// The cause in words.
        reason: String,
    },
    /// Not tried: a kind of URL Confer's WebRTC stack does not use (STUN over TLS, TURN over
    /// DTLS). Not a failure: the call does not depend on it.
    Skipped(String),
}

/// Checks the relay and the ICE servers of the meeting behind `link`. Never fails: every part's
/// failure is in the report, in words a user can act on.
pub async fn check(link: &InviteLink) -> NetworkReport {
    let path = format!("/check/{}/{}", link.room, link.token);
    let started = Instant::now();
    let servers = match exchange(&link.relay, link.fingerprint, "GET", &path, None, "").await {
        Ok((200, body)) => parse_servers(&body),
        Ok((status, body)) => Err(refusal(status, &body)),
        Err(RoomError::Unreachable { reason, .. }) => Err(format!("unreachable: {reason}")),
        Err(err) => Err(err.to_string()),
    };
    let servers = match servers {
        Ok(servers) => servers,
        Err(why) => {
            let uplink = Err(why.clone());
            return NetworkReport { relay: Err(why), servers: Vec::new(), uplink };
        }
    };
    let relay = Ok(started.elapsed());
    let routes = IceRoutes::parse(&servers);
    crate::tls::trust_relay_turn(link, &routes);
    let checks = routes.routes.iter().map(|route| async move {
        let result = match probe(route, SERVER_TIMEOUT).await {
            Ok(answer) => ServerResult::Answered { address: answer.address, after: answer.after },
            Err(ProbeFailure::Unsupported(what)) => {
                ServerResult::Skipped(format!("not tried: Confer does not use {what}"))
            }
            Err(failure) => ServerResult::Failed { code: failure.code(), reason: failure.to_string() },
        };
        ServerCheck {
            url: route.url.as_str().to_owned(),
            turn: route.url.is_turn(),
            transport: route.transport(),
            result,
        }
    });
    let mut checked = futures_util::future::join_all(checks).await;
    // Malformed ones are named too: the meeting server's operator must hear of them.
    checked.extend(routes.refused.iter().map(|(url, why)| ServerCheck {
        url: url.chars().take(200).collect(),
        turn: false,
        transport: None,
        result: ServerResult::Failed {
            code: "bad_url",
            reason: format!("not a usable STUN/TURN URL: {why}"),
        },
    }));
    // After the probes, not beside them: a full uplink would slow their answers.
    let uplink = measure_uplink(link).await;
    NetworkReport { relay, servers: checked, uplink }
}

/// What the check means for a call, for the lobby (which words it in the user's language) and
/// for `confer check`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The meeting server did not answer: nobody can be met through it.
    Unreachable,
    /// It offers no STUN or TURN server: calls connect only between machines that reach each
    /// other directly (the same network).
    NoServers,
    /// UDP gets out (STUN or TURN over UDP answered): direct connections are possible. `relay`:
    /// the best transport the meeting server's relay answered over, if any.
    Direct {
        /// UDP, TCP or TLS; `None`: no relay, so a call with someone behind a strict NAT or
        /// firewall may not connect.
        relay: Option<RelayTransport>,
    },
    /// Nothing over UDP answered: calls go through the relay over TCP or TLS, or (`None`) cannot
    /// leave this network at all.
    UdpBlocked {
        /// TCP or TLS, if the relay answered over either.
        relay: Option<RelayTransport>,
    },
}

impl Verdict {
    /// A stable name for the UI: `unreachable`, `no_servers`, `direct`, `direct_no_relay`,
    /// `relayed`, `no_path`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::NoServers => "no_servers",
            Self::Direct { relay: Some(_) } => "direct",
            Self::Direct { relay: None } => "direct_no_relay",
            Self::UdpBlocked { relay: Some(_) } => "relayed",
            Self::UdpBlocked { relay: None } => "no_path",
        }
    }

    /// The relay's transport, where there is one.
    pub fn relay(self) -> Option<RelayTransport> {
        match self {
            Self::Direct { relay } | Self::UdpBlocked { relay } => relay,
            Self::Unreachable | Self::NoServers => None,
        }
    }
}

impl NetworkReport {
    /// What the check means for a call.
    pub fn verdict(&self) -> Verdict {
        if self.relay.is_err() {
            return Verdict::Unreachable;
        }
        if self.servers.is_empty() {
            return Verdict::NoServers;
        }
        let answered = |turn: bool, transport: RelayTransport| {
            self.servers.iter().any(|s| {
                s.turn == turn
                    && s.transport == Some(transport)
                    && matches!(s.result, ServerResult::Answered { .. })
            })
        };
        // Relayed ports that nothing reaches fail whichever transport the allocation was made over.
        let relay = [RelayTransport::Udp, RelayTransport::Tcp, RelayTransport::Tls]
            .into_iter()
            .find(|t| answered(true, *t))
            .filter(|_| !self.failed_with("relay_ports_blocked"));
        // A machine that refused on a UDP port was reached over UDP.
        let udp_out = answered(false, RelayTransport::Udp)
            || answered(true, RelayTransport::Udp)
            || self.failed_with("udp_refused")
            || self.failed_with("relay_ports_blocked");
        if udp_out { Verdict::Direct { relay } } else { Verdict::UdpBlocked { relay } }
    }

    /// Whether a TURN server refused the meeting server's credentials (its 401).
    pub fn credentials_refused(&self) -> bool {
        self.failed_with("credentials_refused")
    }

    /// Whether a TURN server allocated a relayed address that nothing sent to reaches (a firewall
    /// in front of its relayed ports).
    pub fn relay_ports_blocked(&self) -> bool {
        self.failed_with("relay_ports_blocked")
    }

    /// Whether some server failed with `code`.
    fn failed_with(&self, code: &str) -> bool {
        self.servers.iter().any(|s| matches!(s.result, ServerResult::Failed { code: c, .. } if c == code))
    }

    /// How many people a video call can hold at each size of `ladder`, from the uplink
    /// measured (`None`: not measured).
    pub fn capacity(&self, ladder: &Ladder) -> Option<[Capacity; LAYERS]> {
        self.uplink.as_ref().ok().map(|uplink| capacity(uplink.kbps, ladder))
    }

    /// The verdict in one or two English sentences (`confer check`; the lobby words it itself),
    /// and what the uplink allows at 640x360 ([`default_ladder`]).
    pub fn summary(&self) -> String {
        let mut text = match (self.verdict(), &self.relay) {
            (Verdict::Unreachable, Err(why)) => {
                format!("The meeting server cannot be reached ({why}): nobody can be met through it.")
            }
            (Verdict::Unreachable, Ok(_)) => "The meeting server cannot be reached.".to_owned(),
            (Verdict::NoServers, _) => "The meeting server offers no STUN or TURN server: calls connect only between machines on the same network.".to_owned(),
            (Verdict::Direct { relay: Some(_) }, _) => "Direct connections are possible; the meeting server's relay is there for networks where they fail.".to_owned(),
            (Verdict::Direct { relay: None }, _) => "Direct connections are possible, but no relay answered: a call with someone behind a strict NAT or firewall may not connect.".to_owned(),
            (Verdict::UdpBlocked { relay: Some(transport) }, _) => format!(
                "Your network blocks UDP: calls will be relayed over {} through the meeting server.",
                transport.as_str().to_uppercase()
            ),
            (Verdict::UdpBlocked { relay: None }, _) => "Your network blocks UDP and no relay could be reached over TCP or TLS: calls can connect only within this network.".to_owned(),
        };
        if self.credentials_refused() {
            text.push_str(" The meeting server's relay refused our credentials: tell its operator (its clock may be wrong, or its TURN secret).");
        }
        if self.relay_ports_blocked() {
            text.push_str(" The meeting server's relay gives out addresses that nothing can reach (a firewall closes its relayed ports): calls that need it will not connect; tell its operator.");
        }
        if self.failed_with("udp_refused") {
            text.push_str(" A STUN or TURN server of the meeting server's is not running (its machine refuses on that port): tell its operator.");
        }
        match (&self.uplink, self.capacity(&default_ladder())) {
            (Ok(uplink), Some(sizes)) => {
                let people = |c: &Capacity| {
                    let more = if c.people >= MAX_PREDICTED { "+" } else { "" };
                    format!("{}{more} people at {}x{}", c.people, c.size.0, c.size.1)
                };
                let [top, rest @ ..] = &sizes;
                text.push_str(&format!(
                    " Your upload: {:.1} Mbit/s, enough for a video call of {} ({}).",
                    f64::from(uplink.kbps) / 1_000.0,
                    people(top),
                    rest.iter().map(people).collect::<Vec<_>>().join(", ")
                ));
            }
            (Err(why), _) if self.relay.is_ok() => {
                text.push_str(&format!(" The upload speed was not measured ({why})."));
            }
            _ => {}
        }
        text
    }
}

/// The relay's `{"ice_servers": [...]}`, checked like everything a relay says.
fn parse_servers(body: &str) -> Result<Vec<IceServer>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        ice_servers: Vec<IceServer>,
    }
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| format!("the relay's answer is not a server list: {e}"))?;
    let count: usize = answer.ice_servers.iter().map(|s| s.urls.len()).sum();
    if count > 16 {
        return Err(format!("the relay offers {count} ICE server URLs; at most 16 are tried"));
    }
    Ok(answer.ice_servers)
}

/// The relay's refusal in words: its error code names what is wrong with the link.
fn refusal(status: u16, body: &str) -> String {
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    match (status, code.as_str()) {
        (410, _) | (_, "token_expired") => "the invite expired: ask for a new link".into(),
        (429, _) => {
            "the relay answered, but too many checks came from here: try again in a few seconds".into()
        }
        (404, "token_invalid" | "token_wrong_room") => "the relay does not accept this invite".into(),
        // An older relay without the check endpoint still answered: it is reachable.
        (404, _) => "the relay answered, but it cannot check ICE servers (an older version?)".into(),
        (status, _) => format!("the relay refused the check: HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_and_refusals_named() {
        let servers = parse_servers(r#"{"ice_servers":[{"urls":["stun:a:3478"]},{"urls":["turn:b:3478"],"username":"1:x","credential":"c"}]}"#)
            .unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1:x"));
        assert!(parse_servers("[]").is_err());
        assert!(parse_servers("{\"ice_servers\":[{\"urls\":[1]}]}").is_err());
        let many = format!("{{\"ice_servers\":[{{\"urls\":[{}]}}]}}", vec!["\"stun:a\""; 17].join(","));
        assert!(parse_servers(&many).unwrap_err().contains("17"));
        assert_eq!(refusal(410, ""), "the invite expired: ask for a new link");
        assert_eq!(
            refusal(404, r#"{"code":"token_invalid","message":"x"}"#),
            "the relay does not accept this invite"
        );
        assert!(refusal(404, "Not Found").contains("older"));
        assert!(refusal(503, "").contains("503"));
        assert!(refusal(429, r#"{"code":"rate_limited"}"#).contains("too many checks"));
    }

    fn report(servers: &[(&str, Result<(), &'static str>)]) -> NetworkReport {
        NetworkReport {
            relay: Ok(Duration::from_millis(3)),
            servers: servers
                .iter()
                .map(|(url, result)| ServerCheck {
                    url: (*url).to_owned(),
                    turn: url.starts_with("turn"),
                    transport: IceRoutes::parse(&[IceServer {
                        urls: vec![(*url).to_owned()],
                        username: None,
                        credential: None,
                    }])
                    .routes[0]
                        .transport(),
                    result: match result {
                        Ok(()) => {
                            ServerResult::Answered { address: "192.0.2.1:5000".into(), after: Duration::ZERO }
                        }
                        Err(code) => ServerResult::Failed { code, reason: String::new() },
                    },
                })
                .collect(),
            uplink: Err("this meeting server does not measure uploads".into()),
        }
    }

    #[test]
    fn the_uplink_predicts_how_many_people_a_call_holds() {
        let ladder = default_ladder();
        let people = |kbps| capacity(kbps, &ladder).map(|c| c.people);
        // 640x360 at 30 fps needs 691 kbit/s; with audio and headers a peer costs 796 kbit/s.
        assert_eq!(people(3_000), [4, 11, MAX_PREDICTED]);
        assert_eq!(people(800), [1, 3, 8], "a DSL uplink: nobody else at 640x360");
        assert_eq!(people(0), [1, 1, 1]);
        assert_eq!(people(u32::MAX), [MAX_PREDICTED; 3]);
        assert_eq!(capacity(3_000, &ladder).map(|c| c.size), [(640, 360), (320, 180), (160, 90)]);

        let mut measured = report(&[("stun:r:3478", Ok(()))]);
        measured.uplink = Ok(Uplink { kbps: 3_000, bytes: 750_000, over: Duration::from_secs(2) });
        assert!(
            measured.summary().ends_with(
                " Your upload: 3.0 Mbit/s, enough for a video call of 4 people at 640x360 (11 people at 320x180, 25+ people at 160x90)."
            ),
            "{}",
            measured.summary()
        );
        let unmeasured = report(&[("stun:r:3478", Ok(()))]);
        assert!(unmeasured.capacity(&ladder).is_none());
        assert!(
            unmeasured.summary().ends_with(
                "The upload speed was not measured (this meeting server does not measure uploads)."
            )
        );
    }

    #[test]
    fn the_relays_measurement_is_checked() {
        let uplink = parse_uplink(r#"{"bytes":500000,"ms":2000,"kbps":1996}"#).unwrap();
        assert_eq!(uplink, Uplink { kbps: 1_996, bytes: 500_000, over: Duration::from_secs(2) });
        assert!(parse_uplink(r#"{"bytes":10,"ms":0,"kbps":null}"#).unwrap_err().contains("too short"));
        assert!(parse_uplink(r#"{"bytes":10,"ms":9,"kbps":0}"#).is_err());
        assert!(parse_uplink(r#"{"bytes":10,"ms":9,"kbps":99999999999}"#).is_err());
        assert!(parse_uplink("<html>").is_err());
    }

    #[test]
    fn the_verdict_says_what_a_call_can_use() {
        let (stun, udp, tcp, tls) = (
            "stun:r:3478",
            "turn:r:3478?transport=udp",
            "turn:r:3478?transport=tcp",
            "turns:r:443?transport=tcp",
        );
        let open = report(&[(stun, Ok(())), (udp, Ok(())), (tcp, Ok(())), (tls, Ok(()))]);
        assert_eq!(open.verdict(), Verdict::Direct { relay: Some(RelayTransport::Udp) });
        assert_eq!(open.verdict().code(), "direct");
        assert!(open.summary().starts_with("Direct connections are possible;"), "{}", open.summary());
        let no_udp = report(&[(stun, Err("silent")), (udp, Err("silent")), (tcp, Ok(())), (tls, Ok(()))]);
        assert_eq!(no_udp.verdict(), Verdict::UdpBlocked { relay: Some(RelayTransport::Tcp) });
        assert!(
            no_udp.summary().starts_with(
                "Your network blocks UDP: calls will be relayed over TCP through the meeting server."
            ),
            "{}",
            no_udp.summary()
        );
        let only_443 =
            report(&[(stun, Err("silent")), (udp, Err("silent")), (tcp, Err("tcp_timeout")), (tls, Ok(()))]);
        assert_eq!(only_443.verdict(), Verdict::UdpBlocked { relay: Some(RelayTransport::Tls) });
        assert_eq!(only_443.verdict().code(), "relayed");
        let wrong_secret = report(&[(stun, Ok(())), (udp, Err("credentials_refused"))]);
        assert_eq!(wrong_secret.verdict(), Verdict::Direct { relay: None });
        assert!(wrong_secret.credentials_refused());
        assert!(wrong_secret.summary().contains("no relay answered"), "{}", wrong_secret.summary());
        assert!(wrong_secret.summary().contains("refused our credentials"), "{}", wrong_secret.summary());
        let nothing = report(&[(stun, Err("silent")), (udp, Err("silent")), (tls, Err("tls_failed"))]);
        assert_eq!(nothing.verdict(), Verdict::UdpBlocked { relay: None });
        assert_eq!(nothing.verdict().code(), "no_path");
        assert!(
            nothing.summary().starts_with("Your network blocks UDP and no relay"),
            "{}",
            nothing.summary()
        );
        // The relay allocates, and its relayed ports are firewalled: UDP gets out (the Allocate
        // was answered), and no transport of that relay will carry a call.
        let ports =
            report(&[(stun, Ok(())), (udp, Err("relay_ports_blocked")), (tcp, Ok(())), (tls, Ok(()))]);
        assert_eq!(ports.verdict(), Verdict::Direct { relay: None });
        assert!(ports.summary().contains("closes its relayed ports"), "{}", ports.summary());
        // A server that is down (its machine refuses): UDP is not blocked, the server is.
        let down =
            report(&[(stun, Err("udp_refused")), (udp, Err("udp_refused")), (tcp, Err("tcp_refused"))]);
        assert_eq!(down.verdict(), Verdict::Direct { relay: None });
        assert!(down.summary().contains("is not running"), "{}", down.summary());
        assert_eq!(report(&[]).verdict(), Verdict::NoServers);
        let down = NetworkReport {
            relay: Err("unreachable: refused".into()),
            servers: Vec::new(),
            uplink: Err("the relay cannot be reached".into()),
        };
        assert_eq!(down.verdict(), Verdict::Unreachable);
        assert!(down.summary().starts_with("The meeting server cannot be reached"), "{}", down.summary());
    }
}
