//! Compares Confer's two echo-cancellation candidates on one synthetic echo scenario:
//!
//! - `sonora` (pure-Rust port of WebRTC's AEC3), through `confer_media::AudioProcessor` with
//!   echo cancellation only;
//! - `webrtc-audio-processing` 0.5 linked against Debian's `libwebrtc-audio-processing` 0.3 (the
//!   old WebRTC AEC, "AEC2"), configured as a meeting app would: echo cancellation at its most
//!   aggressive suppression, delay-agnostic, extended filter, high-pass filter on, noise
//!   suppression and gain control off.
//!
//! The scenario is the one of `crates/media/tests/echo_cancellation.rs`: the far end's speech-like
//! audio comes back through a room into the microphone, with a near-end tone on top at times.
//! 12 s: far end alone (0–6 s), near end alone (6–8 s), both (8–10 s), far end alone (10–12 s).
//! It runs twice: with the room's 40 ms echo delay, and with 150 ms (every tap 110 ms later).
//!
//! `--webrtc-variants` adds rows for other `webrtc-audio-processing` settings: every suppression
//! level the 0.5 wrapper offers (to show how its enum maps onto the 0.3 library, see
//! [`WEBRTC_BEST_LEVEL`]), the extended filter off, delay-agnostic off, and the true echo delay
//! reported.

use std::error::Error;
use std::ops::Range;
use std::time::{Duration, Instant};

use confer_media::synthetic::{SyntheticMic, tone_hz, tone_level};
use confer_media::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig};
use webrtc::EchoCancellationSuppressionLevel as Level;
use webrtc_audio_processing as webrtc;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const SAMPLE_RATE: usize = 48_000;
const FRAMES_PER_SECOND: usize = 100;
const SECONDS: usize = 12;

/// The 0.5 wrapper's suppression level that reaches Debian's 0.3 library as `kHighSuppression`.
///
/// The wrapper (`webrtc-audio-processing-sys` 0.5, `src/wrapper.cpp`) `static_cast`s its
/// five-value enum (Lowest, Lower, Low, Moderate, High = 0..4), written for the crate's patched
/// bundled copy of the library, straight into `webrtc::EchoCancellation::SuppressionLevel`.
/// Upstream 0.3, which Debian ships, has only three levels: kLowSuppression = 0,
/// kModerateSuppression = 1, kHighSuppression = 2. So `Low` (2) is the library's highest level;
/// `Moderate` (3) and `High` (4) are refused with kBadParameterError (unchecked by the wrapper),
/// which leaves the library's default, kModerateSuppression.
const WEBRTC_BEST_LEVEL: Level = Level::Low;

const AEC_ONLY: ProcessingConfig = ProcessingConfig {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
    music_mode: false,
};

/// Speech-like far-end audio: noise shaped by a syllable envelope (about 4 per second), with
/// pauses, deterministic. (Copied from the echo-cancellation test.)
struct FarEnd {
    state: u64,
    n: usize,
    low: f64,
}

impl FarEnd {
    fn sample(&mut self) -> f64 {
        self.state =
            self.state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let white = ((self.state >> 33) as f64 / f64::from(1u32 << 31)) * 2.0 - 1.0;
        // A gentle low-pass makes it voice-coloured rather than hiss.
        self.low = 0.6 * self.low + 0.4 * white;
        let t = self.n as f64 / 48_000.0;
        self.n += 1;
        let syllable = (std::f64::consts::PI * 4.0 * t).sin().abs();
        let phrase = if (t % 2.5) < 2.1 { 1.0 } else { 0.1 };
        self.low * syllable * phrase * 12_000.0
    }
}

/// The room: a direct path then three reflections, about 12 dB down overall. The test's taps
/// start at 40 ms; `extra_delay` samples are added to every tap.
struct Room {
    taps: Vec<(usize, f64)>,
    history: Vec<f64>,
    at: usize,
}

impl Room {
    const TAPS: [(usize, f64); 4] = [(1_920, 0.22), (2_064, 0.09), (2_256, -0.05), (2_640, 0.03)];

    fn new(extra_delay: usize) -> Self {
        let taps: Vec<(usize, f64)> =
            Self::TAPS.iter().map(|&(delay, gain)| (delay + extra_delay, gain)).collect();
        let longest = taps.iter().map(|&(delay, _)| delay).max().unwrap_or(0);
        Self { taps, history: vec![0.0; (longest + 1).next_power_of_two()], at: 0 }
    }

    fn echo(&mut self, played: f64) -> f64 {
        let len = self.history.len();
        self.history[self.at] = played;
        let echo =
            self.taps.iter().map(|&(delay, gain)| gain * self.history[(self.at + len - delay) % len]).sum();
        self.at = (self.at + 1) % len;
        echo
    }
}

/// One echo canceller under test: takes what the speakers play and what the microphone hears,
/// one 10 ms frame of each, and cleans the microphone frame in place.
trait Canceller {
    fn process(&mut self, played: &[i16], captured: &mut [i16]) -> Result<()>;
    /// The echo delay the canceller reports having found, ms.
    fn delay_ms(&self) -> Option<i32>;
}

/// Candidate (a): sonora's AEC3 as Confer wraps it.
struct Sonora(AudioProcessor);

impl Canceller for Sonora {
    fn process(&mut self, played: &[i16], captured: &mut [i16]) -> Result<()> {
        self.0.process_render(played)?;
        self.0.process_capture(captured)?;
        Ok(())
    }

    fn delay_ms(&self) -> Option<i32> {
        self.0.stats().echo_delay_ms
    }
}

/// Candidate (b): Debian's WebRTC APM 0.3 through `webrtc-audio-processing` 0.5. Its API takes
/// f32 frames in [-1, 1]; the conversion to and from i16 is part of the measured time.
struct WebRtc {
    processor: webrtc::Processor,
    render: Vec<f32>,
    capture: Vec<f32>,
}

/// The `webrtc-audio-processing` echo-cancellation settings under test.
#[derive(Debug, Clone, Copy)]
struct WebRtcOptions {
    level: Level,
    extended_filter: bool,
    delay_agnostic: bool,
    /// The echo delay reported to the canceller (turns delay-agnostic mode off).
    stream_delay_ms: Option<i32>,
}

impl WebRtcOptions {
    /// What a meeting app would use: the highest suppression, extended filter, delay-agnostic.
    const MEETING: Self =
        Self { level: WEBRTC_BEST_LEVEL, extended_filter: true, delay_agnostic: true, stream_delay_ms: None };
}

impl WebRtc {
    fn new(options: WebRtcOptions) -> Result<Self> {
        let init = webrtc::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            enable_experimental_agc: false,
            enable_intelligibility_enhancer: false,
        };
        let mut processor = webrtc::Processor::new(&init)?;
        processor.set_config(webrtc::Config {
            echo_cancellation: Some(webrtc::EchoCancellation {
                suppression_level: options.level,
                enable_extended_filter: options.extended_filter,
                enable_delay_agnostic: options.delay_agnostic,
                stream_delay_ms: options.stream_delay_ms,
            }),
            gain_control: None,
            noise_suppression: None,
            voice_detection: None,
            enable_transient_suppressor: false,
            enable_high_pass_filter: true,
        });
        let frame = webrtc::NUM_SAMPLES_PER_FRAME as usize;
        if frame != PROCESSING_FRAME {
            return Err(format!(
                "webrtc-audio-processing frames are {frame} samples, not {PROCESSING_FRAME}"
            )
            .into());
        }
        Ok(Self { processor, render: vec![0.0; frame], capture: vec![0.0; frame] })
    }
}

impl Canceller for WebRtc {
    fn process(&mut self, played: &[i16], captured: &mut [i16]) -> Result<()> {
        for (f, &s) in self.render.iter_mut().zip(played) {
            *f = f32::from(s) / 32_768.0;
        }
        self.processor.process_render_frame(&mut self.render)?;
        for (f, &s) in self.capture.iter_mut().zip(captured.iter()) {
            *f = f32::from(s) / 32_768.0;
        }
        self.processor.process_capture_frame(&mut self.capture)?;
        for (s, &f) in captured.iter_mut().zip(&self.capture) {
            *s = (f * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
        }
        Ok(())
    }

    fn delay_ms(&self) -> Option<i32> {
        self.processor.get_stats().delay_median_ms
    }
}

fn power(samples: &[i16]) -> f64 {
    samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

/// Per 10 ms frame: echo-only capture, processed output, near-end tone in and out.
#[derive(Default)]
struct Trace {
    echo_in: Vec<f64>,
    out: Vec<f64>,
    near_in: Vec<f64>,
    near_out: Vec<f64>,
}

impl Trace {
    /// ERLE over a range of 10 ms frames, as the test computes it.
    fn erle_db(&self, frames: Range<usize>) -> f64 {
        let echo: f64 = self.echo_in[frames.clone()].iter().sum();
        let out: f64 = self.out[frames].iter().sum();
        10.0 * (echo / out.max(1e-9)).log10()
    }

    /// How much of the near-end tone comes through over a range of frames (output / input).
    fn near_kept(&self, frames: Range<usize>) -> f64 {
        mean(&self.near_out[frames.clone()]) / mean(&self.near_in[frames])
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

struct Row {
    erle_converged: f64,
    erle_after_double_talk: f64,
    near_alone_kept: f64,
    double_talk_kept: f64,
    micros_per_frame: f64,
    delay_ms: Option<i32>,
}

/// Runs the 12 s scenario through `canceller` with the room's taps `extra_delay` samples later.
fn run(canceller: &mut dyn Canceller, extra_delay: usize) -> Result<Row> {
    let mut far = FarEnd { state: 7, n: 0, low: 0.0 };
    let mut room = Room::new(extra_delay);
    let mut near = SyntheticMic::new(5);
    let mut noise = FarEnd { state: 99, n: 0, low: 0.0 };
    let mut trace = Trace::default();
    let mut busy = Duration::ZERO;
    let frames = SECONDS * FRAMES_PER_SECOND;
    for frame_index in 0..frames {
        let second = frame_index / FRAMES_PER_SECOND;
        let far_on = !(6..8).contains(&second);
        let near_on = (6..10).contains(&second);
        let played: Vec<i16> =
            (0..PROCESSING_FRAME).map(|_| if far_on { far.sample() as i16 } else { 0 }).collect();
        let near_frame = near.next_samples(PROCESSING_FRAME);
        let mut echo_only = Vec::with_capacity(PROCESSING_FRAME);
        let mut captured = Vec::with_capacity(PROCESSING_FRAME);
        for (i, &p) in played.iter().enumerate() {
            // A microphone's own noise floor, about 60 dB below full scale.
            let hiss = noise.sample() / 12_000.0 * 30.0;
            let echo = room.echo(f64::from(p)) + hiss;
            echo_only.push(echo.clamp(-32_768.0, 32_767.0) as i16);
            let talker = if near_on { f64::from(near_frame[i]) / 2.0 } else { 0.0 };
            captured.push((echo + talker).clamp(-32_768.0, 32_767.0) as i16);
        }
        let near_alone: Vec<i16> = near_frame.iter().map(|&s| if near_on { s / 2 } else { 0 }).collect();

        let start = Instant::now();
        canceller.process(&played, &mut captured)?;
        busy += start.elapsed();

        trace.echo_in.push(power(&echo_only));
        trace.out.push(power(&captured));
        trace.near_in.push(tone_level(&near_alone, tone_hz(5)));
        trace.near_out.push(tone_level(&captured, tone_hz(5)));
    }
    Ok(Row {
        erle_converged: trace.erle_db(300..600),
        // The output may lag its input by a frame: start 20 ms after the near end falls silent.
        erle_after_double_talk: trace.erle_db(1_002..1_200),
        near_alone_kept: trace.near_kept(600..800),
        double_talk_kept: trace.near_kept(800..1_000),
        micros_per_frame: busy.as_secs_f64() * 1e6 / frames as f64,
        delay_ms: canceller.delay_ms(),
    })
}

fn print_header() {
    println!(
        "{:<46} {:>6} {:>11} {:>15} {:>10} {:>10} {:>9} {:>10}",
        "candidate",
        "delay",
        "ERLE 3-6 s",
        "ERLE 10.02-12 s",
        "near alone",
        "near DT",
        "us/frame",
        "est. delay"
    );
}

fn print_row(name: &str, delay_ms: usize, row: &Row) {
    let estimate = row.delay_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
    println!(
        "{:<46} {:>3} ms {:>8.1} dB {:>12.1} dB {:>10.2} {:>10.2} {:>9.1} {:>10}",
        name,
        delay_ms,
        row.erle_converged,
        row.erle_after_double_talk,
        row.near_alone_kept,
        row.double_talk_kept,
        row.micros_per_frame,
        estimate
    );
}

fn main() -> Result<()> {
    let variants_wanted = std::env::args().skip(1).any(|arg| arg == "--webrtc-variants");
    let variants = [(40, 0), (150, 110 * SAMPLE_RATE / 1_000)];
    print_header();
    for (delay_ms, extra_delay) in variants {
        let mut sonora = Sonora(AudioProcessor::new(AEC_ONLY));
        print_row(
            "sonora 0.2 AEC3 (confer_media::AudioProcessor)",
            delay_ms,
            &run(&mut sonora, extra_delay)?,
        );
        let mut webrtc = WebRtc::new(WebRtcOptions::MEETING)?;
        print_row("webrtc-audio-processing 0.5 / libwebrtc 0.3", delay_ms, &run(&mut webrtc, extra_delay)?);
    }
    if variants_wanted {
        println!();
        println!("webrtc-audio-processing 0.5 / libwebrtc 0.3, other settings (level = the wrapper's enum):");
        print_header();
        for (delay_ms, extra_delay) in variants {
            let meeting = WebRtcOptions::MEETING;
            let mut options: Vec<WebRtcOptions> = [Level::Lowest, Level::Lower, Level::Moderate, Level::High]
                .into_iter()
                .map(|level| WebRtcOptions { level, ..meeting })
                .collect();
            options.push(WebRtcOptions { extended_filter: false, ..meeting });
            options.push(WebRtcOptions { delay_agnostic: false, ..meeting });
            options.push(WebRtcOptions { stream_delay_ms: Some(delay_ms as i32), ..meeting });
            for options in options {
                let name = format!(
                    "{:?}{}{}{}",
                    options.level,
                    if options.extended_filter { "" } else { ", no ext. filter" },
                    if options.delay_agnostic { "" } else { ", delay-agnostic off (reported 0 ms)" },
                    options.stream_delay_ms.map_or_else(String::new, |ms| format!(", reported {ms} ms")),
                );
                print_row(&name, delay_ms, &run(&mut WebRtc::new(options)?, extra_delay)?);
            }
        }
    }
    Ok(())
}
