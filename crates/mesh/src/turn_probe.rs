//! The network check's own STUN and TURN requests, so that it can say *why* a server does not
//! work. Gathering candidates through the WebRTC stack only tells "no candidate came"; these
//! requests tell apart a server that is silent, a TCP port that refuses, a TLS handshake that
//! fails (and why), credentials the server refuses (its 401), and other server errors.
//!
//! STUN: one Binding request (RFC 8489), answered with the address the server saw. TURN: an
//! Allocate as a client makes it (RFC 8656 §7.2: unauthenticated first, the 401 gives realm and
//! nonce, then with the long-term credential), over UDP, TCP or TLS as the URL says. Over UDP
//! the allocation is then tested as a peer would use it: with a permission for our own address,
//! a datagram sent to the relayed address must come back in a Data indication (RFC 8656 §11);
//! a server whose relayed ports a firewall closes allocates happily and relays nothing, and this
//! is how the check tells. The allocation made is released at once (Refresh with lifetime 0).
//! UDP requests go on a connected socket, so that a machine that refuses (no server on that
//! port: an ICMP port unreachable) is told apart from one that stays silent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confer_turn_stream::{DialError, RelayTransport};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::{CODE_STALE_NONCE, CODE_UNAUTHORIZED, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
    Getter as _, METHOD_ALLOCATE, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, Message,
    MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use turn::proto::PROTO_UDP;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;

use crate::ice::IceRoute;
use webrtc_util::Conn;

/// What a server answered: the address it saw (STUN) or relays from (TURN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// `address:port`.
    pub(crate) address: String,
    /// From the start of the probe.
    pub(crate) after: Duration,
}

/// Why a server could not be used. The text is for people; [`ProbeFailure::code`] for the UI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProbeFailure {
    /// A kind of URL Confer does not use (STUN over TLS).
    #[error("not tried: Confer does not use {0}")]
    Unsupported(&'static str),
    /// The host name did not resolve.
    #[error("the server's name did not resolve ({0})")]
    Resolve(String),
    /// Nothing answered: UDP dropped on the way (a firewall), or no server there.
    #[error("server silent: no answer within {0} s (UDP blocked, or no server there)")]
    Silent(u64),
    /// The TCP or TLS connection was made and nothing answered on it.
    #[error("server silent: connected, and no answer within {0} s (not a TURN server, or an overloaded one)")]
    StreamSilent(u64),
    /// The server's machine answered that nothing listens on that UDP port.
    #[error("UDP refused: nothing listens on that port (is the server running?)")]
    UdpRefused,
    /// The server allocated a relayed address, and a datagram sent to it never came back.
    #[error(
        "the server allocated {0}, and nothing sent to it arrived: its relayed ports are closed by a firewall (tell its operator)"
    )]
    RelayedPortsBlocked(SocketAddr),
    /// The server's machine refused the TCP connection.
    #[error("TCP refused: nothing accepts connections on that port")]
    TcpRefused,
    /// No TCP connection within the time: a firewall drops it.
    #[error("no TCP connection within {0} s (a firewall drops it)")]
    TcpTimeout(u64),
    /// TCP failed otherwise.
    #[error("TCP connection failed: {0}")]
    TcpFailed(String),
    /// TCP connected, TLS did not.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The server answered 401 to the credentials the meeting server handed out.
    #[error(
        "credentials refused: the TURN server does not accept the meeting server's credentials (wrong shared secret, or expired)"
    )]
    CredentialsRefused,
    /// Another error response.
    #[error("the server refused: error {code} {reason}")]
    Refused {
        /// STUN error code.
        code: u16,
        /// Its reason phrase, as the server sent it.
        reason: String,
    },
    /// The stream closed before an answer: not a TURN server on that port, or it gave up on us.
    #[error("the server closed the connection without answering (is it a TURN server?)")]
    Closed,
    /// Sending or receiving failed on this machine.
    #[error("network error: {0}")]
    Network(String),
    /// An answer that is not what the protocol says.
    #[error("a malformed answer: {0}")]
    Malformed(String),
}

impl ProbeFailure {
    /// A stable name for the UI to branch on.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported",
            Self::Resolve(_) => "resolve",
            Self::Silent(_) | Self::StreamSilent(_) => "silent",
            Self::UdpRefused => "udp_refused",
            Self::RelayedPortsBlocked(_) => "relay_ports_blocked",
            Self::TcpRefused => "tcp_refused",
            Self::TcpTimeout(_) => "tcp_timeout",
            Self::TcpFailed(_) => "tcp_failed",
            Self::Tls(_) => "tls_failed",
            Self::CredentialsRefused => "credentials_refused",
            Self::Refused { .. } => "refused",
            Self::Closed => "closed",
            Self::Network(_) => "network",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// The first UDP retransmission; then doubled (RFC 8489 §6.2.1 uses 500 ms; a check is short).
const FIRST_RTO: Duration = Duration::from_millis(250);

/// Probes `route` (a TURN URL with its credentials), everything within `within`.
pub(crate) async fn probe(route: &IceRoute, within: Duration) -> Result<Answer, ProbeFailure> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    if let Some(what) = route.unsupported() {
        return Err(ProbeFailure::Unsupported(what));
    }
    let Some(transport) = route.transport() else { return Err(ProbeFailure::Unsupported("TURN over DTLS")) };
    let parsed = &route.url;
    let seconds = within.as_secs().max(1);
    let (conn, to): (Arc<dyn Conn + Send + Sync>, SocketAddr) = if transport == RelayTransport::Udp {
        let to = resolve(&parsed.host, parsed.port).await?;
        let bind: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(bind).await.map_err(|e| ProbeFailure::Network(e.to_string()))?;
        socket.connect(to).await.map_err(|e| ProbeFailure::Network(e.to_string()))?;
        (Arc::new(socket), to)
    } else {
        let stream = confer_turn_stream::dial(transport, &parsed.host, parsed.port, within)
            .await
            .map_err(|e| dial_failure(e, seconds))?;
        let to = stream.remote_addr().unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        (Arc::new(stream), to)
    };
    let link = Exchange { conn, to, udp: transport == RelayTransport::Udp, deadline, seconds };
    let address = if !parsed.is_turn() {
        let request = binding_request()?;
        let answer = link.transact(&request).await?;
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&answer).map_err(|e| ProbeFailure::Malformed(e.to_string()))?;
        SocketAddr::new(mapped.ip, mapped.port)
    } else {
        let username = route.username.clone().unwrap_or_default();
        let password = route.credential.clone().unwrap_or_default();
        allocate(&link, &username, &password).await?
    };
    Ok(Answer { address: address.to_string(), after: started.elapsed() })
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ProbeFailure> {
    let mut addrs =
        tokio::net::lookup_host((host, port)).await.map_err(|e| ProbeFailure::Resolve(e.to_string()))?;
    addrs.next().ok_or_else(|| ProbeFailure::Resolve("no address".to_owned()))
}

fn dial_failure(error: DialError, seconds: u64) -> ProbeFailure {
    match error {
        DialError::Resolve { reason, .. } => ProbeFailure::Resolve(reason),
        DialError::Refused(_) => ProbeFailure::TcpRefused,
        DialError::Timeout(_) => ProbeFailure::TcpTimeout(seconds),
        DialError::Tls { reason, .. } => ProbeFailure::Tls(reason),
        other => ProbeFailure::TcpFailed(other.to_string()),
    }
}

/// Allocates (unauthenticated, then with the credential the 401 asks for), then releases it.
async fn allocate(link: &Exchange, username: &str, password: &str) -> Result<SocketAddr, ProbeFailure> {
    let first = allocate_request(None)?;
    let mut answer = link.transact(&first).await?;
    // Two authenticated tries: a stale nonce (438) gets one more.
    for _ in 0..2 {
        if answer.typ.class == CLASS_SUCCESS_RESPONSE {
            // A server that wants no credentials.
            return relayed(&answer);
        }
        let code = error_code(&answer)?;
        if code.code != CODE_UNAUTHORIZED && code.code != CODE_STALE_NONCE {
            return Err(refused(&code));
        }
        let nonce = TextAttribute::get_from_as(&answer, ATTR_NONCE)
            .map_err(|_| ProbeFailure::Malformed("a 401 without a nonce".to_owned()))?;
        let realm = TextAttribute::get_from_as(&answer, ATTR_REALM)
            .map_err(|_| ProbeFailure::Malformed("a 401 without a realm".to_owned()))?;
        let integrity = MessageIntegrity::new_long_term_integrity(
            username.to_owned(),
            realm.text.clone(),
            password.to_owned(),
        );
        let auth = Auth {
            username: TextAttribute::new(ATTR_USERNAME, username.to_owned()),
            realm,
            nonce,
            integrity,
        };
        let authenticated = allocate_request(Some(&auth))?;
        answer = link.transact(&authenticated).await?;
        if answer.typ.class == CLASS_SUCCESS_RESPONSE {
            let address = relayed(&answer)?;
            let reachable =
                if link.udp { relayed_address_reachable(link, &auth, &answer, address).await } else { None };
            // Give the allocation back; the answer does not matter.
            let release = release_request(&auth)?;
            let _ = tokio::time::timeout(Duration::from_millis(500), link.transact(&release)).await;
            return match reachable {
                Some(false) => Err(ProbeFailure::RelayedPortsBlocked(address)),
                _ => Ok(address),
            };
        }
        if error_code(&answer)?.code == CODE_UNAUTHORIZED {
            return Err(ProbeFailure::CredentialsRefused);
        }
    }
    match error_code(&answer) {
        Ok(code) => Err(refused(&code)),
        Err(e) => Err(e),
    }
}

/// How long the relayed-address test waits for its datagram to come back.
const RELAYED_TEST: Duration = Duration::from_millis(1_500);

/// Whether a datagram sent to the relayed address `relayed` (of the allocation `allocated`
/// answered) comes back: with a permission for our own public address, the server hands what
/// arrives there to us in a Data indication. `None`: the test could not be made (no mapped
/// address in the answer, or the server refuses our own address as a peer, as the relay's
/// built-in server does for private ones), which says nothing against the server.
async fn relayed_address_reachable(
    link: &Exchange,
    auth: &Auth,
    allocated: &Message,
    relayed: SocketAddr,
) -> Option<bool> {
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(allocated).ok()?;
    let permission = permission_request(auth, mapped.ip).ok()?;
    let answer = link.transact(&permission).await.ok()?;
    if answer.typ.class != CLASS_SUCCESS_RESPONSE {
        return None;
    }
    let bind: SocketAddr = if relayed.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sender = UdpSocket::bind(bind).await.ok()?;
    // Twelve random bytes, which no STUN message starts with by chance.
    let token = TransactionId::new().0;
    let deadline = (tokio::time::Instant::now() + RELAYED_TEST).min(link.deadline);
    let mut buf = vec![0u8; 1500];
    while tokio::time::Instant::now() < deadline {
        let _ = sender.send_to(&token, relayed).await;
        let resend_at = (tokio::time::Instant::now() + FIRST_RTO).min(deadline);
        while let Ok(received) = tokio::time::timeout_at(resend_at, link.conn.recv_from(&mut buf)).await {
            let Ok((n, _)) = received else { return None };
            let mut message = Message::new();
            if message.unmarshal_binary(&buf[..n]).is_ok()
                && message.typ == MessageType::new(METHOD_DATA, CLASS_INDICATION)
            {
                let mut data = Data::default();
                if data.get_from(&message).is_ok() && data.0 == token {
                    return Some(true);
                }
            }
        }
    }
    Some(false)
}

/// A CreatePermission for `peer` (any port of it).
fn permission_request(auth: &Auth, peer: std::net::IpAddr) -> Result<Message, ProbeFailure> {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
        Box::new(PeerAddress { ip: peer, port: 0 }),
    ];
    setters.extend(auth.setters());
    setters.push(Box::new(FINGERPRINT));
    build(&setters)
}

/// The long-term credential's attributes, as a 401 asked for them.
struct Auth {
    username: TextAttribute,
    realm: TextAttribute,
    nonce: TextAttribute,
    integrity: MessageIntegrity,
}

impl Auth {
    fn setters(&self) -> Vec<Box<dyn Setter>> {
        vec![
            Box::new(self.username.clone()),
            Box::new(self.realm.clone()),
            Box::new(self.nonce.clone()),
            Box::new(self.integrity.clone()),
        ]
    }
}

/// An Allocate request for a UDP relay, with credentials if given. (Requests are built in plain
/// functions: the setters are not `Send`, and must not live across an await.)
fn allocate_request(auth: Option<&Auth>) -> Result<Message, ProbeFailure> {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport { protocol: PROTO_UDP }),
    ];
    setters.extend(auth.map(Auth::setters).unwrap_or_default());
    setters.push(Box::new(FINGERPRINT));
    build(&setters)
}

/// A Refresh with lifetime 0: the allocation is deleted.
fn release_request(auth: &Auth) -> Result<Message, ProbeFailure> {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
        Box::new(Lifetime(Duration::ZERO)),
    ];
    setters.extend(auth.setters());
    setters.push(Box::new(FINGERPRINT));
    build(&setters)
}

fn binding_request() -> Result<Message, ProbeFailure> {
    build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
}

fn build(setters: &[Box<dyn Setter>]) -> Result<Message, ProbeFailure> {
    let mut message = Message::new();
    message.build(setters).map_err(|e| ProbeFailure::Malformed(e.to_string()))?;
    Ok(message)
}

fn relayed(answer: &Message) -> Result<SocketAddr, ProbeFailure> {
    let mut relayed = RelayedAddress::default();
    relayed.get_from(answer).map_err(|e| ProbeFailure::Malformed(format!("no relayed address: {e}")))?;
    Ok(SocketAddr::new(relayed.ip, relayed.port))
}

fn error_code(answer: &Message) -> Result<ErrorCodeAttribute, ProbeFailure> {
    if answer.typ.class != CLASS_ERROR_RESPONSE {
        return Err(ProbeFailure::Malformed(format!("unexpected {}", answer.typ)));
    }
    let mut code = ErrorCodeAttribute::default();
    code.get_from(answer).map_err(|_| ProbeFailure::Malformed("an error without a code".to_owned()))?;
    Ok(code)
}

fn refused(code: &ErrorCodeAttribute) -> ProbeFailure {
    let reason: String =
        String::from_utf8_lossy(&code.reason).chars().filter(|c| !c.is_control()).take(80).collect();
    ProbeFailure::Refused { code: code.code.0, reason }
}

/// One transport to one server, for request/answer exchanges.
struct Exchange {
    conn: Arc<dyn Conn + Send + Sync>,
    to: SocketAddr,
    /// UDP: requests are retransmitted (a stream delivers or fails).
    udp: bool,
    deadline: tokio::time::Instant,
    seconds: u64,
}

impl Exchange {
    fn lost(&self, error: &webrtc_util::Error) -> ProbeFailure {
        if !self.udp {
            return ProbeFailure::Closed;
        }
        // The io::Error inside (its wrapper is not public): a refusal is the server's machine
        // saying nothing listens there.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(inner) = cause {
            if inner.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                == Some(std::io::ErrorKind::ConnectionRefused)
            {
                return ProbeFailure::UdpRefused;
            }
            cause = inner.source();
        }
        ProbeFailure::Network(error.to_string())
    }

    /// Sends `request` and waits for the answer with its transaction id.
    async fn transact(&self, request: &Message) -> Result<Message, ProbeFailure> {
        let silent = || {
            if self.udp {
                ProbeFailure::Silent(self.seconds)
            } else {
                ProbeFailure::StreamSilent(self.seconds)
            }
        };
        let mut rto = FIRST_RTO;
        let mut buf = vec![0u8; 1500];
        loop {
            self.conn.send_to(&request.raw, self.to).await.map_err(|e| self.lost(&e))?;
            let resend_at = if self.udp { tokio::time::Instant::now() + rto } else { self.deadline };
            rto = rto.saturating_mul(2);
            loop {
                let wait = resend_at.min(self.deadline);
                match tokio::time::timeout_at(wait, self.conn.recv_from(&mut buf)).await {
                    Ok(Ok((n, _))) => {
                        let mut answer = Message::new();
                        // Untrusted: what does not decode, or answers another request, is ignored.
                        if answer.unmarshal_binary(&buf[..n]).is_ok()
                            && answer.transaction_id == request.transaction_id
                        {
                            return Ok(answer);
                        }
                    }
                    Ok(Err(e)) => return Err(self.lost(&e)),
                    Err(_) if tokio::time::Instant::now() >= self.deadline => return Err(silent()),
                    Err(_) => break,
                }
            }
        }
    }
}
