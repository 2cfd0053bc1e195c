//! Invite links. Two forms carry the same four facts (relay, room, token, certificate pin):
//!
//! - app form: `confer://join?relay=wss%3A%2F%2Fhost%3A8443&room=ROOM&token=TOKEN&fp=HEX`
//! - web form: `https://host:8443/j/ROOM/TOKEN?fp=HEX`, served by the relay as a page that opens
//!   the app. The relay is the link's own origin (`https` means `wss`, `http` means `ws`).
//!
//! `fp` is the SHA-256 fingerprint of the relay's certificate, 64 hex digits, present when the
//! relay uses a self-signed certificate; a client then accepts exactly that certificate.
//! Anything after `#` is never sent to the relay; later versions carry a room key there.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::{RoomId, limits};

/// The characters escaped in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a text is not an invite link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Neither `confer://join?…` nor `http(s)://host/j/ROOM/TOKEN`.
    #[error("not a Confer invite link (expected confer://join?… or https://HOST/j/ROOM/TOKEN)")]
    NotALink,
    /// A required part is absent.
    #[error("the invite link has no {0}")]
    Missing(&'static str),
    /// A part is present but not valid.
    #[error("the invite link's {0} is not valid")]
    Invalid(&'static str),
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses 64 hex digits (colons between bytes are allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hex = |b: u8| char::from(b).to_digit(16);
            out[i] = u8::try_from(hex(pair[0])? * 16 + hex(pair[1])?).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    /// Lowercase hex, no separators.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What an invite link says.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteLink {
    /// The relay's origin: `wss://host:port` or `ws://host:port`, no path.
    pub relay: String,
    /// The room.
    pub room: RoomId,
    /// The invite token (opaque to clients).
    pub token: String,
    /// The relay certificate's pin, if it uses a self-signed one.
    pub fingerprint: Option<Fingerprint>,
}

impl fmt::Debug for InviteLink {
    /// Leaves the token out: it is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteLink")
            .field("relay", &self.relay)
            .field("room", &self.room)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl InviteLink {
    /// The WebSocket URL to connect to.
    pub fn ws_url(&self) -> String {
        format!("{}{}", self.relay, crate::WS_PATH)
    }

    /// The `confer://` form.
    pub fn app_link(&self) -> String {
        let mut link = format!(
            "confer://join?relay={}&room={}&token={}",
            utf8_percent_encode(&self.relay, QUERY_VALUE),
            self.room,
            utf8_percent_encode(&self.token, QUERY_VALUE),
        );
        if let Some(fp) = self.fingerprint {
            link.push_str(&format!("&fp={fp}"));
        }
        link
    }

    /// The `https://` form (`http://` for a plain `ws://` relay).
    pub fn web_link(&self) -> String {
        let origin = match self.relay.strip_prefix("ws://") {
            Some(rest) => format!("http://{rest}"),
            None => format!("https://{}", self.relay.trim_start_matches("wss://")),
        };
        let mut link = format!("{origin}/j/{}/{}", self.room, utf8_percent_encode(&self.token, QUERY_VALUE));
        if let Some(fp) = self.fingerprint {
            link.push_str(&format!("?fp={fp}"));
        }
        link
    }

    /// Parses either form. Surrounding white space and a `#fragment` are ignored.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        let text = text.trim();
        let text = text.split_once('#').map_or(text, |(before, _)| before);
        if text.len() > 4096 {
            return Err(LinkError::Invalid("length"));
        }
        if let Some(query) =
            text.strip_prefix("confer://join?").or_else(|| text.strip_prefix("confer://join/?"))
        {
            return Self::parse_app(query);
        }
        for (scheme, ws) in [("https://", "wss://"), ("http://", "ws://")] {
            if let Some(rest) = text.strip_prefix(scheme) {
                return Self::parse_web(rest, ws);
            }
        }
        Err(LinkError::NotALink)
    }

    fn parse_app(query: &str) -> Result<Self, LinkError> {
        let (mut relay, mut room, mut token, mut fp) = (None, None, None, None);
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match key {
                "relay" => relay = Some(value),
                "room" => room = Some(value),
                "token" => token = Some(value),
                "fp" => fp = Some(value),
                _ => {}
            }
        }
        let relay = relay.ok_or(LinkError::Missing("relay"))?;
        if !(relay.starts_with("wss://") || relay.starts_with("ws://")) || !valid_origin(&relay) {
            return Err(LinkError::Invalid("relay"));
        }
        Self::assemble(relay, room, token, fp)
    }

    fn parse_web(rest: &str, ws_scheme: &str) -> Result<Self, LinkError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = path.split_once('/').ok_or(LinkError::NotALink)?;
        let mut parts = path.split('/');
        if parts.next() != Some("j") {
            return Err(LinkError::NotALink);
        }
        let room = parts.next().map(decode).transpose()?;
        let token = parts.next().map(decode).transpose()?;
        if parts.next().is_some_and(|extra| !extra.is_empty()) {
            return Err(LinkError::NotALink);
        }
        let fp = query.split('&').find_map(|pair| pair.strip_prefix("fp=")).map(decode).transpose()?;
        let relay = format!("{ws_scheme}{host}");
        if !valid_origin(&relay) {
            return Err(LinkError::Invalid("host"));
        }
        Self::assemble(relay, room, token, fp)
    }

    fn assemble(
        relay: String,
        room: Option<String>,
        token: Option<String>,
        fp: Option<String>,
    ) -> Result<Self, LinkError> {
        let room = RoomId::try_from(room.ok_or(LinkError::Missing("room"))?)
            .map_err(|_| LinkError::Invalid("room"))?;
        let token = token.filter(|t| !t.is_empty()).ok_or(LinkError::Missing("token"))?;
        // URL-safe characters and `.` only (section 3): a token goes into request lines and
        // URLs as it is, so a CR, LF, space, `/` or `?` in it could reshape the request.
        if token.len() > limits::MAX_TOKEN_BYTES
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        {
            return Err(LinkError::Invalid("token"));
        }
        let fingerprint = match fp {
            None => None,
            Some(fp) => Some(Fingerprint::parse(&fp).ok_or(LinkError::Invalid("fingerprint"))?),
        };
        Ok(Self { relay, room, token, fingerprint })
    }
}

fn decode(value: &str) -> Result<String, LinkError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| LinkError::Invalid("encoding"))
}

/// `ws(s)://host[:port]` with a non-empty host and nothing after it.
fn valid_origin(origin: &str) -> bool {
    let host = origin.split_once("://").map_or("", |(_, h)| h);
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> InviteLink {
        InviteLink {
            relay: "wss://relay.example:8443".to_owned(),
            room: RoomId::parse("AbCdEfGhIjKlMnOpQrStUv").unwrap(),
            token: "tok.en_-".to_owned(),
            fingerprint: Fingerprint::parse(&"ab".repeat(32)),
        }
    }

    #[test]
    fn both_forms_round_trip() {
        let link = sample();
        assert_eq!(
            link.app_link(),
            format!(
                "confer://join?relay=wss%3A%2F%2Frelay.example%3A8443&room=AbCdEfGhIjKlMnOpQrStUv&token=tok.en_-&fp={}",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            link.web_link(),
            format!("https://relay.example:8443/j/AbCdEfGhIjKlMnOpQrStUv/tok.en_-?fp={}", "ab".repeat(32))
        );
        assert_eq!(InviteLink::parse(&link.app_link()).unwrap(), link);
        assert_eq!(InviteLink::parse(&link.web_link()).unwrap(), link);
        assert_eq!(link.ws_url(), "wss://relay.example:8443/ws");
    }

    #[test]
    fn plain_relay_gives_http_link_and_fragment_is_ignored() {
        let link = InviteLink { relay: "ws://127.0.0.1:9000".to_owned(), fingerprint: None, ..sample() };
        assert!(link.web_link().starts_with("http://127.0.0.1:9000/j/"));
        let with_fragment = format!("{}#key=secret", link.web_link());
        assert_eq!(InviteLink::parse(&with_fragment).unwrap(), link);
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        assert_eq!(InviteLink::parse("mailto:x"), Err(LinkError::NotALink));
        assert_eq!(InviteLink::parse("https://host/other/x"), Err(LinkError::NotALink));
        assert_eq!(InviteLink::parse("https://host/j/short/tok"), Err(LinkError::Invalid("room")));
        assert_eq!(
            InviteLink::parse("https://host/j/AbCdEfGhIjKlMnOpQrStUv"),
            Err(LinkError::Missing("token"))
        );
        assert_eq!(
            InviteLink::parse("https://host/j/AbCdEfGhIjKlMnOpQrStUv/t?fp=zz"),
            Err(LinkError::Invalid("fingerprint"))
        );
        assert_eq!(
            InviteLink::parse("confer://join?room=AbCdEfGhIjKlMnOpQrStUv&token=t"),
            Err(LinkError::Missing("relay"))
        );
        assert_eq!(
            InviteLink::parse("confer://join?relay=file%3A%2F%2Fx&room=AbCdEfGhIjKlMnOpQrStUv&token=t"),
            Err(LinkError::Invalid("relay"))
        );
        assert_eq!(
            InviteLink::parse("https://ho st/j/AbCdEfGhIjKlMnOpQrStUv/t"),
            Err(LinkError::Invalid("host"))
        );
        // A token that would reshape a request (CR LF and a header, a path, a space) is refused.
        for token in ["t%0D%0AX-Evil%3A%201", "a%2Fb", "a%20b", "a%3Fb"] {
            assert_eq!(
                InviteLink::parse(&format!(
                    "confer://join?relay=wss%3A%2F%2Fh%3A1&room=AbCdEfGhIjKlMnOpQrStUv&token={token}"
                )),
                Err(LinkError::Invalid("token")),
                "{token}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            let _ = InviteLink::parse(&text);
            let _ = InviteLink::parse(&format!("confer://join?{text}"));
            let _ = InviteLink::parse(&format!("https://h/j/{text}"));
        }
    }
}
