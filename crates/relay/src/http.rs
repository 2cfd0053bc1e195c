//! HTTP routes: room creation, the invite page, health, metrics, and the WebSocket upgrades.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use confer_proto::{InviteLink, RoomId, SUBPROTOCOL, WS_PATH, limits};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use crate::config::RoomCreation;
use crate::conn;
use crate::state::{ConnSlot, Shared};
use crate::token::{InviteClaims, TokenError, unix_now};

/// Per-connection facts the listener attaches to each request.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// Holds the connection's place under the caps; the WebSocket task keeps it after upgrade.
    pub(crate) slot: Option<Arc<ConnSlot>>,
    /// Why the connection is over a cap, if it is.
    pub(crate) refused: Option<&'static str>,
    /// The client's address.
    pub(crate) ip: std::net::IpAddr,
}

/// The WebSocket settings of every connection: limits from the protocol, buffers sized for
/// many idle connections (tungstenite's defaults allocate 128 KiB to read and accept 64 MiB).
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(limits::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(limits::MAX_MESSAGE_BYTES))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/rooms", post(create_room))
        .route("/j/{room}/{token}", get(invite_page))
        .route("/check/{room}/{token}", get(network_check))
        .route("/check/{room}/{token}/upload", post(upload_check))
        .route(WS_PATH, get(signaling_upgrade));
    if shared.config.echo_endpoint {
        router = router.route("/echo", get(echo_upgrade));
    }
    router
        .layer(middleware::from_fn(refuse_over_cap))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(shared)
}

/// A JSON error body: `{"code": "...", "message": "..."}`.
fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    (status, axum::Json(body)).into_response()
}

async fn refuse_over_cap(req: Request, next: Next) -> Response {
    let refused = req.extensions().get::<ConnInfo>().and_then(|info| info.refused);
    match refused {
        Some(why) => {
            let mut response = http_error(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", why);
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        None => next.run(req).await,
    }
}

/// Whether a load balancer should send this relay new connections: 200, or 503 with the reason
/// (shutting down; or, sharing rooms, Redis unreachable). `/healthz` only says it is alive.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    match shared.not_ready() {
        None => "ready\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut response = shared.render_metrics().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

#[derive(Debug, Default, Deserialize)]
struct CreateRoom {
    #[serde(default)]
    waiting_room: bool,
}

async fn create_room(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let RoomCreation::ApiKeys(keys) = &shared.config.room_creation {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok = keys.iter().any(|k| bool::from(k.as_bytes().ct_eq(presented.as_bytes())));
        if !ok {
            return http_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "creating rooms needs an API key (Authorization: Bearer KEY)",
            );
        }
    }
    let request: CreateRoom = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRoom::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(_) => {
                return http_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the body must be empty or {\"waiting_room\": bool}",
                );
            }
        }
    };
    let links = shared.create_room(request.waiting_room);
    (StatusCode::CREATED, axum::Json(links)).into_response()
}

/// For the lobby's network check: the ICE servers a participant of this room would get, so the
/// app can try them before it joins. Needs a valid invite token for the room, like a join; nobody
/// in the room hears of it. TURN credentials here last [`CHECK_TURN_TTL`] (a probe takes
/// seconds), and a guest who must knock (a waiting-room invite, or a locked room) gets none: a
/// relay for media is for those let in.
async fn network_check(
    State(shared): State<Arc<Shared>>,
    info: Option<axum::Extension<ConnInfo>>,
    Path((room, token)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = check_refused(&shared, info.as_ref()) {
        return refused;
    }
    let mut response = match check_claims(&shared, room, &token) {
        Ok(claims) => {
            let locked = shared
                .rooms
                .get(&claims.room)
                .is_some_and(|cell| crate::rooms::lock(&cell).room.guests_knock());
            let must_knock = claims.role == confer_proto::Role::Guest && (claims.waiting_room || locked);
            let ice_servers = shared.check_ice_servers(
                &crate::token::new_peer_id(),
                unix_now(),
                CHECK_TURN_TTL,
                !must_knock,
            );
            axum::Json(serde_json::json!({ "ice_servers": ice_servers })).into_response()
        }
        Err((status, code, message)) => http_error(status, code, message),
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A network check over its address's rate limit: the refusal.
fn check_refused(shared: &Shared, info: Option<&axum::Extension<ConnInfo>>) -> Option<Response> {
    let axum::Extension(info) = info?;
    if shared.allow_check(info.ip) {
        return None;
    }
    let mut response =
        http_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many network checks: wait a little");
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    Some(response)
}

/// A network check's invite: valid, and for this room.
fn check_claims(
    shared: &Shared,
    room: String,
    token: &str,
) -> Result<InviteClaims, (StatusCode, &'static str, &'static str)> {
    match RoomId::try_from(room) {
        Err(_) => Err((StatusCode::NOT_FOUND, "token_invalid", "not a room id")),
        Ok(room) => match InviteClaims::verify(&shared.config.token_key, token, unix_now()) {
            Ok(claims) if claims.room == room => Ok(claims),
            Ok(_) => Err((StatusCode::NOT_FOUND, "token_wrong_room", "the token is for another room")),
            Err(TokenError::Expired) => {
                Err((StatusCode::GONE, "token_expired", "the invite expired: get a new link"))
            }
            Err(_) => Err((StatusCode::NOT_FOUND, "token_invalid", "not an invite this relay signed")),
        },
    }
}

/// The most of an upload measurement the relay reads, and for how long: a client measures for
/// about 2 s and stops; these only bound one that does not.
pub(crate) const UPLOAD_MAX_BYTES: usize = 4 * 1024 * 1024;
pub(crate) const UPLOAD_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(4);

/// For the lobby's network check: how fast this client's data arrives. The body (any bytes,
/// usually chunked) is read and thrown away, up to [`UPLOAD_MAX_BYTES`] or [`UPLOAD_MAX_TIME`];
/// the answer is what arrived after the first piece and over how long, as the relay's clock saw
/// it (what the client wrote into its own buffers does not count). Same invite and rate limit as
/// the check itself.
async fn upload_check(
    State(shared): State<Arc<Shared>>,
    info: Option<axum::Extension<ConnInfo>>,
    Path((room, token)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    let mut response = measure_upload(&shared, info.as_ref(), room, &token, body).await;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn measure_upload(
    shared: &Shared,
    info: Option<&axum::Extension<ConnInfo>>,
    room: String,
    token: &str,
    body: axum::body::Body,
) -> Response {
    if let Some(refused) = check_refused(shared, info) {
        return refused;
    }
    if let Err((status, code, message)) = check_claims(shared, room, token) {
        return http_error(status, code, message);
    }
    let mut data = body.into_data_stream();
    let deadline = tokio::time::sleep(UPLOAD_MAX_TIME);
    tokio::pin!(deadline);
    let (mut total, mut timed) = (0usize, 0usize);
    let (mut first, mut last) = (None::<std::time::Instant>, None::<std::time::Instant>);
    let mut cut = false;
    loop {
        tokio::select! {
            chunk = data.next() => match chunk {
                Some(Ok(chunk)) => {
                    let now = std::time::Instant::now();
                    if first.is_none() {
                        first = Some(now);
                    } else {
                        timed += chunk.len();
                    }
                    last = Some(now);
                    total += chunk.len();
                    if total >= UPLOAD_MAX_BYTES {
                        cut = true;
                        break;
                    }
                }
                Some(Err(err)) => {
                    debug!(error = %err, "an upload measurement broke off");
                    return http_error(StatusCode::BAD_REQUEST, "bad_request", "the upload broke off");
                }
                None => break,
            },
            () = &mut deadline => {
                cut = true;
                break;
            }
        }
    }
    let over = first.zip(last).map_or(0.0, |(first, last)| last.duration_since(first).as_secs_f64());
    // A fast link (a LAN, the same machine) takes it all in a few ms, where a clock's grain
    // and one scheduling delay are the whole figure: timed over at least 5 ms, that is a lower
    // bound. Nothing after the first piece: no rate at all.
    let kbps = (timed > 0).then(|| (timed as f64 * 8.0 / over.max(0.005) / 1_000.0).round() as u64);
    let mut response = axum::Json(
        serde_json::json!({ "bytes": total, "ms": (over * 1_000.0).round() as u64, "kbps": kbps }),
    )
    .into_response();
    if cut {
        // The rest of the body is not read: this connection ends with the answer.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// How long the network check's TURN credentials stay valid.
pub(crate) const CHECK_TURN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The page behind an `https://` invite link: opens the app, says how to get it.
async fn invite_page(
    State(shared): State<Arc<Shared>>,
    Path((room, token)): Path<(String, String)>,
) -> Response {
    let page = |status: StatusCode, body: String| {
        let mut response = (status, Html(body)).into_response();
        let headers = response.headers_mut();
        // The URL holds a credential: keep it out of caches and Referer headers.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        );
        response
    };
    let Ok(room) = RoomId::try_from(room) else {
        return page(
            StatusCode::NOT_FOUND,
            page_html("This invite link is not valid", "Check that you copied the whole link.", None),
        );
    };
    match InviteClaims::verify(&shared.config.token_key, &token, unix_now()) {
        Ok(claims) if claims.room == room => {}
        Err(TokenError::Expired) => {
            return page(
                StatusCode::GONE,
                page_html("This invite has expired", "Ask the host for a new link.", None),
            );
        }
        _ => {
            return page(
                StatusCode::NOT_FOUND,
                page_html("This invite link is not valid", "Check that you copied the whole link.", None),
            );
        }
    }
    // The relay knows its own pin: a crafted `fp` in the URL is never reflected into the app link.
    let fingerprint = shared.config.tls.as_ref().and_then(|t| t.pin);
    let link = InviteLink { relay: shared.origin.clone(), room, token, fingerprint };
    page(
        StatusCode::OK,
        page_html(
            "Joining a Confer meeting…",
            "If Confer does not open by itself, use the button. Don't have Confer yet? Install it \
             for Linux (.deb or .AppImage), Windows (.msi) or macOS (.dmg) from whoever invited \
             you, then open this link again.",
            Some(&link.app_link()),
        ),
    )
}

fn page_html(title: &str, text: &str, app_link: Option<&str>) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let (button, script) = match app_link {
        Some(link) => {
            let json = serde_json::to_string(link).unwrap_or_default().replace('<', "\\u003c");
            (
                format!(r#"<p><a class="button" href="{}">Open in Confer</a></p>"#, escape(link)),
                format!("<script>window.location.href = {json};</script>"),
            )
        }
        None => (String::new(), String::new()),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#1b1d22}}
.button{{display:inline-block;padding:.7rem 1.2rem;background:#2456d6;color:#fff;border-radius:.5rem;text-decoration:none}}</style>
</head><body><h1>{title}</h1><p>{text}</p>{button}{script}</body></html>
"#,
        title = escape(title),
        text = escape(text),
    )
}

/// Why an upgrade request was refused: an HTTP error code and message.
type UpgradeRefusal = (&'static str, String);

/// Checks the upgrade request; on success returns the `Sec-WebSocket-Accept` value.
fn check_upgrade(headers: &HeaderMap, protocol: Option<&str>) -> Result<String, UpgradeRefusal> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let not_websocket = |why: &str| ("not_websocket", why.to_owned());
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(not_websocket("this endpoint speaks WebSocket only"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(not_websocket("WebSocket version 13 is required"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| not_websocket("Sec-WebSocket-Key is missing"))?;
    if let Some(protocol) = protocol
        && !has(header::SEC_WEBSOCKET_PROTOCOL, protocol)
    {
        return Err((
            "unsupported_protocol",
            format!("offer the subprotocol {protocol} (Sec-WebSocket-Protocol)"),
        ));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// Completes an upgrade and runs `serve` on the WebSocket in a tracked task.
fn upgrade<F, Fut>(
    shared: &Arc<Shared>,
    mut req: Request,
    protocol: Option<&'static str>,
    serve: F,
) -> Response
where
    F: FnOnce(Arc<Shared>, WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accept = match check_upgrade(req.headers(), protocol) {
        Ok(accept) => accept,
        Err((code, message)) => {
            if code == "unsupported_protocol" {
                shared.metrics.reject(confer_proto::ErrorCode::UnsupportedProtocol);
            }
            return http_error(StatusCode::BAD_REQUEST, code, &message);
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return http_error(StatusCode::BAD_REQUEST, "not_websocket", "the connection cannot be upgraded");
    };
    let slot = req.extensions().get::<ConnInfo>().and_then(|info| info.slot.clone());
    let task_shared = Arc::clone(shared);
    shared.tasks.spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config()))
                        .await;
                serve(task_shared, ws).await;
            }
            Err(err) => debug!(%err, "upgrade failed"),
        }
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    response
}

async fn signaling_upgrade(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    upgrade(&shared, req, Some(SUBPROTOCOL), conn::serve)
}

/// Echoes text messages: the raw WebSocket stack with no relay logic, for the load benchmark.
/// Writes are batched the way the relay batches them (feed what is ready, then flush once), so
/// the benchmark compares relay logic, not write strategies.
async fn echo_upgrade(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    upgrade(&shared, req, Some(SUBPROTOCOL), |shared, mut ws| async move {
        loop {
            let first = tokio::select! {
                msg = ws.next() => msg,
                () = shared.shutdown.cancelled() => break,
            };
            let mut next = first;
            loop {
                match next {
                    Some(Ok(Message::Text(text))) => {
                        if ws.feed(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
                match ws.next().now_or_never() {
                    Some(more) => next = more,
                    None => break,
                }
            }
            if ws.flush().await.is_err() {
                break;
            }
        }
    })
}
