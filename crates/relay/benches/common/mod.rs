//! What the cluster benchmarks share: a real `redis-server`, the real `confer-relay` binary
//! (plain WebSocket, limits out of the way), joining a room, reading a process's memory and CPU.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confer_proto::{ClientMessage, Fingerprint, PeerId, Role, SUBPROTOCOL, ServerMessage, SignalPayload};
use confer_relay::token::{InviteClaims, TokenKey, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Redis {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }
}

pub struct Relay {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    pub fn start(redis: Option<&Redis>) -> Relay {
        Self::start_with(redis, &[])
    }

    /// [`Relay::start`] with these extra flags.
    pub fn start_with(redis: Option<&Redis>, extra: &[&str]) -> Relay {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confer-relay"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--token-secret",
            SECRET_HEX,
            "--plain",
            "true",
            "--turn",
            "false",
        ])
        .args(["--message-rate", "1000000", "--message-burst", "1000000"])
        .args(["--max-connections", "100000", "--max-connections-per-ip", "100000"])
        .args(extra)
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn,confer_relay::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(redis) = redis {
            cmd.args(["--redis-url", &redis.url()]);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(origin) = line.split("origin=").nth(1) {
                    let _ = tx.send(origin.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let origin = rx.recv_timeout(Duration::from_secs(10)).expect("relay started");
        let port = origin.rsplit(':').next().unwrap().parse().unwrap();
        Relay { child, port, _state: state }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tcp.read_to_string(&mut body).await.unwrap();
        body
    }

    /// Joins `room` with `token`; returns the socket and the peer id.
    pub async fn join(&self, room: &confer_proto::RoomId, token: &str) -> (Ws, PeerId) {
        self.try_join(room, token).await.unwrap()
    }

    /// Joins `room` with `token`; says why not if the relay would not seat us.
    pub async fn try_join(&self, room: &confer_proto::RoomId, token: &str) -> Result<(Ws, PeerId), String> {
        let mut request = format!("ws://localhost:{}/ws", self.port).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
        let join = ClientMessage::Join {
            room: room.clone(),
            token: token.to_owned(),
            name: "bench".into(),
            muted: false,
            camera: false,
        };
        ws.send(Message::text(serde_json::to_string(&join).unwrap())).await.map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match confer_proto::decode_server(&text) {
                    Ok(ServerMessage::Joined { peer_id, .. }) => return Ok((ws, peer_id)),
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        return Err(format!("{code}: {message}"));
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed before joined".into()),
            }
        }
    }
}

pub fn signal_text(to: &PeerId, stamp_ns: u64) -> String {
    let msg = ClientMessage::Signal {
        to: to.clone(),
        payload: SignalPayload::Candidate {
            candidate: format!(
                "candidate:842163049 1 udp 1677729535 198.51.100.7 {stamp_ns} typ srflx raddr 0.0.0.0 rport 0 generation 0"
            ),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("x9Kf".into()),
        },
    };
    serde_json::to_string(&msg).unwrap()
}

pub fn stamp_of(text: &str) -> Option<u64> {
    text.split("198.51.100.7 ").nth(1)?.split(' ').next()?.parse().ok()
}

pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(f64::NAN)
}

/// A guest token for `room`, signed with the benchmarks' secret, valid for an hour.
pub fn guest_token(room: &confer_proto::RoomId) -> String {
    let key = TokenKey::new(Fingerprint::parse(SECRET_HEX).unwrap().0);
    InviteClaims { room: room.clone(), role: Role::Guest, waiting_room: false, expires: unix_now() + 3600 }
        .sign(&key)
}

/// CPU seconds (user + system) process `pid` has used so far (Linux: /proc).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of process `pid` in KiB (Linux: /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}
