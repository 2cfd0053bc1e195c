//! Interoperability with a browser: Debian's Chromium, headless, runs `tests/browser/peer.html`
//! (a participant written from docs/PROTOCOL.md alone), joins the room through the real relay
//! over WSS and calls a `confer` participant. Both must decode what the other sends, H.264 and
//! Opus, and read the other's stamp, tone and data-channel messages, and the browser receives
//! Confer's screen share on its own track.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use confer_media::synthetic::tone_hz;
use confer_tests::{Relay, SMALL, report_of, spawn_synthetic};

const PAGE: &str = include_str!("../browser/peer.html");

/// Serves the page at `/` and hands each body posted to `/result` to the returned channel.
fn serve_page() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || answer(stream, &tx));
        }
    });
    (port, rx)
}

/// One HTTP/1.1 request, answered and closed.
fn answer(stream: TcpStream, results: &mpsc::Sender<String>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let (status, body) = if request_line.starts_with("POST /result") {
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_ok() {
            let _ = results.send(String::from_utf8_lossy(&body).into_owned());
        }
        ("204 No Content", "")
    } else if request_line.starts_with("GET / ") || request_line.starts_with("GET /?") {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", "")
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The base64 SHA-256 of the relay certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` wants it: the browser's form of the link's pin.
fn spki_pin(certificate: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        certificate.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().expect("openssl runs");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Headless Chromium on `url`, with a profile of its own. Killed when dropped.
struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// What the page logged, read as it comes (a full pipe would stall the browser).
    page_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Says when the reader has seen the end of the pipe.
    log_done: mpsc::Receiver<()>,
}

impl Chromium {
    fn start(url: &str, pin: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let browser = std::env::var("CONFER_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let mut child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--enable-logging=stderr",
                "--v=0",
                &format!("--ignore-certificate-errors-spki-list={pin}"),
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts (scripts/test installs Debian's; or set CONFER_CHROMIUM)");
        let stderr = child.stderr.take().unwrap();
        let page_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (done, log_done) = mpsc::channel();
        let lines = std::sync::Arc::clone(&page_log);
        std::thread::spawn(move || {
            // Console lines look like `[…:INFO:CONSOLE:26] "[page] text", source: URL (26)`.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("\"[page] ") {
                    let text = rest.split_once("\", source:").map_or(rest, |(text, _)| text);
                    lines.lock().unwrap().push(text.to_owned());
                }
            }
            let _ = done.send(());
        });
        Self { child, _profile: profile, page_log, log_done }
    }

    /// Stops the browser; returns what its page logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children of the browser may hold the pipe a moment longer.
        let _ = self.log_done.recv_timeout(Duration::from_secs(3));
        self.page_log.lock().unwrap().join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn chromium_and_confer_see_and_hear_each_other() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, invite) = relay.host();
    let (port, results) = serve_page();
    let pin = spki_pin(&state.path().join("self-signed.crt"));

    let confer = spawn_synthetic(
        &host_link,
        "Confer",
        2,
        16.0,
        SMALL,
        &["--chat", "hello from Confer", "--chat-after", "5", "--share", "synthetic:41", "--share-fps", "5"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let url = format!(
        "http://127.0.0.1:{port}/?name=Chromium&pattern=7&seconds=12&mute_after=8&link={}",
        query_escape(&invite)
    );
    let chromium = Chromium::start(&url, &pin);
    let posted = results.recv_timeout(Duration::from_secs(40));
    let page_log = chromium.stop();
    let (report, log) = report_of(confer);
    eprintln!("--- Chromium's page:\n{page_log}\n--- Confer: {report}\n{log}");
    let posted = posted.expect("the page reported what it saw");
    let browser: serde_json::Value = serde_json::from_str(&posted).unwrap();
    eprintln!("--- Chromium saw: {browser:#}");

    // What Chromium got from Confer.
    assert_eq!(browser["errors"], serde_json::json!([]), "the page met errors");
    let peers = browser["peers"].as_object().unwrap();
    assert_eq!(peers.len(), 1, "Chromium sees one other participant");
    let confer_seen = peers.values().next().unwrap();
    eprintln!(
        "roles: Chromium {} the offer; Chromium → Confer video latency p50 {} ms",
        if confer_seen["offered"] == true { "made" } else { "answered" },
        report["peers"][0]["video_latency_ms"]["p50"]
    );
    assert_eq!(confer_seen["name"], "Confer");
    assert_eq!(confer_seen["received_video_codec"], "video/H264", "Chromium decodes Confer's H.264");
    assert_eq!(confer_seen["received_audio_codec"], "audio/opus", "Chromium decodes Confer's Opus");
    assert_eq!(confer_seen["pattern_id"], 2, "Chromium reads Confer's stamped video");
    assert!(confer_seen["stamped_frames"].as_u64().unwrap() >= 60, "Chromium saw too few of Confer's frames");
    assert_eq!(confer_seen["audio_tone_hz"], tone_hz(2), "Chromium hears Confer's tone");
    assert_eq!(
        confer_seen["chat"],
        serde_json::json!(["hello from Confer"]),
        "Confer's chat reaches Chromium"
    );
    assert_eq!(confer_seen["state"]["muted"], false, "Confer tells its state on the data channel");

    // Confer's screen share, on the third m-line (section 10), told apart by its stream id.
    let share = &confer_seen["share"];
    eprintln!("Confer → Chromium share: {share}");
    assert_eq!(share["pattern_id"], 41, "Chromium reads Confer's shared page");
    assert!(share["stamped_frames"].as_u64().unwrap() >= 20, "Chromium saw too few pictures of the share");

    // What Confer got from Chromium.
    let seen = &report["peers"][0];
    assert_eq!(seen["name"], "Chromium");
    assert_eq!(seen["pattern_id"], 7, "Confer reads Chromium's stamped canvas video");
    assert!(seen["video_frames_decoded"].as_u64().unwrap() >= 60, "Confer decoded too little of Chromium");
    assert_eq!(seen["audio_tone_hz"], tone_hz(7), "Confer hears Chromium's Web Audio tone");
    assert_eq!(seen["muted"], true, "Chromium's mute, said only on the data channel, reaches Confer");
    assert_eq!(seen["hand_raised"], true, "and so does its raised hand");
    let chats = report["chat"].as_array().unwrap();
    assert!(
        chats.iter().any(|c| c["text"] == "hello from Chromium"),
        "Chromium's chat reaches Confer: {chats:?}"
    );
}
