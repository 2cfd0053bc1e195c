//! Relayed throughput and CPU per relayed Mbit/s: the relay's built-in TURN server against
//! Debian's coturn, same machine, same client load, over UDP and over TCP.
//!
//! Each server runs as its own process (the real `confer-relay` binary, release; coturn's
//! `turnserver`), pinned to `TURN_CPUS` if set. The load is the `turn` crate's client (the one the
//! call engine's ICE agent uses): `CLIENTS` allocations, each sending 1,200-byte datagrams at a
//! fixed rate to a UDP echo on loopback, which sends each back through the relay. For each
//! offered rate: what came back, the loss, and the server's CPU time (from /proc) over the
//! measured seconds.
//!
//! ```sh
//! TURN_CPUS=0 taskset -c 1 cargo bench -p confer-relay --bench turn_relay
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confer_turn_stream::{RelayTransport, dial};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const CLIENTS: usize = 4;
const PACKET: usize = 1_200;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURED: Duration = Duration::from_secs(5);
/// Offered load, Mbit/s each way, summed over the clients.
const RATES: [u32; 4] = [20, 100, 400, 1_000];

/// A TURN server process.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    secret: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(program: &str) -> Command {
    match std::env::var("TURN_CPUS") {
        Ok(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &cpus, program]);
            cmd
        }
        Err(_) => Command::new(program),
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    fn confer() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = pinned(env!("CARGO_BIN_EXE_confer-relay"))
            .args(["--listen", "127.0.0.1:0", "--token-secret", SECRET_HEX, "--turn-listen", "127.0.0.1:0"])
            .args(["--turn-allow-peer", "127.0.0.0/8", "--turn-mbps", "10000"])
            .arg("--state-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn,confer_relay::stun_turn=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(local) = line.split("local=").nth(1) {
                    let _ = tx.send(local.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let local: SocketAddr =
            rx.recv_timeout(Duration::from_secs(10)).expect("relay started").parse().unwrap();
        let key = confer_relay::token::TokenKey::new(confer_proto::Fingerprint::parse(SECRET_HEX).unwrap().0);
        Self {
            name: "confer-relay",
            child,
            port: local.port(),
            secret: confer_relay::token::turn_secret(&key),
            _dir: dir,
        }
    }

    fn coturn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let relay_min = 40_000 + (std::process::id() % 10_000) as u16;
        let secret = "bench-secret".to_owned();
        let child = pinned("turnserver")
            .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--log-file=stdout"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_min}"))
            .arg(format!("--max-port={}", relay_min + 200))
            .args(["--use-auth-secret", "--realm=confer.test"])
            .arg(format!("--static-auth-secret={secret}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver (apt-get install coturn)");
        let server = Self { name: "coturn", child, port, secret, _dir: dir };
        // Ready when it answers a Binding request.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let binding = [0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut buf = [0; 256];
        for _ in 0..50 {
            let _ = probe.send_to(&binding, ("127.0.0.1", port));
            if probe.recv(&mut buf).is_ok() {
                return server;
            }
        }
        drop(server);
        panic!("coturn did not start");
    }

    /// CPU seconds the process has used (user and system).
    fn cpu_seconds(&self) -> f64 {
        // With taskset in front, the server is taskset's child after exec: the same pid.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted from after the command name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

/// One measured run: what the clients managed to send and what came back (Mbit/s), loss (%),
/// server CPU (% of a core).
async fn run(server: &Server, transport: RelayTransport, mbps: u32) -> (f64, f64, f64, f64) {
    let echo = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let echo_addr = echo.local_addr().unwrap();
    let echoing = {
        let echo = Arc::clone(&echo);
        tokio::spawn(async move {
            let mut buf = vec![0; 2_000];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        })
    };
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3_600;
    let username = format!("{expiry}:bench");
    let password = confer_relay::turn::password(&server.secret, &username);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    let deadline = Instant::now() + WARM_UP + MEASURED;
    // Packets per millisecond per client, carried as a fraction.
    let per_ms = f64::from(mbps) * 1e6 / 8.0 / PACKET as f64 / 1_000.0 / CLIENTS as f64;
    for _ in 0..CLIENTS {
        let conn: Arc<dyn Conn + Send + Sync> = match transport {
            RelayTransport::Udp => Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            _ => Arc::new(dial(transport, "127.0.0.1", server.port, Duration::from_secs(5)).await.unwrap()),
        };
        let client = Client::new(ClientConfig {
            stun_serv_addr: String::new(),
            turn_serv_addr: server_addr.to_string(),
            username: username.clone(),
            password: password.clone(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            conn,
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        let relayed: Arc<dyn Conn + Send + Sync> = Arc::new(client.allocate().await.unwrap());
        clients.push(client);
        let (to_send, sent) = (Arc::clone(&relayed), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let payload = vec![0x5a; PACKET];
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut owed = 0.0;
            while Instant::now() < deadline {
                tick.tick().await;
                owed += per_ms;
                while owed >= 1.0 {
                    owed -= 1.0;
                    if to_send.send_to(&payload, echo_addr).await.is_ok() {
                        sent.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
        let received = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0; 2_000];
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline.into(), relayed.recv_from(&mut buf)).await
            {
                received.fetch_add(n as u64, Relaxed);
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    let (bytes0, sent0, cpu0, t0) =
        (received.load(Relaxed), sent.load(Relaxed), server.cpu_seconds(), Instant::now());
    tokio::time::sleep(MEASURED).await;
    let (bytes1, sent1, cpu1) = (received.load(Relaxed), sent.load(Relaxed), server.cpu_seconds());
    let seconds = t0.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    for client in clients {
        let _ = client.close().await;
    }
    echoing.abort();
    let back = (bytes1 - bytes0) as f64 * 8.0 / seconds / 1e6;
    let sent_packets = (sent1 - sent0) as f64;
    let sent_mbps = sent_packets * PACKET as f64 * 8.0 / seconds / 1e6;
    let loss = if sent_packets > 0.0 {
        (1.0 - (bytes1 - bytes0) as f64 / PACKET as f64 / sent_packets).max(0.0)
    } else {
        1.0
    };
    (sent_mbps, back, loss * 100.0, (cpu1 - cpu0) / seconds * 100.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!(
        "| server | client transport | offered (Mbit/s) | sent (Mbit/s) | came back (Mbit/s) | loss | server CPU (% of a core) | CPU % per 100 Mbit/s relayed |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for transport in [RelayTransport::Udp, RelayTransport::Tcp] {
        for make in [Server::confer as fn() -> Server, Server::coturn] {
            let server = make();
            for mbps in RATES {
                let (sent, back, loss, cpu) = runtime.block_on(run(&server, transport, mbps));
                // Every byte that came back crossed the server twice (out to the echo, and back):
                // in and out each time.
                let relayed = 2.0 * back;
                let per_100 = if relayed > 0.0 { cpu / relayed * 100.0 } else { f64::NAN };
                println!(
                    "| {} | {transport} | {mbps} | {sent:.0} | {back:.0} | {loss:.1}% | {cpu:.0} | {per_100:.1} |",
                    server.name
                );
            }
        }
    }
}
