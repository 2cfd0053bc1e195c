//! The synthetic microphone through the real libopus: the tone survives, and with 10% random
//! packet loss and in-band FEC the tone is still there and never missing for more than one frame;
//! the latency marker survives the codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confer_media::synthetic::{SyntheticMic, tone_hz, tone_level};
use confer_media::{FRAME_SAMPLES, OpusConfig, OpusDecoder, OpusEncoder};

/// Encodes `frames` frames of participant `id`'s tone.
fn packets(id: u32, frames: usize, config: OpusConfig) -> Vec<Vec<u8>> {
    let mut mic = SyntheticMic::tone_only(id);
    let mut encoder = OpusEncoder::new(config).unwrap();
    (0..frames).map(|_| encoder.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap()).collect()
}

/// Whether a frame carries participant `id`'s tone: at least a tenth of the amplitude sent
/// (10,000; -20 dB). Frames rebuilt from FEC come back at about half amplitude and concealed
/// ones at about a sixth; a gap measures under 3%.
fn has_tone(frame: &[i16], id: u32) -> bool {
    tone_level(frame, tone_hz(id)) > 1_000.0
}

/// The participant whose tone is strongest in `audio`, and how much stronger it is than the
/// next (over a long stretch, where every tone is resolved).
fn whose_tone(audio: &[i16]) -> (u32, f64) {
    let mut levels: Vec<(u32, f64)> = (0..24).map(|id| (id, tone_level(audio, tone_hz(id)))).collect();
    levels.sort_by(|a, b| b.1.total_cmp(&a.1));
    (levels[0].0, levels[0].1 / levels[1].1)
}

#[test]
fn the_tone_survives_a_round_trip() {
    let packets = packets(7, 100, OpusConfig::default());
    let bytes: usize = packets.iter().map(Vec::len).sum();
    let mut decoder = OpusDecoder::new().unwrap();
    let frames: Vec<Vec<i16>> = packets.iter().map(|p| decoder.decode(Some(p), None).unwrap()).collect();
    // The first frames carry the codec's start-up; from the fifth on every frame holds the tone.
    assert!(frames[5..].iter().all(|f| has_tone(f, 7)), "a frame lost the tone");
    let (id, margin) = whose_tone(&frames.concat());
    assert_eq!(id, 7);
    assert!(margin > 10.0, "participant 7's tone is only {margin:.1}x the next");
    let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
    assert!(kbps < 48.0, "32 kbit/s asked, {kbps:.1} sent");
}

#[test]
fn with_10_percent_random_loss_and_fec_the_tone_never_drops_for_more_than_one_frame() {
    let packets =
        packets(11, 500, OpusConfig { fec: true, expected_loss_percent: 10, ..OpusConfig::default() });
    // Deterministic 10% loss (xorshift), independent per packet.
    let mut state = 0x2545_F491_u32;
    let lost: Vec<bool> = (0..packets.len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.is_multiple_of(10)
        })
        .collect();
    let lost_count = lost.iter().filter(|&&l| l).count();
    assert!((35..=65).contains(&lost_count), "{lost_count} of 500 lost");
    assert!(lost.windows(2).any(|w| w[0] && w[1]), "the loss pattern should include a double loss");

    let mut decoder = OpusDecoder::new().unwrap();
    let (mut missing_run, mut worst_run, mut recovered_by_fec) = (0, 0, 0);
    let mut audio = Vec::new();
    for n in 5..packets.len() {
        let packet = (!lost[n]).then(|| packets[n].as_slice());
        let next =
            packets.get(n + 1).filter(|_| !lost.get(n + 1).copied().unwrap_or(true)).map(Vec::as_slice);
        if packet.is_none() && next.is_some() {
            recovered_by_fec += 1;
        }
        let frame = decoder.decode(packet, next).unwrap();
        audio.extend_from_slice(&frame);
        if has_tone(&frame, 11) {
            missing_run = 0;
        } else {
            missing_run += 1;
            worst_run = worst_run.max(missing_run);
        }
    }
    eprintln!("{lost_count} lost, {recovered_by_fec} rebuilt from FEC, longest gap {worst_run} frames");
    assert!(worst_run <= 1, "the tone was missing for {worst_run} frames in a row");
    let (id, margin) = whose_tone(&audio);
    assert_eq!(id, 11, "the receiver hears participant 11");
    assert!(margin > 10.0, "participant 11's tone is only {margin:.1}x the next");
}

#[test]
fn wrong_frame_lengths_and_corrupt_packets_are_errors_not_panics() {
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    assert!(encoder.encode(&[0; 100]).is_err());
    let mut decoder = OpusDecoder::new().unwrap();
    // A corrupt packet is reported, and the decoder keeps going.
    let _ = decoder.decode(Some(&[0xff; 3]), None);
    let good = packets(2, 10, OpusConfig::default());
    for p in &good {
        assert_eq!(decoder.decode(Some(p), None).unwrap().len(), FRAME_SAMPLES);
    }
}

#[test]
fn a_frame_lost_where_the_sound_changes_is_rebuilt_from_fec_where_concealment_guesses_wrong() {
    // Participant 3's tone for 20 frames, then participant 9's, through one encoder.
    let (mut before, mut after) = (SyntheticMic::tone_only(3), SyntheticMic::tone_only(9));
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let packets: Vec<Vec<u8>> = (0..30)
        .map(|n| {
            let mic = if n < 20 { &mut before } else { &mut after };
            encoder.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap()
        })
        .collect();
    // Frame 20, the first of the new tone, is lost; 21 has arrived.
    let rebuild = |use_fec: bool| {
        let mut decoder = OpusDecoder::new().unwrap();
        for p in &packets[..20] {
            decoder.decode(Some(p), None).unwrap();
        }
        let next = use_fec.then_some(packets[21].as_slice());
        decoder.decode(None, next).unwrap()
    };
    let (fec, concealed) = (rebuild(true), rebuild(false));
    let level = |frame: &[i16], id| tone_level(frame, tone_hz(id));
    eprintln!(
        "FEC: new tone {:.0}, old {:.0}; concealment: new {:.0}, old {:.0}",
        level(&fec, 9),
        level(&fec, 3),
        level(&concealed, 9),
        level(&concealed, 3)
    );
    // FEC's frame fades from the decoder's old state into the new tone, so some old tone remains.
    assert!(level(&fec, 9) > 1_000.0 && level(&fec, 9) > level(&fec, 3), "FEC rebuilds the new tone");
    assert!(level(&concealed, 9) < 1_000.0, "concealment alone cannot know the new tone");
    assert!(level(&concealed, 3) > level(&concealed, 9), "it can only continue the old one");
}

#[test]
fn music_mode_keeps_left_and_right_apart_at_a_higher_bitrate() {
    let (mut left, mut right) = (SyntheticMic::tone_only(2), SyntheticMic::tone_only(9));
    let mut encoder = OpusEncoder::new(OpusConfig::music()).unwrap();
    let mut decoder = OpusDecoder::with_channels(true).unwrap();
    let (mut bytes, mut out_left, mut out_right) = (0, vec![], vec![]);
    for _ in 0..100 {
        let (l, r) = (left.next_samples(FRAME_SAMPLES), right.next_samples(FRAME_SAMPLES));
        let interleaved: Vec<i16> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
        assert!(encoder.encode(&l).is_err(), "a mono frame was taken as stereo");
        let packet = encoder.encode(&interleaved).unwrap();
        bytes += packet.len();
        let decoded = decoder.decode(Some(&packet), None).unwrap();
        out_left.extend(decoded.iter().step_by(2));
        out_right.extend(decoded.iter().skip(1).step_by(2));
    }
    assert_eq!(whose_tone(&out_left[4_800..]).0, 2, "left channel");
    assert_eq!(whose_tone(&out_right[4_800..]).0, 9, "right channel");
    // Each channel holds its own tone and hardly any of the other's.
    let crosstalk = tone_level(&out_left[4_800..], tone_hz(9)) / tone_level(&out_left[4_800..], tone_hz(2));
    assert!(crosstalk < 0.05, "left carries {crosstalk:.2} of right");
    let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
    assert!(kbps > 64.0, "music mode sent only {kbps:.1} kbit/s");
}

#[test]
fn the_latency_marker_survives_opus() {
    let mut mic = SyntheticMic::new(6);
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let mut decoder = OpusDecoder::new().unwrap();
    let mut detector = confer_media::synthetic::MarkerDetector::new();
    let start_us = 1_795_000_000_250_000u64;
    let mut latencies = Vec::new();
    for n in 0..200u64 {
        let captured_us = start_us + n * 20_000;
        let packet = encoder.encode(&mic.next_samples_at(FRAME_SAMPLES, captured_us)).unwrap();
        let decoded = decoder.decode(Some(&packet), None).unwrap();
        // Received 40 ms after capture.
        latencies.extend(detector.push(&decoded, captured_us + 40_000));
    }
    assert_eq!(latencies.len(), 4, "4 s of audio, 4 markers: {latencies:?}");
    for latency in &latencies {
        // Opus itself delays by 6.5 ms (its look-ahead and the decoder's overlap).
        assert!((45.0..50.0).contains(latency), "marker read {latency} ms late for 40 ms + codec delay");
    }
    eprintln!("marker latencies through Opus: {latencies:?}");
}

/// A running encoder retuned (as the call engine does when its peers' links change) sends at
/// the new bitrate from then on, and the stream stays decodable across the change.
#[test]
fn a_retuned_encoder_narrows_its_bitrate_and_stays_decodable() {
    let mut mic = SyntheticMic::tone_only(5);
    let mut encoder = OpusEncoder::new(OpusConfig { fec: false, ..OpusConfig::default() }).unwrap();
    let mut decoder = OpusDecoder::new().unwrap();
    let mut second = |encoder: &mut OpusEncoder| -> (usize, Vec<i16>) {
        let packets: Vec<Vec<u8>> =
            (0..50).map(|_| encoder.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap()).collect();
        let audio = packets.iter().flat_map(|p| decoder.decode(Some(p), None).unwrap()).collect();
        (packets.iter().map(Vec::len).sum(), audio)
    };
    second(&mut encoder);
    let (wide, _) = second(&mut encoder);
    encoder.tune(16_000, true, 5).unwrap();
    let (_, settling) = second(&mut encoder);
    let (narrow, audio) = second(&mut encoder);
    let (wide_kbps, narrow_kbps) = (wide as f64 * 8.0 / 1_000.0, narrow as f64 * 8.0 / 1_000.0);
    assert!(
        narrow_kbps < 0.7 * wide_kbps,
        "{wide_kbps:.1} kbit/s before, {narrow_kbps:.1} after 16 kbit/s was asked"
    );
    assert!(narrow_kbps < 20.0, "16 kbit/s asked, {narrow_kbps:.1} sent");
    let audio = [settling, audio].concat();
    assert_eq!(whose_tone(&audio).0, 5, "the tone is still there after the change");
    assert!(
        audio.chunks(FRAME_SAMPLES).skip(5).all(|f| has_tone(f, 5)),
        "a frame lost the tone after the change"
    );
}
