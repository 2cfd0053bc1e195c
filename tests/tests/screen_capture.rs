//! Screen sharing's capture on a real X server (Xvfb): the picker lists the screen and the
//! windows by title, a window is captured with its own content even where another window covers
//! it, a whole screen is captured at the rate asked for, thumbnails fit the picker, and a closed
//! window ends its share with that reason. Without a display, the error says so; in a Wayland
//! session too. `confer screens` lists the same sources.
//!
//! What is on screen is the synthetic camera's stamped picture, painted into real X windows by
//! [`PatternWindow`]: the stamp read back from a captured frame proves whose picture it is and
//! that it is fresh.
//!
//! No test harness (`harness = false`): the display is chosen through `DISPLAY`, set once here
//! before any thread starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use confer_media::synthetic::read_stamp;
use confer_media::{ScreenError, ScreenShare, ShareEnded, ShareKind, share_sources, share_thumbnail};
use confer_tests::desktop::Xvfb;
use confer_tests::screen::PatternWindow;

const PATTERN: u32 = 77;

/// What a share delivered: the stamps' (id, counter), the frame sizes seen, the frame count.
type Watched = (Vec<(u32, u32)>, Vec<(usize, usize)>, usize);

/// Reads frames for `how_long`.
fn watch(share: &ScreenShare, how_long: Duration) -> Watched {
    let (mut stamps, mut sizes, mut frames) = (Vec::new(), Vec::new(), 0);
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        if let Some(captured) = share.next_frame(Duration::from_millis(200)).unwrap() {
            frames += 1;
            let size = (captured.frame.width(), captured.frame.height());
            if !sizes.contains(&size) {
                sizes.push(size);
            }
            if let Some(stamp) = read_stamp(&captured.frame) {
                stamps.push((stamp.id, stamp.counter));
            }
        }
    }
    (stamps, sizes, frames)
}

fn no_display_is_a_clear_error() {
    let err = share_sources().unwrap_err();
    assert!(matches!(err, ScreenError::NoDisplay(_)), "{err:?}");
    assert!(err.to_string().contains("DISPLAY"), "{err}");
}

fn the_picker_lists_the_screen_and_windows_by_title(xvfb: &Xvfb) {
    let window = PatternWindow::open(&xvfb.display, "Quarterly figures", PATTERN, (100, 80), (640, 360));
    let sources = share_sources().unwrap();
    println!("{sources:?}");
    let screen = sources.iter().find(|s| s.kind == ShareKind::Screen).expect("a screen");
    assert_eq!((screen.id.as_str(), screen.width, screen.height), ("screen:0", 1280, 800));
    let listed = sources.iter().find(|s| s.id == window.share_id()).expect("the window is listed");
    assert_eq!((listed.kind, listed.name.as_str()), (ShareKind::Window, "Quarterly figures"));
    assert_eq!((listed.width, listed.height), (640, 360));

    // A thumbnail shows the window's own picture, even where another window covers it.
    let cover = PatternWindow::open(&xvfb.display, "Cover", 5, (60, 40), (400, 300));
    cover.raise();
    let thumbnail = share_thumbnail(&window.share_id(), 320, 240).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (320, 180), "the window's shape, fitted");
    assert_eq!(read_stamp(&thumbnail).map(|s| s.id), Some(PATTERN));
    drop(cover);
    let err = share_thumbnail("window:123456789", 320, 180).unwrap_err();
    assert!(matches!(err, ScreenError::NoSuchSource(_)), "{err:?}");
    let err = ScreenShare::open("screen:4", 5).unwrap_err();
    assert!(matches!(err, ScreenError::NoSuchSource(_)), "{err:?}");
    let err = ScreenShare::open("window:0x1", 5).unwrap_err();
    assert!(matches!(err, ScreenError::BadId(_)), "{err:?}");
}

fn a_covered_window_is_captured_with_its_own_content(xvfb: &Xvfb) {
    let shared = PatternWindow::open(&xvfb.display, "Shared", PATTERN, (100, 80), (640, 360));
    let share = ScreenShare::open(&shared.share_id(), 10).unwrap();
    // Another window over the shared one's top-left, where the stamp is.
    let cover = PatternWindow::open(&xvfb.display, "Cover", 5, (60, 40), (400, 300));
    cover.raise();
    let (stamps, sizes, frames) = watch(&share, Duration::from_secs(2));
    println!("covered window: {frames} frames, sizes {sizes:?}, stamps {:?}", &stamps[..stamps.len().min(6)]);
    assert_eq!(sizes, [(640, 360)]);
    assert!(stamps.len() >= 10, "{} of {frames} frames carried a stamp", stamps.len());
    assert!(stamps.iter().all(|(id, _)| *id == PATTERN), "only the shared window's picture: {stamps:?}");
    let counters: Vec<u32> = stamps.iter().map(|(_, c)| *c).collect();
    assert!(counters.last() > counters.first(), "the picture moves: {counters:?}");
    drop(cover);
}

fn a_screen_is_captured_at_the_rate_asked_for(xvfb: &Xvfb) {
    // A window filling the screen, so the screen's own top-left carries the stamp.
    let _window = PatternWindow::open(&xvfb.display, "Everything", PATTERN + 1, (0, 0), (1280, 800));
    let share = ScreenShare::open("screen:0", 5).unwrap();
    let (stamps, sizes, frames) = watch(&share, Duration::from_secs(3));
    println!("screen at 5 fps: {frames} frames in 3 s, sizes {sizes:?}, {} stamped", stamps.len());
    assert_eq!(sizes, [(1280, 800)]);
    assert!((12..=18).contains(&frames), "5 fps for 3 s gave {frames} frames");
    assert!(stamps.len() >= frames - 1 && stamps.iter().all(|(id, _)| *id == PATTERN + 1), "{stamps:?}");
}

fn closing_the_shared_window_ends_the_share(xvfb: &Xvfb) {
    let window = PatternWindow::open(&xvfb.display, "Closing soon", PATTERN, (200, 200), (320, 240));
    let share = ScreenShare::open(&window.share_id(), 15).unwrap();
    assert!(share.next_frame(Duration::from_secs(2)).unwrap().is_some(), "frames before the close");
    window.close();
    let closed = Instant::now();
    loop {
        match share.next_frame(Duration::from_millis(100)) {
            Err(_) => break,
            Ok(_) => {
                assert!(
                    closed.elapsed() < Duration::from_secs(1),
                    "the share still runs 1 s after the close"
                );
            }
        }
    }
    println!("share ended {} ms after the window closed", closed.elapsed().as_millis());
    assert_eq!(share.ended(), Some(ShareEnded::WindowClosed));
}

fn confer_screens_lists_what_can_be_shared_and_a_wayland_session_is_refused_by_name(xvfb: &Xvfb) {
    let window = PatternWindow::open(&xvfb.display, "Budget 2027", PATTERN, (300, 300), (400, 300));
    let out = std::process::Command::new(confer_tests::binary("confer-cli", "confer"))
        .args(["screens", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = listed.as_array().unwrap().iter().find(|s| s["id"] == window.share_id()).expect("listed");
    assert_eq!((entry["kind"].as_str(), entry["name"].as_str()), (Some("window"), Some("Budget 2027")));
    assert_eq!((entry["width"].as_u64(), entry["height"].as_u64()), (Some(400), Some(300)));
    let out = std::process::Command::new(confer_tests::binary("confer-cli", "confer"))
        .arg("screens")
        .env("XDG_SESSION_TYPE", "wayland")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("Wayland session") && said.contains("not built yet"), "{said}");
}

fn main() {
    #[allow(unsafe_code)]
    // SAFETY: single-threaded at this point: main() of a harness-less test, no thread spawned yet.
    unsafe {
        std::env::remove_var("DISPLAY");
        std::env::remove_var("WAYLAND_DISPLAY");
        std::env::remove_var("XDG_SESSION_TYPE");
    }
    let mut passed = 0;
    let mut run = |name: &str, test: &dyn Fn()| {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
        passed += 1;
    };
    run("no_display_is_a_clear_error", &no_display_is_a_clear_error);
    let xvfb = Xvfb::start();
    #[allow(unsafe_code)]
    // SAFETY: still single-threaded: the tests' threads start after this.
    unsafe {
        std::env::set_var("DISPLAY", &xvfb.display);
    }
    run("the_picker_lists_the_screen_and_windows_by_title", &|| {
        the_picker_lists_the_screen_and_windows_by_title(&xvfb);
    });
    run("a_covered_window_is_captured_with_its_own_content", &|| {
        a_covered_window_is_captured_with_its_own_content(&xvfb);
    });
    run("a_screen_is_captured_at_the_rate_asked_for", &|| a_screen_is_captured_at_the_rate_asked_for(&xvfb));
    run("closing_the_shared_window_ends_the_share", &|| closing_the_shared_window_ends_the_share(&xvfb));
    run("confer_screens_lists_what_can_be_shared_and_a_wayland_session_is_refused_by_name", &|| {
        confer_screens_lists_what_can_be_shared_and_a_wayland_session_is_refused_by_name(&xvfb);
    });
    drop(xvfb);
    // The line scripts/test counts; a failure above panics, and cargo reports the binary failed.
    println!("\ntest result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
