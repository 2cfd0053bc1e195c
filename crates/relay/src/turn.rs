//! Ephemeral TURN credentials in the TURN REST scheme coturn implements
//! (`use-auth-secret` / `static-auth-secret`): the username is `expiry:peer`, the password is
//! `base64(HMAC-SHA1(secret, username))`. The TURN server checks the HMAC and the expiry itself;
//! it never needs to hear from the relay.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use confer_proto::{IceServer, PeerId};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// TURN servers and the secret shared with them.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// The shared secret (coturn's `static-auth-secret`).
    pub secret: String,
    /// How long credentials stay valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig").field("urls", &self.urls).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// Credentials for `peer`, valid from `now` (Unix seconds) for the configured TTL.
pub fn credentials(turn: &TurnConfig, peer: &PeerId, now: u64) -> IceServer {
    let username = format!("{}:{peer}", now.saturating_add(turn.ttl.as_secs()));
    let credential = password(&turn.secret, &username);
    IceServer { urls: turn.urls.clone(), username: Some(username), credential: Some(credential) }
}

/// The password for `username`: `base64(HMAC-SHA1(secret, username))`.
pub fn password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_turn_rest_scheme() {
        // Reference value computed independently:
        // printf '1700003600:AAAAAAAAAAA' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let turn = TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".to_owned()],
            secret: "north".to_owned(),
            ttl: Duration::from_secs(3600),
        };
        let peer = PeerId::parse("AAAAAAAAAAA").unwrap();
        let server = credentials(&turn, &peer, 1_700_000_000);
        assert_eq!(server.username.as_deref(), Some("1700003600:AAAAAAAAAAA"));
        assert_eq!(server.credential.as_deref(), Some(REFERENCE));
    }

    const REFERENCE: &str = "QXnxv+HYs6D4FUjXsWYLrfPN+d8=";
}
