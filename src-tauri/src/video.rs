//! The frame socket: decoded video to the page without JSON and without the UI thread.
//!
//! Tauri's IPC on Linux hands every reply to the webview in small pieces on the GTK main thread
//! (about 70 MB/s of RGBA measured), too little for eight tiles. So frames go over a WebSocket on
//! loopback that only this app's page may open: it listens on `127.0.0.1` at a port the system
//! picks, refuses a handshake without the session's random token (compared in constant time) or
//! from an origin other than the app's own, and serves one page at a time (a reload replaces
//! the old connection).
//!
//! Each frame is one binary message, I420 as decoded (2.67x fewer bytes than RGBA; the page's
//! WebGL shader converts): the header below, the tile id, then the Y, U and V planes.
//!
//! ```text
//! offset size
//!  0     4   magic "CFV1"
//!  4     2   width  (u16, little-endian)
//!  6     2   height (u16)
//!  8     8   capture time, Unix microseconds (u64; 0 if unknown)
//! 16     4   sequence number, per tile (u32)
//! 20     1   tile id length N
//! 21     3   zero
//! 24     N   tile id (UTF-8: a participant id, or "self")
//! 24+N       Y (width*height), U and V (each (width/2)*(height/2))
//! ```
//!
//! The newest frame per tile wins: at most [`MAX_IN_FLIGHT`] frames are on their way to the page
//! at once (the page acknowledges each one it has taken with a text message `"1"`); the rest
//! wait here, where a tile's newer frame replaces its older one. A slow page sees a lower frame
//! rate, never a growing delay.
//!
//! The page also says how large it draws each tile, in device pixels, as a text message
//! `{"sizes":{"<tile>":[width,height],…}}` (all tiles at once, whenever the layout changes). A
//! frame at least a quarter larger than its tile is scaled down to fit inside it before it is sent: eight
//! 640x360 participants in a 1200x760 window need a quarter of the bytes, and the page's
//! uploads and WebKit's network process shrink with them. `"hidden":true` in the same message
//! says the window is hidden (minimised): nothing is drawn. The call hands both on to the
//! others ([`FrameServer::views`]), who then send each tile only the layer it needs, and no
//! video at all while the window is hidden.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use confer_media::I420Frame;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The header's length.
pub const HEADER: usize = 24;
/// The header's first bytes.
pub const MAGIC: &[u8; 4] = b"CFV1";

/// A frame waiting to go to the page.
struct Pending {
    frame: Arc<I420Frame>,
    captured_us: u64,
    seq: u32,
    /// When the tile started waiting (a counter): kept when a newer frame replaces the waiting
    /// one, so the tile that has waited longest goes first and none starves.
    waiting_since: u64,
}

struct Shared {
    /// The newest frame of each tile not yet sent.
    pending: Mutex<HashMap<String, Pending>>,
    /// Sequence numbers per tile.
    seqs: Mutex<HashMap<String, u32>>,
    /// Bumped when something is pending or a new page connected; every connection watches it.
    wake: watch::Sender<u64>,
    /// The live connection's number; a newer one ends the older.
    generation: AtomicU32,
    /// Counts tiles starting to wait.
    queued: std::sync::atomic::AtomicU64,
    /// How large the page draws each tile (device pixels), as it last said.
    sizes: Mutex<HashMap<String, (usize, usize)>>,
    /// The same, and whether the window is hidden, for the call.
    views: watch::Sender<PageView>,
}

/// What the page shows, as it last said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageView {
    /// Each tile's size, device pixels.
    pub sizes: HashMap<String, (usize, usize)>,
    /// The window is hidden: nothing is drawn.
    pub hidden: bool,
}

/// The frame socket: publish frames to it, tell the page its URL.
#[derive(Clone)]
pub struct FrameServer {
    addr: SocketAddr,
    token: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FrameServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FrameServer {
    /// Listens on loopback; `origins` are the page origins allowed to connect.
    pub async fn start(origins: Vec<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let token = random_token();
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            seqs: Mutex::default(),
            wake: watch::Sender::new(0),
            generation: AtomicU32::new(0),
            queued: std::sync::atomic::AtomicU64::new(0),
            sizes: Mutex::default(),
            views: watch::Sender::new(PageView::default()),
        });
        let server = Self { addr, token: token.clone(), shared: Arc::clone(&shared) };
        let origins = Arc::new(origins);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (shared, origins, token) = (Arc::clone(&shared), Arc::clone(&origins), token.clone());
                tokio::spawn(async move {
                    if let Err(err) = serve(stream, &shared, &origins, &token).await {
                        tracing::debug!("frame socket connection ended: {err}");
                    }
                });
            }
        });
        Ok(server)
    }

    /// What the page shows (each tile's size, whether the window is hidden), as it changes.
    pub fn views(&self) -> watch::Receiver<PageView> {
        self.shared.views.subscribe()
    }

    /// The URL the page opens (with the token).
    pub fn url(&self) -> String {
        format!("ws://{}/?token={}", self.addr, self.token)
    }

    /// Hands a frame of `tile` to the page (replacing one of that tile still waiting).
    pub fn publish(&self, tile: &str, frame: Arc<I420Frame>, captured_us: u64) {
        if frame.width() > usize::from(u16::MAX) || frame.height() > usize::from(u16::MAX) || tile.len() > 255
        {
            return;
        }
        let seq = {
            let mut seqs = self.shared.seqs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seq = seqs.entry(tile.to_owned()).or_insert(0);
            *seq = seq.wrapping_add(1);
            *seq
        };
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let waiting_since = pending
                .get(tile)
                .map_or_else(|| self.shared.queued.fetch_add(1, Ordering::Relaxed), |p| p.waiting_since);
            pending.insert(tile.to_owned(), Pending { frame, captured_us, seq, waiting_since });
        }
        self.shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Forgets a tile (its participant left): a frame of it still waiting is dropped.
    pub fn forget(&self, tile: &str) {
        self.shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tile);
        self.shared.seqs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tile);
    }
}

fn random_token() -> String {
    use rand::Rng as _;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a handshake may become the page's frame socket.
fn admit(request: &Request, origins: &[String], token: &str) -> Result<(), (StatusCode, &'static str)> {
    let origin = request.headers().get("origin").and_then(|o| o.to_str().ok());
    if !origin.is_some_and(|o| origins.iter().any(|allowed| allowed == o)) {
        return Err((StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let presented = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), token.as_bytes())) {
        return Err((StatusCode::UNAUTHORIZED, "bad token"));
    }
    Ok(())
}

async fn serve(stream: TcpStream, shared: &Shared, origins: &[String], token: &str) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    #[expect(clippy::result_large_err, reason = "the callback's signature is tungstenite's")]
    let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        match admit(request, origins, token) {
            Ok(()) => Ok(response),
            Err((status, why)) => {
                let mut refusal = ErrorResponse::new(Some(why.to_owned()));
                *refusal.status_mut() = status;
                Err(refusal)
            }
        }
    };
    let socket = tokio_tungstenite::accept_hdr_async(stream, check).await.map_err(|e| e.to_string())?;
    let generation = shared.generation.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
    // A new page says its own tile sizes; the old page's are not its.
    shared.sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    let (mut sink, mut incoming) = socket.split();
    let mut wake = shared.wake.subscribe();
    // Wakes this page (to send what is waiting) and an older one (to step down).
    shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    // Frames sent and not yet acknowledged by the page. Past MAX_IN_FLIGHT nothing more is sent
    // until acknowledgements come back: frames wait here, where a newer one replaces an older,
    // instead of queueing in the socket buffers and WebKit's network process (seen: 2 s of delay
    // with 8 tiles of 640x360 at 30 fps when nothing held them back).
    let mut in_flight = 0usize;
    loop {
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return Ok(()) },
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ok(()),
                Some(Ok(Message::Text(text))) => match page_message(&text) {
                    PageMessage::Taken(n) => in_flight = in_flight.saturating_sub(n),
                    PageMessage::Sizes(sizes, hidden) => {
                        shared.views.send_if_modified(|view| {
                            let changed = view.sizes != sizes || view.hidden != hidden;
                            *view = PageView { sizes: sizes.clone(), hidden };
                            changed
                        });
                        *shared.sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sizes;
                    }
                    PageMessage::Unknown => tracing::debug!("frame socket: a message from the page that is not one"),
                },
                Some(Ok(_)) => {}
            },
        }
        if shared.generation.load(Ordering::SeqCst) != generation {
            let _ = sink.close().await;
            return Ok(());
        }
        if in_flight >= MAX_IN_FLIGHT {
            continue;
        }
        let batch: Vec<(String, Pending)> = {
            let mut pending = shared.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut waiting: Vec<(u64, String)> =
                pending.iter().map(|(t, p)| (p.waiting_since, t.clone())).collect();
            waiting.sort_unstable();
            waiting.truncate(MAX_IN_FLIGHT - in_flight);
            waiting.into_iter().filter_map(|(_, tile)| pending.remove_entry(&tile)).collect()
        };
        for (tile, pending) in batch {
            in_flight += 1;
            let size =
                shared.sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&tile).copied();
            let scaled = size.and_then(|(w, h)| pending.frame.scaled_to_fit(w, h));
            let frame = scaled.as_ref().unwrap_or(&pending.frame);
            sink.feed(Message::Binary(encode(&tile, frame, pending.captured_us, pending.seq).into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
}

/// Frames the page may hold unacknowledged.
pub const MAX_IN_FLIGHT: usize = 8;

/// The most tiles a sizes message may name.
const MAX_SIZED_TILES: usize = 64;

/// What the page says on the frame socket.
#[derive(Debug, PartialEq, Eq)]
enum PageMessage {
    /// It has taken this many frames (`"1"`).
    Taken(usize),
    /// How large it draws each tile (`{"sizes":{"tile":[w,h]}}`), and whether the window is
    /// hidden (`"hidden":true`).
    Sizes(HashMap<String, (usize, usize)>, bool),
    /// Anything else (ignored).
    Unknown,
}

fn page_message(text: &str) -> PageMessage {
    #[derive(serde::Deserialize)]
    struct Sizes {
        sizes: HashMap<String, (u16, u16)>,
        #[serde(default)]
        hidden: bool,
    }
    if let Ok(n) = text.trim().parse::<usize>() {
        return PageMessage::Taken(n.min(MAX_IN_FLIGHT));
    }
    match serde_json::from_str::<Sizes>(text) {
        Ok(Sizes { sizes, hidden }) if sizes.len() <= MAX_SIZED_TILES => PageMessage::Sizes(
            sizes
                .into_iter()
                .filter(|(tile, (w, h))| tile.len() <= 255 && *w > 0 && *h > 0)
                .map(|(tile, (w, h))| (tile, (usize::from(w), usize::from(h))))
                .collect(),
            hidden,
        ),
        _ => PageMessage::Unknown,
    }
}

/// One frame as the page reads it (see the module's header table).
pub fn encode(tile: &str, frame: &I420Frame, captured_us: u64, seq: u32) -> Vec<u8> {
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let mut out = Vec::with_capacity(HEADER + tile.len() + y.len() + u.len() + v.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(frame.width() as u16).to_le_bytes());
    out.extend_from_slice(&(frame.height() as u16).to_le_bytes());
    out.extend_from_slice(&captured_us.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(tile.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(tile.as_bytes());
    out.extend_from_slice(y);
    out.extend_from_slice(u);
    out.extend_from_slice(v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    const ORIGIN: &str = "tauri://localhost";

    async fn connect(
        server: &FrameServer,
        url: &str,
        origin: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
        tokio_tungstenite::tungstenite::Error,
    > {
        let _ = server;
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("origin", origin.parse().expect("header"));
        Ok(tokio_tungstenite::connect_async(request).await?.0)
    }

    /// The next message within 400 ms, if any.
    async fn next(
        page: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> Option<Message> {
        tokio::time::timeout(std::time::Duration::from_millis(400), page.next())
            .await
            .ok()
            .flatten()
            .and_then(Result::ok)
    }

    fn frame(luma: u8) -> Arc<I420Frame> {
        Arc::new(I420Frame::filled(64, 36, (luma, 100, 200)).expect("frame"))
    }

    #[tokio::test]
    async fn the_page_gets_frames_as_i420_with_their_tile_and_time() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        let mut page = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        server.publish("alice", frame(77), 1_700_000_000_123_456);
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), page.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        let data = message.into_data();
        assert_eq!(&data[..4], MAGIC);
        assert_eq!(u16::from_le_bytes([data[4], data[5]]), 64);
        assert_eq!(u16::from_le_bytes([data[6], data[7]]), 36);
        assert_eq!(u64::from_le_bytes(data[8..16].try_into().expect("8 bytes")), 1_700_000_000_123_456);
        assert_eq!(u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")), 1);
        let n = usize::from(data[20]);
        assert_eq!(&data[HEADER..HEADER + n], b"alice");
        let planes = &data[HEADER + n..];
        assert_eq!(planes.len(), 64 * 36 * 3 / 2);
        assert!(planes[..64 * 36].iter().all(|&p| p == 77));
        assert!(planes[64 * 36..64 * 36 + 32 * 18].iter().all(|&p| p == 100));
        assert!(planes[64 * 36 + 32 * 18..].iter().all(|&p| p == 200));
    }

    #[tokio::test]
    async fn frames_are_scaled_to_the_size_the_page_draws_their_tile() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        let mut page = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        let mut views = server.views();
        let big = || Arc::new(I420Frame::filled(640, 360, (90, 60, 200)).expect("frame"));
        let size_of = |message: Message| {
            let data = message.into_data();
            let n = usize::from(data[20]);
            let tile = String::from_utf8(data[HEADER..HEADER + n].to_vec()).expect("utf-8");
            (tile, u16::from_le_bytes([data[4], data[5]]), u16::from_le_bytes([data[6], data[7]]))
        };
        page.send(Message::text(r#"{"sizes":{"alice":[320,180],"bob":[620,350]}}"#)).await.expect("send");
        // The call hears of them (to ask each sender for the layer its tile needs), which also
        // tells they arrived before the frames (they travel on the same connection, but the
        // server reads them in its own loop).
        tokio::time::timeout(std::time::Duration::from_secs(5), views.changed())
            .await
            .expect("in time")
            .expect("open");
        let told = views.borrow_and_update().clone();
        assert_eq!(told.sizes.get("alice"), Some(&(320, 180)));
        assert_eq!(told.sizes.get("bob"), Some(&(620, 350)));
        assert!(!told.hidden);
        server.publish("alice", big(), 0);
        server.publish("bob", big(), 0);
        server.publish("carol", big(), 0);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(size_of(next(&mut page).await.expect("a frame")));
        }
        got.sort();
        assert_eq!(
            got,
            [("alice".into(), 320, 180), ("bob".into(), 640, 360), ("carol".into(), 640, 360)],
            "alice's tile is half the frame's size; bob's is nearly the frame's; carol's is unknown"
        );
        // Garbage is ignored; the sizes stay.
        page.send(Message::text(r#"{"sizes":{"alice":[-1,"x"]}}"#)).await.expect("send");
        page.send(Message::text("3")).await.expect("acks");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        server.publish("alice", big(), 0);
        assert_eq!(size_of(next(&mut page).await.expect("a frame")), ("alice".into(), 320, 180));
        assert_eq!(page_message("1"), PageMessage::Taken(1));
        assert_eq!(page_message("{\"sizes\":{}}"), PageMessage::Sizes(HashMap::new(), false));
        assert_eq!(
            page_message(r#"{"sizes":{"a":[32,18]},"hidden":true}"#),
            PageMessage::Sizes(HashMap::from([("a".to_owned(), (32, 18))]), true)
        );
        assert_eq!(page_message(r#"{"sizes":{},"hidden":"yes"}"#), PageMessage::Unknown);
        assert_eq!(page_message("hello"), PageMessage::Unknown);
        let many = (0..65).map(|i| format!("\"t{i}\":[1,1]")).collect::<Vec<_>>().join(",");
        assert_eq!(page_message(&format!("{{\"sizes\":{{{many}}}}}")), PageMessage::Unknown);
    }

    #[tokio::test]
    async fn a_wrong_token_or_a_foreign_origin_is_refused() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        let url = server.url();
        let wrong = format!("{url}x");
        let refused = connect(&server, &wrong, ORIGIN).await;
        assert!(
            matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == StatusCode::UNAUTHORIZED),
            "{refused:?}"
        );
        let foreign = connect(&server, &url, "https://evil.example").await;
        assert!(
            matches!(&foreign, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == StatusCode::FORBIDDEN),
            "{foreign:?}"
        );
        let no_token = url.split('?').next().unwrap_or_default().to_owned();
        assert!(connect(&server, &no_token, ORIGIN).await.is_err());
        assert!(connect(&server, &url, ORIGIN).await.is_ok(), "the right token and origin are let in");
    }

    #[tokio::test]
    async fn a_slow_page_gets_the_newest_frame_not_a_queue() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        // Frames published before the page reads are collapsed to the newest per tile.
        for luma in 1..=50 {
            server.publish("bob", frame(luma), 0);
        }
        let mut page = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), page.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok")
            .into_data();
        let n = usize::from(first[20]);
        assert_eq!(first[HEADER + n], 50, "the newest frame goes, the 49 older ones do not");
        assert_eq!(u32::from_le_bytes(first[16..20].try_into().expect("4 bytes")), 50);
        let more = tokio::time::timeout(std::time::Duration::from_millis(300), page.next()).await;
        assert!(more.is_err(), "nothing else was waiting: {more:?}");
    }

    #[tokio::test]
    async fn unacknowledged_frames_are_bounded_and_the_longest_waiting_tiles_go_first() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        let mut page = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        // Twenty tiles publish; only MAX_IN_FLIGHT frames go until the page acknowledges.
        for i in 0..20u8 {
            server.publish(&format!("t{i:02}"), frame(i), 0);
        }
        let mut got = 0;
        while next(&mut page).await.is_some() {
            got += 1;
        }
        assert_eq!(got, MAX_IN_FLIGHT, "unacknowledged frames are bounded");
        // Meanwhile a tile still waiting gets newer frames: only the newest goes.
        for luma in [100, 101, 102] {
            server.publish("t19", frame(luma), 0);
        }
        page.send(Message::Text(MAX_IN_FLIGHT.to_string().into())).await.expect("ack");
        let mut lumas = HashMap::new();
        while let Some(message) = next(&mut page).await {
            let data = message.into_data();
            let n = usize::from(data[20]);
            let tile = String::from_utf8_lossy(&data[HEADER..HEADER + n]).into_owned();
            lumas.insert(tile, data[HEADER + n]);
        }
        assert_eq!(lumas.len(), MAX_IN_FLIGHT, "as many more after as many acknowledgements: {lumas:?}");
        // The tiles that waited longest went first: t08..t15 (t00..t07 went before), not t19,
        // which waited too but started last.
        let mut tiles: Vec<&String> = lumas.keys().collect();
        tiles.sort();
        assert_eq!(tiles, ["t08", "t09", "t10", "t11", "t12", "t13", "t14", "t15"], "oldest waiting first");
        page.send(Message::Text(MAX_IN_FLIGHT.to_string().into())).await.expect("ack");
        let mut rest = HashMap::new();
        while let Some(message) = next(&mut page).await {
            let data = message.into_data();
            let n = usize::from(data[20]);
            rest.insert(String::from_utf8_lossy(&data[HEADER..HEADER + n]).into_owned(), data[HEADER + n]);
        }
        assert_eq!(rest.get("t19"), Some(&102), "the newest frame of a tile that waited: {rest:?}");
        assert_eq!(rest.len(), 4, "t16 to t19 were left: {rest:?}");
    }

    #[tokio::test]
    async fn a_reloaded_page_takes_over_the_socket() {
        let server = FrameServer::start(vec![ORIGIN.into()]).await.expect("start");
        let mut old = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        let mut new = connect(&server, &server.url(), ORIGIN).await.expect("connect");
        server.publish("carol", frame(9), 0);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), new.next()).await;
        assert!(matches!(got, Ok(Some(Ok(Message::Binary(_))))), "{got:?}");
        let old_end = tokio::time::timeout(std::time::Duration::from_secs(5), old.next()).await;
        assert!(
            matches!(old_end, Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_)))),
            "the old page's socket is closed: {old_end:?}"
        );
    }
}
