//! Cameras through nokhwa (V4L2 on Linux, Media Foundation on Windows, AVFoundation on macOS),
//! plus the synthetic camera, behind one interface: list them, open one at a requested size and
//! frame rate (the nearest the camera offers), and receive I420 frames from a capture thread of
//! its own, whatever the camera's native format (MJPEG, YUYV, NV12, grey, RGB).
//!
//! The capture thread owns the camera (nokhwa's `Camera` is not `Send`) and hands frames over a
//! bounded queue: when the consumer is behind, the newest frame is dropped and counted, and the
//! camera is never blocked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};

use crate::I420Frame;
use crate::convert::{PixelFormat, to_i420};
use crate::synthetic::SyntheticCamera;

/// Frames waiting for the consumer.
const QUEUE: usize = 3;

/// The id under which the synthetic camera is listed.
pub const SYNTHETIC_CAMERA: &str = "synthetic";

/// Why a camera could not be listed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CameraError {
    /// This platform has no camera backend compiled in.
    #[error("no camera support on this platform")]
    Unsupported,
    /// No camera with this id.
    #[error("no camera with id {0:?}")]
    NoSuchCamera(String),
    /// The camera refused to open or to stream.
    #[error("could not open camera {camera:?}: {reason}")]
    Open {
        /// The camera's id.
        camera: String,
        /// What the driver said.
        reason: String,
    },
    /// The camera offers no format Confer can convert.
    #[error("camera {0:?} offers no format Confer can use (MJPEG, YUYV, NV12, grey, RGB)")]
    NoUsableFormat(String),
    /// The requested size is impossible.
    #[error("cannot capture at {width}x{height} and {fps} fps")]
    BadRequest {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
        /// Frame rate asked for.
        fps: u32,
    },
}

/// One camera in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Id to open it by (`synthetic` for the synthetic camera).
    pub id: String,
    /// Human name.
    pub name: String,
}

/// Which camera to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraChoice {
    /// A real camera by id, as listed.
    Id(String),
    /// The synthetic camera painting this pattern id and name.
    Synthetic {
        /// Pattern id (stamped into every frame).
        id: u32,
        /// The name painted at the bottom left.
        name: String,
    },
}

/// Real cameras (possibly none) and the synthetic one. A machine with no camera gets a list
/// with only the synthetic camera, not an error.
pub fn cameras() -> Result<Vec<CameraInfo>, CameraError> {
    let real = match nokhwa::native_api_backend() {
        Some(backend) => nokhwa::query(backend).unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(real
        .into_iter()
        .map(|info| CameraInfo { id: index_id(info.index()), name: info.human_name() })
        .chain(std::iter::once(CameraInfo {
            id: SYNTHETIC_CAMERA.to_owned(),
            name: "Synthetic camera".to_owned(),
        }))
        .collect())
}

fn index_id(index: &CameraIndex) -> String {
    match index {
        CameraIndex::Index(n) => n.to_string(),
        CameraIndex::String(s) => s.clone(),
    }
}

fn parse_index(id: &str) -> CameraIndex {
    id.parse::<u32>().map_or_else(|_| CameraIndex::String(id.to_owned()), CameraIndex::Index)
}

fn pixel_format(format: FrameFormat) -> PixelFormat {
    match format {
        FrameFormat::MJPEG => PixelFormat::Mjpeg,
        FrameFormat::YUYV => PixelFormat::Yuyv,
        FrameFormat::NV12 => PixelFormat::Nv12,
        FrameFormat::GRAY => PixelFormat::Gray,
        FrameFormat::RAWRGB => PixelFormat::Rgb,
        FrameFormat::RAWBGR => PixelFormat::Bgr,
    }
}

/// The format nearest to what was asked: closest size (by area and shape), then closest frame
/// rate at or above the one asked, then the cheapest to convert (NV12/YUYV before MJPEG at
/// equal size, since they need no decoding).
pub fn nearest_format(offered: &[CameraFormat], width: u32, height: u32, fps: u32) -> Option<CameraFormat> {
    offered.iter().copied().min_by_key(|f| {
        let dw = i64::from(f.width()) - i64::from(width);
        let dh = i64::from(f.height()) - i64::from(height);
        let rate_penalty = if f.frame_rate() >= fps {
            i64::from(f.frame_rate() - fps)
        } else {
            1_000 + i64::from(fps - f.frame_rate())
        };
        let cost = match f.format() {
            FrameFormat::NV12 => 0,
            FrameFormat::YUYV => 1,
            FrameFormat::MJPEG => 2,
            _ => 3,
        };
        (dw * dw + dh * dh, rate_penalty, cost)
    })
}

/// A frame from a camera.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// The picture.
    pub frame: I420Frame,
    /// When it was captured, Unix microseconds.
    pub captured_us: u64,
}

/// What an open camera reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CameraEvent {
    /// Capturing, in this format.
    Opened {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Frames per second.
        fps: u32,
        /// The camera's own pixel format.
        format: String,
    },
    /// Capture stopped (the camera was unplugged or failed).
    Failed {
        /// Why.
        reason: String,
    },
}

/// A device's capture has ended for good: nothing more will come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("capture ended")]
pub struct CaptureEnded;

/// An open camera.
#[derive(Debug)]
pub struct Camera {
    frames: Receiver<CapturedFrame>,
    events: Receiver<CameraEvent>,
    dropped: Arc<AtomicU64>,
    bad_frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    /// Opens a camera at the nearest size and rate it offers to `width` x `height` at `fps`,
    /// waiting up to `timeout` for it to start.
    pub fn open(
        choice: CameraChoice,
        width: u32,
        height: u32,
        fps: u32,
        timeout: Duration,
    ) -> Result<Self, CameraError> {
        if width < 2 || height < 2 || fps == 0 || fps > 240 || width > 7_680 || height > 4_320 {
            return Err(CameraError::BadRequest { width, height, fps });
        }
        let (frame_tx, frames) = sync_channel(QUEUE);
        let (event_tx, events) = sync_channel(16);
        let (opened_tx, opened) = sync_channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let bad_frames = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dropped, bad_frames, stop) = (dropped.clone(), bad_frames.clone(), stop.clone());
            std::thread::Builder::new()
                .name("confer-camera".into())
                .spawn(move || {
                    let out = Output { frames: frame_tx, events: event_tx, dropped, bad_frames };
                    match choice {
                        CameraChoice::Synthetic { id, name } => {
                            synthetic(id, &name, (width, height, fps), &stop, &opened_tx, &out);
                        }
                        CameraChoice::Id(id) => real(&id, (width, height, fps), &stop, &opened_tx, &out),
                    }
                })
                .map_err(|e| CameraError::Open { camera: "camera".into(), reason: e.to_string() })?
        };
        let camera = Self { frames, events, dropped, bad_frames, stop, thread: Some(thread) };
        match opened.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(camera),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                Err(CameraError::Open { camera: "camera".into(), reason: "did not start in time".into() })
            }
        }
    }

    /// The next frame, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<CapturedFrame> {
        self.frames.recv_timeout(timeout).ok()
    }

    /// The next frame, waiting up to `timeout`; `Err` once capture has ended for good (the
    /// capture thread is gone: its failure, if it said one, is among the events).
    pub fn next_frame(&self, timeout: Duration) -> Result<Option<CapturedFrame>, CaptureEnded> {
        match self.frames.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(CaptureEnded),
        }
    }

    /// The next event, if one is waiting (the first is [`CameraEvent::Opened`]).
    pub fn try_event(&self) -> Option<CameraEvent> {
        self.events.try_recv().ok()
    }

    /// Frames dropped because the consumer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames the camera delivered that could not be converted (corrupt MJPEG, short buffers).
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Output {
    frames: SyncSender<CapturedFrame>,
    events: SyncSender<CameraEvent>,
    dropped: Arc<AtomicU64>,
    bad_frames: Arc<AtomicU64>,
}

impl Output {
    fn send(&self, frame: CapturedFrame) {
        if let Err(TrySendError::Full(_)) = self.frames.try_send(frame) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn synthetic(
    id: u32,
    name: &str,
    (width, height, fps): (u32, u32, u32),
    stop: &AtomicBool,
    opened: &SyncSender<Result<(), CameraError>>,
    out: &Output,
) {
    // The synthetic camera paints even sizes of at least 160 x 90: round to the nearest.
    let (w, h) = (((width.max(160) + 1) & !1) as usize, ((height.max(90) + 1) & !1) as usize);
    let mut camera = match SyntheticCamera::new(id, w, h) {
        Ok(camera) => camera.with_name(name),
        Err(err) => {
            let _ = opened
                .send(Err(CameraError::Open { camera: SYNTHETIC_CAMERA.into(), reason: err.to_string() }));
            return;
        }
    };
    let _ = out.events.try_send(CameraEvent::Opened {
        width: w as u32,
        height: h as u32,
        fps,
        format: "synthetic I420".into(),
    });
    let _ = opened.send(Ok(()));
    let interval = Duration::from_secs(1) / fps;
    let start = Instant::now();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let captured_us = unix_us();
        let (frame, _) = camera.next_frame(captured_us / 1_000);
        out.send(CapturedFrame { frame, captured_us });
        n = n.wrapping_add(1);
        if let Some(wait) = (start + interval * n).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

fn real(
    id: &str,
    (width, height, fps): (u32, u32, u32),
    stop: &AtomicBool,
    opened: &SyncSender<Result<(), CameraError>>,
    out: &Output,
) {
    let open_error = |reason: String| CameraError::Open { camera: id.to_owned(), reason };
    let Some(backend) = nokhwa::native_api_backend() else {
        let _ = opened.send(Err(CameraError::Unsupported));
        return;
    };
    let known = nokhwa::query(backend).unwrap_or_default();
    if !known.iter().any(|info| index_id(info.index()) == id) {
        let _ = opened.send(Err(CameraError::NoSuchCamera(id.to_owned())));
        return;
    }
    let usable = [
        FrameFormat::NV12,
        FrameFormat::YUYV,
        FrameFormat::MJPEG,
        FrameFormat::GRAY,
        FrameFormat::RAWRGB,
        FrameFormat::RAWBGR,
    ];
    let result = (|| {
        // Open with any usable format, then choose the nearest ourselves (nokhwa's own
        // "closest" fails when the exact size is not offered).
        let any = RequestedFormat::with_formats(RequestedFormatType::None, &usable);
        let mut camera = nokhwa::Camera::with_backend(parse_index(id), any, backend)
            .map_err(|e| open_error(e.to_string()))?;
        let offered = camera.compatible_camera_formats().map_err(|e| open_error(e.to_string()))?;
        let best = nearest_format(&offered, width, height, fps)
            .ok_or_else(|| CameraError::NoUsableFormat(id.into()))?;
        let only = [best.format()];
        camera
            .set_camera_requset(RequestedFormat::with_formats(RequestedFormatType::Exact(best), &only))
            .map_err(|e| open_error(e.to_string()))?;
        camera.open_stream().map_err(|e| open_error(e.to_string()))?;
        Ok::<_, CameraError>((camera, best))
    })();
    let (mut camera, format) = match result {
        Ok(opened_camera) => opened_camera,
        Err(err) => {
            let _ = opened.send(Err(err));
            return;
        }
    };
    let _ = out.events.try_send(CameraEvent::Opened {
        width: format.width(),
        height: format.height(),
        fps: format.frame_rate(),
        format: format.format().to_string(),
    });
    let _ = opened.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        match camera.frame() {
            Ok(buffer) => {
                let captured_us = buffer.capture_timestamp().map_or_else(unix_us, |t| t.as_micros() as u64);
                let resolution = buffer.resolution();
                match to_i420(
                    pixel_format(buffer.source_frame_format()),
                    buffer.buffer(),
                    resolution.width() as usize,
                    resolution.height() as usize,
                ) {
                    Ok(frame) => out.send(CapturedFrame { frame, captured_us }),
                    Err(_) => {
                        out.bad_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(err) => {
                let _ = out.events.try_send(CameraEvent::Failed { reason: err.to_string() });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::read_stamp;

    fn format(w: u32, h: u32, f: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new_from(w, h, f, fps)
    }

    #[test]
    fn the_nearest_size_and_rate_are_chosen() {
        let offered = [
            format(1920, 1080, FrameFormat::MJPEG, 30),
            format(1280, 720, FrameFormat::MJPEG, 30),
            format(1280, 720, FrameFormat::YUYV, 10),
            format(640, 480, FrameFormat::YUYV, 30),
            format(640, 360, FrameFormat::MJPEG, 30),
            format(640, 360, FrameFormat::YUYV, 30),
            format(640, 360, FrameFormat::YUYV, 15),
        ];
        // Exact size: the rate asked, the format that needs no decoding.
        assert_eq!(nearest_format(&offered, 640, 360, 30), Some(format(640, 360, FrameFormat::YUYV, 30)));
        // 720p at 30 only comes as MJPEG: a slower YUYV mode loses.
        assert_eq!(nearest_format(&offered, 1280, 720, 30), Some(format(1280, 720, FrameFormat::MJPEG, 30)));
        // A size nobody offers: the closest one.
        assert_eq!(nearest_format(&offered, 1000, 560, 30), Some(format(1280, 720, FrameFormat::MJPEG, 30)));
        assert_eq!(nearest_format(&[], 640, 360, 30), None);
    }

    #[test]
    fn with_no_camera_the_list_holds_the_synthetic_one_and_opening_a_missing_id_is_an_error() {
        let list = cameras().unwrap();
        assert!(list.iter().any(|c| c.id == SYNTHETIC_CAMERA));
        // This machine has no camera, so any real id is missing (and a machine with cameras
        // does not have camera 4,000).
        let err =
            Camera::open(CameraChoice::Id("4000".into()), 640, 360, 30, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, CameraError::NoSuchCamera(_) | CameraError::Unsupported), "{err:?}");
        assert!(matches!(
            Camera::open(CameraChoice::Id("0".into()), 0, 360, 30, Duration::from_secs(1)),
            Err(CameraError::BadRequest { .. })
        ));
    }

    #[test]
    fn the_synthetic_camera_captures_at_its_rate_on_its_own_thread() {
        let choice = CameraChoice::Synthetic { id: 77, name: "Bot".into() };
        let camera = Camera::open(choice, 320, 180, 50, Duration::from_secs(5)).unwrap();
        assert_eq!(
            camera.try_event(),
            Some(CameraEvent::Opened { width: 320, height: 180, fps: 50, format: "synthetic I420".into() })
        );
        let start = Instant::now();
        let mut counters = Vec::new();
        while start.elapsed() < Duration::from_millis(500) {
            if let Some(captured) = camera.recv_timeout(Duration::from_millis(100)) {
                let stamp = read_stamp(&captured.frame).unwrap();
                assert_eq!(stamp.id, 77);
                assert_eq!(stamp.captured_ms, captured.captured_us / 1_000);
                counters.push(stamp.counter);
            }
        }
        assert!((20..=30).contains(&counters.len()), "{} frames in 0.5 s at 50 fps", counters.len());
        assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "frames were skipped: {counters:?}");
        // Nobody reads for a while: frames are dropped, not queued without bound.
        std::thread::sleep(Duration::from_millis(300));
        assert!(camera.dropped() >= 5, "dropped {}", camera.dropped());
    }
}
