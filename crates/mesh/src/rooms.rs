//! "New meeting": asks a relay to open a room (`POST /rooms`, docs/PROTOCOL.md section 7) and
//! returns its host and guest invites. One small HTTP/1.1 exchange over the same TLS as
//! signaling (pinned, or the web's roots); the answer is untrusted input and checked.

use std::time::Duration;

use confer_proto::{Fingerprint, InviteLink, RoomId};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The largest answer accepted.
const MAX_RESPONSE: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a room could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The relay URL is not `wss://host[:port]` or `ws://host[:port]`.
    #[error("not a relay URL (wss://host:port): {0}")]
    BadUrl(String),
    /// No connection (network, TLS, timeout).
    #[error("the relay at {relay} is unreachable: {reason}")]
    Unreachable {
        /// The relay's origin.
        relay: String,
        /// What failed.
        reason: String,
    },
    /// The relay said no (an API key is needed, it is busy, ...).
    #[error("the relay refused to create a room: HTTP {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// What it said.
        body: String,
    },
    /// A path with characters no request path of the protocol has (refused before sending).
    #[error("not a request path: {0:?}")]
    BadPath(String),
    /// The answer was not what the protocol specifies.
    #[error("the relay's answer is not a room: {0}")]
    BadAnswer(String),
}

/// A new room's invites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRoom {
    /// The room.
    pub room: RoomId,
    /// The host's invite (keep it private).
    pub host: InviteLink,
    /// The invite for everyone else.
    pub guest: InviteLink,
}

/// Opens a room on the relay at `relay` (`wss://host:port`), trusting its certificate by `pin`
/// if given; `api_key` if the relay needs one.
pub async fn create_room(
    relay: &str,
    pin: Option<Fingerprint>,
    api_key: Option<&str>,
    waiting_room: bool,
) -> Result<CreatedRoom, RoomError> {
    let body = if waiting_room { r#"{"waiting_room":true}"# } else { "" };
    let (status, body) = exchange(relay, pin, "POST", "/rooms", api_key, body).await?;
    if status != 201 {
        return Err(RoomError::Refused { status, body: body.chars().take(300).collect() });
    }
    parse_created(&body)
}

/// Where a relay URL points.
struct Target<'a> {
    tls: bool,
    host: &'a str,
    port: u16,
    /// `host:port` as written, for the Host header.
    authority: &'a str,
}

/// `wss://host[:port]` or `ws://host[:port]`, checked.
fn target(relay: &str) -> Result<Target<'_>, RoomError> {
    let (tls, rest) = match (relay.strip_prefix("wss://"), relay.strip_prefix("ws://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err(RoomError::BadUrl(relay.to_owned())),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(RoomError::BadUrl(relay.to_owned()));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| RoomError::BadUrl(relay.to_owned()))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse::<u16>().map_err(|_| RoomError::BadUrl(relay.to_owned()))?,
            None if after.is_empty() => default_port,
            None => return Err(RoomError::BadUrl(relay.to_owned())),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => {
                (host, port.parse::<u16>().map_err(|_| RoomError::BadUrl(relay.to_owned()))?)
            }
            None => (authority, default_port),
        }
    };
    Ok(Target { tls, host, port, authority })
}

/// A byte stream to the relay, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `target`, over TLS pinned to `pin` (or the web's roots) for `wss`. With
/// `send_buffer`, the socket's send buffer is that small, so a writer is held to the pace the
/// network takes the bytes at (the upload measurement).
async fn connect(
    relay: &str,
    target: &Target<'_>,
    pin: Option<Fingerprint>,
    send_buffer: Option<u32>,
) -> Result<Box<dyn Io>, RoomError> {
    let unreachable = |reason: String| RoomError::Unreachable { relay: relay.to_owned(), reason };
    let tcp = match send_buffer {
        None => TcpStream::connect((target.host, target.port)).await,
        Some(size) => {
            let addresses = tokio::net::lookup_host((target.host, target.port))
                .await
                .map_err(|e| unreachable(format!("network: {e}")))?;
            // Each address in turn, as `TcpStream::connect` does.
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
            let mut connected = None;
            for address in addresses {
                let socket = if address.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                };
                let attempt = match socket.and_then(|s| s.set_send_buffer_size(size).map(|()| s)) {
                    Ok(socket) => socket.connect(address).await,
                    Err(err) => Err(err),
                };
                match attempt {
                    Ok(stream) => {
                        connected = Some(stream);
                        break;
                    }
                    Err(err) => last = err,
                }
            }
            connected.ok_or(last)
        }
    }
    .map_err(|e| unreachable(format!("network: {e}")))?;
    if !target.tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(target.host.to_owned())
        .map_err(|_| RoomError::BadUrl(relay.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(crate::tls::client_config(pin));
    let stream = connector.connect(name, tcp).await.map_err(|e| unreachable(format!("TLS: {e}")))?;
    Ok(Box::new(stream))
}

/// Only what the protocol's paths are made of: nothing here can end the request line early.
fn check_path(path: &str) -> Result<(), RoomError> {
    if path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)) {
        Ok(())
    } else {
        Err(RoomError::BadPath(path.to_owned()))
    }
}

/// One HTTP/1.1 request to the relay at `relay` (`wss://host:port` or `ws://host:port`), over
/// TLS pinned to `pin` (or the web's roots) for `wss`: its status and body.
pub(crate) async fn exchange(
    relay: &str,
    pin: Option<Fingerprint>,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    body: &str,
) -> Result<(u16, String), RoomError> {
    let target = target(relay)?;
    check_path(path)?;
    let unreachable = |reason: String| RoomError::Unreachable { relay: relay.to_owned(), reason };
    let authority = target.authority;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if !body.is_empty() {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    } else if method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    if let Some(key) = api_key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);

    let exchange = async {
        let mut stream = connect(relay, &target, pin, None).await?;
        stream.write_all(request.as_bytes()).await.map_err(|e| unreachable(format!("network: {e}")))?;
        read_response(stream).await.map_err(unreachable)
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| unreachable("no answer within 10 s".into()))?
}

/// Sends the relay at `relay` a chunked `POST` of throwaway bytes to `path` for `duration` (or
/// until `max_bytes`), as fast as the network takes them, and returns its answer.
pub(crate) async fn upload(
    relay: &str,
    pin: Option<Fingerprint>,
    path: &str,
    duration: Duration,
    max_bytes: usize,
) -> Result<(u16, String), RoomError> {
    /// Small enough that what is written is what the network has taken, give or take this (Linux
    /// doubles it for its bookkeeping; TLS may hold one more record).
    const SEND_BUFFER: u32 = 64 * 1024;
    /// Small, so the last chunk, always written whole, ends the measurement soon after its time.
    const CHUNK: usize = 4 * 1024;
    let target = target(relay)?;
    check_path(path)?;
    let unreachable = |reason: String| RoomError::Unreachable { relay: relay.to_owned(), reason };
    let authority = target.authority;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let upload = async {
        let mut stream = connect(relay, &target, pin, Some(SEND_BUFFER)).await?;
        let network = |e: std::io::Error| unreachable(format!("network: {e}"));
        stream.write_all(head.as_bytes()).await.map_err(network)?;
        let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
        // Bytes that no link compresses (TLS does not, but a middlebox might).
        let mut state = 0x9E37_79B9_u32;
        chunk.extend((0..CHUNK).map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        }));
        chunk.extend_from_slice(b"\r\n");
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        let mut written = Ok(());
        // The time is looked at between chunks only: a chunk cut off would break the framing.
        while started.elapsed() < duration && sent < max_bytes {
            written = stream.write_all(&chunk).await;
            if written.is_err() {
                break;
            }
            sent += CHUNK;
        }
        if written.is_ok() {
            written = stream.write_all(b"0\r\n\r\n").await;
        }
        if written.is_ok() {
            written = stream.flush().await;
        }
        // A relay that refuses (an invite it does not take, a rate limit, an older relay without
        // this path) answers before reading the body and closes: its answer is what counts.
        match (written, read_response(stream).await) {
            (_, Ok(answer)) => Ok(answer),
            (Err(err), Err(_)) => Err(network(err)),
            (Ok(()), Err(err)) => Err(unreachable(err)),
        }
    };
    tokio::time::timeout(duration + TIMEOUT, upload)
        .await
        .map_err(|_| unreachable("no answer to the upload within 10 s of its end".into()))?
}

/// Reads an HTTP/1.1 answer to its end (the connection closes after it).
async fn read_response<S: AsyncRead + Unpin>(mut stream: S) -> Result<(u16, String), String> {
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() > MAX_RESPONSE {
                    return Err("the answer is too large".into());
                }
            }
            // A peer that closes without a TLS close_notify after a complete answer is fine.
            Err(_) if !response.is_empty() => break,
            Err(e) => return Err(format!("network: {e}")),
        }
    }
    parse_response(&String::from_utf8_lossy(&response))
}

/// Status and body of an HTTP/1.1 response (Content-Length or chunked).
fn parse_response(text: &str) -> Result<(u16, String), String> {
    let (head, body) = text.split_once("\r\n\r\n").ok_or("the answer is not HTTP")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 ")))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("the answer has no HTTP status")?;
    let chunked = lines.any(|line| {
        line.to_ascii_lowercase().starts_with("transfer-encoding:")
            && line.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("a chunk is cut off")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok((status, out));
        }
        let data = after.get(..size).ok_or("a chunk is cut off")?;
        out.push_str(data);
        rest = after.get(size..).and_then(|r| r.strip_prefix("\r\n")).ok_or("a chunk is cut off")?;
    }
}

fn parse_created(body: &str) -> Result<CreatedRoom, RoomError> {
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| RoomError::BadAnswer(e.to_string()))?;
    let link = |role: &str| -> Result<InviteLink, RoomError> {
        let text =
            json[role]["app"].as_str().ok_or_else(|| RoomError::BadAnswer(format!("no {role} link")))?;
        InviteLink::parse(text).map_err(|e| RoomError::BadAnswer(format!("{role} link: {e}")))
    };
    let (host, guest) = (link("host")?, link("guest")?);
    if host.room != guest.room {
        return Err(RoomError::BadAnswer("the two links name different rooms".into()));
    }
    Ok(CreatedRoom { room: host.room.clone(), host, guest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_length_or_chunks_are_read_and_garbage_is_refused() {
        assert_eq!(
            parse_response("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"),
            Ok((201, "{}".into()))
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok((200, "abcde".into())));
        assert!(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err());
        assert!(parse_response("SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response("").is_err());
        assert!(matches!(parse_created("{\"host\":{}}"), Err(RoomError::BadAnswer(_))));
        assert!(matches!(parse_created("[1,2"), Err(RoomError::BadAnswer(_))));
    }

    /// A server on loopback that reads a request head, then runs `answer` on the stream.
    async fn server<F, Fut>(answer: F) -> String
    where
        F: FnOnce(TcpStream, String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                head.push(byte[0]);
            }
            answer(stream, String::from_utf8_lossy(&head).into_owned()).await;
        });
        format!("ws://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn an_upload_is_chunked_whole_and_ends_on_time() {
        let relay = server(|mut stream, head| async move {
            assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
            // Reads chunks to the last one: a chunk cut off would leave this waiting.
            let mut body = 0usize;
            loop {
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while !line.ends_with(b"\r\n") {
                    stream.read_exact(&mut byte).await.unwrap();
                    line.push(byte[0]);
                }
                let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
                let mut data = vec![0u8; size + 2];
                stream.read_exact(&mut data).await.unwrap();
                assert_eq!(&data[size..], b"\r\n");
                if size == 0 {
                    break;
                }
                body += size;
                // A slow network: about 2 MB/s.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let answer = format!("{{\"bytes\":{body}}}");
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
            stream.write_all(response.as_bytes()).await.unwrap();
        })
        .await;
        let started = std::time::Instant::now();
        let (status, body) =
            upload(&relay, None, "/check/r/t/upload", Duration::from_millis(500), 1 << 30).await.unwrap();
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        let bytes: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(bytes["bytes"].as_u64().unwrap() > 0, "{body}");
        // The send buffer's worth after the time is up, not a relay's deadline of seconds.
        assert!(took < Duration::from_millis(1_500), "the upload took {took:?}");
    }

    #[tokio::test]
    async fn a_refusal_before_the_body_is_read_is_the_answer() {
        let relay = server(|mut stream, _| async move {
            let answer = r#"{"code":"rate_limited","message":"too many network checks"}"#;
            let response =
                format!("HTTP/1.1 429 Too Many Requests\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
            stream.write_all(response.as_bytes()).await.unwrap();
            // Closed without reading the body, as hyper does.
            drop(stream);
        })
        .await;
        let (status, body) =
            upload(&relay, None, "/check/r/t/upload", Duration::from_secs(2), 1 << 30).await.unwrap();
        assert_eq!(status, 429);
        assert!(body.contains("rate_limited"), "{body}");
    }
}
