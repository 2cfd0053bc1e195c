//! The lobby's device check, outside any call: the camera's picture, the microphone's level, and
//! a test sound on the speaker. Devices are opened on the preview's own threads, so starting one
//! never blocks; a device that cannot be opened is reported and the others keep going.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{
    AudioError, Camera, CameraChoice, DeviceChoice, I420Frame, LevelMeter, Microphone, Speaker, StreamLevel,
    dbfs,
};

/// How long a device has to start.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the microphone's level is reported.
const LEVEL_EVERY: Duration = Duration::from_millis(50);

/// What a preview reports.
#[derive(Debug, Clone)]
pub enum PreviewEvent {
    /// A camera picture.
    Frame(Arc<I420Frame>),
    /// The microphone's level, every 50 ms.
    Level(StreamLevel),
    /// A device could not be opened, or stopped.
    Failed {
        /// `camera` or `microphone`.
        device: &'static str,
        /// Why, in the system's words.
        reason: String,
    },
}

/// The camera to show: which one, at what size and rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraRequest {
    /// Which camera.
    pub choice: CameraChoice,
    /// Width asked for.
    pub width: u32,
    /// Height asked for.
    pub height: u32,
    /// Frames per second asked for.
    pub fps: u32,
}

/// A running preview; dropping it closes its devices (and waits for them to close, so a call
/// that opens them next finds them free).
#[derive(Debug)]
pub struct Preview {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Preview {
    /// Opens `camera` and `microphone` (either may be left out) and reports to `sink` until
    /// dropped.
    pub fn start(
        camera: Option<CameraRequest>,
        microphone: Option<DeviceChoice>,
        sink: impl Fn(PreviewEvent) + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sink: Arc<dyn Fn(PreviewEvent) + Send + Sync> = Arc::new(sink);
        let mut threads = Vec::new();
        let failed = |device, reason: String| PreviewEvent::Failed { device, reason };
        if let Some(request) = camera {
            let (stop, to) = (Arc::clone(&stop), Arc::clone(&sink));
            let spawned = std::thread::Builder::new()
                .name("confer-preview-camera".into())
                .spawn(move || show_camera(&request, &stop, &*to));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(err) => sink(failed("camera", err.to_string())),
            }
        }
        if let Some(choice) = microphone {
            let (stop, to) = (Arc::clone(&stop), Arc::clone(&sink));
            let spawned = std::thread::Builder::new()
                .name("confer-preview-microphone".into())
                .spawn(move || measure_microphone(choice, &stop, &*to));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(err) => sink(failed("microphone", err.to_string())),
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Preview {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn show_camera(request: &CameraRequest, stop: &AtomicBool, sink: &(dyn Fn(PreviewEvent) + Send + Sync)) {
    let camera = match Camera::open(
        request.choice.clone(),
        request.width,
        request.height,
        request.fps,
        OPEN_TIMEOUT,
    ) {
        Ok(camera) => camera,
        Err(err) => {
            sink(PreviewEvent::Failed { device: "camera", reason: err.to_string() });
            return;
        }
    };
    let mut silent_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match camera.next_frame(Duration::from_millis(100)) {
            Ok(Some(captured)) => {
                sink(PreviewEvent::Frame(Arc::new(captured.frame)));
                silent_since = Instant::now();
            }
            Ok(None) if silent_since.elapsed() > OPEN_TIMEOUT => {
                sink(PreviewEvent::Failed { device: "camera", reason: "no picture for 5 s".into() });
                silent_since = Instant::now();
            }
            Ok(None) => {}
            Err(ended) => {
                let reason = std::iter::from_fn(|| camera.try_event())
                    .find_map(
                        |e| if let crate::CameraEvent::Failed { reason } = e { Some(reason) } else { None },
                    )
                    .unwrap_or_else(|| ended.to_string());
                sink(PreviewEvent::Failed { device: "camera", reason });
                return;
            }
        }
    }
}

fn measure_microphone(choice: DeviceChoice, stop: &AtomicBool, sink: &(dyn Fn(PreviewEvent) + Send + Sync)) {
    let microphone = match Microphone::open_checked(choice, OPEN_TIMEOUT) {
        Ok(microphone) => microphone,
        Err(err) => {
            sink(PreviewEvent::Failed { device: "microphone", reason: err.to_string() });
            return;
        }
    };
    let mut meter = LevelMeter::default();
    let mut reported = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match microphone.next_frame(Duration::from_millis(100)) {
            Ok(Some(frame)) => {
                meter.update(&frame.samples);
            }
            Ok(None) => {
                // The device may have failed and be reopened by its supervisor: say so, go on.
                if let Some(crate::AudioEvent::Failed { reason, .. }) = microphone.try_event() {
                    sink(PreviewEvent::Failed { device: "microphone", reason });
                }
            }
            Err(ended) => {
                sink(PreviewEvent::Failed { device: "microphone", reason: ended.to_string() });
                return;
            }
        }
        if reported.elapsed() >= LEVEL_EVERY {
            sink(PreviewEvent::Level(meter.level()));
            reported = Instant::now();
        }
    }
}

/// What the speaker played of the test sound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoundCheck {
    /// Milliseconds of the sound the device took to play.
    pub played_ms: u32,
    /// Milliseconds the sound lasts.
    pub sound_ms: u32,
    /// The loudest 10 ms it took, dBFS.
    pub peak_dbfs: f64,
}

/// The test sound: a rising two-note chime, 0.7 s at about -12 dBFS.
pub fn test_sound() -> Vec<i16> {
    let rate = f64::from(crate::synthetic::SAMPLE_RATE);
    let note = |freq: f64, ms: u32| {
        let len = (rate * f64::from(ms) / 1000.0) as usize;
        (0..len).map(move |i| {
            let t = i as f64 / rate;
            // 10 ms fade in, exponential decay: a bell, not a click.
            let envelope = (i as f64 / (rate * 0.01)).min(1.0) * (-3.0 * t).exp();
            (8_000.0 * envelope * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
    };
    note(660.0, 300).chain(note(880.0, 400)).collect()
}

/// Plays [`test_sound`] on `speaker` and returns once the device has taken all of it (at most a
/// few seconds): how much it played, and how loud.
pub fn play_test_sound(speaker: DeviceChoice) -> Result<SoundCheck, AudioError> {
    let speaker = Speaker::open_checked(speaker, OPEN_TIMEOUT)?;
    let sound = test_sound();
    let piece = crate::PROCESSING_FRAME * 2;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let sound_ms = (sound.len() as u32 * 1000) / crate::synthetic::SAMPLE_RATE;
    let mut check = SoundCheck { played_ms: 0, sound_ms, peak_dbfs: -100.0 };
    let take = |speaker: &Speaker, check: &mut SoundCheck| {
        for frame in speaker.played_before(Instant::now()) {
            let level = dbfs(&frame);
            // Only the sound counts, not the silence the device plays around it.
            if level > -60.0 {
                check.played_ms += (frame.len() as u32 * 1000) / crate::synthetic::SAMPLE_RATE;
                check.peak_dbfs = check.peak_dbfs.max(level);
            }
        }
    };
    // Paced at the device's rate, 20 ms ahead, so the queue never overflows.
    for (i, chunk) in sound.chunks(piece).enumerate() {
        let due = started + Duration::from_millis(20 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        speaker.play(chunk);
        take(&speaker, &mut check);
    }
    while check.played_ms + 20 < sound_ms && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        take(&speaker, &mut check);
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_devices_preview_and_a_broken_camera_is_named() {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let preview = Preview::start(
            Some(CameraRequest {
                choice: CameraChoice::Synthetic { id: 3, name: "Pat".into() },
                width: 320,
                height: 180,
                fps: 30,
            }),
            Some(DeviceChoice::Synthetic(3)),
            move |event| seen.lock().unwrap().push(event),
        );
        std::thread::sleep(Duration::from_millis(700));
        drop(preview);
        let events = std::mem::take(&mut *events.lock().unwrap());
        let frames: Vec<_> = events
            .iter()
            .filter_map(|e| if let PreviewEvent::Frame(f) = e { Some(Arc::clone(f)) } else { None })
            .collect();
        assert!(frames.len() >= 10, "{} frames in 0.7 s", frames.len());
        assert_eq!((frames[0].width(), frames[0].height()), (320, 180));
        let stamp =
            crate::synthetic::read_stamp(frames.last().unwrap()).expect("the synthetic camera's stamp");
        assert_eq!(stamp.id, 3);
        let loud = events.iter().filter(|e| matches!(e, PreviewEvent::Level(l) if l.dbfs > -40.0)).count();
        assert!(loud >= 3, "the synthetic microphone's speech shows on the meter: {events:?}");
        assert!(!events.iter().any(|e| matches!(e, PreviewEvent::Failed { .. })));

        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&failures);
        let preview = Preview::start(
            Some(CameraRequest {
                choice: CameraChoice::Id("/dev/video-nope".into()),
                width: 640,
                height: 360,
                fps: 30,
            }),
            None,
            move |event| seen.lock().unwrap().push(event),
        );
        let until = Instant::now() + Duration::from_secs(6);
        while failures.lock().unwrap().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(preview);
        let failures = failures.lock().unwrap();
        assert!(
            matches!(failures.first(), Some(PreviewEvent::Failed { device: "camera", reason }) if !reason.is_empty()),
            "{failures:?}"
        );
    }

    #[test]
    fn the_test_sound_is_played_whole() {
        let check = play_test_sound(DeviceChoice::Synthetic(1)).unwrap();
        assert_eq!(check.sound_ms, 700);
        assert!(
            check.played_ms + 40 >= check.sound_ms,
            "played {} of {} ms",
            check.played_ms,
            check.sound_ms
        );
        assert!((-30.0..-3.0).contains(&check.peak_dbfs), "peak {} dBFS", check.peak_dbfs);
    }
}
