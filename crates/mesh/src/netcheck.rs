//! The lobby's network check: before joining, can this machine reach the meeting's relay, and do
//! the relay's STUN and TURN servers answer? The relay hands out the ICE servers a participant of
//! the room would get (`GET /check/{room}/{token}`, docs/PROTOCOL.md section 7), and each URL is
//! tried by gathering candidates with it alone, as a call would. Nobody in the room hears of it.

use std::time::{Duration, Instant};

use confer_proto::{IceServer, InviteLink};

use crate::peer::{Stack, probe_ice_server};
use crate::rooms::{RoomError, exchange};

/// How long one STUN or TURN URL has to answer.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkReport {
    /// The relay: round-trip time of the check request, or why it failed.
    pub relay: Result<Duration, String>,
    /// Each STUN and TURN URL the relay offers, in its order.
    pub servers: Vec<ServerCheck>,
}

/// One STUN or TURN URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCheck {
    /// The URL (`stun:…`, `turn:…`).
    pub url: String,
    /// TURN (a relay) rather than STUN.
    pub turn: bool,
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
    Failed(String),
    /// Not tried: a kind of URL Confer's WebRTC stack does not use (TURN over TCP or TLS, STUN
    /// over TLS). Not a failure: the call does not depend on it.
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
        Err(why) => return NetworkReport { relay: Err(why), servers: Vec::new() },
    };
    let relay = Ok(started.elapsed());
    let probes: Vec<(&IceServer, &String)> =
        servers.iter().flat_map(|server| server.urls.iter().map(move |url| (server, url))).collect();
    let stack = Stack::new();
    let checks = probes.into_iter().map(|(server, url)| {
        let stack = stack.as_ref();
        async move {
            let turn = is_turn(url);
            let result = match stack {
                _ if !usable(url) => ServerResult::Skipped(
                    "not tried: Confer uses STUN, and TURN over UDP (not TCP or TLS)".to_owned(),
                ),
                Err(err) => ServerResult::Failed(err.to_string()),
                Ok(stack) => match probe_ice_server(stack, server, url, turn, SERVER_TIMEOUT).await {
                    Ok(Some(probed)) => {
                        ServerResult::Answered { address: probed.address, after: probed.after }
                    }
                    Ok(None) if turn => ServerResult::Failed(format!(
                        "no relay allocated within {} s (unreachable, or the credentials were refused)",
                        SERVER_TIMEOUT.as_secs()
                    )),
                    Ok(None) => {
                        ServerResult::Failed(format!("no answer within {} s", SERVER_TIMEOUT.as_secs()))
                    }
                    Err(err) => ServerResult::Failed(err.to_string()),
                },
            };
            ServerCheck { url: url.clone(), turn, result }
        }
    });
    NetworkReport { relay, servers: futures_util::future::join_all(checks).await }
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// What the call's ICE agent uses (webrtc 0.17: STUN, and TURN over UDP).
fn usable(url: &str) -> bool {
    (url.starts_with("stun:") || url.starts_with("turn:")) && !url.contains("transport=tcp")
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
        assert!(usable("stun:a:3478") && usable("turn:b:3478?transport=udp"));
        assert!(!usable("turns:b:5349") && !usable("turn:b:3478?transport=tcp"));
    }
}
