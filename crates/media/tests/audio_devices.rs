//! The real cpal path, on a machine with no sound card.
//!
//! First with no audio system at all (an empty ALSA configuration, no PulseAudio): the lists hold
//! only the synthetic devices, opening the default fails with a reason, the synthetic devices
//! work. Then against a real PulseAudio server this test starts with a null sink (a paced device
//! whose monitor source hands back what was played): a tone played to the sink comes back
//! through its monitor; a stereo stream keeps its sides apart in music mode; devices added and
//! removed are reported; a speaker on the system default follows the default to another sink; a
//! microphone whose device disappears falls back to the default.
//!
//! `-- --echo-loop` measures the echo canceller on the sound system's own loop instead (64 s,
//! per-second ERLE; see docs/BENCHMARKS.md).
//!
//! No test harness (`harness = false`): the audio system is chosen through environment
//! variables, which are set once here before any thread starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confer_media::synthetic::{SpeechLike, SyntheticMic, tone_hz, tone_level};
use confer_media::{
    AudioError, AudioEvent, AudioProcessor, Channels, DeviceChoice, DeviceWatcher, Microphone,
    ProcessingConfig, SYNTHETIC_DEVICE, Speaker, input_devices, output_devices,
};

const OPEN: Duration = Duration::from_secs(5);

struct PulseServer {
    child: Child,
    runtime: PathBuf,
}

impl PulseServer {
    fn start(runtime: &Path) -> Self {
        let child = Command::new("pulseaudio")
            .args([
                "--daemonize=no",
                "-n",
                "--use-pid-file=false",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--disable-shm=true",
                "--log-level=error",
                "--load=module-null-sink sink_name=confer_sink",
                "--load=module-native-protocol-unix auth-anonymous=1",
            ])
            .env("XDG_RUNTIME_DIR", runtime)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulseaudio is not installed (scripts/test installs it: apt-get install pulseaudio)");
        let server = Self { child, runtime: runtime.to_owned() };
        let socket = runtime.join("pulse/native");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "pulseaudio did not open {}", socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn pactl(&self, args: &[&str]) -> String {
        let out =
            Command::new("pactl").args(args).env("XDG_RUNTIME_DIR", &self.runtime).output().expect("pactl");
        assert!(out.status.success(), "pactl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median level of `hz` over 20 ms windows (two consecutive 10 ms frames each, so a tone on
/// the 50 Hz grid holds whole cycles), over the windows loud enough to carry sound: the sound
/// system takes a moment to start a stream, and a gap must not count as a change of pitch.
fn median_level(frames: &[Vec<i16>], hz: f64) -> (f64, usize) {
    let mut levels: Vec<f64> = frames
        .chunks_exact(2)
        .map(<[Vec<i16>]>::concat)
        .filter(|window| window.iter().any(|s| s.unsigned_abs() > 2_000))
        .map(|window| tone_level(&window, hz))
        .collect();
    levels.sort_by(f64::total_cmp);
    (levels.get(levels.len() / 2).copied().unwrap_or(0.0), levels.len())
}

/// Plays `id`'s tone on `speaker` for `seconds`, paced, while recording `mic`; returns the
/// frames the mic heard after the first half second.
fn record(speaker: &Speaker, mic: &Microphone, id: u32, seconds: f64) -> Vec<Vec<i16>> {
    let mut tone = SyntheticMic::tone_only(id);
    let mut heard = Vec::new();
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed().as_secs_f64() < seconds {
        // Keep about 60 ms queued ahead of the device.
        while f64::from(sent) * 0.01 < start.elapsed().as_secs_f64() + 0.06 {
            speaker.play(&tone.next_samples(480));
            sent += 1;
        }
        if let Some(frame) = mic.recv_timeout(Duration::from_millis(20))
            && start.elapsed().as_secs_f64() > 0.5
        {
            heard.push(frame.samples);
        }
        speaker.played_before(Instant::now());
    }
    heard
}

fn wait_event(
    what: &str,
    mut next: impl FnMut() -> Option<AudioEvent>,
    want: impl Fn(&AudioEvent) -> bool,
) -> AudioEvent {
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match next() {
            Some(event) if want(&event) => return event,
            Some(event) => seen.push(event),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("no {what} within 8 s; saw {seen:?}");
}

fn no_audio_system() {
    let inputs = input_devices().unwrap();
    let outputs = output_devices().unwrap();
    assert_eq!(inputs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [SYNTHETIC_DEVICE], "{inputs:?}");
    assert_eq!(outputs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [SYNTHETIC_DEVICE], "{outputs:?}");
    let err = Microphone::open_checked(DeviceChoice::SystemDefault, OPEN).expect_err("no microphone to open");
    assert!(matches!(err, AudioError::Open { .. } | AudioError::NoDefaultDevice(_)), "{err:?}");
    assert!(!err.to_string().is_empty());
    let err = Speaker::open_checked(DeviceChoice::SystemDefault, OPEN).expect_err("no speaker to open");
    println!("  opening the default speaker with no audio system: {err}");
    // The synthetic microphone delivers 10 ms frames at a device's pace, markers included.
    let mic = Microphone::open_checked(DeviceChoice::Synthetic(3), OPEN).unwrap();
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_millis(500) {
        if let Some(frame) = mic.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(frame.samples.len(), 480);
            frames += 1;
        }
    }
    assert!((40..=60).contains(&frames), "{frames} frames in 0.5 s");
    let speaker = Speaker::open_checked(DeviceChoice::Synthetic(0), OPEN).unwrap();
    assert_eq!(speaker.play(&[0; 960]), 0);
    std::thread::sleep(Duration::from_millis(100));
    let played = speaker.played_before(Instant::now());
    assert!(
        (8..=12).contains(&played.len()),
        "the synthetic speaker plays at its pace: {} frames",
        played.len()
    );
}

fn tone_through_a_null_sink(_pulse: &PulseServer) {
    let outputs = output_devices().unwrap();
    let inputs = input_devices().unwrap();
    println!("  outputs: {outputs:?}\n  inputs: {inputs:?}");
    assert!(outputs.iter().any(|d| d.id.ends_with("confer_sink") && d.is_default), "{outputs:?}");
    let monitor =
        inputs.iter().find(|d| d.id.ends_with("confer_sink.monitor")).expect("the sink's monitor").id.clone();

    let speaker = Speaker::open_checked(DeviceChoice::SystemDefault, OPEN).unwrap();
    let mic = Microphone::open_checked(DeviceChoice::Id(monitor), OPEN).unwrap();
    let heard = record(&speaker, &mic, 7, 2.5);
    let (own, windows) = median_level(&heard, tone_hz(7));
    let (other, _) = median_level(&heard, tone_hz(8));
    assert!(windows >= 50, "only {windows} windows of sound in 2 s");
    println!(
        "  tone 7 came back at {own:.0} (sent 10000), tone 8 at {other:.0}; mic dropped {}, speaker underruns {}",
        mic.dropped(),
        speaker.underruns()
    );
    assert!(own > 5_000.0, "the tone came back at only {own:.0}");
    assert!(other < own / 20.0, "another tone is there too: {other:.0}");
}

fn power(frame: &[i16]) -> f64 {
    frame.iter().map(|&s| f64::from(s).powi(2)).sum()
}

/// A measurement, not a test (run with `-- --echo-loop`): the echo canceller on a real sound
/// system's loop, per second, for `docs/BENCHMARKS.md`.
fn measure_echo_through_the_sound_system(pulse: &PulseServer, total_seconds: u64) {
    // The far end's speech goes to the default sink; the microphone is that sink's monitor, so
    // it hears the echo with the sound system's real delay, and the speaker's report of what it
    // played is the canceller's render input, as in a call.
    let monitor =
        input_devices().unwrap().into_iter().find(|d| d.id.ends_with("confer_sink.monitor")).unwrap();
    let speaker = Speaker::open_checked(DeviceChoice::SystemDefault, OPEN).unwrap();
    let mic = Microphone::open_checked(DeviceChoice::Id(monitor.id), OPEN).unwrap();
    let mut processor = AudioProcessor::new(ProcessingConfig {
        echo_cancellation: true,
        noise_suppression: false,
        auto_gain: false,
        music_mode: false,
    });
    let mut speech = SpeechLike::new(11);
    // Echo and residual power per second, from 4 s (after convergence) on.
    let mut seconds = vec![(0.0f64, 0.0f64); total_seconds.saturating_sub(4) as usize];
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < Duration::from_secs(total_seconds) {
        while f64::from(sent) * 0.01 < start.elapsed().as_secs_f64() + 0.06 {
            speaker.play(&speech.next_samples(480));
            sent += 1;
        }
        if let Some(captured) = mic.recv_timeout(Duration::from_millis(20)) {
            // Everything heard before this frame began, then the frame: one timeline.
            for played in speaker.played_before(captured.at) {
                processor.process_render(&played).unwrap();
            }
            let mut frame = captured.samples;
            let before = power(&frame);
            processor.process_capture(&mut frame).unwrap();
            if let Some(second) =
                (start.elapsed().as_secs() as usize).checked_sub(4).and_then(|s| seconds.get_mut(s))
            {
                second.0 += before;
                second.1 += power(&frame);
            }
        }
    }
    let mut erle: Vec<f64> = seconds.iter().map(|(e, r)| 10.0 * (e / r.max(1.0)).log10()).collect();
    pulse.pactl(&["set-sink-volume", "confer_sink", "100%"]);
    println!(
        "  ERLE through PulseAudio per second from 4 s: {:?} dB; underruns {}, mic drops {}",
        erle.iter().map(|e| e.round()).collect::<Vec<_>>(),
        speaker.underruns(),
        mic.dropped()
    );
    erle.sort_by(f64::total_cmp);
    if let (Some(min), Some(median)) = (erle.first(), erle.get(erle.len() / 2)) {
        let above_20 = erle.iter().filter(|e| **e >= 20.0).count();
        println!(
            "  min {min:.1} dB, median {median:.1} dB, {above_20} of {} seconds at or above 20 dB",
            erle.len()
        );
    }
}

fn music_mode_captures_left_and_right(pulse: &PulseServer) {
    // A stereo stream with a different tone on each side, played into the sink by pacat.
    let (mut left, mut right) = (SyntheticMic::tone_only(2), SyntheticMic::tone_only(9));
    let (l, r) = (left.next_samples(48_000 * 4), right.next_samples(48_000 * 4));
    let raw: Vec<u8> =
        l.iter().zip(&r).flat_map(|(a, b)| [a.to_le_bytes(), b.to_le_bytes()].concat()).collect();
    let monitor =
        input_devices().unwrap().into_iter().find(|d| d.id.ends_with("confer_sink.monitor")).unwrap();
    let mic = Microphone::open_checked_with(DeviceChoice::Id(monitor.id), Channels::Stereo, OPEN).unwrap();
    let mut pacat = Command::new("pacat")
        .args(["--playback", "--format=s16le", "--rate=48000", "--channels=2", "--device=confer_sink"])
        .env("XDG_RUNTIME_DIR", &pulse.runtime)
        .stdin(Stdio::piped())
        .spawn()
        .expect("pacat");
    std::io::Write::write_all(pacat.stdin.as_mut().unwrap(), &raw).unwrap();
    drop(pacat.stdin.take());
    let (mut heard_left, mut heard_right) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(frame) = mic.recv_timeout(Duration::from_millis(50)) {
            let frame = frame.samples;
            assert_eq!(frame.len(), 960, "stereo frames are 960 interleaved samples");
            heard_left.push(frame.iter().step_by(2).copied().collect::<Vec<i16>>());
            heard_right.push(frame.iter().skip(1).step_by(2).copied().collect::<Vec<i16>>());
        }
    }
    let _ = pacat.wait();
    let ((ll, windows), (lr, _)) =
        (median_level(&heard_left, tone_hz(2)), median_level(&heard_left, tone_hz(9)));
    let ((rr, _), (rl, _)) = (median_level(&heard_right, tone_hz(9)), median_level(&heard_right, tone_hz(2)));
    assert!(windows >= 50, "only {windows} windows of the stereo stream arrived");
    println!("  left: own {ll:.0}, other {lr:.0}; right: own {rr:.0}, other {rl:.0}");
    assert!(ll > 5_000.0 && rr > 5_000.0, "a side lost its tone");
    assert!(lr < ll / 20.0 && rl < rr / 20.0, "the sides leak into each other");
}

fn devices_come_and_go(pulse: &PulseServer) {
    let watcher = DeviceWatcher::start();
    let module = pulse.pactl(&["load-module", "module-null-sink", "sink_name=second_sink"]);
    // A sink brings its monitor source: both are reported, in either order.
    let (mut sink, mut monitor) = (false, false);
    while !(sink && monitor) {
        let added = wait_event(
            "added devices",
            || watcher.recv_timeout(Duration::from_millis(100)),
            |e| matches!(e, AudioEvent::Added { device, .. } if device.id.contains("second_sink")),
        );
        println!("  {added:?}");
        if let AudioEvent::Added { direction, device } = added {
            sink |= direction == "output" && device.id.ends_with("second_sink");
            monitor |= direction == "input" && device.id.ends_with("second_sink.monitor");
        }
    }
    pulse.pactl(&["unload-module", &module]);
    wait_event(
        "removed sink",
        || watcher.recv_timeout(Duration::from_millis(100)),
        |e| matches!(e, AudioEvent::Removed { direction: "output", device } if device.id.ends_with("second_sink")),
    );
}

fn the_speaker_follows_the_default(pulse: &PulseServer) {
    let module = pulse.pactl(&["load-module", "module-null-sink", "sink_name=other_sink"]);
    let speaker = Speaker::open_checked(DeviceChoice::SystemDefault, OPEN).unwrap();
    let other_monitor =
        input_devices().unwrap().into_iter().find(|d| d.id.ends_with("other_sink.monitor")).unwrap();
    let mic = Microphone::open_checked(DeviceChoice::Id(other_monitor.id), OPEN).unwrap();
    // Before: the tone goes to confer_sink, other_sink's monitor hears nothing.
    let before = record(&speaker, &mic, 5, 1.0).concat();
    assert!(before.len() >= 24_000, "the other sink's monitor delivered only {} samples", before.len());
    assert!(tone_level(&before, tone_hz(5)) < 100.0, "the other sink heard the tone before the switch");
    pulse.pactl(&["set-default-sink", "other_sink"]);
    let moved = wait_event(
        "default change",
        || speaker.try_event(),
        |e| matches!(e, AudioEvent::DefaultChanged { .. }),
    );
    println!("  {moved:?}");
    let (level, windows) = median_level(&record(&speaker, &mic, 5, 2.0), tone_hz(5));
    assert!(windows >= 25, "only {windows} windows of sound reached the new default");
    assert!(level > 5_000.0, "after the switch the tone reached the new default at only {level:.0}");
    pulse.pactl(&["set-default-sink", "confer_sink"]);
    drop(mic);
    pulse.pactl(&["unload-module", &module]);
}

fn a_lost_microphone_falls_back_to_the_default(pulse: &PulseServer) {
    let module = pulse.pactl(&["load-module", "module-null-sink", "sink_name=usb_headset"]);
    let headset =
        input_devices().unwrap().into_iter().find(|d| d.id.ends_with("usb_headset.monitor")).unwrap();
    let mic = Microphone::open_checked(DeviceChoice::Id(headset.id), OPEN).unwrap();
    assert!(mic.recv_timeout(Duration::from_secs(2)).is_some(), "the headset delivers audio");
    pulse.pactl(&["unload-module", &module]);
    let fell_back =
        wait_event("fallback", || mic.try_event(), |e| matches!(e, AudioEvent::FellBackToDefault { .. }));
    println!("  {fell_back:?}");
    // Audio keeps coming, now from the default.
    while mic.recv_timeout(Duration::from_millis(1)).is_some() {}
    assert!(mic.recv_timeout(Duration::from_secs(2)).is_some(), "audio resumed from the default");
}

fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let empty_alsa = scratch.path().join("empty-alsa.conf");
    std::fs::write(&empty_alsa, "# no devices\n").unwrap();
    let runtime = scratch.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: single-threaded at this point: main() of a harness-less test, no thread spawned yet.
    unsafe {
        std::env::set_var("ALSA_CONFIG_PATH", &empty_alsa);
        std::env::set_var("XDG_RUNTIME_DIR", &runtime);
        std::env::remove_var("PULSE_SERVER");
        std::env::remove_var("PULSE_RUNTIME_PATH");
    }

    let mut passed = 0;
    let mut run = |name: &str, test: &dyn Fn()| {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
        passed += 1;
    };
    run("no_audio_system_lists_only_synthetic_devices_and_fails_clearly", &no_audio_system);
    let pulse = PulseServer::start(&runtime);
    run("a_tone_played_to_a_null_sink_comes_back_through_its_monitor", &|| tone_through_a_null_sink(&pulse));
    if std::env::args().any(|a| a == "--echo-loop") {
        measure_echo_through_the_sound_system(&pulse, 64);
        return;
    }
    run("music_mode_captures_left_and_right", &|| music_mode_captures_left_and_right(&pulse));
    run("devices_added_and_removed_are_reported", &|| devices_come_and_go(&pulse));
    run("a_speaker_on_the_system_default_follows_it", &|| the_speaker_follows_the_default(&pulse));
    run("a_microphone_whose_device_disappears_falls_back_to_the_default", &|| {
        a_lost_microphone_falls_back_to_the_default(&pulse);
    });
    drop(pulse);
    // The line scripts/test counts; a failure above panics, and cargo reports the binary failed.
    println!("\ntest result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
