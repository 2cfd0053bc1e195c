//! Capture and encoding on their own threads: the camera encoded in each layer someone gets,
//! the microphone processed and encoded with Opus; devices opened off the engine's task and
//! swapped in by their threads.

use super::*;

/// What the media threads are told while they run.
#[derive(Debug)]
pub(super) struct Sending {
    /// Video is sent (camera on).
    pub(super) video: AtomicBool,
    /// Audio is sent (not muted).
    pub(super) audio: AtomicBool,
    /// Layers whose next picture must be a keyframe (bit n: layer n): a peer joined, asked, or
    /// moves to that layer.
    pub(super) keyframes: AtomicU8,
    /// The media threads stop.
    pub(super) stop: AtomicBool,
    /// Per layer, the bitrate its encoder aims for; 0: nobody gets it, it is not encoded.
    pub(super) bitrates: [AtomicU32; LAYERS],
    /// A retuning for the Opus encoder, taken by the audio thread before its next frame.
    pub(super) opus: Mutex<Option<OpusTuning>>,
}

/// Every layer.
pub(super) const ALL_LAYERS: u8 = (1 << LAYERS) - 1;

impl Default for Sending {
    fn default() -> Self {
        Self {
            video: AtomicBool::new(true),
            audio: AtomicBool::new(true),
            keyframes: AtomicU8::new(ALL_LAYERS),
            stop: AtomicBool::new(false),
            bitrates: std::array::from_fn(|_| AtomicU32::new(0)),
            opus: Mutex::new(None),
        }
    }
}

impl Sending {
    /// The next picture of each layer in `layers` (a bit mask) is a keyframe.
    pub(super) fn want_keyframes(&self, layers: u8) {
        self.keyframes.fetch_or(layers, Ordering::Relaxed);
    }
}

/// Hands `encoded` from a capture thread to the engine without waiting
/// ([`crate::queues::ENCODED`]): when the engine is behind it is dropped, and a dropped picture's
/// layers start again with a keyframe (what follows it could not be decoded). `false` once the
/// engine is gone.
pub(super) fn hand_over(out: &mpsc::Sender<Encoded>, encoded: Encoded, sending: &Sending) -> bool {
    match out.try_send(encoded) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(Encoded::Video(units, _))) => {
            sending.want_keyframes(units.iter().fold(0, |mask, unit| mask | 1 << unit.layer));
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One layer's access unit of a captured picture.
pub(super) struct LayerUnit {
    pub(super) layer: usize,
    pub(super) data: bytes::Bytes,
    pub(super) keyframe: bool,
}

pub(super) enum Encoded {
    /// A captured picture's access units, one per layer encoded, and when it was captured
    /// (Unix microseconds).
    Video(Vec<LayerUnit>, u64),
    Audio(Vec<u8>),
    /// What the camera captured, for the self view.
    Preview(Arc<I420Frame>),
    /// A device's capture ended for good (its thread is gone): `camera` or `microphone`.
    CaptureEnded(&'static str),
}

/// Says how a device switch went.
pub(super) fn switched<E: std::fmt::Display>(
    events: &EventSink,
    device: &'static str,
    result: Result<bool, E>,
) {
    let event = match result {
        Ok(true) => EngineEvent::DeviceSwitched { device },
        Ok(false) => EngineEvent::DeviceFailed { device, reason: "the call is ending".into() },
        Err(err) => EngineEvent::DeviceFailed { device, reason: err.to_string() },
    };
    let _ = events.send(event);
}

/// Opens devices one at a time, in the order asked, off the engine task: a later switch always
/// wins over an earlier one that is slower to open.
pub(super) struct DeviceJobs(std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>);

impl DeviceJobs {
    pub(super) fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // The thread ends when the engine (the only sender) is gone.
        let _ = std::thread::Builder::new().name("confer-devices".into()).spawn(move || {
            for job in queue {
                job();
            }
        });
        Self(jobs)
    }

    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.0.send(Box::new(job));
    }
}

/// Where a newly opened device goes: the capture threads take it in place of the one they have.
pub(super) struct Swaps {
    pub(super) camera: std::sync::mpsc::Sender<Camera>,
    pub(super) microphone: std::sync::mpsc::Sender<Microphone>,
}

/// Starts capture and encoding; returns the speaker and where new devices go.
pub(super) fn start_media(
    config: &EngineConfig,
    ladder: &Ladder,
    sending: &Arc<Sending>,
    out: mpsc::Sender<Encoded>,
) -> Result<(Arc<Mutex<Speaker>>, Swaps), EngineError> {
    let media_error = |e: &dyn std::fmt::Display| EngineError::Media(e.to_string());
    let (camera_choice, mic_choice, speaker_choice, processing) = match &config.media {
        MediaSource::Synthetic { pattern_id } => (
            Some(CameraChoice::Synthetic { id: *pattern_id, name: config.name.clone() }),
            DeviceChoice::Synthetic(*pattern_id),
            DeviceChoice::Synthetic(*pattern_id),
            ProcessingConfig::OFF,
        ),
        MediaSource::Devices { camera, microphone, speaker, processing } => {
            (camera.clone(), microphone.clone(), speaker.clone(), *processing)
        }
    };
    let speaker = Arc::new(Mutex::new(
        Speaker::open_checked(speaker_choice, Duration::from_secs(5)).map_err(|e| media_error(&e))?,
    ));
    let microphone =
        Microphone::open_checked(mic_choice, Duration::from_secs(5)).map_err(|e| media_error(&e))?;
    let start = ladder.range(0).1;

    let camera = match camera_choice {
        Some(choice) => Some(
            Camera::open(choice, config.width, config.height, config.fps, Duration::from_secs(5))
                .map_err(|e| media_error(&e))?,
        ),
        None => None,
    };
    // Checked here, so a codec that cannot start fails the join rather than the thread.
    H264Encoder::new(H264Config::camera(config.fps as f32, start)).map_err(|e| media_error(&e))?;
    let (camera_swap, new_cameras) = std::sync::mpsc::channel();
    let (video_sending, video_out, fps, self_view) =
        (Arc::clone(sending), out.clone(), config.fps, config.self_view);
    std::thread::Builder::new()
        .name("confer-video-encode".into())
        .spawn(move || video_loop(camera, &new_cameras, (fps, self_view), &video_sending, &video_out))
        .map_err(|e| media_error(&e))?;
    let encoder = OpusEncoder::new(OpusConfig::default()).map_err(|e| media_error(&e))?;
    let (microphone_swap, new_microphones) = std::sync::mpsc::channel();
    let (sending, speaker_for_aec) = (Arc::clone(sending), Arc::clone(&speaker));
    std::thread::Builder::new()
        .name("confer-audio-encode".into())
        .spawn(move || {
            audio_loop(microphone, &new_microphones, encoder, processing, &speaker_for_aec, &sending, &out);
        })
        .map_err(|e| media_error(&e))?;
    Ok((speaker, Swaps { camera: camera_swap, microphone: microphone_swap }))
}

/// Encodes what the camera captures, in each layer someone gets (each its own encoder, each
/// layer half the size of the one above); takes a new camera (and starts new streams, with
/// keyframes) when one arrives.
pub(super) fn video_loop(
    mut camera_slot: Option<Camera>,
    new_cameras: &std::sync::mpsc::Receiver<Camera>,
    (fps, self_view): (u32, bool),
    sending: &Sending,
    out: &mpsc::Sender<Encoded>,
) {
    let mut encoders: [Option<(H264Encoder, u32)>; LAYERS] = Default::default();
    while !sending.stop.load(Ordering::Relaxed) {
        if let Ok(next) = new_cameras.try_recv() {
            // The old camera closes as it is dropped; the new picture may differ in size.
            camera_slot = Some(next);
            encoders = Default::default();
        }
        let Some(camera) = &camera_slot else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let captured = match camera.next_frame(Duration::from_millis(200)) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(_) => {
                // Nothing more will come from it (a switch brings another): say so, do not spin.
                let _ = out.blocking_send(Encoded::CaptureEnded("camera"));
                camera_slot = None;
                continue;
            }
        };
        if !sending.video.load(Ordering::Relaxed) {
            continue;
        }
        if out.capacity() < crate::queues::ENCODED / 2 {
            // The engine is behind: this picture is not encoded (skipping it breaks nothing for
            // the receivers), and the rest of the queue stays free for audio.
            continue;
        }
        let keyframes = sending.keyframes.swap(0, Ordering::Relaxed);
        let wanted: [u32; LAYERS] =
            std::array::from_fn(|layer| sending.bitrates[layer].load(Ordering::Relaxed));
        let frame = Arc::new(captured.frame);
        let mut units = Vec::new();
        let mut smaller: Option<I420Frame> = None;
        let lowest = wanted.iter().rposition(|&bitrate| bitrate > 0);
        for (layer, slot) in encoders.iter_mut().enumerate() {
            if lowest.is_none_or(|lowest| layer > lowest) {
                // Not encoded: a layer that comes back starts with a fresh encoder (a keyframe).
                *slot = None;
                continue;
            }
            if layer > 0 {
                let above = smaller.as_ref().unwrap_or(&frame);
                if let Some(half) = above.scaled_to_fit(above.width() / 2, above.height() / 2) {
                    smaller = Some(half);
                }
            }
            let bitrate = wanted[layer];
            if bitrate == 0 {
                *slot = None;
                continue;
            }
            if slot.is_none() {
                *slot = H264Encoder::new(H264Config::camera(fps as f32, bitrate)).ok().map(|e| (e, bitrate));
            }
            let Some((encoder, current)) = slot else { continue };
            if *current != bitrate && encoder.set_bitrate(bitrate).is_ok() {
                *current = bitrate;
            }
            if keyframes & (1 << layer) != 0 {
                encoder.request_keyframe();
            }
            let picture = smaller.as_ref().unwrap_or(&frame);
            if let Ok(Some(encoded)) = encoder.encode(picture) {
                units.push(LayerUnit { layer, data: encoded.data.into(), keyframe: encoded.keyframe });
            }
        }
        if !units.is_empty() && !hand_over(out, Encoded::Video(units, captured.captured_us), sending) {
            return;
        }
        if self_view && !hand_over(out, Encoded::Preview(frame), sending) {
            return;
        }
    }
}

pub(super) fn audio_loop(
    mut microphone: Microphone,
    new_microphones: &std::sync::mpsc::Receiver<Microphone>,
    mut encoder: OpusEncoder,
    processing: ProcessingConfig,
    speaker: &Mutex<Speaker>,
    sending: &Sending,
    out: &mpsc::Sender<Encoded>,
) {
    let mut processor = AudioProcessor::new(processing);
    let mut pending: Vec<i16> = Vec::with_capacity(FRAME_SAMPLES);
    let mut ended = false;
    while !sending.stop.load(Ordering::Relaxed) {
        if ended {
            // Nothing more will come from this microphone: wait for a switch, do not spin.
            if let Ok(next) = new_microphones.recv_timeout(Duration::from_millis(200)) {
                (microphone, ended) = (next, false);
            }
            continue;
        }
        if let Ok(next) = new_microphones.try_recv() {
            microphone = next;
        }
        let captured = match microphone.next_frame(Duration::from_millis(200)) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(_) => {
                let _ = out.blocking_send(Encoded::CaptureEnded("microphone"));
                ended = true;
                continue;
            }
        };
        let mut frame = captured.samples;
        if frame.len() != PROCESSING_FRAME {
            continue;
        }
        if !processing.music_mode {
            let played = speaker.lock().map(|s| s.played_before(captured.at)).unwrap_or_default();
            for reference in played {
                let _ = processor.process_render(&reference);
            }
            let _ = processor.process_capture(&mut frame);
        }
        pending.extend_from_slice(&frame);
        if pending.len() < FRAME_SAMPLES {
            continue;
        }
        let twenty_ms: Vec<i16> = pending.drain(..FRAME_SAMPLES).collect();
        if let Some(t) = sending.opus.try_lock().ok().and_then(|mut tuning| tuning.take()) {
            // A setting libopus refuses leaves the one before it: the stream goes on.
            if let Err(err) = encoder.tune(t.bitrate_bps as i32, t.fec, t.loss_percent) {
                tracing::warn!(error = %err, "the Opus encoder refused a retuning");
            }
        }
        if !sending.audio.load(Ordering::Relaxed) {
            continue;
        }
        if let Ok(packet) = encoder.encode(&twenty_ms)
            // Waits for room: the microphone's own queue drops (counted) while this thread is
            // behind, as it would for a slow encoder.
            && out.blocking_send(Encoded::Audio(packet)).is_err()
        {
            return;
        }
    }
}
