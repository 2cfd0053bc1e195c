//! Confer's desktop app: a thin Tauri 2 shell over the call engine (`confer-mesh`).
//!
//! Commands ([`commands`]) call the engine's handle; engine events go to the page as `call`
//! events ([`dto::UiEvent`]); decoded video goes to the page over the frame socket
//! ([`video`]), not through JSON; errors reach the page as a stable code plus a message
//! ([`dto::UiError`]). Settings and recent meetings persist in the platform's config directory
//! ([`settings`]); logs go to its log directory. With no relay configured, "New meeting" runs
//! the relay inside the app ([`embedded`]).

pub mod commands;
pub mod dto;
pub mod embedded;
pub mod settings;
pub mod video;

#[cfg(test)]
mod bindings;

use std::sync::{Arc, Mutex};

use tauri::{Emitter as _, Manager as _};

/// The event a link opened while the app runs goes out as (a `confer://` or relay `https://`
/// invite): from a second launch (single instance) or the system's URL handler.
pub const INVITE_EVENT: &str = "invite";

/// What the commands share.
#[derive(Debug)]
pub struct Shell {
    /// The call in progress.
    pub call: Arc<tokio::sync::Mutex<Option<commands::Call>>>,
    /// Where decoded frames go.
    pub frames: video::FrameServer,
    /// Where settings are kept.
    pub store: settings::Store,
    /// The settings in use.
    pub settings: Mutex<settings::Settings>,
    /// Why the saved settings could not be used, if so.
    pub settings_problem: Option<dto::UiError>,
    /// The invite link the app was started with, until the page takes it.
    pub launch_link: Mutex<Option<String>>,
    /// The embedded relay, once started.
    pub embedded: embedded::Slot,
    /// The lobby's camera picture and microphone level, while the lobby shows them. Taken after
    /// `call` when both are needed.
    pub preview: tokio::sync::Mutex<Option<confer_media::preview::Preview>>,
    /// Numbers the previews, so the page can tell a replaced one's late events.
    pub preview_generation: std::sync::atomic::AtomicU64,
}

impl Shell {
    /// The settings in use, locked (a panic while they were held leaves them usable).
    pub fn settings(&self) -> std::sync::MutexGuard<'_, settings::Settings> {
        self.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The page origins the frame socket lets in: the bundled page on each platform, and the Vite
/// dev server in development.
fn page_origins() -> Vec<String> {
    ["tauri://localhost", "http://tauri.localhost", "https://tauri.localhost", "http://localhost:5173"]
        .map(String::from)
        .to_vec()
}

/// The first `confer://` link among the arguments (a launcher passes the link as the only
/// argument; WebDriver passes `--automation`, which is ignored).
pub fn link_in_args(args: impl IntoIterator<Item = String>) -> Option<String> {
    args.into_iter().skip(1).find(|a| a.starts_with("confer://") || a.starts_with("https://"))
}

fn start_logging(dir: &std::path::Path) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,webrtc=warn,webrtc_ice=warn"));
    let file = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(dir.join("confer.log")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let _ = match file {
        Ok(file) => builder.with_writer(Mutex::new(file)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Runs the app until its window closes.
pub fn run() {
    let launch_link = link_in_args(std::env::args());
    let result = tauri::Builder::default()
        // First: a second launch (a clicked invite link) hands its arguments to this instance and
        // exits before anything else of it starts (D-Bus on Linux).
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            if let Some(link) = link_in_args(argv) {
                let _ = app.emit(INVITE_EVENT, link);
            }
            if let Some(window) = app.get_webview_window("main") {
                let _ = window.unminimize();
                let _ = window.set_focus();
            }
        }))
        .plugin(tauri_plugin_deep_link::init())
        .invoke_handler(tauri::generate_handler![
            commands::frame_socket,
            commands::settings,
            commands::save_settings,
            commands::launch_link,
            commands::devices,
            commands::join,
            commands::leave,
            commands::set_muted,
            commands::set_camera,
            commands::raise_hand,
            commands::share_sources,
            commands::share_screen,
            commands::record,
            commands::react,
            commands::send_file,
            commands::send_chat,
            commands::choose_device,
            commands::host_action,
            commands::new_meeting,
            commands::bench_tiles,
            commands::start_preview,
            commands::stop_preview,
            commands::test_speaker,
            commands::network_check,
        ])
        .setup(move |app| {
            if let Ok(dir) = app.path().app_log_dir() {
                start_logging(&dir);
            }
            let config_dir = app.path().app_config_dir()?;
            let store = settings::Store::new(&config_dir);
            let (settings, settings_problem) = store.load();
            if let Some(problem) = &settings_problem {
                tracing::warn!("{problem}");
            }
            {
                use tauri_plugin_deep_link::DeepLinkExt as _;
                // macOS hands links to the running app as events (Linux and Windows start a
                // process with the link as its argument: the single-instance path above).
                let handle = app.handle().clone();
                app.deep_link().on_open_url(move |event| {
                    for url in event.urls() {
                        let _ = handle.emit(INVITE_EVENT, url.to_string());
                    }
                });
                // An AppImage is not installed, so it registers the scheme itself; the .deb's
                // desktop file does it for an installed app.
                #[cfg(target_os = "linux")]
                if std::env::var_os("APPIMAGE").is_some()
                    && let Err(err) = app.deep_link().register_all()
                {
                    tracing::warn!("confer:// links not registered: {err}");
                }
            }
            let frames = tauri::async_runtime::block_on(video::FrameServer::start(page_origins()))?;
            app.manage(Shell {
                call: Arc::default(),
                frames,
                store,
                settings: Mutex::new(settings),
                settings_problem,
                launch_link: Mutex::new(launch_link),
                embedded: embedded::Slot::default(),
                preview: tokio::sync::Mutex::new(None),
                preview_generation: std::sync::atomic::AtomicU64::new(0),
            });
            Ok(())
        })
        .run(tauri::generate_context!());
    if let Err(err) = result {
        // Before the window exists (no display, say), the terminal is the only place to say it.
        #[expect(clippy::print_stderr, reason = "the app could not start; there is no window to show it in")]
        {
            eprintln!("confer-desktop: {err}");
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_link_is_found_and_webdriver_s_flag_is_not_one() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(link_in_args(args(&["confer-desktop", "--automation"])), None);
        assert_eq!(
            link_in_args(args(&["confer-desktop", "confer://join?relay=x"])).as_deref(),
            Some("confer://join?relay=x")
        );
        assert_eq!(link_in_args(args(&["confer://not-argv0"])), None);
    }
}
