//! Test support: the real `confer-relay` binary on a free loopback port, and a WSS client that
//! pins the relay's self-signed certificate the way invite links say to.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confer_proto::{
    ClientMessage, ErrorCode, Fingerprint, InviteLink, Participant, PeerId, SUBPROTOCOL, ServerMessage,
    decode_server,
};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long any one expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The token secret every test relay uses, so tests can mint their own tokens.
pub const SECRET_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub fn token_key() -> confer_relay::token::TokenKey {
    confer_relay::token::TokenKey::new(Fingerprint::parse(SECRET_HEX).unwrap().0)
}

/// A running relay process. Killed when dropped.
pub struct TestRelay {
    child: Child,
    pub origin: String,
    pub port: u16,
    pub pin: Option<Fingerprint>,
    /// How test clients verify the relay: by default, the pin of its self-signed certificate.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    pub state_dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRelay {
    /// Starts the relay with TLS (self-signed, pinned) and these extra flags.
    pub async fn start(extra: &[&str]) -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        Self::start_in(state_dir, "127.0.0.1:0", extra).await
    }

    /// Starts the relay keeping its state in `state_dir`, listening on `listen`.
    pub async fn start_in(state_dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--token-secret", SECRET_HEX];
        args.extend_from_slice(extra);
        Self::start_with(state_dir, listen, &args).await
    }

    /// Starts the relay with exactly these flags (besides listen address and state dir).
    pub async fn start_with(state_dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> Self {
        // The built-in STUN/TURN server on a port of the system's choosing: tests run in
        // parallel, and only one relay could have 3478.
        let turn_flags = ["--turn-url", "--turn", "--embedded-turn", "--turn-listen"];
        let mut turn_listen = Vec::new();
        if !extra.iter().any(|flag| turn_flags.contains(flag)) {
            turn_listen = vec!["--turn-listen".to_owned(), "127.0.0.1:0".to_owned()];
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_confer-relay"))
            .args(["--listen", listen])
            .arg("--state-dir")
            .arg(state_dir.path())
            .args(&turn_listen)
            .args(extra)
            .env("RUST_LOG", "confer_relay=debug,info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("relay listening") {
                    let field = |name: &str| {
                        line.split(&format!("{name}="))
                            .nth(1)
                            .and_then(|v| v.split_whitespace().next())
                            .map(str::to_owned)
                    };
                    let _ =
                        tx.send((field("origin").unwrap_or_default(), field("listen").unwrap_or_default()));
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (origin, listen) = tokio::task::spawn_blocking(move || rx.recv_timeout(PATIENCE))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("the relay did not report its address"));
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        let pin = std::fs::read_to_string(state_dir.path().join("self-signed.crt"))
            .ok()
            .map(|pem| {
                use rustls::pki_types::pem::PemObject as _;
                let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                Fingerprint(Sha256::digest(&der).into())
            })
            .filter(|_| origin.starts_with("wss://"));
        let client_tls = pin.map(pinned_tls);
        Self { child, origin, port, pin, client_tls, state_dir, log }
    }

    /// Everything the relay logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the relay did not exit within 10 s of SIGTERM");
    }

    /// Hands back the state directory (to restart a relay with the same state).
    pub fn into_state_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.state_dir, tempfile::tempdir().unwrap())
    }

    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client_tls.clone()
    }

    /// One HTTP/1.1 request; returns status, headers (lowercase names) and body.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        match self.tls_config() {
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config);
                let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
                exchange(tls, &request).await
            }
            None => exchange(tcp, &request).await,
        }
    }

    /// Creates a room over HTTP and returns its host and guest links.
    pub async fn create_room(&self, waiting_room: bool) -> RoomLinks {
        let body = if waiting_room { r#"{"waiting_room":true}"# } else { "" };
        let response = self.http("POST", "/rooms", &[], body).await;
        assert_eq!(response.status, 201, "{}", response.body);
        let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        let link = |role: &str, form: &str| InviteLink::parse(json[role][form].as_str().unwrap()).unwrap();
        assert_eq!(link("host", "app"), link("host", "web"), "both forms carry the same invite");
        RoomLinks { host: link("host", "app"), guest: link("guest", "web") }
    }

    pub async fn metrics(&self) -> String {
        self.http("GET", "/metrics", &[], "").await.body
    }

    /// Opens a WebSocket offering the Confer subprotocol.
    pub async fn connect(&self) -> Client {
        self.try_connect(self.tls_config(), &[SUBPROTOCOL]).await.unwrap()
    }

    pub async fn try_connect(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        protocols: &[&str],
    ) -> Result<Client, tungstenite::Error> {
        let url = format!(
            "{}://localhost:{}/ws",
            if self.origin.starts_with("wss") { "wss" } else { "ws" },
            self.port
        );
        let mut request = url.into_client_request().unwrap();
        if !protocols.is_empty() {
            request.headers_mut().insert("Sec-WebSocket-Protocol", protocols.join(", ").parse().unwrap());
        }
        let connector = tls.map(Connector::Rustls).unwrap_or(Connector::Plain);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector)).await?;
        Ok(Client { ws })
    }

    /// Connects and joins with an invite; panics unless seated.
    pub async fn join(&self, link: &InviteLink, name: &str) -> Seat {
        let mut client = self.connect().await;
        client.send(&join_message(link, name)).await;
        client.expect_joined().await
    }
}

pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, request: &str) -> HttpResponse {
    io.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, io.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split_whitespace().nth(1).unwrap_or("0").parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct RoomLinks {
    pub host: InviteLink,
    pub guest: InviteLink,
}

pub fn join_message(link: &InviteLink, name: &str) -> ClientMessage {
    ClientMessage::Join {
        room: link.room.clone(),
        token: link.token.clone(),
        name: name.to_owned(),
        muted: false,
        camera: true,
    }
}

/// A client with a seat.
pub struct Seat {
    pub client: Client,
    pub id: PeerId,
    pub resume_token: String,
    pub participants: Vec<Participant>,
    pub ice_servers: Vec<confer_proto::IceServer>,
}

/// A WebSocket client speaking the Confer protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(&serde_json::to_string(msg).unwrap()).await;
    }

    /// Sends unless the relay has closed the connection; says whether it was sent.
    pub async fn try_send(&mut self, msg: &ClientMessage) -> bool {
        let text = serde_json::to_string(msg).unwrap();
        matches!(tokio::time::timeout(PATIENCE, self.ws.send(Message::text(text))).await, Ok(Ok(())))
    }

    pub async fn send_raw(&mut self, text: &str) {
        tokio::time::timeout(PATIENCE, self.ws.send(Message::text(text)))
            .await
            .expect("the relay reads what it is sent")
            .unwrap();
    }

    /// The next protocol message; panics on close or after [`PATIENCE`].
    pub async fn recv(&mut self) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("a message in time");
            match frame {
                Some(Ok(Message::Text(text))) => return decode_server(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until<T>(&mut self, mut pick: impl FnMut(ServerMessage) -> Option<T>) -> T {
        loop {
            if let Some(found) = pick(self.recv().await) {
                return found;
            }
        }
    }

    /// Expects a non-fatal error with this code next (skipping presence chatter).
    pub async fn expect_error(&mut self, expected: ErrorCode) -> String {
        self.recv_until(|msg| match msg {
            ServerMessage::Error { code, message, fatal } => {
                assert_eq!(code, expected, "{message}");
                assert!(!fatal, "{code} should not be fatal");
                Some(message)
            }
            _ => None,
        })
        .await
    }

    /// Expects the relay to end the connection with this error: a fatal `error` message, then a
    /// close frame carrying the code's close code and name.
    pub async fn expect_fatal(&mut self, expected: ErrorCode) {
        let mut saw_message = false;
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("a close in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if let ServerMessage::Error { code, fatal, message } = decode_server(&text).unwrap() {
                        assert_eq!(code, expected, "{message}");
                        assert!(fatal);
                        saw_message = true;
                    }
                }
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    assert_eq!(u16::from(code), expected.close_code());
                    assert_eq!(reason.as_str(), expected.as_str());
                    assert!(saw_message, "the close came without an error message");
                    return;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected {expected} and a close, got {other:?}"),
            }
        }
    }

    /// Expects nothing but pings for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Round-trips a ping: proves the connection (and the relay) still serve.
    pub async fn assert_alive(&mut self) {
        let nonce = rand::random::<u32>().into();
        self.send(&ClientMessage::Ping { nonce }).await;
        let got =
            self.recv_until(|m| if let ServerMessage::Pong { nonce } = m { Some(nonce) } else { None }).await;
        assert_eq!(got, nonce);
    }

    pub async fn expect_joined(mut self) -> Seat {
        match self.recv().await {
            ServerMessage::Joined { peer_id, resume_token, participants, ice_servers, .. } => {
                Seat { client: self, id: peer_id, resume_token, participants, ice_servers }
            }
            other => panic!("expected joined, got {other:?}"),
        }
    }
}

/// A rustls client configuration that trusts these certificates as roots (as it would a CA).
pub fn trusting(certs: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A rustls client configuration that accepts exactly the certificate with this SHA-256
/// fingerprint (signatures are still checked, so the server must hold the key): the engine's own.
pub fn pinned_tls(pin: Fingerprint) -> Arc<rustls::ClientConfig> {
    confer_mesh::tls::client_config(Some(pin))
}

/// A real Redis server (Debian's `redis-server`) on a Unix socket of its own, for relays that
/// share rooms. Nothing persisted; killed when dropped.
pub struct TestRedis {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(dir.path());
        Self { child, dir }
    }

    fn spawn(dir: &std::path::Path) -> Child {
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs Debian's redis-server)");
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not open its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// A Redis that speaks only TLS, on a loopback port, with a certificate for `localhost`
    /// signed by a CA of its own. Returns it and the CA's PEM (what `--redis-ca` is given).
    pub fn start_tls() -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("redis.pem"), cert.pem()).unwrap();
        std::fs::write(path("redis.key"), key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(path("redis.pem"))
            .arg("--tls-key-file")
            .arg(path("redis.key"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.pem"))
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs Debian's redis-server)");
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not open its TLS port");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(path("url"), format!("rediss://localhost:{port}")).unwrap();
        (Self { child, dir }, ca.pem())
    }

    /// Stops Redis (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Redis again, empty, on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path());
    }

    /// The URL relays are given.
    pub fn url(&self) -> String {
        // A TLS Redis wrote its own; the others listen on a Unix socket.
        std::fs::read_to_string(self.dir.path().join("url"))
            .unwrap_or_else(|_| format!("unix://{}", self.dir.path().join("redis.sock").display()))
    }
}

/// The relays a test talks to: one instance, or three sharing rooms through a real Redis. Every
/// connection goes to the next instance in turn, so in a cluster the participants of one room sit
/// on different instances and everything between them crosses Redis.
pub struct Relays {
    instances: Vec<TestRelay>,
    next: std::sync::atomic::AtomicUsize,
    _redis: Option<TestRedis>,
}

impl Relays {
    /// One relay with these extra flags.
    pub async fn one(extra: &[&str]) -> Self {
        let instances = vec![TestRelay::start(extra).await];
        Self { instances, next: 0.into(), _redis: None }
    }

    /// Three relays with these extra flags, sharing rooms through a Redis of their own.
    pub async fn three(extra: &[&str]) -> Self {
        let redis = TestRedis::start();
        let url = redis.url();
        let mut instances = Vec::new();
        for _ in 0..3 {
            let mut args = vec!["--redis-url", url.as_str()];
            args.extend_from_slice(extra);
            instances.push(TestRelay::start(&args).await);
        }
        Self { instances, next: 0.into(), _redis: Some(redis) }
    }

    fn next(&self) -> &TestRelay {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.instances[turn % self.instances.len()]
    }

    /// Creates a room through the next instance.
    pub async fn create_room(&self, waiting_room: bool) -> RoomLinks {
        self.next().create_room(waiting_room).await
    }

    /// Opens a WebSocket to the next instance.
    pub async fn connect(&self) -> Client {
        self.next().connect().await
    }

    /// Joins through the next instance.
    pub async fn join(&self, link: &InviteLink, name: &str) -> Seat {
        self.next().join(link, name).await
    }

    /// The instances' metrics summed series by series, in the text format of one instance: a
    /// rejection counts once wherever it happened.
    pub async fn metrics(&self) -> String {
        let mut order = Vec::<String>::new();
        let mut sums = std::collections::HashMap::<String, f64>::new();
        for relay in &self.instances {
            for line in relay.metrics().await.lines().filter(|line| !line.starts_with('#')) {
                let Some((series, value)) = line.rsplit_once(' ') else { continue };
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a sample: {line}"));
                if !sums.contains_key(series) {
                    order.push(series.to_owned());
                }
                *sums.entry(series.to_owned()).or_default() += value;
            }
        }
        order.iter().map(|series| format!("{series} {}\n", sums[series])).collect()
    }

    /// Everything the instances logged so far.
    pub fn log(&self) -> String {
        self.instances.iter().map(TestRelay::log).collect::<Vec<_>>().join("\n")
    }
}
