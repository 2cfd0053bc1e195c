//! `confer`: the headless participant, for tests, demos, bots and diagnosis.
//!
//! - `confer host --relay wss://HOST:PORT [--fp HEX] [--json]` opens a room and prints its links.
//! - `confer join LINK [--name NAME] [--synthetic] [--duration SECONDS] [--report json]` takes
//!   part in a call with real devices or the synthetic ones, leaves after the duration, and can
//!   report what it saw and heard of every other participant as one JSON object. With
//!   `--share screen:N|window:ID|synthetic` it shares a screen, a window or the synthetic page.
//! - `confer screens [--json]` lists the screens and windows that can be shared.
//!
//! Progress and failures go to stderr, named by the part that failed; the report goes to
//! stdout. Exit status: 0 on success, 2 when the relay refused or could not be reached, 1 for
//! anything else.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use confer_media::{CameraChoice, DeviceChoice, ProcessingConfig};
use confer_mesh::engine::{self, EngineConfig, EngineError, EngineEvent, MediaSource};
use confer_mesh::layers::View;
use confer_mesh::netcheck::ServerResult;
use confer_mesh::rooms;
use confer_mesh::share::ShareChoice;
use confer_mesh::signaling::JoinError;
use confer_proto::{Fingerprint, InviteLink};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "confer", version, about = "The headless Confer participant")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open a room on a relay and print its host and guest links.
    Host {
        /// The relay: wss://HOST:PORT (ws:// for a plain relay on loopback).
        #[arg(long)]
        relay: String,
        /// The relay certificate's SHA-256 (for a self-signed relay; see its log or links).
        #[arg(long)]
        fp: Option<String>,
        /// API key, if the relay requires one to create rooms.
        #[arg(long, env = "CONFER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Guests knock and wait for a host.
        #[arg(long)]
        waiting_room: bool,
        /// Print one JSON object with room, host_link and invite_link.
        #[arg(long)]
        json: bool,
    },
    /// Check, without joining, that the meeting's relay and its STUN/TURN servers answer. Exit
    /// codes: 0 all well, 1 something did not answer, 2 not an invite link, 3 everything answered
    /// but no relay is there (a call between two restrictive networks cannot connect).
    Check {
        /// The invite link (confer://… or https://…).
        link: String,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// List the screens and windows that can be shared (ids for `join --share`).
    Screens {
        /// Print one JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Join a call by its invite link. Exit codes: 0 the call went as asked, 1 it ended early
    /// (removed, the relay gone, ...), 2 the relay refused or could not be reached, 4 a
    /// participant stayed unreachable (no network path) until the end.
    Join {
        /// The invite link (confer://… or https://…).
        link: String,
        #[command(flatten)]
        args: Box<JoinArgs>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("confer: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match args.command {
            Command::Host { relay, fp, api_key, waiting_room, json } => {
                host(&relay, fp.as_deref(), api_key.as_deref(), waiting_room, json).await
            }
            Command::Check { link, json } => check(&link, json).await,
            Command::Screens { json } => screens(json),
            Command::Join { link, args } => join(&link, *args).await,
        }
    })
}

async fn host(
    relay: &str,
    fp: Option<&str>,
    api_key: Option<&str>,
    waiting_room: bool,
    as_json: bool,
) -> ExitCode {
    let pin = match fp.map(Fingerprint::parse) {
        Some(None) => {
            eprintln!("confer: --fp must be 64 hex digits");
            return ExitCode::FAILURE;
        }
        Some(pin) => pin,
        None => None,
    };
    match rooms::create_room(relay, pin, api_key, waiting_room).await {
        Ok(room) => {
            if as_json {
                let out = json!({
                    "room": room.room.to_string(),
                    "host_link": room.host.app_link(),
                    "invite_link": room.guest.app_link(),
                    "invite_web_link": room.guest.web_link(),
                });
                println!("{out}");
            } else {
                println!(
                    "Room {} is open.\n\nHost link (keep it to yourself):\n  {}\n\nInvite link:\n  {}\n  {}",
                    room.room,
                    room.host.app_link(),
                    room.guest.app_link(),
                    room.guest.web_link()
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("confer: {err}");
            ExitCode::from(2)
        }
    }
}

/// `confer check`: exit 0 if the relay and every server tried answered and a relay (TURN) works,
/// 1 if some did not answer, 2 for a link that is not one, 3 if everything answered but no relay
/// is there (a call between two restrictive networks cannot connect). URLs Confer does not use
/// are listed as skipped.
async fn check(link: &str, as_json: bool) -> ExitCode {
    let link = match InviteLink::parse(link.trim()) {
        Ok(link) => link,
        Err(err) => {
            eprintln!("confer: {err}");
            return ExitCode::from(2);
        }
    };
    let report = confer_mesh::netcheck::check(&link).await;
    let all_ok = report.relay.is_ok()
        && report.servers.iter().all(|s| !matches!(s.result, ServerResult::Failed { .. }));
    if as_json {
        let servers: Vec<_> = report
            .servers
            .iter()
            .map(|s| match &s.result {
                ServerResult::Answered { address, after } => json!({
                    "url": s.url, "turn": s.turn, "ok": true, "address": address, "ms": after.as_millis() as u64,
                }),
                ServerResult::Failed { code, reason } => {
                    json!({ "url": s.url, "turn": s.turn, "ok": false, "code": code, "error": reason })
                }
                ServerResult::Skipped(why) => {
                    json!({ "url": s.url, "turn": s.turn, "ok": false, "skipped": true, "error": why })
                }
            })
            .collect();
        let relay = match &report.relay {
            Ok(rtt) => json!({ "ok": true, "ms": rtt.as_millis() as u64 }),
            Err(why) => json!({ "ok": false, "error": why }),
        };
        let verdict = report.verdict();
        let uplink = match &report.uplink {
            Ok(up) => {
                json!({ "ok": true, "kbps": up.kbps, "bytes": up.bytes, "ms": up.over.as_millis() as u64 })
            }
            Err(why) => json!({ "ok": false, "error": why }),
        };
        let capacity: Vec<_> = report
            .capacity(&confer_mesh::netcheck::default_ladder())
            .into_iter()
            .flatten()
            .map(|c| json!({ "size": format!("{}x{}", c.size.0, c.size.1), "people": c.people }))
            .collect();
        println!(
            "{}",
            json!({
                "relay": relay,
                "servers": servers,
                "uplink": uplink,
                "capacity": capacity,
                "verdict": verdict.code(),
                "relay_transport": verdict.relay().map(|t| t.as_str()),
                "summary": report.summary(),
            })
        );
    } else {
        match &report.relay {
            Ok(rtt) => println!("ok    relay {} ({} ms)", link.relay, rtt.as_millis()),
            Err(why) => println!("FAIL  relay {}: {why}", link.relay),
        }
        for server in &report.servers {
            match &server.result {
                ServerResult::Answered { address, after } => {
                    let what = if server.turn { "relayed address" } else { "public address" };
                    println!("ok    {} ({} ms): {what} {address}", server.url, after.as_millis());
                }
                ServerResult::Failed { reason, .. } => println!("FAIL  {}: {reason}", server.url),
                ServerResult::Skipped(why) => println!("skip  {}: {why}", server.url),
            }
        }
        match &report.uplink {
            Ok(up) => println!(
                "ok    upload {} kbit/s ({} KiB in {} ms)",
                up.kbps,
                up.bytes / 1024,
                up.over.as_millis()
            ),
            Err(why) => println!("skip  upload: {why}"),
        }
        println!("\n{}", report.summary());
    }
    if !all_ok {
        ExitCode::FAILURE
    } else if report.verdict().relay().is_none() {
        // Works here, but a peer behind a strict NAT or firewall will not be reached.
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// `confer screens`: what can be shared, one per line (id, size, name) or as JSON.
fn screens(as_json: bool) -> ExitCode {
    match confer_media::share_sources() {
        Ok(sources) => {
            if as_json {
                let list: Vec<_> = sources
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id,
                            "kind": match s.kind { confer_media::ShareKind::Screen => "screen", _ => "window" },
                            "name": s.name,
                            "width": s.width,
                            "height": s.height,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for s in &sources {
                    println!("{:<18} {:>5}x{:<5} {}", s.id, s.width, s.height, s.name);
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("confer: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `confer join`'s flags.
#[derive(clap::Args, Debug)]
struct JoinArgs {
    /// Display name.
    #[arg(long, default_value = "Confer bot")]
    name: String,
    /// Use the synthetic camera and microphone (and a silent speaker).
    #[arg(long)]
    synthetic: bool,
    /// The synthetic media's pattern id (default: from the name).
    #[arg(long)]
    pattern_id: Option<u32>,
    /// Leave after this many seconds (default: stay until interrupted).
    #[arg(long)]
    duration: Option<f64>,
    /// Print a report when leaving.
    #[arg(long, value_enum)]
    report: Option<ReportFormat>,
    /// Send this chat message to everyone in the call, once connected to someone and
    /// `--chat-after` seconds have passed.
    #[arg(long)]
    chat: Option<String>,
    /// When to send `--chat`, seconds after starting.
    #[arg(long, default_value_t = 0.0)]
    chat_after: f64,
    /// Send this reaction (👍 👏 😂 ❤️ 🎉 😮) with the chat message, at `--chat-after`.
    #[arg(long)]
    react: Option<String>,
    /// Mute the microphone after this many seconds.
    #[arg(long)]
    mute_after: Option<f64>,
    /// Raise the hand after this many seconds.
    #[arg(long)]
    raise_hand_after: Option<f64>,
    /// Send this file to everyone connected, `--send-file-after` seconds after starting.
    #[arg(long)]
    send_file: Option<std::path::PathBuf>,
    /// When to send `--send-file`, seconds after starting (and once connected).
    #[arg(long, default_value_t = 0.0)]
    send_file_after: f64,
    /// Where files others send are saved (default: confer-downloads in the temporary folder).
    #[arg(long)]
    downloads: Option<std::path::PathBuf>,
    /// Use TURN relay candidates only.
    #[arg(long)]
    relay_only: bool,
    /// Video size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360")]
    size: String,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Switch devices in the call after this many seconds (with `--try-camera` and/or
    /// `--switch-pattern`).
    #[arg(long)]
    switch_after: Option<f64>,
    /// At `--switch-after`, first try this camera id (a missing one shows the error path:
    /// the current camera stays).
    #[arg(long)]
    try_camera: Option<String>,
    /// At `--switch-after`, switch to the synthetic camera and microphone of this pattern.
    #[arg(long)]
    switch_pattern: Option<u32>,
    /// Share a screen or window (`screen:N`, `window:ID`: see `confer screens`) or the synthetic
    /// page of text (`synthetic`, stamped with the pattern id, or `synthetic:N` with pattern N),
    /// once connected to someone.
    #[arg(long)]
    share: Option<String>,
    /// Share frames per second (1-30).
    #[arg(long, default_value_t = confer_mesh::share::DEFAULT_SHARE_FPS)]
    share_fps: u32,
    /// Start the share this many seconds after starting (and once connected).
    #[arg(long, default_value_t = 0.0)]
    share_after: f64,
    /// Stop the share after it has run this many seconds.
    #[arg(long)]
    share_for: Option<f64>,
    /// As a host, stop everyone's screen share this many seconds after starting.
    #[arg(long)]
    host_stop_shares_after: Option<f64>,
    /// Record the call (every participant's camera, microphone and share, ours included, into
    /// one Matroska file) from this many seconds after starting, once connected. Everyone is
    /// told first.
    #[arg(long)]
    record_after: Option<f64>,
    /// Stop recording after it has run this many seconds (else it stops when we leave).
    #[arg(long)]
    record_for: Option<f64>,
    /// Where recordings are written (default: confer-recordings in the temporary folder).
    #[arg(long)]
    recordings: Option<std::path::PathBuf>,
    /// Tell everyone we show their camera at WIDTHxHEIGHT pixels (`0x0`: not at all, audio
    /// only), as a tile of that size would: each sends us the smallest layer that fills it.
    #[arg(long)]
    view: Option<String>,
    /// When to say `--view`, seconds after starting.
    #[arg(long, default_value_t = 0.0)]
    view_after: f64,
    /// This machine's uplink in kbit/s (as `confer check` measures it): what everyone is sent
    /// together stays within 80 % of it, the largest pictures made smaller first.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    upload_kbps: Option<u32>,
}

/// `WIDTHxHEIGHT` as two numbers.
fn parse_size(text: &str) -> Option<(u32, u32)> {
    text.split_once('x').and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
}

/// A recording event for the report (and said on stderr).
fn recording_entry(event: &EngineEvent) -> serde_json::Value {
    match event {
        EngineEvent::RecordingStarted { path } => {
            eprintln!("recording to {}", path.display());
            json!({"event": "started", "path": path, "at_unix_ms": unix_ms()})
        }
        EngineEvent::RecordingStopped { path, reason, duration_ms, bytes } => {
            match reason {
                Some(reason) => eprintln!("the recording stopped: {reason}"),
                None => eprintln!("recording stopped: {duration_ms} ms, {bytes} bytes"),
            }
            json!({"event": "stopped", "path": path, "reason": reason, "duration_ms": duration_ms, "bytes": bytes, "at_unix_ms": unix_ms()})
        }
        EngineEvent::PeerRecording { id, recording } => {
            eprintln!("{id} {} recording", if *recording { "started" } else { "stopped" });
            json!({"event": "peer", "id": id.to_string(), "recording": recording, "at_unix_ms": unix_ms()})
        }
        _ => serde_json::Value::Null,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A pattern id from a name, so bots with different names look and sound different.
fn pattern_from(name: &str) -> u32 {
    name.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619)) % 1_000
}

async fn join(link: &str, args: JoinArgs) -> ExitCode {
    let link = match InviteLink::parse(link) {
        Ok(link) => link,
        Err(err) => {
            eprintln!("confer: not an invite link: {err}");
            return ExitCode::FAILURE;
        }
    };
    let media = if args.synthetic {
        MediaSource::Synthetic { pattern_id: args.pattern_id.unwrap_or_else(|| pattern_from(&args.name)) }
    } else {
        let camera = confer_media::cameras()
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.id != confer_media::SYNTHETIC_CAMERA)
            .map(|c| CameraChoice::Id(c.id));
        MediaSource::Devices {
            camera,
            microphone: DeviceChoice::SystemDefault,
            speaker: DeviceChoice::SystemDefault,
            processing: ProcessingConfig::default(),
        }
    };
    let mut config = EngineConfig::synthetic(&args.name, 0);
    config.media = media;
    if let Some(dir) = &args.downloads {
        config.downloads.clone_from(dir);
    }
    if let Some(dir) = &args.recordings {
        config.recordings.clone_from(dir);
    }
    config.relay_only = args.relay_only;
    let Some((width, height)) = parse_size(&args.size) else {
        eprintln!("confer: --size must be WIDTHxHEIGHT, like 640x360");
        return ExitCode::FAILURE;
    };
    let view = match args.view.as_deref().map(parse_size) {
        None => None,
        Some(Some((width, height))) if (width == 0) == (height == 0) => Some(View { width, height }),
        Some(_) => {
            eprintln!("confer: --view must be WIDTHxHEIGHT, like 320x180, or 0x0");
            return ExitCode::FAILURE;
        }
    };
    (config.width, config.height, config.fps) = (width, height, args.fps.clamp(1, 60));
    config.uplink_kbps = args.upload_kbps;
    let (handle, mut events) = match engine::join(&link, config).await {
        Ok(joined) => joined,
        Err(err) => {
            eprintln!("confer: {err}");
            return match err {
                EngineError::Join(JoinError::RelayUnreachable { .. } | JoinError::Refused { .. }) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            };
        }
    };
    let deadline = args.duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mute_at = args.mute_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut chat = args.chat.clone();
    let mut peer_id = None;
    let mut chats = Vec::new();
    let mut reactions = Vec::new();
    let mut react = args.react.clone();
    let mut send_file = args.send_file.clone();
    let send_file_at = tokio::time::Instant::now() + Duration::from_secs_f64(args.send_file_after.max(0.0));
    let (mut files_received, mut files_sent, mut files_failed) = (Vec::new(), Vec::new(), Vec::new());
    let mut file_progress = 0u32;
    let mut hand_at =
        args.raise_hand_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut left = Vec::new();
    let mut reconnecting = Vec::new();
    let mut unreachable = Vec::new();
    let mut struggling = Vec::new();
    // Participants with no network path now (said unreachable, not connected since).
    let mut no_path = std::collections::BTreeSet::new();
    let mut names = BTreeMap::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut muted = false;
    let mut relay_resumes = 0u32;
    let mut relay_back = Vec::new();
    // Each time the relay connection was lost, and why (the first 32).
    let mut relay_lost = Vec::new();
    let mut network_changes = 0u32;
    let mut device_switches = Vec::new();
    // The Opus encoder's retunings, in order (the first 100).
    let mut audio_tunings = Vec::new();
    let mut device_errors = Vec::new();
    // When to switch devices, the camera to try first, the synthetic pattern to switch to.
    let mut switch = args.switch_after.map(|after| (after, args.try_camera.clone(), args.switch_pattern));
    let switch_at = switch
        .as_ref()
        .map_or(far, |(after, _, _)| tokio::time::Instant::now() + Duration::from_secs_f64(after.max(0.0)));
    let mut connected = false;
    let pattern_id = args.pattern_id.unwrap_or_else(|| pattern_from(&args.name));
    let mut share = match args.share.as_deref() {
        None => None,
        Some("synthetic") => Some(ShareChoice::Synthetic { pattern_id, scroll: 4 }),
        Some(synthetic) if synthetic.starts_with("synthetic:") => {
            match synthetic["synthetic:".len()..].parse() {
                Ok(id) => Some(ShareChoice::Synthetic { pattern_id: id, scroll: 4 }),
                Err(_) => {
                    eprintln!("confer: --share synthetic:N takes a pattern id, a number");
                    return ExitCode::FAILURE;
                }
            }
        }
        Some(id) => Some(ShareChoice::Source(id.to_owned())),
    };
    let share_at = tokio::time::Instant::now() + Duration::from_secs_f64(args.share_after.max(0.0));
    let mut unshare_at = None;
    let mut share_log = Vec::new();
    // Who shares now, as the engine says.
    let mut sharers = std::collections::BTreeSet::new();
    let mut stop_shares_at = args
        .host_stop_shares_after
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let chat_at = tokio::time::Instant::now() + Duration::from_secs_f64(args.chat_after.max(0.0));
    let mut view = view;
    let view_at = tokio::time::Instant::now() + Duration::from_secs_f64(args.view_after.max(0.0));
    let mut record_at =
        args.record_after.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut unrecord_at = None;
    // Our recording (started, stopped) and who else recorded when.
    let mut recording_log = Vec::new();
    let end = loop {
        let until = deadline.unwrap_or(far);
        let mute_deadline = mute_at.filter(|_| !muted).unwrap_or(far);
        tokio::select! {
            event = events.recv() => match event {
                Some(EngineEvent::Joined { peer_id: id, participants, .. }) => {
                    eprintln!("joined as {id}; {} already here", participants.len());
                    peer_id = Some(id.to_string());
                }
                Some(EngineEvent::Knocking) => eprintln!("knocking: waiting for a host to admit us"),
                Some(EngineEvent::Participant(p)) => {
                    names.insert(p.id.to_string(), p.name.clone());
                }
                Some(EngineEvent::ParticipantReconnecting(id)) => {
                    eprintln!("{id} is reconnecting");
                    reconnecting.push(json!({"id": id.to_string(), "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::ParticipantLeft { id, reason }) => {
                    eprintln!("{id} left ({reason:?})");
                    left.push(json!({"id": id.to_string(), "reason": format!("{reason:?}").to_lowercase(), "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::PeerConnected { id, path }) => {
                    let via = path.map_or_else(|| "?".to_owned(), |p| match p.relay {
                        Some(relay) => format!("relay (TURN over {})", relay.as_str().to_uppercase()),
                        None => format!("{} (peer: {})", p.local.as_str(), p.remote.as_str()),
                    });
                    eprintln!("connected to {id} via {via}");
                    no_path.remove(&id.to_string());
                    connected = true;
                }
                Some(EngineEvent::PeerUnreachable { id, detail, cause, retrying }) => {
                    let entry = json!({
                        "id": id.to_string(),
                        "detail": detail,
                        "cause": cause.map(|c| c.code()),
                        "at_unix_ms": unix_ms(),
                    });
                    no_path.insert(id.to_string());
                    if retrying {
                        eprintln!("no network path to {id} yet: {detail}");
                        struggling.push(entry);
                    } else {
                        eprintln!("no network path to {id}: {detail}");
                        unreachable.push(entry);
                    }
                }
                Some(EngineEvent::Chat { from, text }) => chats.push(json!({"from": from.to_string(), "text": text})),
                Some(EngineEvent::FileProgress { .. }) => file_progress += 1,
                Some(EngineEvent::FileReceived { from, name, size, sha256, path }) => {
                    eprintln!("received {name} ({size} bytes) from {from}");
                    files_received.push(json!({"from": from.to_string(), "name": name, "size": size, "sha256": sha256, "path": path, "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::FileSent { to, name, size }) => {
                    eprintln!("sent {name} ({size} bytes) to {to}");
                    files_sent.push(json!({"to": to.to_string(), "name": name, "size": size, "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::FileFailed { peer, name, sending, reason }) => {
                    eprintln!("file {name} {} {peer} failed: {reason}", if sending { "to" } else { "from" });
                    files_failed.push(json!({"peer": peer.to_string(), "name": name, "sending": sending, "reason": reason}));
                }
                Some(EngineEvent::Reaction { from, emoji }) => {
                    reactions.push(json!({"from": from.to_string(), "emoji": emoji, "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::RelayReconnecting { cause }) => {
                    eprintln!("relay connection lost ({cause}); reconnecting");
                    if relay_lost.len() < 32 {
                        relay_lost.push(json!({ "at_unix_ms": unix_ms(), "cause": cause }));
                    }
                }
                Some(EngineEvent::NetworkChanged { added, removed }) => {
                    eprintln!("the network changed (added {added:?}, removed {removed:?}); moving the connections");
                    network_changes += 1;
                }
                Some(EngineEvent::AudioTuned(tuning)) => {
                    if audio_tunings.len() < 100 {
                        audio_tunings.push(json!({
                            "at_unix_ms": unix_ms(),
                            "bitrate_kbps": tuning.bitrate_bps / 1_000,
                            "fec": tuning.fec,
                            "loss_percent": tuning.loss_percent,
                        }));
                    }
                }
                Some(EngineEvent::DeviceSwitched { device }) => {
                    eprintln!("now using the new {device}");
                    device_switches.push(device);
                }
                Some(EngineEvent::DeviceFailed { device, reason }) => {
                    eprintln!("could not switch the {device}: {reason}");
                    device_errors.push(json!({"device": device, "reason": reason}));
                }
                Some(EngineEvent::ShareStarted { source }) => {
                    eprintln!("sharing {source}");
                    share_log.push(json!({"event": "started", "source": source, "at_unix_ms": unix_ms()}));
                    unshare_at = args.share_for.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
                }
                Some(EngineEvent::ShareStopped { reason }) => {
                    eprintln!("the share stopped{}", reason.as_ref().map_or(String::new(), |r| format!(": {r}")));
                    share_log.push(json!({"event": "stopped", "reason": reason, "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::PeerSharing { id, sharing }) => {
                    eprintln!("{id} {} sharing", if sharing { "started" } else { "stopped" });
                    if sharing {
                        sharers.insert(id.clone());
                    } else {
                        sharers.remove(&id);
                    }
                    share_log.push(json!({"event": "peer", "id": id.to_string(), "sharing": sharing, "at_unix_ms": unix_ms()}));
                }
                Some(EngineEvent::RelayResumed) => {
                    eprintln!("relay connection back");
                    relay_resumes += 1;
                    relay_back.push(json!({"at_unix_ms": unix_ms()}));
                }
                Some(event @ (EngineEvent::RecordingStarted { .. } | EngineEvent::RecordingStopped { .. } | EngineEvent::PeerRecording { .. })) => {
                    if matches!(event, EngineEvent::RecordingStarted { .. }) {
                        unrecord_at = args.record_for.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
                    }
                    recording_log.push(recording_entry(&event));
                }
                Some(EngineEvent::Ended(reason)) => break reason,
                Some(_) => {}
                None => break Some("the engine stopped".into()),
            },
            _ = tokio::time::sleep_until(chat_at), if connected && (chat.is_some() || react.is_some()) => {
                if let Some(text) = chat.take()
                    && let Err(err) = handle.chat(&text)
                {
                    eprintln!("confer: chat not sent: {err}");
                }
                if let Some(emoji) = react.take()
                    && let Err(err) = handle.react(&emoji)
                {
                    eprintln!("confer: reaction not sent: {err}");
                }
            }
            _ = tokio::time::sleep_until(switch_at), if switch.is_some() => {
                if let Some((_, try_camera, pattern)) = switch.take() {
                    if let Some(id) = try_camera {
                        handle.set_camera(CameraChoice::Id(id));
                    }
                    if let Some(id) = pattern {
                        handle.set_camera(CameraChoice::Synthetic { id, name: args.name.clone() });
                        handle.set_microphone(DeviceChoice::Synthetic(id));
                    }
                }
            }
            _ = tokio::time::sleep_until(share_at), if connected && share.is_some() => {
                if let Some(choice) = share.take() {
                    handle.share(Some((choice, args.share_fps.clamp(1, 30))));
                }
            }
            _ = tokio::time::sleep_until(stop_shares_at.unwrap_or(far)), if stop_shares_at.is_some() => {
                stop_shares_at = None;
                for peer in &sharers {
                    eprintln!("stopping {peer}'s share");
                    handle.host(confer_proto::ClientMessage::StopShare { peer: peer.clone() });
                }
            }
            _ = tokio::time::sleep_until(unshare_at.unwrap_or(far)), if unshare_at.is_some() => {
                unshare_at = None;
                handle.share(None);
            }
            _ = tokio::time::sleep_until(send_file_at), if connected && send_file.is_some() => {
                if let Some(path) = send_file.take() {
                    handle.send_file(&path);
                }
            }
            _ = tokio::time::sleep_until(record_at.unwrap_or(far)), if connected && record_at.is_some() => {
                record_at = None;
                handle.record(true);
            }
            _ = tokio::time::sleep_until(unrecord_at.unwrap_or(far)), if unrecord_at.is_some() => {
                unrecord_at = None;
                handle.record(false);
            }
            _ = tokio::time::sleep_until(view_at), if view.is_some() => {
                if let Some(view) = view.take() {
                    handle.view(None, view);
                }
            }
            _ = tokio::time::sleep_until(hand_at.unwrap_or(far)), if hand_at.is_some() => {
                hand_at = None;
                handle.raise_hand(true);
            }
            _ = tokio::time::sleep_until(mute_deadline) => {
                muted = true;
                handle.mute(true);
            }
            _ = tokio::time::sleep_until(until) => {
                break None;
            }
        }
    };
    let report = handle.report().await;
    let left_at_unix_ms = unix_ms();
    handle.leave();
    // Leaving finishes a recording (its index and duration): wait for the engine to end, a
    // bounded time, and keep what it said.
    if end.is_none() {
        let wait = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = events.recv().await {
                match event {
                    EngineEvent::Ended(_) => break,
                    event @ EngineEvent::RecordingStopped { .. } => {
                        recording_log.push(recording_entry(&event));
                    }
                    _ => {}
                }
            }
        });
        if wait.await.is_err() {
            eprintln!("confer: the call did not end within 15 s of leaving");
        }
    }
    if let Some(reason) = &end {
        eprintln!("confer: the call ended: {reason}");
    }
    if let Some(ReportFormat::Json) = args.report {
        let peers: Vec<serde_json::Value> = report
            .iter()
            .map(|(id, r)| {
                json!({
                    "id": id.to_string(),
                    "name": if r.name.is_empty() { names.get(&id.to_string()).cloned().unwrap_or_default() } else { r.name.clone() },
                    "first_frame_ms": r.first_frame_ms,
                    "connected_ms": r.connected_ms,
                    "video_frames_decoded": r.video_frames_decoded,
                    "video_units_dropped": r.video_units_dropped,
                    "video_pictures_dropped": r.video_pictures_dropped,
                    "video_sizes": r.video_sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect::<Vec<_>>(),
                    "send_layers": r.send_layers.iter().map(|(at, size)| json!({
                        "at_ms": at,
                        "size": size.map(|(w, h)| format!("{w}x{h}")),
                    })).collect::<Vec<_>>(),
                    "last_frame_ms": r.last_frame_ms,
                    "longest_video_gap_ms": r.longest_video_gap_ms,
                    "pattern_id": r.pattern_id,
                    "audio_tone_hz": r.audio_tone_hz,
                    "rtt_ms": r.stats.rtt_ms,
                    "candidate_type": r.path.map(|p| p.local.as_str()),
                    "remote_candidate_type": r.path.map(|p| p.remote.as_str()),
                    "relay_protocol": r.path.and_then(|p| p.relay).map(|t| t.as_str()),
                    "candidates_received": r.candidates_received,
                    "muted": r.muted,
                    "hand_raised": r.hand_raised,
                    "hand_order": r.hand_order,
                    "ice_restarts": r.ice_restarts,
                    "stats": {
                        "rtt_ms": r.stats.rtt_ms,
                        "receive_loss": r.stats.receive_loss,
                        "send_loss": r.stats.send_loss,
                        "send_jitter_ms": r.stats.send_jitter_ms,
                        "receive_video_kbps": r.stats.receive_video_kbps,
                        "receive_audio_kbps": r.stats.receive_audio_kbps,
                        "send_kbps": r.stats.send_kbps,
                        "send_layer": r.stats.send_layer.map(|(w, h)| format!("{w}x{h}")),
                        "send_estimate_kbps": r.stats.send_estimate_kbps,
                        "frame_rate": r.stats.frame_rate,
                        "candidate_type": r.stats.path.map(|p| p.local.as_str()),
                    },
                    "video_latency_ms": {
                        "p50": engine::quantile(&r.video_latency_ms, 0.5),
                        "p95": engine::quantile(&r.video_latency_ms, 0.95),
                        "samples": r.video_latency_ms.len(),
                    },
                    "audio_latency_ms": {
                        "p50": engine::quantile(&r.audio_latency_ms, 0.5),
                        "p95": engine::quantile(&r.audio_latency_ms, 0.95),
                        "samples": r.audio_latency_ms.len(),
                    },
                    "sharing": r.sharing,
                    "recording": r.recording,
                    "share_frames_decoded": r.share_frames_decoded,
                    "share_first_frame_ms": r.share_first_frame_ms,
                    "share_pattern_id": r.share_pattern_id,
                    "share_latency_ms": {
                        "p50": engine::quantile(&r.share_latency_ms, 0.5),
                        "p95": engine::quantile(&r.share_latency_ms, 0.95),
                        "samples": r.share_latency_ms.len(),
                    },
                })
            })
            .collect();
        let out = json!({
            "peer_id": peer_id,
            "peers": peers,
            "chat": chats,
            "reactions": reactions,
            "files_received": files_received,
            "files_sent": files_sent,
            "files_failed": files_failed,
            "file_progress_events": file_progress,
            "left": left,
            "reconnecting": reconnecting,
            "unreachable": unreachable,
            "no_path_yet": struggling,
            "relay_resumes": relay_resumes,
            "relay_back": relay_back,
            "relay_lost": relay_lost,
            "network_changes": network_changes,
            "device_switches": device_switches,
            "audio_tunings": audio_tunings,
            "device_errors": device_errors,
            "share": share_log,
            "recording": recording_log,
            "left_at_unix_ms": left_at_unix_ms,
            "ended": end,
        });
        println!("{out}");
    }
    // Give the leave message a moment to reach the relay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if end.is_some() {
        ExitCode::FAILURE
    } else if !no_path.is_empty() {
        eprintln!("confer: no network path to {} participant(s)", no_path.len());
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}
