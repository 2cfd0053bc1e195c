//! `ui/src/lib/bindings.ts` is generated from the types the page and the shell exchange; this
//! test fails when the committed file no longer matches them. To regenerate it:
//! `UPDATE_BINDINGS=1 cargo test --workspace --lib bindings`.

use ts_rs::{Config, TS};

use crate::commands::SettingsState;
use crate::dto::{
    ErrorCode, FrameSocket, JoinRequest, Quality, UiCapacity, UiDevice, UiDevices, UiError, UiEvent,
    UiKnocker, UiLeaveReason, UiLevel, UiMeeting, UiNetworkReport, UiParticipant, UiPeerStats,
    UiPreviewEvent, UiServerCheck, UiShareSource, UiSoundCheck,
};
use crate::settings::{RecentMeeting, Settings, VideoQuality};

fn generated() -> String {
    let config = Config::new().with_large_int("number");
    let declarations = [
        UiEvent::decl(&config),
        UiParticipant::decl(&config),
        UiKnocker::decl(&config),
        UiLevel::decl(&config),
        UiPeerStats::decl(&config),
        Quality::decl(&config),
        UiLeaveReason::decl(&config),
        ErrorCode::decl(&config),
        UiError::decl(&config),
        UiDevice::decl(&config),
        UiShareSource::decl(&config),
        UiDevices::decl(&config),
        FrameSocket::decl(&config),
        UiMeeting::decl(&config),
        JoinRequest::decl(&config),
        UiPreviewEvent::decl(&config),
        UiSoundCheck::decl(&config),
        UiNetworkReport::decl(&config),
        UiServerCheck::decl(&config),
        UiCapacity::decl(&config),
        Settings::decl(&config),
        VideoQuality::decl(&config),
        RecentMeeting::decl(&config),
        SettingsState::decl(&config),
    ];
    let mut out = String::from(
        "// Generated from src-tauri's types by `UPDATE_BINDINGS=1 cargo test --workspace --lib bindings`.\n// Do not edit: a test fails when this file and the Rust types disagree.\n\n",
    );
    for declaration in declarations {
        out.push_str("export ");
        out.push_str(&declaration);
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[test]
fn bindings_match_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings.ts");
    let fresh = generated();
    if std::env::var_os("UPDATE_BINDINGS").is_some() {
        std::fs::write(&path, &fresh).expect("write the bindings");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "ui/src/lib/bindings.ts does not match the Rust types: run `UPDATE_BINDINGS=1 cargo test --workspace --lib bindings`"
    );
}
