//! The relay's built-in STUN/TURN server as a TURN client meets it: allocations over UDP, TCP,
//! and TLS on the relay's own port, permissions, channels and relayed data to a UDP peer; and
//! what it refuses (peers in its own networks, wrong or expired credentials, over-quota
//! allocations, garbage), each with its documented answer while other clients go on working.
//! The client here is written on the `stun` crate's messages, so each answer's code is seen.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confer_turn_stream::{RelayTransport, dial, trust};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter as _, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use webrtc_util::Conn;

use crate::support::{PATIENCE, TestRelay, pinned_tls};

/// The TURN server's URLs and credentials, as a participant gets them on joining.
struct Offer {
    udp: SocketAddr,
    tcp: SocketAddr,
    tls_port: u16,
    username: String,
    password: String,
}

async fn offer(relay: &TestRelay) -> Offer {
    let room = relay.create_room(false).await;
    let seat = relay.join(&room.host, "Ann").await;
    let turn = seat.ice_servers.iter().find(|s| s.username.is_some()).expect("a TURN entry").clone();
    let address = |scheme: &str| {
        let url = turn
            .urls
            .iter()
            .find(|u| u.starts_with(scheme))
            .unwrap_or_else(|| panic!("{scheme} in {turn:?}"));
        let rest = url.split_once(':').unwrap().1;
        let authority = rest.split('?').next().unwrap();
        authority.parse::<SocketAddr>().unwrap()
    };
    Offer {
        // UDP and TCP share the port.
        udp: address("turn:"),
        tcp: address("turn:"),
        tls_port: address("turns:").port(),
        username: turn.username.clone().unwrap(),
        password: turn.credential.clone().unwrap(),
    }
}

/// A TURN client over one transport.
struct Client {
    conn: Arc<dyn Conn + Send + Sync>,
    server: SocketAddr,
    username: String,
    password: String,
    /// Realm and nonce from the server's challenge.
    auth: Option<(TextAttribute, TextAttribute)>,
    /// Sign with this realm instead of the one the server named.
    forged_realm: Option<String>,
}

impl Client {
    async fn connect(relay: &TestRelay, offer: &Offer, transport: RelayTransport) -> Self {
        let (conn, server): (Arc<dyn Conn + Send + Sync>, SocketAddr) = match transport {
            RelayTransport::Udp => (Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()), offer.udp),
            RelayTransport::Tcp => {
                let stream = dial(transport, "127.0.0.1", offer.tcp.port(), PATIENCE).await.unwrap();
                (Arc::new(stream), offer.tcp)
            }
            _ => {
                trust(&format!("127.0.0.1:{}", offer.tls_port), pinned_tls(relay.pin.unwrap()));
                let stream = dial(transport, "127.0.0.1", offer.tls_port, PATIENCE).await.unwrap();
                (Arc::new(stream), SocketAddr::from(([127, 0, 0, 1], offer.tls_port)))
            }
        };
        Self {
            conn,
            server,
            username: offer.username.clone(),
            password: offer.password.clone(),
            auth: None,
            forged_realm: None,
        }
    }

    fn with_credentials(mut self, username: &str, password: &str) -> Self {
        (self.username, self.password) = (username.to_owned(), password.to_owned());
        self
    }

    fn build(&self, method: Method, extra: Vec<Box<dyn Setter>>) -> Message {
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
        setters.extend(extra);
        if let Some((realm, nonce)) = &self.auth {
            let realm = match &self.forged_realm {
                Some(forged) => TextAttribute::new(ATTR_REALM, forged.clone()),
                None => realm.clone(),
            };
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, self.username.clone())));
            setters.push(Box::new(realm.clone()));
            setters.push(Box::new(nonce.clone()));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                self.username.clone(),
                realm.text.clone(),
                self.password.clone(),
            )));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut message = Message::new();
        message.build(&setters).unwrap();
        message
    }

    /// Sends a request (again with credentials if the server challenges it) and returns the
    /// answer.
    async fn call(&mut self, method: Method, extra: impl Fn() -> Vec<Box<dyn Setter>>) -> Message {
        let mut answer = self.transact(&self.build(method, extra())).await;
        if answer.typ.class == CLASS_ERROR_RESPONSE && matches!(code(&answer), 401 | 438) {
            let realm = TextAttribute::get_from_as(&answer, ATTR_REALM);
            let nonce = TextAttribute::get_from_as(&answer, ATTR_NONCE);
            if let (Ok(realm), Ok(nonce)) = (realm, nonce) {
                let retry = self.auth.is_none() || code(&answer) == 438;
                self.auth = Some((realm, nonce));
                if retry {
                    answer = self.transact(&self.build(method, extra())).await;
                }
            }
        }
        answer
    }

    async fn transact(&self, request: &Message) -> Message {
        self.conn.send_to(&request.raw, self.server).await.unwrap();
        let mut buf = vec![0; 70_000];
        loop {
            let (n, _) = tokio::time::timeout(PATIENCE, self.conn.recv_from(&mut buf))
                .await
                .expect("the TURN server answers")
                .expect("the connection stays open");
            let mut answer = Message::new();
            if answer.unmarshal_binary(&buf[..n]).is_ok() && answer.transaction_id == request.transaction_id {
                return answer;
            }
        }
    }

    async fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let answer =
            self.call(METHOD_ALLOCATE, || vec![Box::new(RequestedTransport { protocol: PROTO_UDP })]).await;
        if answer.typ.class != CLASS_SUCCESS_RESPONSE {
            return Err(code(&answer));
        }
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&answer).unwrap();
        Ok(SocketAddr::new(relayed.ip, relayed.port))
    }

    /// CreatePermission for `peer`: `Ok` or the error code.
    async fn permit(&mut self, peer: SocketAddr) -> Result<(), u16> {
        let answer = self
            .call(METHOD_CREATE_PERMISSION, || {
                vec![Box::new(PeerAddress { ip: peer.ip(), port: peer.port() })]
            })
            .await;
        outcome(&answer)
    }

    async fn bind_channel(&mut self, channel: u16, peer: SocketAddr) -> Result<(), u16> {
        let answer = self
            .call(METHOD_CHANNEL_BIND, || {
                vec![
                    Box::new(ChannelNumber(channel)),
                    Box::new(PeerAddress { ip: peer.ip(), port: peer.port() }),
                ]
            })
            .await;
        outcome(&answer)
    }

    async fn refresh(&mut self, lifetime: Duration) -> Result<(), u16> {
        let answer = self.call(METHOD_REFRESH, || vec![Box::new(Lifetime(lifetime))]).await;
        outcome(&answer)
    }

    /// Sends `data` on `channel` and returns what comes back on it.
    async fn channel_round_trip(&self, channel: u16, data: &[u8]) -> Vec<u8> {
        let mut message = channel.to_be_bytes().to_vec();
        message.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        message.extend_from_slice(data);
        self.conn.send_to(&message, self.server).await.unwrap();
        let mut buf = vec![0; 70_000];
        loop {
            let (n, _) = tokio::time::timeout(PATIENCE, self.conn.recv_from(&mut buf))
                .await
                .expect("relayed data comes back")
                .unwrap();
            if n >= 4 && buf[..2] == channel.to_be_bytes() {
                let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                return buf[4..4 + len].to_vec();
            }
        }
    }
}

fn code(answer: &Message) -> u16 {
    let mut code = ErrorCodeAttribute::default();
    code.get_from(answer).map_or(0, |()| code.code.0)
}

fn outcome(answer: &Message) -> Result<(), u16> {
    if answer.typ.class == CLASS_SUCCESS_RESPONSE { Ok(()) } else { Err(code(answer)) }
}

/// A UDP peer on loopback that sends back what it gets.
async fn echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 2_000];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// The sum of a metric's samples (all its labels), or of those whose labels contain `label`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = &series[name.len()..];
            ((rest.is_empty() || rest.starts_with('{')) && rest.contains(label))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Allocate, refresh, permission, channel, and data relayed to a UDP peer and back, over each
/// transport (the echo listens on loopback: this relay allows 127.0.0.0/8).
#[tokio::test]
async fn allocations_over_udp_tcp_and_tls_relay_data_to_an_allowed_peer() {
    let relay = TestRelay::start(&["--turn-allow-peer", "127.0.0.0/8"]).await;
    let offer = offer(&relay).await;
    let peer = echo().await;
    for transport in [RelayTransport::Udp, RelayTransport::Tcp, RelayTransport::Tls] {
        let mut client = Client::connect(&relay, &offer, transport).await;
        let relayed =
            client.allocate().await.unwrap_or_else(|code| panic!("{transport}: allocate got {code}"));
        assert_eq!(relayed.ip(), IpAddr::from([127, 0, 0, 1]), "{transport}");
        assert_eq!(client.refresh(Duration::from_secs(600)).await, Ok(()), "{transport}: refresh");
        assert_eq!(client.permit(peer).await, Ok(()), "{transport}: permission");
        assert_eq!(client.bind_channel(0x4001, peer).await, Ok(()), "{transport}: channel");
        for size in [1, 999, 1_200] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            assert_eq!(client.channel_round_trip(0x4001, &data).await, data, "{transport}: {size} bytes");
        }
        assert_eq!(client.refresh(Duration::ZERO).await, Ok(()), "{transport}: release");
    }
    let metrics = relay.metrics().await;
    for transport in ["udp", "tcp", "tls"] {
        let label = format!("transport=\"{transport}\"");
        // Three datagrams out to the echo and three back.
        assert_eq!(
            metric(&metrics, "confer_turn_relayed_packets_total", &label),
            6.0,
            "{transport}\n{metrics}"
        );
    }
    assert_eq!(metric(&metrics, "confer_turn_allocations_total", ""), 3.0, "{metrics}");
}

/// Without --turn-allow-peer, permissions and channels to the relay's own networks are refused
/// with 403 (and counted); a public peer is permitted; the allocation goes on working.
#[tokio::test]
async fn permissions_for_the_servers_own_networks_are_refused_with_403() {
    let relay = TestRelay::start(&[]).await;
    let offer = offer(&relay).await;
    let mut client = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    client.allocate().await.unwrap();
    for refused in ["127.0.0.1:9", "10.0.0.1:9", "169.254.169.254:80", "192.168.1.1:9", "100.64.0.1:9"] {
        assert_eq!(client.permit(refused.parse().unwrap()).await, Err(403), "{refused}");
    }
    assert_eq!(client.bind_channel(0x4000, "127.0.0.1:9".parse().unwrap()).await, Err(403));
    assert_eq!(client.permit("203.0.113.5:9".parse().unwrap()).await, Ok(()), "a public peer");
    assert_eq!(client.refresh(Duration::from_secs(600)).await, Ok(()));
    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "confer_turn_permissions_refused_total", ""), 6.0, "{metrics}");
}

/// Wrong and expired credentials get 401 (counted); over a credential's quota gets 486 until an
/// allocation is released; meanwhile another client's allocation relays as before.
#[tokio::test]
async fn wrong_expired_and_over_quota_requests_get_their_answers() {
    let relay = TestRelay::start(&["--turn-allow-peer", "127.0.0.0/8", "--turn-user-quota", "2"]).await;
    let offer = offer(&relay).await;
    let peer = echo().await;
    let mut bystander = Client::connect(&relay, &offer, RelayTransport::Tcp).await;
    bystander.allocate().await.unwrap();
    bystander.bind_channel(0x4002, peer).await.unwrap();

    let wrong = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    let mut wrong = wrong.with_credentials(&offer.username, "not-the-password");
    assert_eq!(wrong.allocate().await, Err(401), "a wrong password");
    // An expired username with the right signature (the relay's own derivation of its secret).
    let secret = confer_relay::token::turn_secret(&crate::support::token_key());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expired_user = format!("{}:someone", now - 60);
    let expired_password = confer_relay::turn::password(&secret, &expired_user);
    let expired = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    let mut expired = expired.with_credentials(&expired_user, &expired_password);
    assert_eq!(expired.allocate().await, Err(401), "an expired credential");
    // The same signature for a username that has not expired is accepted: the expiry refused it.
    let fresh_user = format!("{}:someone", now + 600);
    let fresh = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    let mut fresh = fresh.with_credentials(&fresh_user, &confer_relay::turn::password(&secret, &fresh_user));
    assert!(fresh.allocate().await.is_ok());
    // The right credential signed for another realm: refused (it would have passed the quotas).
    let mut elsewhere = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    elsewhere.forged_realm = Some("elsewhere".to_owned());
    assert_eq!(elsewhere.allocate().await, Err(401), "another realm");

    // The offer's credential holds one allocation (the bystander's); one more fits, then 486.
    let mut second = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    second.allocate().await.unwrap();
    let mut third = Client::connect(&relay, &offer, RelayTransport::Tls).await;
    assert_eq!(third.allocate().await, Err(486), "over the credential's quota");
    second.refresh(Duration::ZERO).await.unwrap();
    // The release reaches the quota's ledger through the server's close notification.
    let mut allocated = third.allocate().await;
    for _ in 0..20 {
        if allocated.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        allocated = third.allocate().await;
    }
    assert!(allocated.is_ok(), "a released allocation gives its place back: {allocated:?}");

    assert_eq!(bystander.channel_round_trip(0x4002, b"still here").await, b"still here");
    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "confer_turn_auth_failures_total", ""), 3.0, "{metrics}");
    assert!(metric(&metrics, "confer_turn_allocations_refused_total", "user_quota") >= 1.0, "{metrics}");
}

/// Garbage on UDP is dropped and counted; garbage on TCP and on the relay's TLS port closes that
/// connection; a TLS connection that says nothing is closed after the handshake timeout; the
/// server answers nothing to any of it, and a client's allocation relays throughout.
#[tokio::test]
async fn garbage_on_every_transport_is_dropped_and_others_keep_working() {
    let relay = TestRelay::start(&["--turn-allow-peer", "127.0.0.0/8"]).await;
    let offer = offer(&relay).await;
    let peer = echo().await;
    let mut client = Client::connect(&relay, &offer, RelayTransport::Udp).await;
    client.allocate().await.unwrap();
    client.bind_channel(0x4003, peer).await.unwrap();

    // UDP: random bytes, a STUN header cut short, a STUN length past the datagram, ChannelData
    // announcing more than it carries, a reserved channel number.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cut_stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    cut_stun.extend_from_slice(&[7; 12]);
    let garbage: [&[u8]; 5] =
        [b"\xff\xfe garbage", &cut_stun[..12], &cut_stun, &[0x40, 0x00, 0x04, 0x00, 1, 2], &[0x80, 0, 0, 0]];
    for datagram in garbage {
        udp.send_to(datagram, offer.udp).await.unwrap();
    }
    let mut buf = [0; 1_500];
    let answered = tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut buf)).await;
    assert!(answered.is_err(), "garbage gets no answer");

    // TCP: bytes that begin neither STUN nor ChannelData; the connection is closed.
    let mut tcp = TcpStream::connect(offer.tcp).await.unwrap();
    tcp.write_all(b"\xff\xff\xff\xff garbage").await.unwrap();
    let read = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "TCP garbage closes the connection: {read:?}");

    // TLS on the relay's port: a first byte that says STUN, then a broken frame; and a
    // connection that completes the handshake and sends nothing.
    let connector = tokio_rustls::TlsConnector::from(pinned_tls(relay.pin.unwrap()));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], offer.tls_port));
    let mut broken =
        connector.connect(name.clone(), TcpStream::connect(tls_addr).await.unwrap()).await.unwrap();
    broken.write_all(&[0x00, 0x01, 0x00, 0x03, 0xde, 0xad, 0xbe, 0xef]).await.unwrap();
    broken.flush().await.unwrap();
    let read = tokio::time::timeout(PATIENCE, broken.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "a broken TURN frame over TLS closes it: {read:?}");
    let mut silent = connector.connect(name, TcpStream::connect(tls_addr).await.unwrap()).await.unwrap();

    assert_eq!(client.channel_round_trip(0x4003, b"unaffected").await, b"unaffected");
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "a silent TLS client is closed by the handshake timeout");

    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "confer_turn_malformed_total", ""), 5.0, "{metrics}");
    assert_eq!(metric(&metrics, "confer_turn_stream_broken_total", ""), 2.0, "{metrics}");
}
