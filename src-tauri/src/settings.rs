//! The user's settings and recent meetings, kept as JSON in the platform's config directory
//! (`~/.config/org.confer.desktop/settings.json` on Linux). Saved atomically (a temporary file
//! renamed over the old one). A file that cannot be read as settings is not overwritten: it is
//! moved aside to `settings.json.bad` and the app starts from defaults, saying so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dto::{ErrorCode, UiError};

/// The longest display name (the relay's limit).
pub const MAX_NAME: usize = 64;
/// Recent meetings kept.
pub const MAX_RECENT: usize = 10;

/// Video sent: size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum VideoQuality {
    /// 320x180 at 15 fps: for poor networks.
    Low,
    /// 640x360 at 30 fps.
    #[default]
    Standard,
    /// 1280x720 at 30 fps.
    High,
}

impl VideoQuality {
    /// Width, height, frames per second.
    pub fn format(self) -> (u32, u32, u32) {
        match self {
            Self::Low => (320, 180, 15),
            Self::Standard => (640, 360, 30),
            Self::High => (1280, 720, 30),
        }
    }
}

/// A meeting joined or made here, for the home screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RecentMeeting {
    /// The link joined with.
    pub link: String,
    /// The invite for others, if known (a meeting made here).
    pub invite_link: Option<String>,
    /// When, Unix milliseconds.
    #[cfg_attr(test, ts(type = "number"))]
    pub at_ms: u64,
    /// Whether it was joined as host.
    pub host: bool,
}

/// Everything the user can set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(default)]
pub struct Settings {
    /// Display name.
    pub name: String,
    /// The relay for new meetings (`wss://host:port`); empty: the one built into the app.
    pub relay_url: String,
    /// Camera id, `synthetic`, or empty for none.
    pub camera: String,
    /// Microphone id, `default` or `synthetic`.
    pub microphone: String,
    /// Speaker id, `default` or `synthetic`.
    pub speaker: String,
    /// Video sent.
    pub video_quality: VideoQuality,
    /// Echo cancellation.
    pub echo_cancellation: bool,
    /// Noise suppression.
    pub noise_suppression: bool,
    /// Music mode: no processing, full band.
    pub music_mode: bool,
    /// Hide my IP address from other participants: relay candidates only, so no host or
    /// server-reflexive address of this machine reaches anyone (calls need the meeting server's
    /// relay).
    pub relay_only: bool,
    /// The synthetic camera's and microphone's pattern id (what tests read back).
    pub synthetic_pattern: u32,
    /// Recent meetings, newest first.
    pub recent: Vec<RecentMeeting>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: String::new(),
            relay_url: String::new(),
            camera: String::new(),
            microphone: "default".into(),
            speaker: "default".into(),
            video_quality: VideoQuality::Standard,
            echo_cancellation: true,
            noise_suppression: true,
            music_mode: false,
            relay_only: false,
            synthetic_pattern: 1,
            recent: Vec::new(),
        }
    }
}

fn invalid(message: impl Into<String>) -> UiError {
    UiError::new(ErrorCode::Settings, message)
}

impl Settings {
    /// Checks what the page sent; the error names the field.
    pub fn validate(&self) -> Result<(), UiError> {
        if self.name.chars().count() > MAX_NAME {
            return Err(invalid(format!("the name is longer than {MAX_NAME} characters")));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("the name has control characters"));
        }
        let url = self.relay_url.trim();
        if !(url.is_empty() || url.starts_with("wss://") || url.starts_with("ws://")) {
            return Err(invalid("the relay URL must start with wss:// (or ws:// on this machine)"));
        }
        for (field, value) in
            [("camera", &self.camera), ("microphone", &self.microphone), ("speaker", &self.speaker)]
        {
            if value.len() > 512 || value.chars().any(char::is_control) {
                return Err(invalid(format!("the {field} id is not a device id")));
            }
        }
        if self.recent.len() > MAX_RECENT {
            return Err(invalid(format!("more than {MAX_RECENT} recent meetings")));
        }
        Ok(())
    }

    /// Puts `meeting` first among the recent ones (once per link).
    pub fn remember(&mut self, meeting: RecentMeeting) {
        let invite = meeting.invite_link.clone();
        let old = self.recent.iter().position(|m| m.link == meeting.link);
        let kept_invite = old.and_then(|i| self.recent.remove(i).invite_link);
        self.recent.insert(0, RecentMeeting { invite_link: invite.or(kept_invite), ..meeting });
        self.recent.truncate(MAX_RECENT);
    }
}

/// Where settings live, and how they are read and written.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// Settings in `dir/settings.json`.
    pub fn new(dir: &Path) -> Self {
        Self { path: dir.join("settings.json") }
    }

    /// The saved settings; defaults if there are none. A file that is not valid settings is
    /// moved to `settings.json.bad` (kept for the user) and the error says so.
    pub fn load(&self) -> (Settings, Option<UiError>) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return (Settings::default(), None),
            Err(err) => {
                return (Settings::default(), Some(invalid(format!("{}: {err}", self.path.display()))));
            }
        };
        let parsed = serde_json::from_str::<Settings>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map(|()| s).map_err(|e| e.message));
        match parsed {
            Ok(settings) => (settings, None),
            Err(why) => {
                let aside = self.path.with_extension("json.bad");
                let moved = std::fs::rename(&self.path, &aside);
                let note = match moved {
                    Ok(()) => format!("kept as {}", aside.display()),
                    Err(err) => format!("could not be moved aside: {err}"),
                };
                let message = format!(
                    "{} is not valid settings ({why}); defaults are used, the old file {note}",
                    self.path.display()
                );
                (Settings::default(), Some(invalid(message)))
            }
        }
    }

    /// Saves `settings` (validated first).
    pub fn save(&self, settings: &Settings) -> Result<(), UiError> {
        settings.validate()?;
        let fail = |err: std::io::Error| invalid(format!("{}: {err}", self.path.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(settings).map_err(|e| invalid(e.to_string()))?;
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, text).map_err(fail)?;
        std::fs::rename(&temporary, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let mut settings = Settings { name: "Ada".into(), music_mode: true, ..Settings::default() };
        settings.remember(RecentMeeting {
            link: "confer://a".into(),
            invite_link: None,
            at_ms: 1,
            host: true,
        });
        store.save(&settings).expect("save");
        let (loaded, problem) = Store::new(dir.path()).load();
        assert_eq!(problem, None);
        assert_eq!(loaded, settings);
    }

    #[test]
    fn a_broken_file_is_kept_aside_and_defaults_are_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{ not json").expect("write");
        let (loaded, problem) = Store::new(dir.path()).load();
        assert_eq!(loaded, Settings::default());
        let problem = problem.expect("the problem is reported");
        assert_eq!(problem.code, ErrorCode::Settings);
        assert!(problem.message.contains("settings.json.bad"), "{}", problem.message);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("settings.json.bad")).expect("kept"),
            "{ not json"
        );
    }

    #[test]
    fn invalid_settings_are_refused_and_the_saved_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let good = Settings { name: "Ada".into(), ..Settings::default() };
        store.save(&good).expect("save");
        for bad in [
            Settings { name: "x".repeat(MAX_NAME + 1), ..Settings::default() },
            Settings { relay_url: "http://example.org".into(), ..Settings::default() },
            Settings { camera: "a\nb".into(), ..Settings::default() },
        ] {
            let err = store.save(&bad).expect_err("refused");
            assert_eq!(err.code, ErrorCode::Settings);
        }
        assert_eq!(store.load().0, good);
    }

    #[test]
    fn recent_meetings_are_newest_first_once_each_and_bounded() {
        let mut settings = Settings::default();
        for i in 0..15 {
            settings.remember(RecentMeeting {
                link: format!("confer://{i}"),
                invite_link: None,
                at_ms: i,
                host: false,
            });
        }
        settings.remember(RecentMeeting {
            link: "confer://12".into(),
            invite_link: None,
            at_ms: 99,
            host: false,
        });
        assert_eq!(settings.recent.len(), MAX_RECENT);
        assert_eq!(settings.recent[0].link, "confer://12");
        assert_eq!(settings.recent.iter().filter(|m| m.link == "confer://12").count(), 1);
        assert_eq!(settings.recent[1].link, "confer://14");
    }
}
