//! Microphones and speakers through cpal, plus the synthetic ones, behind one interface.
//!
//! - Devices are listed with a stable id and a human name; the synthetic microphone and speaker
//!   are listed too, so the rest of Confer runs on a machine with no sound card.
//! - A device is opened by id or as the system default ([`DeviceChoice`]). Audio reaches the rest
//!   of Confer as 10 ms frames of 48 kHz mono `i16`, whatever the device runs: other rates are
//!   resampled (rubato), channels mixed down or copied up.
//! - Each open device has a supervisor thread that owns the cpal stream. It follows the system
//!   default when that changes, rebuilds a stream that failed, and falls back to the default when
//!   a chosen device disappears, reporting each as an [`AudioEvent`].
//! - Audio callbacks never block: frames go through bounded queues with `try_send`; what does
//!   not fit is dropped and counted.
//!
//! On Linux cpal talks to PulseAudio (or PipeWire's PulseAudio server) when one runs, which is
//! where desktop devices, defaults and hot-plug live; otherwise it uses ALSA.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};

use crate::synthetic::{SAMPLE_RATE, SyntheticMic};
use crate::{PROCESSING_FRAME, StreamResampler};

/// The id under which the synthetic microphone and speaker are listed.
pub const SYNTHETIC_DEVICE: &str = "synthetic";

/// How often supervisors and watchers look at the device lists.
const POLL: Duration = Duration::from_millis(500);
/// Captured frames waiting for the consumer: 500 ms.
const CAPTURE_QUEUE: usize = 50;
/// Frames waiting to be played: 200 ms (more would only add latency).
const PLAYBACK_QUEUE: usize = 20;

/// 10 ms of audio with the moment it crossed the device boundary: when the device delivered it
/// (a microphone's frame) or took it to play (a speaker's frame), both read in the device's own
/// callback. A sound is always taken for playing before its echo can be delivered, so feeding
/// the echo canceller [`Speaker::played_before`] a captured frame's `at` keeps it causal with a
/// steady lead (the device's own round trip), whatever the consumer's scheduling. (The devices'
/// latency estimates were tried instead and are not consistent enough: on PulseAudio they put
/// the echo 24 ms before the sound that caused it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// 48 kHz samples, mono (480) or interleaved stereo (960).
    pub samples: Vec<i16>,
    /// When the first sample met the device.
    pub at: Instant,
}

/// Why audio could not be listed or opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioError {
    /// No audio system at all (no PulseAudio, no ALSA, ...).
    #[error("no audio system is available: {0}")]
    NoAudioSystem(String),
    /// The device asked for is not there.
    #[error("no {direction} device with id {id:?}")]
    NoSuchDevice {
        /// "input" or "output".
        direction: &'static str,
        /// The id asked for.
        id: String,
    },
    /// There is no default device in this direction (no sound card).
    #[error("there is no default {0} device")]
    NoDefaultDevice(&'static str),
    /// The device exists but refused to open or to start.
    #[error("could not open {device:?}: {reason}")]
    Open {
        /// The device's name.
        device: String,
        /// What the audio system said.
        reason: String,
    },
}

/// One device in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDeviceInfo {
    /// Stable id to open it by (`synthetic` for the synthetic device).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Whether it is the system default in its direction now.
    pub is_default: bool,
}

/// Which device to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Whatever the system's default is, following it when it changes.
    SystemDefault,
    /// One device by id; if it disappears, the default takes over (and an event says so).
    Id(String),
    /// The synthetic device: for the microphone, the tone of this pattern id with latency
    /// markers; for the speaker, a paced sink that plays nothing.
    Synthetic(u32),
}

/// What happened to an open device, or to the device lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioEvent {
    /// A device is now in use.
    Opened {
        /// Its name.
        device: String,
        /// The rate it runs at (resampled to and from 48 kHz when different).
        sample_rate: u32,
        /// Its channels (mixed to or from mono).
        channels: u16,
    },
    /// The system default changed and the stream moved to it.
    DefaultChanged {
        /// The new default's name.
        device: String,
    },
    /// The chosen device disappeared or failed; the default took over.
    FellBackToDefault {
        /// The device that was lost.
        lost: String,
        /// The default now in use.
        device: String,
    },
    /// No device could be opened; the supervisor keeps trying.
    Failed {
        /// Why.
        reason: String,
    },
    /// A device appeared.
    Added {
        /// "input" or "output".
        direction: &'static str,
        /// The device.
        device: AudioDeviceInfo,
    },
    /// A device went away.
    Removed {
        /// "input" or "output".
        direction: &'static str,
        /// The device.
        device: AudioDeviceInfo,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// The audio system: PulseAudio when it runs (on Linux), else the platform's default host.
fn host() -> Result<cpal::Host, AudioError> {
    let available = cpal::available_hosts();
    #[cfg(target_os = "linux")]
    let preferred = [cpal::HostId::PulseAudio];
    #[cfg(not(target_os = "linux"))]
    let preferred: [cpal::HostId; 0] = [];
    let mut last_error = String::from("no audio host is compiled in");
    for id in preferred.into_iter().chain(available.iter().copied()) {
        if !available.contains(&id) {
            continue;
        }
        match cpal::host_from_id(id) {
            Ok(host) => return Ok(host),
            Err(err) => last_error = err.to_string(),
        }
    }
    Err(AudioError::NoAudioSystem(last_error))
}

fn device_id(device: &cpal::Device) -> Option<String> {
    device.id().ok().map(|id| id.to_string())
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device_id(device).unwrap_or_default())
}

fn default_device(host: &cpal::Host, direction: Direction) -> Option<cpal::Device> {
    match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
}

/// The real devices in one direction. ALSA's made-up "default" device is not listed (it is
/// what [`DeviceChoice::SystemDefault`] opens).
fn real_devices(host: &cpal::Host, direction: Direction) -> Result<Vec<AudioDeviceInfo>, AudioError> {
    let devices = match direction {
        Direction::Input => host.input_devices().map(|d| d.collect::<Vec<_>>()),
        Direction::Output => host.output_devices().map(|d| d.collect::<Vec<_>>()),
    }
    .map_err(|err| AudioError::NoAudioSystem(err.to_string()))?;
    let default_id = default_device(host, direction).and_then(|d| device_id(&d));
    Ok(devices
        .iter()
        .filter_map(|device| {
            let id = device_id(device)?;
            Some(AudioDeviceInfo {
                is_default: Some(&id) == default_id.as_ref(),
                name: device_name(device),
                id,
            })
        })
        .collect())
}

fn list(direction: Direction) -> Result<Vec<AudioDeviceInfo>, AudioError> {
    let synthetic = AudioDeviceInfo {
        id: SYNTHETIC_DEVICE.to_owned(),
        name: match direction {
            Direction::Input => "Synthetic microphone (test tone)".to_owned(),
            Direction::Output => "Synthetic speaker (silent)".to_owned(),
        },
        is_default: false,
    };
    // No audio system is not an error for listing: the synthetic device is still there.
    let real = host().and_then(|host| real_devices(&host, direction)).unwrap_or_default();
    Ok(real.into_iter().chain(std::iter::once(synthetic)).collect())
}

/// Microphones: the real ones (possibly none) and the synthetic one.
pub fn input_devices() -> Result<Vec<AudioDeviceInfo>, AudioError> {
    list(Direction::Input)
}

/// Speakers: the real ones (possibly none) and the synthetic one.
pub fn output_devices() -> Result<Vec<AudioDeviceInfo>, AudioError> {
    list(Direction::Output)
}

/// Finds a device by id (as listed), or the default.
fn find(host: &cpal::Host, direction: Direction, id: Option<&str>) -> Result<cpal::Device, AudioError> {
    match id {
        None => default_device(host, direction).ok_or(AudioError::NoDefaultDevice(direction.name())),
        Some(id) => {
            let devices = match direction {
                Direction::Input => host.input_devices().map(|d| d.collect::<Vec<_>>()),
                Direction::Output => host.output_devices().map(|d| d.collect::<Vec<_>>()),
            }
            .map_err(|err| AudioError::NoAudioSystem(err.to_string()))?;
            devices
                .into_iter()
                .find(|d| device_id(d).as_deref() == Some(id))
                .ok_or_else(|| AudioError::NoSuchDevice { direction: direction.name(), id: id.to_owned() })
        }
    }
}

/// Counters shared between a device's callback and its handle.
#[derive(Debug, Default)]
struct Counters {
    /// Capture: frames dropped because the consumer was behind. Playback: frames refused
    /// because the queue was full.
    dropped: AtomicU64,
    /// Playback: 10 ms periods played as silence because nothing was queued.
    underruns: AtomicU64,
}

/// A stop request a thread can wait on: it ends a wait at once instead of after a poll period,
/// so closing a device never waits for the next poll.
#[derive(Debug, Default)]
struct StopSignal {
    raised: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl StopSignal {
    fn raise(&self) {
        if let Ok(mut raised) = self.raised.lock() {
            *raised = true;
        }
        self.changed.notify_all();
    }

    fn is_raised(&self) -> bool {
        self.raised.lock().map_or(true, |raised| *raised)
    }

    /// Waits up to `timeout`; true if stop was requested.
    fn wait(&self, timeout: Duration) -> bool {
        let Ok(raised) = self.raised.lock() else { return true };
        match self.changed.wait_timeout_while(raised, timeout, |raised| !*raised) {
            Ok((raised, _)) => *raised,
            Err(_) => true,
        }
    }
}

/// Tells a supervisor thread to stop, and waits for it.
#[derive(Debug)]
struct Supervisor {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends events without ever blocking; a full event queue drops the event.
#[derive(Debug, Clone)]
struct Events(SyncSender<AudioEvent>);

impl Events {
    fn send(&self, event: AudioEvent) {
        let _ = self.0.try_send(event);
    }
}

/// The state a supervisor keeps about the stream it owns.
struct Running {
    stream: Option<cpal::Stream>,
    /// The id of the device in use (`None` for synthetic or nothing open).
    device_id: Option<String>,
    device_name: String,
    failed: Arc<AtomicBool>,
}

/// Builds a stream for a device. Returns the stream, the device's rate and channels.
type Builder<'a> =
    dyn FnMut(&cpal::Device, Arc<AtomicBool>) -> Result<(cpal::Stream, u32, u16), AudioError> + 'a;

/// The supervisor's loop, shared by microphone and speaker: keep a stream open on the chosen
/// device (or the default), follow the default, fall back when the device goes, rebuild when it
/// fails. Owns the stream, so the stream never crosses threads.
fn supervise(
    direction: Direction,
    choice: &DeviceChoice,
    stop: &StopSignal,
    events: &Events,
    build: &mut Builder<'_>,
) {
    let host = match host() {
        Ok(host) => host,
        Err(err) => {
            events.send(AudioEvent::Failed { reason: err.to_string() });
            return;
        }
    };
    let mut wanted: Option<String> = match choice {
        DeviceChoice::Id(id) => Some(id.clone()),
        _ => None,
    };
    let mut running =
        Running { stream: None, device_id: None, device_name: String::new(), failed: Arc::default() };
    let mut reported_failure = false;
    while !stop.is_raised() {
        let current_default = default_device(&host, direction).and_then(|d| device_id(&d));
        let broken = running.stream.is_none() || running.failed.load(Ordering::Relaxed);
        let wanted_gone = wanted.as_deref().is_some_and(|id| find(&host, direction, Some(id)).is_err());
        let default_moved =
            wanted.is_none() && running.stream.is_some() && current_default != running.device_id;
        if broken || wanted_gone || default_moved {
            let lost = match (&wanted, running.device_name.is_empty()) {
                (Some(id), true) => id.clone(),
                _ => running.device_name.clone(),
            };
            let had_stream = running.stream.take().is_some();
            if wanted_gone {
                // The chosen device went away: the default takes over from now on.
                wanted = None;
            }
            let device = find(&host, direction, wanted.as_deref());
            let failed = Arc::new(AtomicBool::new(false));
            match device.and_then(|device| {
                let name = device_name(&device);
                build(&device, failed.clone())
                    .map(|(stream, rate, channels)| (stream, name, rate, channels, device))
            }) {
                Ok((stream, name, rate, channels, device)) => {
                    running = Running {
                        stream: Some(stream),
                        device_id: device_id(&device),
                        device_name: name.clone(),
                        failed,
                    };
                    reported_failure = false;
                    let event = if wanted_gone {
                        AudioEvent::FellBackToDefault { lost, device: name.clone() }
                    } else if default_moved {
                        AudioEvent::DefaultChanged { device: name.clone() }
                    } else {
                        AudioEvent::Opened { device: name.clone(), sample_rate: rate, channels }
                    };
                    events.send(event);
                    if wanted_gone || default_moved || had_stream {
                        events.send(AudioEvent::Opened { device: name, sample_rate: rate, channels });
                    }
                }
                Err(err) => {
                    running.device_name.clear();
                    if !reported_failure {
                        events.send(AudioEvent::Failed { reason: err.to_string() });
                        reported_failure = true;
                    }
                }
            }
        }
        if stop.wait(POLL) {
            break;
        }
    }
}

/// Builds a stream with the device's own default format, whatever its sample type.
fn build_input(
    device: &cpal::Device,
    failed: Arc<AtomicBool>,
    layout: Channels,
    frames: SyncSender<AudioFrame>,
    counters: Arc<Counters>,
) -> Result<(cpal::Stream, u32, u16), AudioError> {
    let open_error = |reason: String| AudioError::Open { device: device_name(device), reason };
    let supported = device.default_input_config().map_err(|e| open_error(e.to_string()))?;
    let (rate, channels) = (supported.sample_rate(), supported.channels());
    let config = cpal::StreamConfig {
        channels,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Fixed((rate / 100).max(64)),
    };
    let chunker = CaptureChunker::new(rate, channels, layout, frames, counters)
        .map_err(|e| open_error(e.to_string()))?;
    let stream = match supported.sample_format() {
        SampleFormat::F32 => input_stream::<f32>(device, config, chunker, failed),
        SampleFormat::I16 => input_stream::<i16>(device, config, chunker, failed),
        SampleFormat::I32 => input_stream::<i32>(device, config, chunker, failed),
        SampleFormat::U8 => input_stream::<u8>(device, config, chunker, failed),
        SampleFormat::U16 => input_stream::<u16>(device, config, chunker, failed),
        other => return Err(open_error(format!("unsupported sample format {other}"))),
    }
    .map_err(|e| open_error(e.to_string()))?;
    stream.play().map_err(|e| open_error(e.to_string()))?;
    Ok((stream, rate, channels))
}

fn input_stream<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut chunker: CaptureChunker,
    failed: Arc<AtomicBool>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    device.build_input_stream(
        config,
        move |data: &[T], _: &cpal::InputCallbackInfo| chunker.push(data),
        move |err: cpal::Error| {
            if !matches!(err.kind(), cpal::ErrorKind::Xrun) {
                failed.store(true, Ordering::Relaxed);
            }
        },
        Some(Duration::from_millis(200)),
    )
}

/// Turns whatever a capture callback delivers into 10 ms frames of 48 kHz mono (channels
/// averaged) or, for music mode, interleaved stereo (the first two channels; a mono device's one
/// channel on both sides).
struct CaptureChunker {
    device_channels: usize,
    /// One resampler per output channel.
    resamplers: Vec<StreamResampler>,
    frame: Vec<i16>,
    frame_len: usize,
    /// Resampled output per channel, reused from callback to callback.
    taken: Vec<Vec<f32>>,
    frames: SyncSender<AudioFrame>,
    counters: Arc<Counters>,
}

impl CaptureChunker {
    fn new(
        rate: u32,
        device_channels: u16,
        layout: Channels,
        frames: SyncSender<AudioFrame>,
        counters: Arc<Counters>,
    ) -> Result<Self, crate::ResampleError> {
        let outputs = layout.count();
        let frame_len = PROCESSING_FRAME * outputs;
        Ok(Self {
            device_channels: usize::from(device_channels.max(1)),
            resamplers: (0..outputs)
                .map(|_| StreamResampler::new(rate, SAMPLE_RATE))
                .collect::<Result<_, _>>()?,
            frame: Vec::with_capacity(frame_len),
            frame_len,
            taken: vec![Vec::with_capacity(PROCESSING_FRAME); outputs],
            frames,
            counters,
        })
    }

    /// Takes one callback's samples.
    fn push<T>(&mut self, data: &[T])
    where
        T: SizedSample,
        f32: FromSample<T>,
    {
        let now = Instant::now();
        let channels = self.device_channels;
        let sample = |s: &T| <f32 as FromSample<T>>::from_sample_(*s);
        if let [mono] = self.resamplers.as_mut_slice() {
            mono.push(
                data.chunks(channels).map(|frame| frame.iter().map(sample).sum::<f32>() / channels as f32),
            );
        } else {
            for (side, resampler) in self.resamplers.iter_mut().enumerate() {
                let channel = side.min(channels - 1);
                resampler.push(data.chunks(channels).filter_map(|frame| frame.get(channel).map(sample)));
            }
        }
        let outputs = self.resamplers.len();
        loop {
            let ready = self.resamplers.iter().map(StreamResampler::available).min().unwrap_or(0);
            let room = (self.frame_len - self.frame.len()) / outputs;
            let n = ready.min(room);
            if n == 0 {
                break;
            }
            for (side, resampler) in self.taken.iter_mut().zip(&mut self.resamplers) {
                side.clear();
                side.extend(resampler.take(n));
            }
            for i in 0..n {
                for side in &self.taken {
                    self.frame.push((side[i] * 32_767.0).clamp(-32_768.0, 32_767.0) as i16);
                }
            }
            if self.frame.len() == self.frame_len {
                let samples = std::mem::replace(&mut self.frame, Vec::with_capacity(self.frame_len));
                if let Err(TrySendError::Full(_)) = self.frames.try_send(AudioFrame { samples, at: now }) {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// What a microphone delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channels {
    /// 480 samples per 10 ms: the voice path (processing, mono Opus).
    #[default]
    Mono,
    /// 960 interleaved samples per 10 ms: music mode (no processing, stereo Opus).
    Stereo,
}

impl Channels {
    fn count(self) -> usize {
        match self {
            Self::Mono => 1,
            Self::Stereo => 2,
        }
    }
}

/// An open microphone: 10 ms frames of 48 kHz audio, mono or stereo.
#[derive(Debug)]
pub struct Microphone {
    frames: Receiver<AudioFrame>,
    events: Receiver<AudioEvent>,
    counters: Arc<Counters>,
    _supervisor: Supervisor,
}

impl Microphone {
    /// Opens a microphone. A real device is opened by its supervisor thread; whether that
    /// worked arrives as the first event ([`AudioEvent::Opened`] or [`AudioEvent::Failed`]),
    /// and [`Microphone::open_checked`] waits for it.
    pub fn open(choice: DeviceChoice) -> Self {
        Self::open_with(choice, Channels::Mono)
    }

    /// Opens a microphone delivering `layout` (stereo for music mode).
    pub fn open_with(choice: DeviceChoice, layout: Channels) -> Self {
        let (frame_tx, frames) = sync_channel(CAPTURE_QUEUE);
        let (event_tx, events) = sync_channel(64);
        let events_out = Events(event_tx);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(StopSignal::default());
        let thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            std::thread::Builder::new()
                .name("confer-mic".into())
                .spawn(move || match choice {
                    DeviceChoice::Synthetic(id) => {
                        synthetic_mic(id, layout, &stop, &frame_tx, &counters, &events_out);
                    }
                    choice => {
                        supervise(Direction::Input, &choice, &stop, &events_out, &mut |device, failed| {
                            build_input(device, failed, layout, frame_tx.clone(), counters.clone())
                        });
                    }
                })
                .ok()
        };
        Self { frames, events, counters, _supervisor: Supervisor { stop, thread } }
    }

    /// Opens a microphone and waits up to `timeout` for it to start; a device that cannot be
    /// opened is an error, with the audio system's reason.
    pub fn open_checked(choice: DeviceChoice, timeout: Duration) -> Result<Self, AudioError> {
        Self::open_checked_with(choice, Channels::Mono, timeout)
    }

    /// [`Microphone::open_checked`] delivering `layout`.
    pub fn open_checked_with(
        choice: DeviceChoice,
        layout: Channels,
        timeout: Duration,
    ) -> Result<Self, AudioError> {
        let mic = Self::open_with(choice, layout);
        wait_opened(&mic.events, timeout)?;
        Ok(mic)
    }

    /// The next frame, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<AudioFrame> {
        self.frames.recv_timeout(timeout).ok()
    }

    /// The next frame, waiting up to `timeout`; `Err` once capture has ended for good.
    pub fn next_frame(&self, timeout: Duration) -> Result<Option<AudioFrame>, crate::CaptureEnded> {
        match self.frames.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(crate::CaptureEnded),
        }
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<AudioEvent> {
        self.events.try_recv().ok()
    }

    /// Frames dropped because they were not taken in time.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

fn wait_opened(events: &Receiver<AudioEvent>, timeout: Duration) -> Result<(), AudioError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(AudioEvent::Opened { .. }) => return Ok(()),
            Ok(AudioEvent::Failed { reason }) => {
                return Err(AudioError::Open { device: "audio device".into(), reason });
            }
            // A fallback is followed by Opened.
            Ok(_) => {}
            Err(_) => {
                return Err(AudioError::Open {
                    device: "audio device".into(),
                    reason: "did not start in time".into(),
                });
            }
        }
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The synthetic microphone, paced like a device: a 10 ms frame every 10 ms, stamped with the
/// wall clock so its latency markers fall on whole seconds.
fn synthetic_mic(
    id: u32,
    layout: Channels,
    stop: &StopSignal,
    frames: &SyncSender<AudioFrame>,
    counters: &Counters,
    events: &Events,
) {
    let mut mic = SyntheticMic::new(id);
    events.send(AudioEvent::Opened {
        device: "Synthetic microphone".into(),
        sample_rate: SAMPLE_RATE,
        channels: 1,
    });
    let start = Instant::now();
    let start_us = unix_us();
    let mut n: u64 = 0;
    while !stop.is_raised() {
        let mono = mic.next_samples_at(PROCESSING_FRAME, start_us + n * 10_000);
        let frame = match layout {
            Channels::Mono => mono,
            Channels::Stereo => mono.iter().flat_map(|&s| [s, s]).collect(),
        };
        let at = start + Duration::from_millis(10 * n);
        if let Err(TrySendError::Full(_)) = frames.try_send(AudioFrame { samples: frame, at }) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
        // A frame is ready once it has been "heard": at the end of its 10 ms.
        let due = start + Duration::from_millis(10 * n);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Queued audio on its way out, shared with the playback callback.
struct PlaybackFeed {
    queue: Receiver<Vec<i16>>,
    /// What was handed to the device and when it will be heard, for the echo canceller.
    played: SyncSender<AudioFrame>,
    counters: Arc<Counters>,
    started: bool,
}

impl PlaybackFeed {
    /// The next 10 ms to play, taken by the device at `at`: the queued frame, or silence (an
    /// underrun once playing).
    fn next(&mut self, at: Instant) -> Vec<i16> {
        let frame = match self.queue.try_recv() {
            Ok(frame) => {
                self.started = true;
                frame
            }
            Err(_) => {
                if self.started {
                    self.counters.underruns.fetch_add(1, Ordering::Relaxed);
                }
                vec![0; PROCESSING_FRAME]
            }
        };
        let _ = self.played.try_send(AudioFrame { samples: frame.clone(), at });
        frame
    }
}

fn build_output(
    device: &cpal::Device,
    failed: Arc<AtomicBool>,
    feed: Arc<Mutex<PlaybackFeed>>,
) -> Result<(cpal::Stream, u32, u16), AudioError> {
    let open_error = |reason: String| AudioError::Open { device: device_name(device), reason };
    let supported = device.default_output_config().map_err(|e| open_error(e.to_string()))?;
    let (rate, channels) = (supported.sample_rate(), supported.channels());
    let config = cpal::StreamConfig {
        channels,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Fixed((rate / 100).max(64)),
    };
    let renderer = Renderer {
        channels: usize::from(channels.max(1)),
        resampler: StreamResampler::new(SAMPLE_RATE, rate).map_err(|e| open_error(e.to_string()))?,
        feed,
    };
    let stream = match supported.sample_format() {
        SampleFormat::F32 => output_stream::<f32>(device, config, renderer, failed),
        SampleFormat::I16 => output_stream::<i16>(device, config, renderer, failed),
        SampleFormat::I32 => output_stream::<i32>(device, config, renderer, failed),
        SampleFormat::U8 => output_stream::<u8>(device, config, renderer, failed),
        SampleFormat::U16 => output_stream::<u16>(device, config, renderer, failed),
        other => return Err(open_error(format!("unsupported sample format {other}"))),
    }
    .map_err(|e| open_error(e.to_string()))?;
    stream.play().map_err(|e| open_error(e.to_string()))?;
    Ok((stream, rate, channels))
}

/// Fills a playback callback's buffer from the feed, resampled and spread over the channels.
struct Renderer {
    channels: usize,
    resampler: StreamResampler,
    feed: Arc<Mutex<PlaybackFeed>>,
}

impl Renderer {
    /// Fills one callback's buffer.
    fn fill<T>(&mut self, out: &mut [T])
    where
        T: SizedSample + FromSample<f32>,
    {
        let at = Instant::now();
        let frames = out.len() / self.channels;
        while self.resampler.available() < frames {
            // The mutex is only ever contended by a supervisor swapping streams: never blocked
            // on for long; a poisoned one plays silence.
            let next = match self.feed.lock() {
                Ok(mut feed) => feed.next(at),
                Err(_) => vec![0; PROCESSING_FRAME],
            };
            self.resampler.push(next.into_iter().map(|s| f32::from(s) / 32_768.0));
        }
        for (frame, sample) in out.chunks_mut(self.channels).zip(self.resampler.take(frames)) {
            frame.fill(T::from_sample(sample));
        }
    }
}

fn output_stream<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut renderer: Renderer,
    failed: Arc<AtomicBool>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    device.build_output_stream(
        config,
        move |data: &mut [T], _: &cpal::OutputCallbackInfo| renderer.fill(data),
        move |err: cpal::Error| {
            if !matches!(err.kind(), cpal::ErrorKind::Xrun) {
                failed.store(true, Ordering::Relaxed);
            }
        },
        Some(Duration::from_millis(200)),
    )
}

/// An open speaker: takes 48 kHz mono frames of any length and plays them.
#[derive(Debug)]
pub struct Speaker {
    queue: SyncSender<Vec<i16>>,
    played: Receiver<AudioFrame>,
    /// Played frames taken from the channel but not yet heard.
    heard_later: Mutex<std::collections::VecDeque<AudioFrame>>,
    events: Receiver<AudioEvent>,
    counters: Arc<Counters>,
    pending: Mutex<Vec<i16>>,
    _supervisor: Supervisor,
}

impl Speaker {
    /// Opens a speaker; like [`Microphone::open`], whether it worked arrives as an event.
    pub fn open(choice: DeviceChoice) -> Self {
        let (queue, queue_rx) = sync_channel(PLAYBACK_QUEUE);
        let (played_tx, played) = sync_channel(PLAYBACK_QUEUE * 2);
        let (event_tx, events) = sync_channel(64);
        let events_out = Events(event_tx);
        let counters = Arc::new(Counters::default());
        let feed = Arc::new(Mutex::new(PlaybackFeed {
            queue: queue_rx,
            played: played_tx,
            counters: counters.clone(),
            started: false,
        }));
        let stop = Arc::new(StopSignal::default());
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("confer-speaker".into())
                .spawn(move || match choice {
                    DeviceChoice::Synthetic(_) => synthetic_speaker(&stop, &feed, &events_out),
                    choice => {
                        supervise(Direction::Output, &choice, &stop, &events_out, &mut |device, failed| {
                            build_output(device, failed, feed.clone())
                        });
                    }
                })
                .ok()
        };
        Self {
            queue,
            played,
            heard_later: Mutex::new(std::collections::VecDeque::new()),
            events,
            counters,
            pending: Mutex::new(Vec::new()),
            _supervisor: Supervisor { stop, thread },
        }
    }

    /// Opens a speaker and waits up to `timeout` for it to start.
    pub fn open_checked(choice: DeviceChoice, timeout: Duration) -> Result<Self, AudioError> {
        let speaker = Self::open(choice);
        wait_opened(&speaker.events, timeout)?;
        Ok(speaker)
    }

    /// Queues audio to play (48 kHz mono, any length; played in 10 ms pieces). Never blocks:
    /// returns how many 10 ms pieces did not fit and were dropped (and counted).
    pub fn play(&self, samples: &[i16]) -> usize {
        let mut pending = match self.pending.lock() {
            Ok(pending) => pending,
            Err(poisoned) => poisoned.into_inner(),
        };
        pending.extend_from_slice(samples);
        let mut dropped = 0;
        while pending.len() >= PROCESSING_FRAME {
            let frame: Vec<i16> = pending.drain(..PROCESSING_FRAME).collect();
            if self.queue.try_send(frame).is_err() {
                dropped += 1;
            }
        }
        self.counters.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// The 10 ms frames the device had taken to play by `at` (silence included), oldest first,
    /// not handed out before: the echo canceller's render input up to a captured frame
    /// delivered at `at`. Frames not taken are dropped after 400 ms.
    pub fn played_before(&self, at: Instant) -> Vec<Vec<i16>> {
        let mut later = match self.heard_later.lock() {
            Ok(later) => later,
            Err(poisoned) => poisoned.into_inner(),
        };
        later.extend(self.played.try_iter());
        let mut out = Vec::new();
        while later.front().is_some_and(|frame| frame.at <= at) {
            if let Some(frame) = later.pop_front() {
                out.push(frame.samples);
            }
        }
        // Bounded: at most 400 ms waits here.
        while later.len() > PLAYBACK_QUEUE * 2 {
            later.pop_front();
        }
        out
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<AudioEvent> {
        self.events.try_recv().ok()
    }

    /// 10 ms pieces dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// 10 ms periods played as silence because nothing was queued (after playing started).
    pub fn underruns(&self) -> u64 {
        self.counters.underruns.load(Ordering::Relaxed)
    }
}

/// A speaker that plays nothing, at a device's pace.
fn synthetic_speaker(stop: &StopSignal, feed: &Mutex<PlaybackFeed>, events: &Events) {
    events.send(AudioEvent::Opened {
        device: "Synthetic speaker".into(),
        sample_rate: SAMPLE_RATE,
        channels: 1,
    });
    let start = Instant::now();
    let mut n: u32 = 0;
    while !stop.is_raised() {
        let due = start + Duration::from_millis(10) * n;
        if let Ok(mut feed) = feed.lock() {
            feed.next(due);
        }
        n = n.wrapping_add(1);
        let due = start + Duration::from_millis(10) * n;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Watches the device lists and reports devices that come and go.
#[derive(Debug)]
pub struct DeviceWatcher {
    events: Receiver<AudioEvent>,
    _supervisor: Supervisor,
}

impl DeviceWatcher {
    /// Starts watching (the lists as they are now are the baseline; only changes are reported).
    pub fn start() -> Self {
        let (event_tx, events) = sync_channel(256);
        let events_out = Events(event_tx);
        let stop = Arc::new(StopSignal::default());
        let (ready_tx, ready) = sync_channel(1);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("confer-devices".into())
                .spawn(move || {
                    let Ok(host) = host() else {
                        let _ = ready_tx.send(());
                        return;
                    };
                    let snapshot = |direction| real_devices(&host, direction).unwrap_or_default();
                    let mut known = [snapshot(Direction::Input), snapshot(Direction::Output)];
                    let _ = ready_tx.send(());
                    while !stop.wait(POLL) {
                        for (direction, known) in
                            [Direction::Input, Direction::Output].into_iter().zip(&mut known)
                        {
                            let now = snapshot(direction);
                            for device in now.iter().filter(|d| !known.iter().any(|k| k.id == d.id)) {
                                events_out.send(AudioEvent::Added {
                                    direction: direction.name(),
                                    device: device.clone(),
                                });
                            }
                            for device in known.iter().filter(|k| !now.iter().any(|d| d.id == k.id)) {
                                events_out.send(AudioEvent::Removed {
                                    direction: direction.name(),
                                    device: device.clone(),
                                });
                            }
                            *known = now;
                        }
                    }
                })
                .ok()
        };
        // The baseline is taken before start() returns, so a device added right after is seen.
        let _ = ready.recv_timeout(Duration::from_secs(5));
        Self { events, _supervisor: Supervisor { stop, thread } }
    }

    /// The next event, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<AudioEvent> {
        self.events.recv_timeout(timeout).ok()
    }
}
