//! Screen sharing's sending side: a screen, a window or the synthetic page, captured and encoded
//! for text (openh264's screen content mode) on a thread of its own, handed to the engine as
//! H.264 access units for the `screen` track every peer connection carries (docs/PROTOCOL.md,
//! section 10).
//!
//! The hand-over is a bounded queue ([`QUEUE`]): when the engine is behind, the newest access
//! unit is dropped and counted, and the next one is a keyframe (a P frame after a dropped one
//! would not decode).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confer_media::synthetic::SyntheticScreen;
use confer_media::{CapturedFrame, H264Config, H264Encoder, ScreenError, ScreenShare};
use tokio::sync::mpsc;

/// Access units waiting for the engine: about a second at the default rate.
pub(crate) const QUEUE: usize = 8;
/// The default share rate: text needs sharpness more than motion.
pub const DEFAULT_SHARE_FPS: u32 = 5;
/// The share's bitrate: enough for a 1080p page of text to arrive sharp within a second or two
/// of a change, at 5–15 fps.
pub const SHARE_BITRATE: u32 = 1_500_000;

/// What to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareChoice {
    /// A screen (`screen:<n>`) or a window (`window:<id>`), as the media crate lists them.
    Source(String),
    /// The synthetic page of text (tests, demos), stamped with this pattern id, 1280 x 720,
    /// scrolling `scroll` pixels a frame.
    Synthetic {
        /// Pattern id stamped into the page.
        pattern_id: u32,
        /// Pixels scrolled a frame (0: a still page).
        scroll: usize,
    },
}

impl ShareChoice {
    /// The id reported for it: the source id, or `synthetic`.
    pub fn id(&self) -> String {
        match self {
            Self::Source(id) => id.clone(),
            Self::Synthetic { .. } => "synthetic".into(),
        }
    }
}

/// What the share's thread hands the engine.
#[derive(Debug)]
pub(crate) enum ShareOut {
    /// One access unit (Annex B) and how long it shows.
    Frame(Vec<u8>, Duration),
    /// The share ended on its own (the window closed, the display went away): why.
    Ended(String),
}

/// Where the pictures come from.
enum Feed {
    Screen(ScreenShare),
    Synthetic { screen: SyntheticScreen, interval: Duration, next: Instant },
}

impl Feed {
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<CapturedFrame>, String> {
        match self {
            Self::Screen(share) => match share.next_frame(Duration::from_millis(100)) {
                Ok(frame) => Ok(frame),
                Err(_) => {
                    Err(share.ended().map_or_else(|| "the capture stopped".to_owned(), |why| why.to_string()))
                }
            },
            Self::Synthetic { screen, interval, next } => {
                while !stop.load(Ordering::Relaxed) {
                    let left = next.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
                *next += *interval;
                let captured_us = unix_us();
                let (frame, _) = screen.next_frame(captured_us / 1_000);
                Ok(Some(CapturedFrame { frame, captured_us }))
            }
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A running share. Stopping it (or dropping it) ends the thread and waits for it.
#[derive(Debug)]
pub(crate) struct Sharing {
    source: String,
    stop: Arc<AtomicBool>,
    keyframe: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sharing {
    /// Opens `choice` and starts capturing and encoding at `fps`. Opening checks the source
    /// (a window that is not there is an error here, not an empty share).
    pub(crate) fn start(
        choice: &ShareChoice,
        fps: u32,
        out: mpsc::Sender<ShareOut>,
    ) -> Result<Self, ScreenError> {
        let interval = Duration::from_secs(1) / fps.max(1);
        let feed = match choice {
            ShareChoice::Source(id) => Feed::Screen(ScreenShare::open(id, fps)?),
            ShareChoice::Synthetic { pattern_id, scroll } => Feed::Synthetic {
                screen: SyntheticScreen::new(*pattern_id, 1280, 720, *scroll)
                    .map_err(|e| ScreenError::Unsupported(e.to_string()))?,
                interval,
                next: Instant::now(),
            },
        };
        let encoder = H264Encoder::new(H264Config::screen(fps as f32, SHARE_BITRATE))
            .map_err(|e| ScreenError::Unsupported(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, keyframe, dropped) = (stop.clone(), keyframe.clone(), dropped.clone());
            std::thread::Builder::new()
                .name("confer-share-encode".into())
                .spawn(move || encode_loop(feed, encoder, interval, &stop, &keyframe, &dropped, &out))
                .map_err(|e| ScreenError::Unsupported(e.to_string()))?
        };
        Ok(Self { source: choice.id(), stop, keyframe, dropped, thread: Some(thread) })
    }

    /// The id of what is shared.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The next access unit is a keyframe (a peer joined or lost a picture).
    pub(crate) fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Access units dropped because the engine was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The loop checks `stop` at least every 100 ms, between two encodes.
            let _ = thread.join();
        }
    }
}

fn encode_loop(
    mut feed: Feed,
    mut encoder: H264Encoder,
    interval: Duration,
    stop: &AtomicBool,
    keyframe: &AtomicBool,
    dropped: &AtomicU64,
    out: &mpsc::Sender<ShareOut>,
) {
    while !stop.load(Ordering::Relaxed) {
        let captured = match feed.next_frame(stop) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(why) => {
                let _ = out.blocking_send(ShareOut::Ended(why));
                return;
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if keyframe.swap(false, Ordering::Relaxed) {
            encoder.request_keyframe();
        }
        let encoded = match encoder.encode(&captured.frame) {
            Ok(Some(encoded)) => encoded,
            Ok(None) => continue,
            Err(err) => {
                let _ = out.blocking_send(ShareOut::Ended(err.to_string()));
                return;
            }
        };
        match out.try_send(ShareOut::Frame(encoded.data, interval)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                keyframe.store(true, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
