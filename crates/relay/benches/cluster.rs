//! What sharing rooms through Redis costs a signal: the real `confer-relay` binaries and a real
//! `redis-server`, plain WebSocket on loopback, pairs of clients in their own rooms, measured
//! three ways side by side:
//!
//! - one relay alone (no Redis): the baseline;
//! - one relay with `--redis-url`, both clients on it: what a room held where its clients are
//!   pays (nothing should cross Redis);
//! - two relays sharing Redis, one client of each pair on each: every signal crosses Redis, one
//!   stream hop when its sender sits on the room's holder, two when it sits on the other.
//!
//! For each: end-to-end latency at a fixed rate (open loop, p50/p99), and signals per second at
//! saturation (closed loop). `cargo bench -p confer-relay --bench cluster` (`-- --quick`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use confer_proto::{ClientMessage, Fingerprint, PeerId, Role, SUBPROTOCOL, ServerMessage, SignalPayload};
use confer_relay::token::{InviteClaims, TokenKey, new_room_id, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Redis {
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
    fn start() -> Self {
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

    fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }
}

struct Relay {
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
    fn start(redis: Option<&Redis>) -> Relay {
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
        .args(["--max-connections-per-ip", "100000"])
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

    async fn metrics(&self) -> String {
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
    async fn join(&self, room: &confer_proto::RoomId, token: &str) -> (Ws, PeerId) {
        let mut request = format!("ws://localhost:{}/ws", self.port).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let join = ClientMessage::Join {
            room: room.clone(),
            token: token.to_owned(),
            name: "bench".into(),
            muted: false,
            camera: false,
        };
        ws.send(Message::text(serde_json::to_string(&join).unwrap())).await.unwrap();
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await
                && let Ok(ServerMessage::Joined { peer_id, .. }) = confer_proto::decode_server(&text)
            {
                return (ws, peer_id);
            }
        }
    }
}

/// `pairs` rooms, the first member of each on `first`, the second on `second`.
async fn pairs(first: &Relay, second: &Relay, pairs: usize) -> Vec<((Ws, PeerId), (Ws, PeerId))> {
    let key = TokenKey::new(Fingerprint::parse(SECRET_HEX).unwrap().0);
    let mut out = Vec::new();
    for _ in 0..pairs {
        let room = new_room_id();
        let token = InviteClaims {
            room: room.clone(),
            role: Role::Guest,
            waiting_room: false,
            expires: unix_now() + 3600,
        }
        .sign(&key);
        let a = first.join(&room, &token).await;
        let mut b = second.join(&room, &token).await;
        // The first member hears of the second; neither has more to read.
        let (mut ws_a, id_a) = a;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), ws_a.next()).await {}
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), b.0.next()).await {}
        out.push(((ws_a, id_a), b));
    }
    out
}

fn signal_text(to: &PeerId, stamp_ns: u64) -> String {
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

fn stamp_of(text: &str) -> Option<u64> {
    text.split("198.51.100.7 ").nth(1)?.split(' ').next()?.parse().ok()
}

/// Open loop: the first of each pair sends to the second at `rate` signals per second in all;
/// returns the end-to-end latencies (µs) of those received in `measure`.
async fn latencies(pairs: Vec<((Ws, PeerId), (Ws, PeerId))>, rate: f64, measure: Duration) -> Vec<u64> {
    let epoch = Instant::now();
    let per_pair = Duration::from_secs_f64(pairs.len() as f64 / rate);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for ((a, _), (b, id_b)) in pairs {
        senders.push(tokio::spawn(async move {
            let mut a = a;
            let mut tick = tokio::time::interval(per_pair);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + measure;
            while Instant::now() < end {
                tick.tick().await;
                let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
                a.send(Message::text(signal_text(&id_b, stamp))).await.unwrap();
            }
            a
        }));
        receivers.push(tokio::spawn(async move {
            let mut b = b;
            let mut seen = Vec::new();
            let end = Instant::now() + measure + Duration::from_secs(1);
            while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(end.into(), b.next()).await
            {
                if let Some(stamp) = stamp_of(&text) {
                    let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
                    seen.push(now.saturating_sub(stamp) / 1000);
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for r in receivers {
        all.extend(r.await.unwrap());
    }
    for s in senders {
        drop(s.await);
    }
    all.sort_unstable();
    all
}

/// Closed loop: both of each pair keep `window` signals in flight to the other; signals
/// received per second over `measure`.
async fn saturate(pairs: Vec<((Ws, PeerId), (Ws, PeerId))>, window: usize, measure: Duration) -> f64 {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for ((a, id_a), (b, id_b)) in pairs {
        for (ws, to) in [(a, id_b), (b, id_a)] {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            let text = signal_text(&to, 1);
            tasks.push(tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                for _ in 0..window {
                    sink.feed(Message::text(text.clone())).await.unwrap();
                }
                sink.flush().await.unwrap();
                while let Some(Ok(msg)) = stream.next().await {
                    if !matches!(msg, Message::Text(_)) {
                        continue;
                    }
                    received.fetch_add(1, Relaxed);
                    if stop.load(Relaxed) || sink.send(Message::text(text.clone())).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = received.load(Relaxed);
    tokio::time::sleep(measure).await;
    let rate = (received.load(Relaxed) - before) as f64 / measure.as_secs_f64();
    stop.store(true, Relaxed);
    for task in tasks {
        task.abort();
    }
    rate
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let measure = if quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    let rate = 1_000.0;
    println!("signals between pairs of clients, plain ws on loopback, {} s per figure", measure.as_secs());
    println!();
    println!("| rooms held | latency at {rate} signals/s, p50 / p99 | signals/s at saturation (20 pairs) |");
    println!("| --- | ---: | ---: |");
    let redis = Redis::start();
    for setup in ["one relay, no Redis", "one relay with --redis-url", "two relays, one client on each"] {
        let (first, second) = match setup {
            "one relay, no Redis" => (Relay::start(None), None),
            "one relay with --redis-url" => (Relay::start(Some(&redis)), None),
            _ => (Relay::start(Some(&redis)), Some(Relay::start(Some(&redis)))),
        };
        let other = second.as_ref().unwrap_or(&first);
        let lat = latencies(Box::pin(pairs(&first, other, 10)).await, rate, measure).await;
        let throughput = saturate(Box::pin(pairs(&first, other, 20)).await, 16, measure).await;
        println!("| {setup} | {} µs / {} µs | {throughput:.0} |", quantile(&lat, 0.5), quantile(&lat, 0.99));
        if let Some(second) = &second {
            let m = second.metrics().await;
            let (sum, count) = (
                metric(&m, "confer_relay_redis_round_trip_seconds_sum"),
                metric(&m, "confer_relay_redis_round_trip_seconds_count"),
            );
            println!();
            println!(
                "Redis round trips seen by the second relay: {count:.0}, mean {:.0} µs; envelopes sent {:.0}, lost {:.0}, gaps {:.0}",
                sum / count * 1e6,
                metric(&m, "confer_relay_cluster_envelopes_sent_total"),
                metric(&m, "confer_relay_cluster_envelopes_lost_total"),
                metric(&m, "confer_relay_cluster_gaps_total"),
            );
        }
    }
}
