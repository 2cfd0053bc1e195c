//! Load generator for the relay: runs the real `confer-relay` binary and measures, from one
//! generator process on this machine,
//!
//! 1. signals forwarded per second at saturation, next to the raw echo throughput of the same
//!    WebSocket stack (the relay's `/echo` endpoint: same listener, same tungstenite settings,
//!    no relay logic) with the same message bytes;
//! 2. forwarding latency p50/p99 at half of the saturated rate (open loop);
//! 3. resident memory per idle, joined connection, in plaintext and over TLS.
//!
//! `cargo bench -p confer-relay --bench relay_load` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use confer_proto::{ClientMessage, Fingerprint, PeerId, Role, SUBPROTOCOL, ServerMessage};
use confer_relay::token::{InviteClaims, TokenKey, new_room_id, unix_now};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use common::{SECRET_HEX, Ws, signal_text, stamp_of};

struct Relay {
    child: Child,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    _state: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(tls: bool) -> Relay {
        let state = tempfile::tempdir().unwrap();
        // RELAY_CPUS=0 runs the relay on core 0 only (the generator is then pinned elsewhere by
        // whoever runs the bench, e.g. `taskset -c 1 cargo bench ...`).
        let mut cmd = match std::env::var("RELAY_CPUS") {
            Ok(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &cpus, env!("CARGO_BIN_EXE_confer-relay")]);
                cmd
            }
            Err(_) => Command::new(env!("CARGO_BIN_EXE_confer-relay")),
        };
        cmd.args(["--listen", "127.0.0.1:0", "--token-secret", SECRET_HEX, "--echo-endpoint"])
            .args(["--message-rate", "1000000", "--message-burst", "1000000"])
            .args(["--max-connections", "100000", "--max-connections-per-ip", "100000"])
            .args(["--room-capacity", "8"])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn,confer_relay::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !tls {
            cmd.args(["--plain", "true"]);
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
        let tls = tls.then(|| {
            let pem = std::fs::read(state.path().join("self-signed.crt")).unwrap();
            use rustls::pki_types::pem::PemObject as _;
            let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        });
        Relay { child, port, tls, _state: state }
    }

    /// The relay's own forwarding latency histogram (read off one socket to written to the
    /// other): (upper bound in seconds, cumulative count) per bucket.
    async fn latency_histogram(&self) -> Vec<(f64, u64)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tcp.read_to_string(&mut body).await.unwrap();
        body.lines()
            .filter_map(|l| l.strip_prefix("confer_relay_forward_latency_seconds_bucket{le=\""))
            .filter_map(|l| {
                let (bound, count) = l.split_once("\"} ")?;
                let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    }

    /// CPU time the relay process has used (user + system), from `/proc/PID/stat`.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
        let rest = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture it supports.
        Duration::from_millis(ticks * 10)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    async fn connect(&self, path: &str) -> Ws {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let mut request = format!("{scheme}://localhost:{}{path}", self.port).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
        let connector = self.tls.clone().map_or(Connector::Plain, Connector::Rustls);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
            .await
            .unwrap();
        ws
    }

    /// `rooms` rooms of `per_room` joined participants; returns each with its peer id.
    async fn join_rooms(&self, rooms: usize, per_room: usize) -> Vec<Vec<(Ws, PeerId)>> {
        let key = TokenKey::new(Fingerprint::parse(SECRET_HEX).unwrap().0);
        let mut out = Vec::new();
        for _ in 0..rooms {
            let room = new_room_id();
            let token = InviteClaims {
                room: room.clone(),
                role: Role::Guest,
                waiting_room: false,
                expires: unix_now() + 3600,
            }
            .sign(&key);
            let mut members = Vec::new();
            for i in 0..per_room {
                let mut ws = self.connect("/ws").await;
                let join = ClientMessage::Join {
                    room: room.clone(),
                    token: token.clone(),
                    name: format!("load-{i}"),
                    muted: false,
                    camera: false,
                };
                ws.send(Message::text(serde_json::to_string(&join).unwrap())).await.unwrap();
                let id = loop {
                    if let Some(Ok(Message::Text(text))) = ws.next().await
                        && let Ok(ServerMessage::Joined { peer_id, .. }) = confer_proto::decode_server(&text)
                    {
                        break peer_id;
                    }
                };
                members.push((ws, id));
            }
            out.push(members);
        }
        // Drain the presence messages the later joins caused.
        for members in &mut out {
            for (ws, _) in members.iter_mut() {
                while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await {}
            }
        }
        out
    }
}

/// Closed loop: every connection keeps `window` messages in flight to its partner (or to
/// itself through /echo) and answers each message it receives with a new one. Returns
/// messages received per second over `measure`, after `warmup`.
async fn saturate(
    pairs: Vec<(Ws, Ws, String, String)>,
    window: usize,
    warmup: Duration,
    measure: Duration,
) -> f64 {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (a, b, to_b, to_a) in pairs {
        for (ws, text) in [(a, to_b), (b, to_a)] {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
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
                    if stop.load(Relaxed) {
                        break;
                    }
                    if sink.send(Message::text(text.clone())).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(warmup).await;
    let start = received.load(Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    let rate = (received.load(Relaxed) - start) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for task in tasks {
        task.abort();
    }
    rate
}

async fn forwarding_pairs(relay: &Relay, n: usize) -> Vec<(Ws, Ws, String, String)> {
    let rooms = relay.join_rooms(n, 2).await;
    rooms
        .into_iter()
        .map(|mut members| {
            let (b, b_id) = members.pop().unwrap();
            let (a, a_id) = members.pop().unwrap();
            (a, b, signal_text(&b_id, 0), signal_text(&a_id, 0))
        })
        .collect()
}

async fn echo_pairs(relay: &Relay, n: usize) -> Vec<(Ws, Ws, String, String)> {
    let text = signal_text(&PeerId::parse("AAAAAAAAAAA").unwrap(), 0);
    let mut pairs = Vec::new();
    for _ in 0..n {
        let a = relay.connect("/echo").await;
        let b = relay.connect("/echo").await;
        pairs.push((a, b, text.clone(), text.clone()));
    }
    pairs
}

/// Where open-loop messages go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// A signals B through the relay's room logic.
    Forward,
    /// A's message comes back to A from `/echo`.
    Echo,
}

/// Open loop: in each of `pairs` pairs a sender sends on a fixed schedule, `rate` messages per
/// second in all; each message carries its send time. Returns latencies in µs (after
/// `warmup`) and the rate at which messages arrived.
async fn latency_at(
    relay: &Relay,
    path: Path,
    pairs: usize,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> (Vec<u64>, f64) {
    type Sink = futures_util::stream::SplitSink<Ws, Message>;
    type Stream = futures_util::stream::SplitStream<Ws>;
    let mut ends: Vec<(Sink, Stream, PeerId)> = Vec::new();
    // Halves of forwarding pairs that stay open but unused (A reads nothing, B sends nothing).
    let mut idle_halves = Vec::new();
    match path {
        Path::Forward => {
            for mut members in relay.join_rooms(pairs, 2).await {
                let (b, b_id) = members.pop().unwrap();
                let (a, _) = members.pop().unwrap();
                let (a_sink, a_stream) = a.split();
                let (b_sink, b_stream) = b.split();
                idle_halves.push((a_stream, b_sink));
                ends.push((a_sink, b_stream, b_id));
            }
        }
        Path::Echo => {
            for _ in 0..pairs {
                let (sink, stream) = relay.connect("/echo").await.split();
                ends.push((sink, stream, PeerId::parse("AAAAAAAAAAA").unwrap()));
            }
        }
    }
    let epoch = Instant::now();
    let warmup_ns = warmup.as_nanos() as u64;
    let period = Duration::from_secs_f64(pairs as f64 / rate);
    let (mut senders, mut receivers) = (Vec::new(), Vec::new());
    for (mut sink, mut stream, to) in ends {
        // The message with a placeholder for the stamp, split once: per message only the
        // stamp is formatted.
        let template = signal_text(&to, 0);
        let (head, tail) = template.split_once(" 0 typ").map(|(h, t)| (h.to_owned(), t.to_owned())).unwrap();
        senders.push(tokio::spawn(async move {
            // Spread the senders' phases so they do not all tick at once.
            tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while epoch.elapsed() < warmup + measure {
                tick.tick().await;
                let stamp = epoch.elapsed().as_nanos() as u64;
                sink.send(Message::text(format!("{head} {stamp} typ{tail}"))).await.unwrap();
            }
            sink
        }));
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                if let Message::Text(text) = msg
                    && let Some(stamp) = stamp_of(&text)
                    && stamp >= warmup_ns
                {
                    latencies.push((epoch.elapsed().as_nanos() as u64 - stamp) / 1000);
                }
            }
            latencies
        }));
    }
    let mut keep_open = Vec::new();
    for sender in senders {
        keep_open.push(sender.await.unwrap());
    }
    let mut all = Vec::new();
    for receiver in receivers {
        all.extend(receiver.await.unwrap());
    }
    drop(idle_halves);
    let achieved = all.len() as f64 / measure.as_secs_f64();
    (all, achieved)
}

/// The upper bound (as text, in µs) of the histogram bucket holding quantile `q`.
fn bucket_bound(buckets: &[(f64, u64)], q: f64) -> String {
    let total = buckets.last().map_or(0, |b| b.1);
    let target = (q * total as f64).ceil() as u64;
    match buckets.iter().find(|(_, cumulative)| *cumulative >= target) {
        Some((bound, _)) if bound.is_finite() => format!("{:.0} µs", bound * 1e6),
        _ => "∞".to_owned(),
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn idle_rss(tls: bool, connections: usize) -> f64 {
    let relay = Relay::start(tls);
    // Warm the relay up (allocator arenas, TLS, one room) before the baseline.
    let warm = relay.join_rooms(1, 8).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.rss_kib();
    let rooms = relay.join_rooms(connections / 8, 8).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay.rss_kib();
    drop(rooms);
    (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // LOAD_ONLY=throughput|latency|rss runs one part (latency needs the throughput part's rate).
    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name || (name == "throughput" && only == "latency");
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let threads = std::env::var("LOAD_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    runtime.block_on(async move {
        let (warmup, measure) =
            if quick { (Duration::from_millis(500), Duration::from_secs(2)) } else { (Duration::from_secs(1), Duration::from_secs(5)) };
        let pairs = 50;
        let window = 16;
        println!("relay_load: {pairs} pairs of connections (one room each), {window} messages in flight per connection, generator on {threads} thread(s)");
        println!("            message: ICE candidate signal, {} bytes of JSON", signal_text(&PeerId::parse("AAAAAAAAAAA").unwrap(), 0).len());
        println!();

        let mut rows = Vec::new();
        for tls in [false, true].into_iter().filter(|_| part("throughput")) {
            let relay = Relay::start(tls);
            let echo = saturate(echo_pairs(&relay, pairs).await, window, warmup, measure).await;
            drop(relay);
            let relay = Relay::start(tls);
            let forward = saturate(forwarding_pairs(&relay, pairs).await, window, warmup, measure).await;
            drop(relay);
            rows.push((tls, echo, forward));
        }
        if part("throughput") {
        println!("| transport | raw echo (msg/s) | forwarded signals (msg/s) | forwarding / echo |");
        println!("| --- | ---: | ---: | ---: |");
        for (tls, echo, forward) in &rows {
            let name = if *tls { "wss (TLS 1.3)" } else { "ws (plain)" };
            println!("| {name} | {echo:.0} | {forward:.0} | {:.2} |", forward / echo);
        }
        println!();
        }

        if part("latency") {
        let saturated = rows[0].2;
        println!(
            "| latency, plain, open loop | offered (msg/s) | achieved (msg/s) | samples | p50 (µs) | p99 (µs) | max (µs) | inside the relay: p50 / p99 | relay CPU (cores) |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for share in [0.01, 0.25, 0.5] {
            for path in [Path::Echo, Path::Forward] {
                let relay = Relay::start(false);
                let rate = saturated * share;
                let cpu_before = relay.cpu_time();
                let wall = Instant::now();
                let (mut lat, achieved) = latency_at(&relay, path, pairs, rate, warmup, measure).await;
                let cpu = (relay.cpu_time() - cpu_before).as_secs_f64() / wall.elapsed().as_secs_f64();
                let inside = match path {
                    Path::Forward => {
                        let buckets = relay.latency_histogram().await;
                        format!("≤ {} / ≤ {}", bucket_bound(&buckets, 0.5), bucket_bound(&buckets, 0.99))
                    }
                    Path::Echo => "—".to_owned(),
                };
                drop(relay);
                lat.sort_unstable();
                let name = if path == Path::Forward { "forwarded" } else { "raw echo" };
                println!(
                    "| {name}, {:.0}% of saturation | {rate:.0} | {achieved:.0} | {} | {} | {} | {} | {inside} | {cpu:.2} |",
                    share * 100.0,
                    lat.len(),
                    percentile(&lat, 50.0),
                    percentile(&lat, 99.0),
                    lat.last().copied().unwrap_or(0),
                );
            }
        }
        println!();

        }

        if part("rss") {
        let n = if quick { 400 } else { 2000 };
        let plain = idle_rss(false, n).await;
        let tls = idle_rss(true, n).await;
        println!("| idle joined connections ({n}, rooms of 8) | RSS per connection |");
        println!("| --- | ---: |");
        println!("| ws (plain) | {:.1} KiB |", plain / 1024.0);
        println!("| wss (TLS 1.3) | {:.1} KiB |", tls / 1024.0);
        }
    });
}
