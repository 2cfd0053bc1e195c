//! A TURN allocation made over TCP and over TLS relays datagrams both ways between a client and
//! a UDP peer: the `turn` crate's real client and server, speaking through this crate's streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use confer_turn_stream::{
    DialError, RelayTransport, StreamConn, StreamServer, StreamServerLimits, dial, trust,
};
use tokio::net::{TcpListener, UdpSocket};
use turn::auth::{AuthHandler, generate_auth_key};
use turn::client::{Client, ClientConfig};
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::Conn;
use webrtc_util::vnet::net::Net;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Password;

impl AuthHandler for Password {
    fn auth_handle(&self, username: &str, realm: &str, _src: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        Ok(generate_auth_key(username, realm, "secret"))
    }
}

/// A TURN server on a loopback TCP listener, TLS with a fresh certificate for `localhost` if
/// asked (its client configuration returned, trusting just that certificate).
async fn server(tls: bool) -> (Server, SocketAddr, Option<Arc<rustls::ClientConfig>>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (acceptor, client_config) = if tls {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))), Some(Arc::new(client)))
    } else {
        (None, None)
    };
    let conn = StreamServer::new(listener, acceptor, StreamServerLimits::default()).unwrap();
    let server = Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(conn),
            relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                relay_address: LOOPBACK,
                address: "127.0.0.1".to_owned(),
                net: Arc::new(Net::new(None)),
            }),
        }],
        realm: "test".to_owned(),
        auth_handler: Arc::new(Password),
        channel_bind_timeout: Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .unwrap();
    (server, addr, client_config)
}

/// Allocates through `stream`, then sends 200 datagrams each way between the allocation and a
/// UDP peer; returns how many arrived each way.
async fn relay_through(stream: StreamConn, server: SocketAddr) -> (usize, usize) {
    let client = Client::new(ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: server.to_string(),
        username: "alice".to_owned(),
        password: "secret".to_owned(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(stream),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    let relayed = tokio::time::timeout(Duration::from_secs(10), client.allocate()).await.unwrap().unwrap();
    let relayed_addr = relayed.local_addr().unwrap();
    let peer = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();

    let (mut out, mut back) = (0, 0);
    let mut buf = vec![0; 1500];
    for i in 0..200u16 {
        // Media-sized datagrams, odd lengths so that ChannelData padding is exercised.
        let payload: Vec<u8> = (0..1001 + usize::from(i % 4)).map(|b| (b as u8) ^ (i as u8)).collect();
        relayed.send_to(&payload, peer_addr).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf)).await
        {
            assert_eq!(from, relayed_addr, "the peer sees the relayed address");
            assert_eq!(&buf[..n], &payload[..], "datagram {i} arrived whole");
            out += 1;
        }
        peer.send_to(&payload, relayed_addr).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), relayed.recv_from(&mut buf)).await
        {
            assert_eq!(from, peer_addr);
            assert_eq!(&buf[..n], &payload[..], "datagram {i} came back whole");
            back += 1;
        }
    }
    relayed.close().await.unwrap();
    client.close().await.unwrap();
    (out, back)
}

#[tokio::test]
async fn an_allocation_over_tcp_relays_both_ways() {
    let (server, addr, _) = server(false).await;
    let stream = dial(RelayTransport::Tcp, "127.0.0.1", addr.port(), Duration::from_secs(5)).await.unwrap();
    let (out, back) = relay_through(stream, addr).await;
    // Loopback loses nothing: every datagram must make it, both ways.
    assert_eq!((out, back), (200, 200));
    server.close().await.unwrap();
}

/// The `turn` server closes an allocation's client `Conn` when the allocation ends; on a stream
/// listener that `Conn` is every client's, so closing it must not end the listener.
#[tokio::test]
async fn an_allocation_that_ends_leaves_the_other_clients_served() {
    let (server, addr, _) = server(false).await;
    for client in ["first", "second"] {
        let stream =
            dial(RelayTransport::Tcp, "127.0.0.1", addr.port(), Duration::from_secs(5)).await.unwrap();
        // Each ends with its allocation released (a Refresh with lifetime 0).
        assert_eq!(relay_through(stream, addr).await, (200, 200), "the {client} client");
    }
    server.close().await.unwrap();
}

#[tokio::test]
async fn an_allocation_over_tls_relays_both_ways() {
    let (server, addr, config) = server(true).await;
    trust(&format!("localhost:{}", addr.port()), config.unwrap());
    let stream = dial(RelayTransport::Tls, "localhost", addr.port(), Duration::from_secs(5)).await.unwrap();
    let (out, back) = relay_through(stream, addr).await;
    assert_eq!((out, back), (200, 200));
    server.close().await.unwrap();
}

#[tokio::test]
async fn dial_failures_are_named() {
    // A port nothing listens on: refused.
    let unused = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let refused = dial(RelayTransport::Tcp, "127.0.0.1", port, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(refused, DialError::Refused(_)), "{refused}");

    // A TLS server whose certificate nobody registered: not trusted (the web's roots do not hold it).
    let (turn, addr, _) = server(true).await;
    let untrusted =
        dial(RelayTransport::Tls, "localhost", addr.port(), Duration::from_secs(5)).await.unwrap_err();
    let text = untrusted.to_string();
    assert!(matches!(untrusted, DialError::Tls { .. }) && text.contains("certificate"), "{text}");
    turn.close().await.unwrap();

    // TLS to a plain TCP TURN server: the handshake fails, and says so.
    let (turn, addr, _) = server(false).await;
    let plain =
        dial(RelayTransport::Tls, "localhost", addr.port(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(plain, DialError::Tls { .. }), "{plain}");
    turn.close().await.unwrap();

    // A name that does not resolve.
    let unknown =
        dial(RelayTransport::Tcp, "no-such-host.invalid", 3478, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(unknown, DialError::Resolve { .. }), "{unknown}");
}

/// One client address holds at most its share of a listener's connections: the next one is
/// closed at once, and a place comes back when one of its connections ends.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::AsyncReadExt as _;
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = StreamServerLimits { max_per_address: 2, ..StreamServerLimits::default() };
    let server = StreamServer::new(listener, None, limits).unwrap();
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let wait_for_count = |count: usize| {
        let server = &server;
        async move {
            for _ in 0..100 {
                if server.connections() == count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{} connections, not {count}", server.connections());
        }
    };
    wait_for_count(2).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "the third connection is closed at once: {read:?}");
    assert_eq!(server.refused(), 1);
    drop(first);
    wait_for_count(1).await;
    let _again = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_for_count(2).await;
}
