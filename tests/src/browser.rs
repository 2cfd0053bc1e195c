//! A browser participant: Debian's Chromium, headless, on `tests/browser/peer.html` (a participant
//! written from docs/PROTOCOL.md alone), served from a tiny HTTP server that also takes the
//! page's report.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PAGE: &str = include_str!("../browser/peer.html");

/// Serves the page at `/` and hands each body posted to `/result` to the returned channel.
pub fn serve_page() -> (u16, mpsc::Receiver<String>) {
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
pub fn spki_pin(certificate: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        certificate.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().expect("openssl runs");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Headless Chromium on `url`, with a profile of its own. Killed when dropped.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// What the page logged, read as it comes (a full pipe would stall the browser).
    page_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Says when the reader has seen the end of the pipe.
    log_done: mpsc::Receiver<()>,
}

impl Chromium {
    /// Starts it; `extra` are more command-line switches.
    pub fn start(url: &str, pin: &str, extra: &[&str]) -> Self {
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
            ])
            .args(extra)
            .arg(url)
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

    /// The browser's process (its renderers, GPU and utility processes are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the browser; returns what its page logged.
    pub fn stop(mut self) -> String {
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

pub fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
