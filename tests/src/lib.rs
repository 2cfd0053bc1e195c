//! Support for the end-to-end tests: the real `confer-relay` and `confer` binaries (built by
//! cargo if they are not there yet), started on free loopback ports and stopped when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub mod browser;
pub mod desktop;
pub mod lab;
pub mod screen;

/// A workspace binary, brought up to date by cargo (once per test process) next to the running
/// test: `cargo test` builds test harnesses, not these programs. All the workspace's binaries
/// are built together, with the features `scripts/test` builds them with first
/// (`cargo build --workspace --bins --tests --features confer-desktop/custom-protocol`), so this
/// rebuilds nothing. In debug builds `--tests` is part of it: it turns on the dev-dependencies'
/// features, and without it cargo would build the binaries a second way (Tauri and webrtc
/// compiled again) and the test build after that a third.
pub fn binary(_package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        let mut build = without_cargo_test_env(Command::new(env!("CARGO")));
        // The desktop app with its page embedded (ui/dist must be built: scripts/test does).
        build.args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--features",
            "confer-desktop/custom-protocol",
        ]);
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        } else {
            build.arg("--tests");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the workspace's binaries failed");
        *built = true;
    }
    path
}

/// `command` (a cargo, or something that runs cargo) without the variables `cargo test` gives a
/// test: the package's CARGO_MANIFEST_DIR, CARGO_PKG_* and the like. Some build scripts (ring's)
/// track exactly those variables, so a cargo started with them would rebuild those crates and
/// everything above them.
pub fn without_cargo_test_env(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "OUT_DIR"
        {
            command.env_remove(&*name);
        }
    }
    command
}

/// The real relay, on a free loopback port, with a self-signed certificate. Killed when dropped.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The host its URL names: `localhost`, or its address in a lab.
    host: String,
    /// The SHA-256 of its certificate, as hex.
    pub fingerprint: String,
    /// Where it keeps its state (restarting with it keeps tokens and certificate valid).
    pub state_dir: PathBuf,
    /// The network namespace it runs in, if not the machine's own.
    netns: Option<String>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    /// Starts a relay keeping its state in `state_dir`, listening on `listen`.
    pub fn start(state_dir: &Path, listen: &str) -> Self {
        Self::start_with(state_dir, listen, &[])
    }

    /// [`Relay::start`] with extra flags.
    pub fn start_with(state_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::start_in(None, state_dir, listen, extra)
    }

    /// [`Relay::start_with`] inside a network namespace (then `listen` is the namespace's).
    pub fn start_in(netns: Option<&Netns>, state_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        // The built-in STUN/TURN server on a port of the system's choosing (two relays in
        // parallel tests must not both want 3478), unless the test says otherwise.
        let turn_flags = ["--turn-url", "--turn", "--embedded-turn", "--turn-listen"];
        let mut turn_listen = Vec::new();
        if !extra.iter().any(|flag| turn_flags.contains(flag)) {
            let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip);
            turn_listen = vec!["--turn-listen".to_owned(), format!("{ip}:0")];
        }
        let mut child = command_in(netns, &binary("confer-relay", "confer-relay"))
            .args(["--listen", listen])
            .args(&turn_listen)
            .args(extra)
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the relay starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("relay listening") {
                    let listen = line.split("listen=").nth(1).and_then(|v| v.split_whitespace().next());
                    let _ = tx.send(listen.unwrap_or_default().to_owned());
                }
            }
        });
        let listen = rx.recv_timeout(Duration::from_secs(20)).expect("the relay reports its address");
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        // A relay on loopback is reached as localhost; one on a lab's address by that address.
        let ip = listen.rsplit_once(':').map_or("", |(ip, _)| ip);
        let host = if ip.is_empty() || ip.starts_with("127.") || ip == "0.0.0.0" { "localhost" } else { ip };
        let pem = std::fs::read_to_string(state_dir.join("self-signed.crt")).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
        let fingerprint = Sha256::digest(&der).iter().map(|b| format!("{b:02x}")).collect();
        Self {
            child,
            port,
            host: host.to_owned(),
            fingerprint,
            state_dir: state_dir.to_owned(),
            netns: netns.map(|n| n.name.clone()),
        }
    }

    /// SIGKILL (a crash: no goodbye), and wait for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the exit.
    pub fn terminate(&mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let _ = self.child.wait();
    }

    /// `wss://localhost:PORT` (or the address it listens on, when that is not loopback).
    pub fn url(&self) -> String {
        format!("wss://{}:{}", self.host, self.port)
    }

    /// Opens a room with `confer host --json`; returns (host link, invite link).
    pub fn host(&self) -> (String, String) {
        let netns = self.netns.as_ref().map(|name| Netns { name: name.clone(), owned: false });
        let output = command_in(netns.as_ref(), &binary("confer-cli", "confer"))
            .args(["host", "--relay", &self.url(), "--fp", &self.fingerprint, "--json"])
            .output()
            .expect("confer runs");
        assert!(output.status.success(), "confer host: {}", String::from_utf8_lossy(&output.stderr));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (json["host_link"].as_str().unwrap().to_owned(), json["invite_link"].as_str().unwrap().to_owned())
    }
}

/// Runs `confer` to completion.
pub fn confer(args: &[&str]) -> Output {
    Command::new(binary("confer-cli", "confer")).args(args).output().expect("confer runs")
}

/// Starts `confer` in the background (stdout and stderr captured).
pub fn spawn_confer(args: &[&str]) -> Child {
    spawn_confer_in(None, args)
}

/// [`spawn_confer`] inside a network namespace.
pub fn spawn_confer_in(netns: Option<&Netns>, args: &[&str]) -> Child {
    command_in(netns, &binary("confer-cli", "confer"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("confer starts")
}

/// A headless participant with synthetic media: `pattern` marks its video and picks its tone; it
/// leaves after `seconds` and prints its JSON report.
pub fn spawn_synthetic(
    link: &str,
    name: &str,
    pattern: u32,
    seconds: f64,
    size_and_rate: (&str, u32),
    extra: &[&str],
) -> Child {
    spawn_synthetic_in(None, link, name, pattern, seconds, size_and_rate, extra)
}

/// [`spawn_synthetic`] inside a network namespace.
pub fn spawn_synthetic_in(
    netns: Option<&Netns>,
    link: &str,
    name: &str,
    pattern: u32,
    seconds: f64,
    (size, fps): (&str, u32),
    extra: &[&str],
) -> Child {
    let (pattern, seconds, fps) = (pattern.to_string(), seconds.to_string(), fps.to_string());
    let mut args = vec![
        "join",
        link,
        "--name",
        name,
        "--synthetic",
        "--pattern-id",
        &pattern,
        "--duration",
        &seconds,
        "--report",
        "json",
        "--size",
        size,
        "--fps",
        &fps,
    ];
    args.extend_from_slice(extra);
    spawn_confer_in(netns, &args)
}

/// `program`, to run in `netns` if one is given.
fn command_in(netns: Option<&Netns>, program: &Path) -> Command {
    match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &netns.name]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A network namespace of its own, with loopback up: a machine whose interfaces a test may
/// change. Deleted when dropped (stop the processes in it first).
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns`).
    pub name: String,
    owned: bool,
}

impl Netns {
    /// Makes `confer-TAG-PID`. Namespaces of this tag left by runs that were killed (their
    /// process is gone) are deleted first.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("confer-{tag}-");
        let listed =
            Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&listed).lines() {
            let Some(old) = line.split_whitespace().next() else { continue };
            let gone = old
                .strip_prefix(&prefix)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone || old == format!("{prefix}{}", std::process::id()) {
                let _ = Command::new("ip").args(["netns", "delete", old]).stderr(Stdio::null()).status();
            }
        }
        let name = format!("{prefix}{}", std::process::id());
        let netns = Self { name, owned: true };
        run("ip", &["netns", "add", &netns.name]);
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The size and rate four participants can encode at once on two cores in a debug build.
pub const SMALL: (&str, u32) = ("320x180", 15);

/// A finished participant's report (stdout's JSON) and its log (stderr).
pub fn report_of(child: Child) -> (serde_json::Value, String) {
    let (report, log, _) = report_and_code_of(child);
    (report, log)
}

/// [`report_of`], with the process's exit code (-1 if a signal ended it).
pub fn report_and_code_of(child: Child) -> (serde_json::Value, String, i32) {
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("no JSON report ({e}); log:\n{log}\nstdout: {}", String::from_utf8_lossy(&output.stdout))
    });
    (report, log, output.status.code().unwrap_or(-1))
}

/// CPU seconds (user + system) process `pid` has used so far (Linux: /proc).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A free TCP port on loopback (bound, then released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free UDP port on loopback (bound, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real TURN server (Debian's coturn) on loopback with the TURN REST shared secret. Killed when
/// dropped.
#[derive(Debug)]
pub struct Turn {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its listening port.
    pub port: u16,
    /// The shared secret.
    pub secret: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Turn {
    /// Starts coturn; panics with a clear message if it is not installed.
    pub fn start() -> Self {
        let port = free_udp_port();
        Self::launch(None, "127.0.0.1", port, format!("turn-secret-{port}"), None)
    }

    /// Starts coturn in `netns` on `ip` (port 3478), with the shared secret `secret`. Peers on
    /// loopback are not relayed to.
    pub fn start_in(netns: &Netns, ip: &str, secret: &str) -> Self {
        Self::launch(Some(netns), ip, 3478, secret.to_owned(), None)
    }

    /// Starts coturn with TURN over TLS on `tls_port` as well, serving `cert` (PEM) with `key`,
    /// and the shared secret `secret`.
    pub fn start_tls(tls_port: u16, secret: &str, cert: &Path, key: &Path) -> Self {
        Self::launch(None, "127.0.0.1", free_udp_port(), secret.to_owned(), Some((tls_port, cert, key)))
    }

    fn launch(
        netns: Option<&Netns>,
        ip: &str,
        port: u16,
        secret: String,
        tls: Option<(u16, &Path, &Path)>,
    ) -> Self {
        let relay_min = 40_000 + (port % 20_000);
        let dir = tempfile::tempdir().unwrap();
        let mut command = command_in(netns, Path::new("turnserver"));
        command
            .arg(format!("--pidfile={}", dir.path().join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .args(["-n", "--no-cli", "--no-dtls", "--simple-log", "--log-file=stdout"]);
        match tls {
            None => {
                command.arg("--no-tls");
            }
            Some((tls_port, cert, key)) => {
                command
                    .arg(format!("--tls-listening-port={tls_port}"))
                    .arg(format!("--cert={}", cert.display()))
                    .arg(format!("--pkey={}", key.display()));
            }
        }
        let child = command
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .args(ip.starts_with("127.").then_some("--allow-loopback-peers"))
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_min}"))
            .arg(format!("--max-port={}", relay_min + 200))
            .args(["--use-auth-secret", "--realm=confer.test"])
            .arg(format!("--static-auth-secret={secret}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "coturn's turnserver is not installed (scripts/test installs it: apt-get install coturn)",
            );
        let mut turn = Self { child, _dir: dir, port, secret };
        let stdout = turn.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Total General servers") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("coturn did not start listening");
        turn
    }
}

/// `confer check LINK --json` (in `netns`, if given): its exit code and report.
pub fn check_in(netns: Option<&Netns>, link: &str) -> (i32, serde_json::Value) {
    let output = command_in(netns, &binary("confer-cli", "confer"))
        .args(["check", link, "--json"])
        .output()
        .expect("confer runs");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap_or(-1), report)
}

/// A call between Ann and Bob (in `hosts`' namespaces, each with `extra` flags) through `relay`,
/// which connects nowhere: each is told, within 15 s of starting, of `cause` in words containing
/// `words`, and exits 4.
pub fn assert_told_within_15_s(
    relay: &Relay,
    hosts: [Option<&Netns>; 2],
    extra: &[&str],
    cause: &str,
    words: &str,
) {
    let (host_link, invite) = relay.host();
    let started = unix_ms();
    let ann = spawn_synthetic_in(hosts[0], &host_link, "Ann", 2, 14.0, SMALL, extra);
    let bob = spawn_synthetic_in(hosts[1], &invite, "Bob", 3, 14.0, SMALL, extra);
    // Both reports first: an assertion about one must not leave the other running.
    let reports = [("Ann", report_and_code_of(ann)), ("Bob", report_and_code_of(bob))];
    for (me, (report, log, code)) in reports {
        eprintln!("--- {me}: {report}\n{log}");
        let told: Vec<&serde_json::Value> = report["no_path_yet"]
            .as_array()
            .unwrap()
            .iter()
            .chain(report["unreachable"].as_array().unwrap())
            .filter(|t| t["cause"] == cause)
            .collect();
        let first = told
            .iter()
            .min_by_key(|t| t["at_unix_ms"].as_u64())
            .unwrap_or_else(|| panic!("{me} was never told {cause}: {report}"));
        assert!(first["detail"].as_str().unwrap().contains(words), "{me}: {first}");
        let after = first["at_unix_ms"].as_u64().unwrap() - started;
        eprintln!("{me} was told {cause} after {after} ms");
        assert!(after < 15_000, "{me} was told after {after} ms");
        assert_eq!(code, 4, "{me}");
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// What the benchmarks read of a participant's view of its one peer, over runs.
#[derive(Debug, Default)]
pub struct SeenFigures {
    /// Join to first frame, ms, per participant-run that saw one.
    pub first_frame_ms: Vec<f64>,
    /// Glass-to-glass video latency p50 per participant-run, ms.
    pub video_p50: Vec<f64>,
    /// Glass-to-glass video latency p95 per participant-run, ms.
    pub video_p95: Vec<f64>,
}

impl SeenFigures {
    /// Waits for `child`'s report and takes its first peer's figures; returns that peer's part
    /// of the report, or `None` (said on stderr, with the log) if it never saw a frame of it.
    pub fn take(&mut self, child: Child) -> Option<serde_json::Value> {
        let (report, log) = report_of(child);
        let peer = &report["peers"][0];
        let Some(first) = peer["first_frame_ms"].as_f64() else {
            eprintln!("no frame: {report}\n{log}");
            return None;
        };
        self.first_frame_ms.push(first);
        self.video_p50.extend(peer["video_latency_ms"]["p50"].as_f64());
        self.video_p95.extend(peer["video_latency_ms"]["p95"].as_f64());
        Some(peer.clone())
    }
}

/// What Debian's ffprobe (an independent player) reads in a media file: the container's
/// duration and name, and each stream's index, type, codec, size, sample rate and title.
pub fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-show_entries"])
        .arg("format=duration,format_name:stream=index,codec_type,codec_name,width,height,sample_rate:stream_tags=title")
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg package) runs");
    assert!(out.status.success(), "ffprobe refused the file: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What ffmpeg says when it decodes every stream of a media file (nothing, for a good file).
/// Decoded pictures keep the file's own time base (`-enc_time_base -1`): by default ffmpeg
/// re-times them on a guessed constant frame rate, and two pictures captured a millisecond apart
/// (a camera thread catching up) would then land on one tick and be reported, though nothing is
/// wrong with the file or its decoding.
pub fn ffmpeg_complaints(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0", "-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() { said } else { format!("ffmpeg failed ({}): {said}", out.status) }
}

/// The titles of a probed file's streams, sorted.
pub fn stream_titles(probe: &serde_json::Value) -> Vec<String> {
    let mut titles: Vec<String> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tags"]["title"].as_str().unwrap_or("").to_owned())
        .collect();
    titles.sort_unstable();
    titles
}

/// Calls run one at a time within a test binary: each is several processes encoding video on a
/// 2-core machine. Hold the guard for the test's length.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_CALL_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a participant's report says of the participant named `name`.
pub fn peer<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the report: {report}"))
}

/// A real Redis server (Debian's `redis-server`) on a Unix socket of its own, nothing persisted.
/// Killed when dropped.
#[derive(Debug)]
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
    /// Starts redis-server; panics with a clear message if it is not installed.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs Debian's redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not open its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir }
    }

    /// The URL relays are given (`--redis-url`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }
}

/// A real load balancer (Debian's HAProxy) running `deploy/haproxy.cfg`, on a free loopback
/// port: TCP passthrough (the relays' TLS untouched), round-robin over `servers`, each
/// health-checked on `/healthz/ready` every 300 ms; a connection refused by one goes to another.
/// Killed when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Where clients connect.
    pub port: u16,
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoadBalancer {
    /// Starts HAProxy in front of these loopback ports; panics with a clear message if it is
    /// not installed.
    pub fn start(port: u16, servers: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The deployment example as shipped, with its bind address and servers made local.
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy.cfg");
        let shipped = std::fs::read_to_string(example).unwrap();
        assert!(shipped.contains("\n  bind :443\n"), "deploy/haproxy.cfg binds :443");
        let mut config: String = shipped
            .lines()
            .filter(|line| !line.starts_with("  server relay"))
            .map(|line| {
                if line == "  bind :443" { format!("  bind 127.0.0.1:{port}\n") } else { format!("{line}\n") }
            })
            .collect();
        for (n, server) in servers.iter().enumerate() {
            config.push_str(&format!("  server relay{n} 127.0.0.1:{server}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy runs (scripts/test installs Debian's haproxy)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "haproxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, _dir: dir, port }
    }
}
