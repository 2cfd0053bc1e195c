use std::fs::File;
use std::path::Path;
use std::time::Duration;

use matroska_demuxer::{Frame, MatroskaFile, TrackType};

use super::*;
use crate::synthetic::{SyntheticCamera, read_stamp};
use crate::{H264Config, H264Decoder, H264Encoder, OpusConfig, OpusEncoder};

/// A participant's encoders: a synthetic camera (its pattern id readable in every picture) and
/// an Opus encoder of a tone.
struct Source {
    camera: SyntheticCamera,
    encoder: H264Encoder,
    opus: OpusEncoder,
}

impl Source {
    fn new(id: u32, width: usize, height: usize) -> Self {
        Self {
            camera: SyntheticCamera::new(id, width, height).unwrap(),
            encoder: H264Encoder::new(H264Config::camera(10.0, 500_000)).unwrap(),
            opus: OpusEncoder::new(OpusConfig::default()).unwrap(),
        }
    }

    fn picture(&mut self, ms: u64) -> Vec<u8> {
        let (frame, _) = self.camera.next_frame(ms);
        self.encoder.encode(&frame).unwrap().unwrap().data
    }

    fn packet(&mut self) -> Vec<u8> {
        let tone: Vec<i16> =
            (0..crate::FRAME_SAMPLES).map(|i| ((i as f32 * 0.05).sin() * 8_000.0) as i16).collect();
        self.opus.encode(&tone).unwrap()
    }
}

fn read_all(path: &Path) -> (MatroskaFile<File>, Vec<Frame>) {
    let mut file = MatroskaFile::open(File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    let mut frame = Frame::default();
    while file.next_frame(&mut frame).unwrap() {
        frames.push(frame.clone());
    }
    (file, frames)
}

/// A length-prefixed access unit back to Annex B, for the decoder.
fn annex_b(avcc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = avcc;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    out
}

/// Alice for 3 s; Bob joins at 1 s with a larger picture. 10 pictures and 50 packets a second.
fn two_people(path: &Path) -> RecordingSummary {
    let mut recording = Recording::create(path, "Weekly").unwrap();
    let mut alice = Source::new(7, 320, 180);
    let mut bob = Source::new(9, 640, 360);
    let alice_video = recording.add_track(TrackKind::Video, "Alice: camera", 1).unwrap();
    let alice_audio = recording.add_track(TrackKind::Audio, "Alice: microphone", 1).unwrap();
    let mut bob_tracks = None;
    for ms in (0..3_000u64).step_by(20) {
        if ms == 1_000 {
            let video = recording.add_track(TrackKind::Video, "Bob: camera", 1).unwrap();
            let audio = recording.add_track(TrackKind::Audio, "Bob: microphone", 1).unwrap();
            bob_tracks = Some((video, audio));
        }
        let at = Duration::from_millis(ms);
        if ms % 100 == 0 {
            assert!(recording.video(alice_video, at, &alice.picture(ms)).unwrap());
        }
        recording.audio(alice_audio, at, &alice.packet()).unwrap();
        if let Some((video, audio)) = bob_tracks {
            // Bob's packets arrive 60 ms behind Alice's: still written in order.
            let late = at.saturating_sub(Duration::from_millis(60));
            if ms % 100 == 0 {
                recording.video(video, late, &bob.picture(ms)).unwrap();
            }
            recording.audio(audio, late, &bob.packet()).unwrap();
        }
    }
    recording.finish().unwrap()
}

#[test]
fn a_two_person_recording_reads_back_with_its_tracks_sizes_duration_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.mkv");
    let summary = two_people(&path);
    assert_eq!(summary.tracks, 4);
    assert_eq!(summary.skipped, 0);
    assert!((2_990..=3_030).contains(&summary.duration.as_millis()), "{summary:?}");

    let (file, frames) = read_all(&path);
    assert_eq!(file.info().title(), Some("Weekly"));
    let duration = file.info().duration().unwrap();
    assert!((2_990.0..=3_030.0).contains(&duration), "duration {duration} ms");
    let tracks = file.tracks();
    let names: Vec<_> = tracks.iter().map(|t| (t.name().unwrap(), t.codec_id())).collect();
    assert_eq!(
        names,
        [
            ("Alice: camera", "V_MPEG4/ISO/AVC"),
            ("Alice: microphone", "A_OPUS"),
            ("Bob: camera", "V_MPEG4/ISO/AVC"),
            ("Bob: microphone", "A_OPUS")
        ]
    );
    let size = |n: usize| {
        let video = tracks[n].video().unwrap();
        (video.pixel_width().get(), video.pixel_height().get())
    };
    assert_eq!((size(0), size(2)), ((320, 180), (640, 360)));
    assert_eq!(tracks[1].track_type(), TrackType::Audio);
    assert_eq!(tracks[1].audio().unwrap().sampling_frequency(), 48_000.0);
    assert!(tracks[1].codec_private().unwrap().starts_with(b"OpusHead"));

    let count = |track: u64| frames.iter().filter(|f| f.track == track).count();
    assert_eq!([count(1), count(2), count(3), count(4)], [30, 150, 20, 100]);
    // In the file's order, time never goes back; Bob's first picture is at 940 ms.
    assert!(frames.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let bob_first = frames.iter().find(|f| f.track == 3).unwrap();
    assert_eq!((bob_first.timestamp, bob_first.is_keyframe), (940, Some(true)));

    // Every picture decodes, and is the participant's own.
    for (track, pattern) in [(1, 7), (3, 9)] {
        let mut decoder = H264Decoder::new().unwrap();
        let mut decoded = 0;
        for frame in frames.iter().filter(|f| f.track == track) {
            let picture = decoder.decode(&annex_b(&frame.data)).unwrap().unwrap();
            assert_eq!(read_stamp(&picture).map(|s| s.id), Some(pattern));
            decoded += 1;
        }
        assert!(decoded >= 20);
    }
}

#[test]
fn pictures_before_a_tracks_first_keyframe_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.mkv");
    let mut source = Source::new(3, 320, 180);
    let first = source.picture(0);
    let later: Vec<Vec<u8>> = (1..4).map(|i| source.picture(i * 100)).collect();
    let mut recording = Recording::create(&path, "t").unwrap();
    let video = recording.add_track(TrackKind::Video, "Carol: camera", 1).unwrap();
    // Joined mid-stream: P pictures first, then a keyframe.
    for (i, picture) in later.iter().enumerate() {
        assert!(!recording.video(video, Duration::from_millis(i as u64 * 100), picture).unwrap());
    }
    assert!(recording.video(video, Duration::from_millis(300), &first).unwrap());
    let summary = recording.finish().unwrap();
    assert_eq!((summary.blocks, summary.skipped), (1, 3));
    let (file, frames) = read_all(&path);
    assert_eq!(file.tracks().len(), 1);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].is_keyframe, Some(true));
}

#[test]
fn bad_input_is_refused_by_name_and_what_was_written_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mkv");
    let mut source = Source::new(5, 320, 180);
    let mut recording = Recording::create(&path, "t").unwrap();
    let video = recording.add_track(TrackKind::Video, "v", 1).unwrap();
    let audio = recording.add_track(TrackKind::Audio, "a", 2).unwrap();
    recording.video(video, Duration::ZERO, &source.picture(0)).unwrap();
    let errors = [
        recording.video(video, Duration::from_millis(100), b"no start code here").unwrap_err(),
        recording.video(video, Duration::from_millis(100), &[0, 0, 1]).unwrap_err(),
        recording.audio(audio, Duration::from_millis(100), &[]).unwrap_err(),
        recording.audio(audio, Duration::from_millis(100), &[0; 4_000]).unwrap_err(),
        recording.audio(video, Duration::from_millis(100), &[1, 2, 3]).unwrap_err(),
        recording.video(audio, Duration::from_millis(100), &source.picture(100)).unwrap_err(),
        recording.audio(TrackId(9), Duration::from_millis(100), &[1, 2, 3]).unwrap_err(),
    ];
    let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(said[0], "not written to track 1: no H.264 NAL unit in it");
    assert_eq!(said[4], "not written to track 1: audio for a video track");
    assert_eq!(said[6], "no track 9 in this recording");
    // A keyframe whose SPS is garbage.
    let mut other = Recording::create(&dir.path().join("other.mkv"), "t").unwrap();
    let track = other.add_track(TrackKind::Video, "v", 1).unwrap();
    let broken = [0, 0, 0, 1, 0x67, 0xFF, 0xFF, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 0x88];
    assert_eq!(
        other.video(track, Duration::ZERO, &broken).unwrap_err().to_string(),
        "not written to track 1: an unreadable SPS"
    );

    recording.video(video, Duration::from_millis(200), &source.picture(200)).unwrap();
    recording.audio(audio, Duration::from_millis(200), &source.packet()).unwrap();
    let summary = recording.finish().unwrap();
    assert_eq!(summary.blocks, 3);
    let (file, frames) = read_all(&path);
    assert_eq!(file.tracks()[1].audio().unwrap().channels().get(), 2);
    assert_eq!(
        frames.iter().map(|f| (f.track, f.timestamp)).collect::<Vec<_>>(),
        [(1, 0), (1, 200), (2, 200)]
    );
}

#[test]
fn an_oversized_parameter_set_is_refused_and_the_track_waits_for_a_good_keyframe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pps.mkv");
    let mut source = Source::new(6, 320, 180);
    let good = source.picture(0);
    let mut recording = Recording::create(&path, "t").unwrap();
    let video = recording.add_track(TrackKind::Video, "v", 1).unwrap();
    // The same keyframe with a 60 KB PPS (a peer trying to overflow the file's head).
    let mut huge = Vec::new();
    for nal in annex_b_nals(&good) {
        huge.extend_from_slice(&[0, 0, 0, 1]);
        if nal[0] & 0x1F == 8 {
            huge.push(0x68);
            huge.extend(std::iter::repeat_n(0x55, 60_000));
        } else {
            huge.extend_from_slice(nal);
        }
    }
    let err = recording.video(video, Duration::ZERO, &huge).unwrap_err();
    assert_eq!(err.to_string(), "not written to track 1: a parameter set over 256 bytes");
    assert!(recording.video(video, Duration::from_millis(100), &good).unwrap());
    let summary = recording.finish().unwrap();
    assert_eq!(summary.blocks, 1);
    let (_, frames) = read_all(&path);
    assert_eq!(frames.len(), 1);
}

#[test]
fn a_keyframe_of_another_size_is_refused_for_a_track_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut small = Source::new(1, 320, 180);
    let mut large = Source::new(1, 640, 360);
    let mut recording = Recording::create(&dir.path().join("sizes.mkv"), "t").unwrap();
    let video = recording.add_track(TrackKind::Video, "v", 1).unwrap();
    assert!(recording.video(video, Duration::ZERO, &small.picture(0)).unwrap());
    let keyframe = large.picture(100);
    let err = recording.video(video, Duration::from_millis(100), &keyframe).unwrap_err();
    assert!(matches!(err, RecordError::SizeChanged { was: (320, 180), now: (640, 360), .. }), "{err}");
    // The same keyframe starts a track of its own.
    let second = recording.add_track(TrackKind::Video, "v (640x360)", 1).unwrap();
    assert!(recording.video(second, Duration::from_millis(100), &keyframe).unwrap());
    let summary = recording.finish().unwrap();
    assert_eq!((summary.tracks, summary.blocks), (2, 2));
}

#[test]
fn a_recording_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.mkv");
    std::fs::write(&path, b"precious").unwrap();
    let err = Recording::create(&path, "t").unwrap_err();
    assert!(matches!(err, RecordError::Io { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_recording_cut_short_still_plays_up_to_its_last_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.mkv");
    let mut source = Source::new(4, 320, 180);
    let mut recording = Recording::create(&path, "t").unwrap();
    let video = recording.add_track(TrackKind::Video, "v", 1).unwrap();
    let audio = recording.add_track(TrackKind::Audio, "a", 1).unwrap();
    for ms in (0..7_000u64).step_by(20) {
        if ms % 100 == 0 {
            recording.video(video, Duration::from_millis(ms), &source.picture(ms)).unwrap();
        }
        recording.audio(audio, Duration::from_millis(ms), &source.packet()).unwrap();
    }
    // The process dies: no finish.
    drop(recording);
    let (file, frames) = read_all(&path);
    assert_eq!(file.tracks().len(), 2);
    // The first cluster (5 s) was written; what was held or filling since is lost.
    let last = frames.iter().map(|f| f.timestamp).max().unwrap();
    assert!((4_900..6_500).contains(&last), "last block at {last} ms");
    assert_eq!(frames.first().map(|f| f.is_keyframe), Some(Some(true)));
}

#[test]
fn tracks_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut recording = Recording::create(&dir.path().join("many.mkv"), "t").unwrap();
    for i in 0..MAX_TRACKS {
        recording.add_track(TrackKind::Audio, &format!("someone with a rather long name {i}"), 1).unwrap();
    }
    assert!(matches!(recording.add_track(TrackKind::Audio, "one more", 1), Err(RecordError::TooManyTracks)));
}

#[test]
fn annex_b_splits_on_three_and_four_byte_start_codes() {
    let stream = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 0];
    let nals: Vec<&[u8]> = annex_b_nals(&stream).collect();
    assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 0]]);
}
