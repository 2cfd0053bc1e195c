//! The commands the page invokes. Each one calls the engine's handle (or the settings store, or
//! the relay) and fails with a [`UiError`]; none holds call logic.

// Tauri hands managed state to commands by value (`State` is a cheap reference).
#![allow(clippy::needless_pass_by_value)]

use std::collections::HashMap;
use std::sync::Arc;

use confer_media::{CameraChoice, DeviceChoice, ProcessingConfig, SYNTHETIC_CAMERA, SYNTHETIC_DEVICE};
use confer_mesh::engine::{self, EngineConfig, EngineEvent, EngineHandle, MediaSource};
use confer_mesh::layers::View;
use confer_proto::{ClientMessage, InviteLink, PeerId};
use serde::Serialize;
use tauri::{AppHandle, Emitter as _, State};

use confer_mesh::share::{DEFAULT_SHARE_FPS, ShareChoice};

use crate::dto::{
    ErrorCode, FrameSocket, JoinRequest, UiDevice, UiDevices, UiError, UiEvent, UiMeeting, UiShareSource,
};
use crate::settings::{RecentMeeting, Settings};
use crate::{Shell, embedded};

/// The event every call event goes out as.
pub const CALL_EVENT: &str = "call";
/// The event the lobby's preview reports go out as.
pub const PREVIEW_EVENT: &str = "preview";

fn not_in_call() -> UiError {
    UiError::new(ErrorCode::NotInCall, "there is no call")
}

/// The call in progress.
#[derive(Debug)]
pub struct Call {
    handle: EngineHandle,
}

/// Settings as saved, and what went wrong reading them (if anything).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SettingsState {
    /// The settings in use.
    pub settings: Settings,
    /// Why the saved ones could not be used.
    pub problem: Option<UiError>,
}

/// Where the page opens the frame socket.
#[tauri::command]
pub fn frame_socket(shell: State<'_, Shell>) -> FrameSocket {
    FrameSocket { url: shell.frames.url() }
}

/// The settings in use.
#[tauri::command]
pub fn settings(shell: State<'_, Shell>) -> SettingsState {
    let settings = shell.settings().clone();
    SettingsState { settings, problem: shell.settings_problem.clone() }
}

/// Validates and saves `settings`; the ones saved before stay if they are refused.
#[tauri::command]
pub fn save_settings(settings: Settings, shell: State<'_, Shell>) -> Result<(), UiError> {
    shell.store.save(&settings)?;
    *shell.settings() = settings;
    Ok(())
}

/// The invite link the app was started with (a `confer://` deep link), once.
#[tauri::command]
pub fn launch_link(shell: State<'_, Shell>) -> Option<String> {
    shell.launch_link.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
}

/// Every camera, microphone and speaker, the synthetic ones included.
#[tauri::command]
pub async fn devices() -> Result<UiDevices, UiError> {
    let media = |e: &dyn std::fmt::Display| UiError::new(ErrorCode::Media, e.to_string());
    tauri::async_runtime::spawn_blocking(move || {
        let cameras = confer_media::cameras().map_err(|e| media(&e))?;
        let audio = |list: Vec<confer_media::AudioDeviceInfo>| {
            list.into_iter().map(|d| UiDevice { id: d.id, name: d.name, is_default: d.is_default }).collect()
        };
        Ok(UiDevices {
            cameras: cameras
                .into_iter()
                .map(|c| UiDevice { id: c.id, name: c.name, is_default: false })
                .collect(),
            microphones: audio(confer_media::input_devices().map_err(|e| media(&e))?),
            speakers: audio(confer_media::output_devices().map_err(|e| media(&e))?),
        })
    })
    .await
    .map_err(|e| media(&e))?
}

fn audio_choice(id: &str, pattern: u32) -> DeviceChoice {
    match id {
        "" | "default" => DeviceChoice::SystemDefault,
        SYNTHETIC_DEVICE => DeviceChoice::Synthetic(pattern),
        id => DeviceChoice::Id(id.to_owned()),
    }
}

fn camera_choice(id: &str, pattern: u32, name: &str) -> Option<CameraChoice> {
    match id {
        "" => None,
        SYNTHETIC_CAMERA => Some(CameraChoice::Synthetic { id: pattern, name: name.to_owned() }),
        id => Some(CameraChoice::Id(id.to_owned())),
    }
}

/// The engine's configuration from the user's settings.
pub fn engine_config(settings: &Settings, name: &str) -> EngineConfig {
    let pattern = settings.synthetic_pattern;
    let (width, height, fps) = settings.video_quality.format();
    let processing = ProcessingConfig {
        echo_cancellation: settings.echo_cancellation && !settings.music_mode,
        noise_suppression: settings.noise_suppression && !settings.music_mode,
        music_mode: settings.music_mode,
        ..ProcessingConfig::default()
    };
    let mut config = EngineConfig::synthetic(name, pattern);
    config.media = MediaSource::Devices {
        camera: camera_choice(&settings.camera, pattern, name),
        microphone: audio_choice(&settings.microphone, pattern),
        speaker: audio_choice(&settings.speaker, pattern),
        processing,
    };
    (config.width, config.height, config.fps) = (width, height, fps);
    config.self_view = true;
    // A user's call measures nothing for tests.
    config.probe = false;
    config.relay_only = settings.relay_only;
    config
}

/// Joins the call behind the link. Events follow as `call` events; frames on the frame socket.
#[tauri::command]
pub async fn join(request: JoinRequest, app: AppHandle, shell: State<'_, Shell>) -> Result<(), UiError> {
    let link = InviteLink::parse(request.link.trim())
        .map_err(|e| UiError::new(ErrorCode::BadLink, e.to_string()))?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > crate::settings::MAX_NAME {
        return Err(UiError::new(ErrorCode::Settings, "a name of 1 to 64 characters is needed"));
    }
    let mut call = shell.call.lock().await;
    if call.is_some() {
        return Err(UiError::new(ErrorCode::InCall, "already in a call: leave it first"));
    }
    // The call opens the devices the lobby showed: they must be free.
    close(&shell, &mut *shell.preview.lock().await).await;
    let settings = shell.settings().clone();
    let mut config = engine_config(&settings, name);
    config.uplink_kbps = request.uplink_kbps.filter(|&kbps| kbps > 0);
    // Files others send land in the user's downloads folder, as a browser's do.
    if let Ok(dir) = tauri::Manager::path(&app).download_dir() {
        config.downloads = dir;
    }
    // Recordings go in the user's videos folder (or ~/Videos where none is set), under Confer.
    let paths = tauri::Manager::path(&app);
    if let Ok(dir) = paths.video_dir().or_else(|_| paths.home_dir().map(|home| home.join("Videos"))) {
        config.recordings = dir.join("Confer");
    }
    let (handle, events) = engine::join(&link, config).await?;
    handle.mute(request.muted);
    handle.camera(request.camera);
    *call = Some(Call { handle: handle.clone() });
    drop(call);
    let frames = shell.frames.clone();
    let shell_call = Arc::clone(&shell.call);
    tauri::async_runtime::spawn(forward(events, frames, app, shell_call, handle));
    remember(
        &shell,
        RecentMeeting {
            link: request.link.trim().to_owned(),
            invite_link: None,
            at_ms: now_ms(),
            host: false,
        },
    );
    Ok(())
}

/// Tells each peer the size its tile is drawn at (device pixels), so it sends the layer that
/// fills it; no video while the window is hidden, nor to a peer whose tile is gone (its
/// `told` entry says what each was told last: only changes go out).
fn tell_views(handle: &EngineHandle, page: &crate::video::PageView, told: &mut HashMap<PeerId, View>) {
    let mut shown = HashMap::new();
    for (tile, &(width, height)) in &page.sizes {
        // "self", "share:…" and the lobby's preview are not peers' cameras.
        let Ok(id) = PeerId::parse(tile) else { continue };
        let view = View { width: width as u32, height: height as u32 };
        shown.insert(id, if page.hidden { View::OFF } else { view });
    }
    for (id, view) in told.iter_mut() {
        if !shown.contains_key(id) && *view != View::OFF {
            *view = View::OFF;
            handle.view(Some(id.clone()), View::OFF);
        }
    }
    for (id, view) in shown {
        if told.get(&id) != Some(&view) {
            handle.view(Some(id.clone()), view);
            told.insert(id, view);
        }
    }
}

/// Hands the engine's events on: frames to the frame socket, the rest to the page; and what
/// the page shows to the engine (see [`tell_views`]).
async fn forward(
    mut events: engine::EngineEvents,
    frames: crate::video::FrameServer,
    app: AppHandle,
    call: Arc<tokio::sync::Mutex<Option<Call>>>,
    handle: EngineHandle,
) {
    let mut ended = false;
    let mut views = frames.views();
    let mut told = HashMap::new();
    tell_views(&handle, &views.borrow_and_update().clone(), &mut told);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            Ok(()) = views.changed() => {
                let page = views.borrow_and_update().clone();
                tell_views(&handle, &page, &mut told);
                continue;
            }
        };
        match &event {
            EngineEvent::VideoFrame { from, frame, stamp } => {
                let captured_us = stamp.map_or(0, |s| s.captured_ms * 1000);
                frames.publish(from.as_str(), Arc::clone(frame), captured_us);
                continue;
            }
            EngineEvent::SelfView(frame) => {
                frames.publish("self", Arc::clone(frame), 0);
                continue;
            }
            EngineEvent::ShareFrame { from, frame, stamp } => {
                let captured_us = stamp.map_or(0, |s| s.captured_ms * 1000);
                frames.publish(&format!("share:{from}"), Arc::clone(frame), captured_us);
                continue;
            }
            EngineEvent::PeerSharing { id, sharing: false } => frames.forget(&format!("share:{id}")),
            EngineEvent::ParticipantLeft { id, .. } => {
                frames.forget(id.as_str());
                frames.forget(&format!("share:{id}"));
            }
            EngineEvent::Ended(_) => ended = true,
            _ => {}
        }
        if let Some(ui) = UiEvent::from_engine(&event)
            && let Err(err) = app.emit(CALL_EVENT, ui)
        {
            tracing::warn!("event not delivered to the page: {err}");
        }
        if ended {
            break;
        }
    }
    if !ended {
        let _ = app.emit(CALL_EVENT, UiEvent::Ended { reason: Some("the call engine stopped".into()) });
    }
    frames.forget("self");
    *call.lock().await = None;
}

/// Adds a meeting to the recent ones and saves the settings (a failure to save is logged: the
/// meeting goes on).
fn remember(shell: &Shell, meeting: RecentMeeting) {
    let mut settings = shell.settings();
    settings.remember(meeting);
    if let Err(err) = shell.store.save(&settings) {
        tracing::warn!("recent meetings not saved: {err}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn with_call<T>(
    shell: &Shell,
    f: impl FnOnce(&EngineHandle) -> Result<T, UiError>,
) -> Result<T, UiError> {
    let call = shell.call.lock().await;
    let call = call.as_ref().ok_or_else(not_in_call)?;
    f(&call.handle)
}

/// Leaves the call (an `ended` event follows).
#[tauri::command]
pub async fn leave(shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| {
        h.leave();
        Ok(())
    })
    .await
}

/// Mutes or unmutes the microphone.
#[tauri::command]
pub async fn set_muted(muted: bool, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| {
        h.mute(muted);
        Ok(())
    })
    .await
}

/// Turns the camera on or off.
#[tauri::command]
pub async fn set_camera(on: bool, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| {
        h.camera(on);
        Ok(())
    })
    .await
}

/// Raises or lowers the hand.
#[tauri::command]
pub async fn raise_hand(raised: bool, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| {
        h.raise_hand(raised);
        Ok(())
    })
    .await
}

/// The screens and windows that can be shared, each with a thumbnail.
#[tauri::command]
pub async fn share_sources() -> Result<Vec<UiShareSource>, UiError> {
    let share_error = |e: &dyn std::fmt::Display| UiError::new(ErrorCode::Share, e.to_string());
    tauri::async_runtime::spawn_blocking(move || {
        let sources = confer_media::share_sources().map_err(|e| share_error(&e))?;
        let ids: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
        let thumbnails = confer_media::share_thumbnails(&ids, 320, 180);
        Ok(sources
            .into_iter()
            .zip(thumbnails)
            .map(|(s, thumbnail)| UiShareSource {
                thumbnail: thumbnail.ok().and_then(|frame| jpeg_data_url(&frame)),
                kind: match s.kind {
                    confer_media::ShareKind::Screen => "screen",
                    _ => "window",
                }
                .to_owned(),
                id: s.id,
                name: s.name,
                width: s.width,
                height: s.height,
            })
            .collect())
    })
    .await
    .map_err(|e| share_error(&e))?
}

/// A picture as a `data:` URL of a JPEG, for an `<img>`.
fn jpeg_data_url(frame: &confer_media::I420Frame) -> Option<String> {
    use base64::Engine as _;
    let mut jpeg = Vec::new();
    let (width, height) = (u16::try_from(frame.width()).ok()?, u16::try_from(frame.height()).ok()?);
    jpeg_encoder::Encoder::new(&mut jpeg, 75)
        .encode(&frame.to_rgb(), width, height, jpeg_encoder::ColorType::Rgb)
        .ok()?;
    Some(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg)))
}

/// Shares a screen or window (`screen:<n>`, `window:<id>`) with everyone in the call, in place
/// of what is shared now; `null` stops sharing. A `share_started` or `share_stopped` event says
/// how it went.
#[tauri::command]
pub async fn share_screen(source: Option<String>, shell: State<'_, Shell>) -> Result<(), UiError> {
    let choice = match source {
        Some(id) => {
            confer_media::ShareTarget::parse(&id)
                .map_err(|e| UiError::new(ErrorCode::Share, e.to_string()))?;
            Some((ShareChoice::Source(id), DEFAULT_SHARE_FPS))
        }
        None => None,
    };
    with_call(&shell, |h| {
        h.share(choice);
        Ok(())
    })
    .await
}

/// Sends the file at `path` (dropped on the window) to everyone in the call; `file_*` events
/// follow per participant.
#[tauri::command]
pub async fn send_file(path: String, shell: State<'_, Shell>) -> Result<(), UiError> {
    let path = std::path::PathBuf::from(path);
    if !path.is_file() {
        return Err(UiError::new(ErrorCode::File, format!("{} is not a file", path.display())));
    }
    with_call(&shell, |h| {
        h.send_file(&path);
        Ok(())
    })
    .await
}

/// Sends a reaction (👍 👏 😂 ❤️ 🎉 😮) to everyone.
#[tauri::command]
pub async fn react(emoji: String, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| h.react(&emoji).map_err(|e| UiError::new(ErrorCode::Chat, e.to_string()))).await
}

/// Starts (`on`) or stops recording the call; `recording_started` / `recording_stopped`
/// follow (everyone is told before anything is written).
#[tauri::command]
pub async fn record(on: bool, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| {
        h.record(on);
        Ok(())
    })
    .await
}

/// Sends a chat message to everyone.
#[tauri::command]
pub async fn send_chat(text: String, shell: State<'_, Shell>) -> Result<(), UiError> {
    with_call(&shell, |h| h.chat(&text).map_err(|e| UiError::new(ErrorCode::Chat, e.to_string()))).await
}

/// Switches a device in the call: `camera`, `microphone` or `speaker`, by id.
#[tauri::command]
pub async fn choose_device(kind: String, id: String, shell: State<'_, Shell>) -> Result<(), UiError> {
    let (pattern, name) = {
        let settings = shell.settings();
        (settings.synthetic_pattern, settings.name.clone())
    };
    with_call(&shell, |h| {
        match kind.as_str() {
            "camera" => match camera_choice(&id, pattern, &name) {
                Some(choice) => h.set_camera(choice),
                None => h.camera(false),
            },
            "microphone" => h.set_microphone(audio_choice(&id, pattern)),
            "speaker" => h.set_speaker(audio_choice(&id, pattern)),
            other => return Err(UiError::new(ErrorCode::Media, format!("no such device kind: {other}"))),
        }
        Ok(())
    })
    .await
}

/// A host action: `lock`, `unlock`, `several_shares`, `one_share`, or `admit`, `deny`,
/// `remove`, `stop_share` with a participant id.
#[tauri::command]
pub async fn host_action(
    action: String,
    peer: Option<String>,
    shell: State<'_, Shell>,
) -> Result<(), UiError> {
    let peer = || {
        let id = peer.as_deref().unwrap_or("");
        PeerId::parse(id).map_err(|e| UiError::new(ErrorCode::NotInCall, format!("no such participant: {e}")))
    };
    let message = match action.as_str() {
        "lock" => ClientMessage::Lock,
        "unlock" => ClientMessage::Unlock,
        "admit" => ClientMessage::Admit { peer: peer()? },
        "deny" => ClientMessage::Deny { peer: peer()? },
        "remove" => ClientMessage::Remove { peer: peer()? },
        "stop_share" => ClientMessage::StopShare { peer: peer()? },
        "several_shares" => ClientMessage::SharePolicy { several: true },
        "one_share" => ClientMessage::SharePolicy { several: false },
        other => return Err(UiError::new(ErrorCode::NotInCall, format!("no such host action: {other}"))),
    };
    with_call(&shell, |h| {
        h.host(message);
        Ok(())
    })
    .await
}

/// The frame socket's tile for the lobby's camera picture (the call's own is `self`).
pub const PREVIEW_TILE: &str = "preview";

/// Shows `camera`'s picture (as tile [`PREVIEW_TILE`] on the frame socket) and `microphone`'s
/// level (as `preview` events) until [`stop_preview`] or a join; replaces a preview already
/// showing. Devices that cannot be opened are reported as `preview` events, not as this
/// command's error. Returns the preview's number, which its events carry (events of a preview
/// replaced since are the page's to ignore).
///
/// Preview commands and `join` take the call's lock, then the preview's, in that order: a join
/// that comes while a preview starts waits for it, then closes it.
#[tauri::command]
pub async fn start_preview(
    camera: String,
    microphone: String,
    app: AppHandle,
    shell: State<'_, Shell>,
) -> Result<u64, UiError> {
    let call = shell.call.lock().await;
    if call.is_some() {
        return Err(UiError::new(ErrorCode::InCall, "the call is using the devices"));
    }
    let mut slot = shell.preview.lock().await;
    drop(call);
    close(&shell, &mut slot).await;
    let (pattern, name, (width, height, fps)) = {
        let settings = shell.settings();
        (settings.synthetic_pattern, settings.name.clone(), settings.video_quality.format())
    };
    let camera = camera_choice(&camera, pattern, &name).map(|choice| confer_media::preview::CameraRequest {
        choice,
        width,
        height,
        fps,
    });
    let microphone = Some(audio_choice(&microphone, pattern));
    let frames = shell.frames.clone();
    let generation = shell.preview_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let preview = confer_media::preview::Preview::start(camera, microphone, move |event| {
        if let confer_media::preview::PreviewEvent::Frame(frame) = &event {
            frames.publish(PREVIEW_TILE, Arc::clone(frame), now_ms() * 1000);
        } else if let Some(ui) = crate::dto::UiPreviewEvent::from_preview(event, generation)
            && let Err(err) = app.emit(PREVIEW_EVENT, ui)
        {
            tracing::warn!("preview event not delivered to the page: {err}");
        }
    });
    *slot = Some(preview);
    Ok(generation)
}

/// Closes the lobby's devices.
#[tauri::command]
pub async fn stop_preview(shell: State<'_, Shell>) -> Result<(), UiError> {
    close(&shell, &mut *shell.preview.lock().await).await;
    Ok(())
}

/// Closes the preview in `slot`, if there is one: waits for its devices to close (off the async
/// threads: a camera still opening may take seconds) and takes its picture away.
async fn close(shell: &Shell, slot: &mut Option<confer_media::preview::Preview>) {
    if let Some(preview) = slot.take() {
        let _ = tauri::async_runtime::spawn_blocking(move || drop(preview)).await;
        shell.frames.forget(PREVIEW_TILE);
    }
}

/// Plays a short chime on `speaker` and says how much of it the device played.
#[tauri::command]
pub async fn test_speaker(
    speaker: String,
    shell: State<'_, Shell>,
) -> Result<crate::dto::UiSoundCheck, UiError> {
    let pattern = shell.settings().synthetic_pattern;
    let choice = audio_choice(&speaker, pattern);
    let media = |e: &dyn std::fmt::Display| UiError::new(ErrorCode::Media, e.to_string());
    let check = tauri::async_runtime::spawn_blocking(move || confer_media::preview::play_test_sound(choice))
        .await
        .map_err(|e| media(&e))?
        .map_err(|e| media(&e))?;
    Ok(crate::dto::UiSoundCheck {
        played_ms: check.played_ms,
        sound_ms: check.sound_ms,
        peak_dbfs: check.peak_dbfs,
    })
}

/// Checks the meeting's relay and its STUN and TURN servers, without joining.
#[tauri::command]
pub async fn network_check(
    link: String,
    shell: State<'_, Shell>,
) -> Result<crate::dto::UiNetworkReport, UiError> {
    let link = InviteLink::parse(link.trim()).map_err(|e| UiError::new(ErrorCode::BadLink, e.to_string()))?;
    // The call capacity is for the camera settings a join would use.
    let config = engine_config(&shell.settings(), "");
    let ladder =
        confer_mesh::layers::Ladder::new(config.width, config.height, config.fps, config.video_bitrate);
    let report = confer_mesh::netcheck::check(&link).await;
    Ok(crate::dto::UiNetworkReport::new(report, &ladder))
}

/// Makes a new meeting: on the configured relay, or on the one built into the app when none is
/// set (people on the same network can join by its link).
#[tauri::command]
pub async fn new_meeting(shell: State<'_, Shell>) -> Result<UiMeeting, UiError> {
    let relay_url = shell.settings().relay_url.trim().to_owned();
    let meeting = if relay_url.is_empty() {
        let relay = embedded::relay(&shell.embedded).await?;
        let links = relay.create_room(false);
        UiMeeting {
            host_link: links.host.app,
            invite_link: links.guest.app,
            web_link: links.guest.web,
            embedded: true,
        }
    } else {
        let room = confer_mesh::rooms::create_room(&relay_url, None, None, false)
            .await
            .map_err(|e| UiError::new(ErrorCode::RoomCreation, e.to_string()))?;
        UiMeeting {
            host_link: room.host.app_link(),
            invite_link: room.guest.app_link(),
            web_link: room.guest.web_link(),
            embedded: false,
        }
    };
    remember(
        &shell,
        RecentMeeting {
            link: meeting.host_link.clone(),
            invite_link: Some(meeting.invite_link.clone()),
            at_ms: now_ms(),
            host: true,
        },
    );
    Ok(meeting)
}

/// For the benchmark of the path from decoded frame to drawn tile: with `CONFER_BENCH_TILES=1`
/// in the environment (refused otherwise), shows `count` participants whose synthetic cameras
/// publish `width`x`height` frames at `fps` to the frame socket for `seconds`, as a call's
/// decoded video would arrive. No network, no codec: only the path to the page is measured.
#[tauri::command]
pub async fn bench_tiles(
    count: u32,
    fps: u32,
    width: u32,
    height: u32,
    seconds: u32,
    app: AppHandle,
    shell: State<'_, Shell>,
) -> Result<(), UiError> {
    if std::env::var_os("CONFER_BENCH_TILES").is_none() {
        return Err(UiError::new(ErrorCode::NotInCall, "the tile benchmark is off (CONFER_BENCH_TILES)"));
    }
    if shell.call.lock().await.is_some() {
        return Err(UiError::new(ErrorCode::InCall, "leave the call first"));
    }
    let media = |e: &dyn std::fmt::Display| UiError::new(ErrorCode::Media, e.to_string());
    let mut cameras = (1..=count.clamp(1, 16))
        .map(|i| {
            confer_media::synthetic::SyntheticCamera::new(i, width as usize, height as usize)
                .map(|c| (format!("bench-{i}"), c.with_name(&format!("Tile {i}"))))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| media(&e))?;
    let participants = cameras
        .iter()
        .enumerate()
        .map(|(i, (id, _))| crate::dto::UiParticipant {
            id: id.clone(),
            name: format!("Tile {}", i + 1),
            host: false,
            muted: true,
            camera: true,
            hand_raised: false,
            hand_order: None,
            reconnecting: false,
            recording: false,
        })
        .collect::<Vec<_>>();
    let joined = UiEvent::Joined {
        self_id: "bench".into(),
        participants,
        host: false,
        locked: false,
        knocking: Vec::new(),
    };
    let _ = app.emit(CALL_EVENT, joined);
    for (id, _) in &cameras {
        let _ = app
            .emit(CALL_EVENT, UiEvent::PeerConnected { id: id.clone(), candidate_type: Some("host".into()) });
    }
    let frames = shell.frames.clone();
    let period = std::time::Duration::from_secs_f64(1.0 / f64::from(fps.clamp(1, 120)));
    std::thread::Builder::new()
        .name("confer-bench-tiles".into())
        .spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(u64::from(seconds));
            let mut next = std::time::Instant::now();
            while std::time::Instant::now() < end {
                for (id, camera) in &mut cameras {
                    let now_us = now_ms() * 1000;
                    let (frame, _) = camera.next_frame(now_us / 1000);
                    frames.publish(id, Arc::new(frame), now_us);
                }
                next += period;
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
            let _ = app.emit(CALL_EVENT, UiEvent::Ended { reason: Some("the tile benchmark ended".into()) });
        })
        .map_err(|e| media(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hiding_my_ip_address_makes_the_engine_relay_only() {
        let hidden = Settings { relay_only: true, ..Settings::default() };
        assert!(engine_config(&hidden, "Ada").relay_only);
        assert!(!engine_config(&Settings::default(), "Ada").relay_only);
    }
}
