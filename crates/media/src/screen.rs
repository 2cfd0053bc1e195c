//! Screen sharing's capture: list what can be shared (whole screens and windows), take a
//! thumbnail of one for the picker, and capture one at a few frames a second on a thread of its
//! own, as I420 frames of at most 1920 x 1080.
//!
//! Backends: X11 (here: a whole monitor from the root window, a window through XComposite so
//! that covered parts are still its own). Wayland needs the desktop portal and PipeWire, and
//! Windows and macOS their own capture APIs: not built yet, and refused with
//! [`ScreenError::Unsupported`] saying so, never a black picture.
//!
//! Source ids are `screen:<n>` (the n-th monitor) and `window:<id>` (the platform's window id,
//! decimal). They come from the UI or a command line: [`ShareTarget::parse`] checks them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{CaptureEnded, CapturedFrame, I420Frame};

#[cfg(target_os = "linux")]
mod x11;

/// The largest picture a share sends: bigger screens are scaled down to fit.
pub const MAX_SHARE_SIZE: (usize, usize) = (1920, 1080);
/// The frame rates a share may ask for.
pub const SHARE_FPS: std::ops::RangeInclusive<u32> = 1..=30;

/// Frames waiting for the consumer: latest wins, a full queue drops the new frame and counts it.
const QUEUE: usize = 2;

/// Why a screen or window could not be listed, opened or captured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScreenError {
    /// This platform or session has no capture backend yet.
    #[error("screen sharing is not supported here yet: {0}")]
    Unsupported(String),
    /// The display could not be reached.
    #[error("cannot reach the display: {0}")]
    NoDisplay(String),
    /// Not a source id of the form `screen:<n>` or `window:<id>`.
    #[error("not a screen or window id: {0:?} (screen:<n> or window:<id>)")]
    BadId(String),
    /// No screen or window with this id (any more).
    #[error("no screen or window {0:?} to share (it may have been closed)")]
    NoSuchSource(String),
    /// The display refused the capture.
    #[error("could not capture {source_id:?}: {reason}")]
    Capture {
        /// The source's id.
        source_id: String,
        /// What the display said.
        reason: String,
    },
    /// A frame rate outside [`SHARE_FPS`].
    #[error("a share runs at 1 to 30 frames a second, not {0}")]
    BadRate(u32),
}

/// Whole screen or one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    /// A monitor.
    Screen,
    /// One application window.
    Window,
}

/// Something that can be shared, as the picker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSource {
    /// `screen:<n>` or `window:<id>`.
    pub id: String,
    /// Screen or window.
    pub kind: ShareKind,
    /// The monitor's name or the window's title.
    pub name: String,
    /// Width in pixels now.
    pub width: u32,
    /// Height in pixels now.
    pub height: u32,
}

/// A parsed source id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareTarget {
    /// The n-th monitor, from 0.
    Screen(u32),
    /// A window by its platform id.
    Window(u32),
}

impl ShareTarget {
    /// Reads `screen:<n>` or `window:<id>`.
    pub fn parse(id: &str) -> Result<Self, ScreenError> {
        let bad = || ScreenError::BadId(id.chars().take(64).collect());
        let (kind, number) = id.split_once(':').ok_or_else(bad)?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let number: u32 = number.parse().map_err(|_| bad())?;
        match kind {
            "screen" => Ok(Self::Screen(number)),
            "window" => Ok(Self::Window(number)),
            _ => Err(bad()),
        }
    }

    /// The id it was read from.
    pub fn id(self) -> String {
        match self {
            Self::Screen(n) => format!("screen:{n}"),
            Self::Window(n) => format!("window:{n}"),
        }
    }
}

/// Why a share stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareEnded {
    /// The shared window was closed.
    #[error("the shared window was closed")]
    WindowClosed,
    /// The shared monitor was unplugged or switched off.
    #[error("the shared screen is gone")]
    ScreenGone,
    /// The display went away or failed.
    #[error("screen capture failed: {0}")]
    Failed(String),
}

/// One picture of a source, as B G R X rows.
#[derive(Debug)]
pub(crate) struct Grab {
    pub(crate) bgrx: Vec<u8>,
    pub(crate) width: usize,
    pub(crate) height: usize,
}

/// What a backend's grab can come to besides a picture.
#[derive(Debug)]
pub(crate) enum GrabError {
    /// Nothing to see now (a minimised window): try again at the next frame.
    Hidden,
    /// The source is gone for good.
    Ended(ShareEnded),
}

/// Everything that can be shared now.
pub fn share_sources() -> Result<Vec<ShareSource>, ScreenError> {
    backend()?.sources()
}

/// How long programs get to repaint windows newly redirected for a thumbnail.
const REPAINT: Duration = Duration::from_millis(150);

/// One picture of `id`, scaled to fit `max_width` x `max_height` (for the picker).
pub fn share_thumbnail(id: &str, max_width: usize, max_height: usize) -> Result<I420Frame, ScreenError> {
    share_thumbnails(&[id], max_width, max_height)
        .pop()
        .unwrap_or_else(|| Err(ScreenError::BadId(id.to_owned())))
}

/// A picture of each of `ids`, in order, each scaled to fit `max_width` x `max_height`: the
/// picker's thumbnails, taken on one connection (windows shown with their own content, which
/// their programs repaint within [`REPAINT`] of being asked).
pub fn share_thumbnails(
    ids: &[&str],
    max_width: usize,
    max_height: usize,
) -> Vec<Result<I420Frame, ScreenError>> {
    let mut backend = match backend() {
        Ok(backend) => backend,
        Err(err) => return ids.iter().map(|_| Err(err.clone())).collect(),
    };
    let targets: Vec<Result<ShareTarget, ScreenError>> =
        ids.iter().map(|id| ShareTarget::parse(id)).collect();
    let mut fresh = false;
    for target in targets.iter().flatten() {
        fresh |= backend.prepare(*target);
    }
    if fresh {
        std::thread::sleep(REPAINT);
    }
    targets
        .into_iter()
        .map(|target| {
            let target = target?;
            match backend.grab(target) {
                Ok(grab) => to_frame(&grab, (max_width.max(2), max_height.max(2)))
                    .map_err(|reason| ScreenError::Capture { source_id: target.id(), reason }),
                Err(GrabError::Hidden) => Err(ScreenError::Capture {
                    source_id: target.id(),
                    reason: "the window is minimised".into(),
                }),
                Err(GrabError::Ended(_)) => Err(ScreenError::NoSuchSource(target.id())),
            }
        })
        .collect()
}

/// A running share: frames from a capture thread of its own.
#[derive(Debug)]
pub struct ScreenShare {
    target: ShareTarget,
    frames: Receiver<CapturedFrame>,
    ended: Arc<Mutex<Option<ShareEnded>>>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScreenShare {
    /// Starts capturing `id` at `fps` frames a second. The source is checked before this returns:
    /// an id that names nothing is an error here, not a silent empty share.
    pub fn open(id: &str, fps: u32) -> Result<Self, ScreenError> {
        if !SHARE_FPS.contains(&fps) {
            return Err(ScreenError::BadRate(fps));
        }
        let target = ShareTarget::parse(id)?;
        let mut backend = backend()?;
        backend.check(target)?;
        let (tx, frames) = sync_channel(QUEUE);
        let ended = Arc::new(Mutex::new(None));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ended, dropped, stop) = (ended.clone(), dropped.clone(), stop.clone());
            std::thread::Builder::new()
                .name("confer-screen".into())
                .spawn(move || {
                    let why = capture_loop(&mut backend, target, fps, &stop, &tx, &dropped);
                    if let Some(why) = why
                        && let Ok(mut slot) = ended.lock()
                    {
                        *slot = Some(why);
                    }
                })
                .map_err(|e| ScreenError::Capture { source_id: target.id(), reason: e.to_string() })?
        };
        Ok(Self { target, frames, ended, dropped, stop, thread: Some(thread) })
    }

    /// The id of what is shared.
    pub fn source_id(&self) -> String {
        self.target.id()
    }

    /// The next frame, waiting up to `timeout`; `Err` once the share has ended on its own
    /// ([`Self::ended`] says why).
    pub fn next_frame(&self, timeout: Duration) -> Result<Option<CapturedFrame>, CaptureEnded> {
        match self.frames.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(CaptureEnded),
        }
    }

    /// Why the share ended on its own, once it has.
    pub fn ended(&self) -> Option<ShareEnded> {
        self.ended.lock().ok().and_then(|slot| slot.clone())
    }

    /// Frames dropped because the consumer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for ScreenShare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Grabs at `fps` until stopped or the source ends; returns why it ended on its own.
fn capture_loop(
    backend: &mut Backend,
    target: ShareTarget,
    fps: u32,
    stop: &AtomicBool,
    frames: &SyncSender<CapturedFrame>,
    dropped: &AtomicU64,
) -> Option<ShareEnded> {
    let interval = Duration::from_secs(1) / fps;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let captured_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        match backend.grab(target) {
            Ok(grab) => match to_frame(&grab, MAX_SHARE_SIZE) {
                Ok(frame) => {
                    if let Err(TrySendError::Full(_)) = frames.try_send(CapturedFrame { frame, captured_us })
                    {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(reason) => return Some(ShareEnded::Failed(reason)),
            },
            Err(GrabError::Hidden) => {}
            Err(GrabError::Ended(why)) => return Some(why),
        }
        next += interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            // Sleep in short steps, so that stopping a share is never slower than 50 ms.
            Some(wait) => {
                let until = now + wait;
                while !stop.load(Ordering::Relaxed) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
            }
            // Behind (a slow grab): start again from now rather than bursting to catch up.
            None => next = now,
        }
    }
    None
}

/// A grab as an I420 frame no larger than `max` (odd edges cropped to even).
fn to_frame(grab: &Grab, max: (usize, usize)) -> Result<I420Frame, String> {
    let frame = crate::to_i420(crate::PixelFormat::Bgrx, &grab.bgrx, grab.width, grab.height)
        .map_err(|e| e.to_string())?;
    if frame.width() > max.0 || frame.height() > max.1 {
        // scaled_to_fit only shrinks by 0.8 or more; a frame a little too big is cropped.
        if let Some(scaled) = frame.scaled_to_fit(max.0, max.1) {
            return Ok(scaled);
        }
        return crop(&frame, max.0.min(frame.width()), max.1.min(frame.height()));
    }
    Ok(frame)
}

fn crop(frame: &I420Frame, width: usize, height: usize) -> Result<I420Frame, String> {
    let (stride, chroma) = (frame.width(), frame.width() / 2);
    I420Frame::from_planes(
        width & !1,
        height & !1,
        (frame.y(), frame.u(), frame.v()),
        (stride, chroma, chroma),
    )
    .map_err(|e| e.to_string())
}

#[cfg(target_os = "linux")]
type Backend = x11::X11;

#[cfg(target_os = "linux")]
fn backend() -> Result<Backend, ScreenError> {
    if std::env::var_os("XDG_SESSION_TYPE").is_some_and(|t| t == "wayland") {
        return Err(ScreenError::Unsupported(
            "this is a Wayland session, and sharing through the desktop portal is not built yet \
             (an X11 session can share)"
                .into(),
        ));
    }
    x11::X11::connect()
}

#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct Backend;

#[cfg(not(target_os = "linux"))]
impl Backend {
    fn prepare(&mut self, _: ShareTarget) -> bool {
        false
    }
    fn sources(&mut self) -> Result<Vec<ShareSource>, ScreenError> {
        Ok(Vec::new())
    }
    fn check(&mut self, target: ShareTarget) -> Result<(), ScreenError> {
        Err(ScreenError::NoSuchSource(target.id()))
    }
    fn grab(&mut self, _: ShareTarget) -> Result<Grab, GrabError> {
        Err(GrabError::Ended(ShareEnded::Failed("unsupported".into())))
    }
}

#[cfg(not(target_os = "linux"))]
fn backend() -> Result<Backend, ScreenError> {
    Err(ScreenError::Unsupported("only X11 on Linux can share so far".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_are_checked() {
        assert_eq!(ShareTarget::parse("screen:0"), Ok(ShareTarget::Screen(0)));
        assert_eq!(ShareTarget::parse("window:4194311"), Ok(ShareTarget::Window(4_194_311)));
        assert_eq!(ShareTarget::Window(7).id(), "window:7");
        for bad in
            ["", "screen", "screen:", "screen:-1", "screen:+1", "window:0x10", "tab:1", "window:99999999999"]
        {
            assert!(matches!(ShareTarget::parse(bad), Err(ScreenError::BadId(_))), "{bad:?}");
        }
        assert!(matches!(ScreenShare::open("screen:0", 0), Err(ScreenError::BadRate(0))));
        assert!(matches!(ScreenShare::open("screen:0", 31), Err(ScreenError::BadRate(31))));
    }

    #[test]
    fn grabs_become_frames_that_fit_1080p() {
        let grab = |width: usize, height: usize| Grab { bgrx: vec![200; width * height * 4], width, height };
        let frame = to_frame(&grab(801, 601), MAX_SHARE_SIZE).unwrap();
        assert_eq!((frame.width(), frame.height()), (800, 600));
        let frame = to_frame(&grab(3840, 2160), MAX_SHARE_SIZE).unwrap();
        assert_eq!((frame.width(), frame.height()), (1920, 1080));
        // Too big by less than scaling handles: cropped.
        let frame = to_frame(&grab(2000, 1000), MAX_SHARE_SIZE).unwrap();
        assert_eq!((frame.width(), frame.height()), (1920, 1000));
        let frame = to_frame(&grab(2560, 1600), MAX_SHARE_SIZE).unwrap();
        assert!(frame.width() <= 1920 && frame.height() <= 1080, "{}x{}", frame.width(), frame.height());
        assert!(to_frame(&Grab { bgrx: vec![0; 10], width: 64, height: 64 }, MAX_SHARE_SIZE).is_err());
    }
}
