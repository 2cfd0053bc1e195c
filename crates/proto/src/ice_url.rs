//! ICE server URLs as the relay hands them out and clients use them: `stun:` and `stuns:`
//! (RFC 7064), `turn:` and `turns:` (RFC 7065). Parsed once into an [`IceUrl`], so that the
//! network check, the TURN trust of the relay's own certificate and the call all read the same
//! scheme, host, port and transport, and a malformed URL is refused once, by name.

use std::fmt;

/// Which server and how it is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceScheme {
    /// `stun:`: a STUN server over UDP.
    Stun,
    /// `stuns:`: STUN over TLS (or DTLS).
    Stuns,
    /// `turn:`: a TURN server, over UDP or TCP.
    Turn,
    /// `turns:`: TURN over TLS (`transport=tcp`, the default) or DTLS (`transport=udp`).
    Turns,
}

/// The transport under the URL: `?transport=udp|tcp`, or the scheme's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceTransport {
    /// Datagrams (for `turns:`, DTLS).
    Udp,
    /// A stream (for `turns:` and `stuns:`, TLS).
    Tcp,
}

/// One STUN or TURN URL, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IceUrl {
    /// The scheme.
    pub scheme: IceScheme,
    /// A host name or an IP address (an IPv6 address without its brackets).
    pub host: String,
    /// The port: given, or 3478 (`stun:`, `turn:`) or 5349 (`stuns:`, `turns:`).
    pub port: u16,
    /// The transport: given, or UDP (`stun:`, `turn:`) or TCP (`stuns:`, `turns:`).
    pub transport: IceTransport,
    /// The URL as it was given.
    text: String,
}

/// Why a URL is not a usable ICE server URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceUrlError {
    /// Not `stun:`, `stuns:`, `turn:` or `turns:`.
    #[error("not a STUN or TURN URL (stun:, stuns:, turn:, turns:)")]
    Scheme,
    /// No host, or one with characters a host name or address cannot have.
    #[error("the host is missing or malformed")]
    Host,
    /// A port that is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    Port,
    /// A query other than `transport=udp` or `transport=tcp` (or one on a STUN URL).
    #[error("the only query allowed is transport=udp or transport=tcp, on turn: and turns: URLs")]
    Query,
    /// Longer than any real URL.
    #[error("longer than {MAX_URL_BYTES} bytes")]
    TooLong,
}

/// The longest URL accepted.
pub const MAX_URL_BYTES: usize = 512;

impl IceUrl {
    /// Parses `stun:host[:port]`, `stuns:…`, `turn:host[:port][?transport=udp|tcp]`,
    /// `turns:…`. Hosts: names (letters, digits, `-`, `.`), IPv4 addresses, IPv6 addresses in
    /// brackets. No user info, path or fragment (the URI schemes have none).
    pub fn parse(text: &str) -> Result<Self, IceUrlError> {
        if text.len() > MAX_URL_BYTES {
            return Err(IceUrlError::TooLong);
        }
        let (scheme, rest) = text.split_once(':').ok_or(IceUrlError::Scheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "stun" => IceScheme::Stun,
            "stuns" => IceScheme::Stuns,
            "turn" => IceScheme::Turn,
            "turns" => IceScheme::Turns,
            _ => return Err(IceUrlError::Scheme),
        };
        let secure = matches!(scheme, IceScheme::Stuns | IceScheme::Turns);
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let transport = match query {
            None if secure => IceTransport::Tcp,
            None => IceTransport::Udp,
            Some(_) if matches!(scheme, IceScheme::Stun | IceScheme::Stuns) => {
                return Err(IceUrlError::Query);
            }
            Some(query) => match query.to_ascii_lowercase().as_str() {
                "transport=udp" => IceTransport::Udp,
                "transport=tcp" => IceTransport::Tcp,
                _ => return Err(IceUrlError::Query),
            },
        };
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None if secure => 5349,
            None => 3478,
            Some(port) => port.parse::<u16>().ok().filter(|&p| p != 0).ok_or(IceUrlError::Port)?,
        };
        Ok(Self { scheme, host: host.to_owned(), port, transport, text: text.to_owned() })
    }

    /// The URL as it was given (what a WebRTC stack is handed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A TURN server's (it relays), not a STUN server's (it only answers who we are).
    pub fn is_turn(&self) -> bool {
        matches!(self.scheme, IceScheme::Turn | IceScheme::Turns)
    }

    /// Secured with TLS or DTLS.
    pub fn is_secure(&self) -> bool {
        matches!(self.scheme, IceScheme::Stuns | IceScheme::Turns)
    }

    /// `host:port`, with an IPv6 address in brackets: what a socket is dialled with.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for IceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; checks the host's characters.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), IceUrlError> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or(IceUrlError::Host)?;
        address.parse::<std::net::Ipv6Addr>().map_err(|_| IceUrlError::Host)?;
        return match after {
            "" => Ok((address, None)),
            _ => after.strip_prefix(':').map(|port| (address, Some(port))).ok_or(IceUrlError::Port),
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let name_like = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || host.len() > 253 || !host.chars().all(name_like) || host.starts_with(['-', '.']) {
        return Err(IceUrlError::Host);
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_gets_its_default_port_and_transport() {
        let cases = [
            ("stun:stun.example.org", IceScheme::Stun, 3478, IceTransport::Udp),
            ("stuns:stun.example.org", IceScheme::Stuns, 5349, IceTransport::Tcp),
            ("turn:203.0.113.7", IceScheme::Turn, 3478, IceTransport::Udp),
            ("turn:203.0.113.7:3479?transport=tcp", IceScheme::Turn, 3479, IceTransport::Tcp),
            ("turns:meet.example.org:443?transport=tcp", IceScheme::Turns, 443, IceTransport::Tcp),
            ("turns:meet.example.org", IceScheme::Turns, 5349, IceTransport::Tcp),
            ("turns:meet.example.org?transport=udp", IceScheme::Turns, 5349, IceTransport::Udp),
            ("TURN:[2001:db8::1]:3478?TRANSPORT=UDP", IceScheme::Turn, 3478, IceTransport::Udp),
        ];
        for (text, scheme, port, transport) in cases {
            let url = IceUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((url.scheme, url.port, url.transport), (scheme, port, transport), "{text}");
            assert_eq!(url.as_str(), text, "kept as given");
        }
        let v6 = IceUrl::parse("turn:[2001:db8::1]:3478").unwrap();
        assert_eq!(v6.host, "2001:db8::1");
        assert_eq!(v6.authority(), "[2001:db8::1]:3478");
        assert!(v6.is_turn() && !v6.is_secure());
    }

    #[test]
    fn malformed_urls_are_refused_by_name() {
        let cases = [
            ("http://example.org", IceUrlError::Scheme),
            ("stun", IceUrlError::Scheme),
            ("turn:", IceUrlError::Host),
            ("turn:user@host", IceUrlError::Host),
            ("turn:host/path", IceUrlError::Host),
            ("turn:-host", IceUrlError::Host),
            ("turn:[::1", IceUrlError::Host),
            ("turn:[not-v6]:3478", IceUrlError::Host),
            ("turn:host:0", IceUrlError::Port),
            ("turn:host:65536", IceUrlError::Port),
            ("turn:host:abc", IceUrlError::Port),
            ("turn:[::1]x", IceUrlError::Port),
            ("turn:host?transport=sctp", IceUrlError::Query),
            ("turn:host?transport=udp&x=1", IceUrlError::Query),
            ("stun:host?transport=tcp", IceUrlError::Query),
        ];
        for (text, expected) in cases {
            assert_eq!(IceUrl::parse(text), Err(expected), "{text}");
        }
        assert_eq!(IceUrl::parse(&format!("turn:{}", "a".repeat(600))), Err(IceUrlError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,80}") {
            let _ = IceUrl::parse(&text);
        }

        #[test]
        fn a_parsed_url_keeps_its_parts(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9]{1,10}){0,3}", port in 1u16.., tcp: bool) {
            let text = format!("turn:{host}:{port}?transport={}", if tcp { "tcp" } else { "udp" });
            let url = IceUrl::parse(&text).unwrap();
            proptest::prop_assert_eq!(&url.host, &host);
            proptest::prop_assert_eq!(url.port, port);
            proptest::prop_assert_eq!(url.transport, if tcp { IceTransport::Tcp } else { IceTransport::Udp });
        }
    }
}
