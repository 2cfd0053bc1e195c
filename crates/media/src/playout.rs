//! Playout: a jitter buffer per remote audio stream, concealment on loss, mixing of all remote
//! streams into one 20 ms frame for the speakers, and the levels behind speaking indicators and
//! active-speaker detection.
//!
//! Nothing here reads a clock: packets arrive with the time they arrived, and the output device's
//! pace calls [`Playout::next_frame`] every 20 ms with the time. Tests drive it in fake time.
//!
//! The jitter buffer keys packets by their RTP timestamp (48 kHz units), not their sequence
//! number, so DTX (which skips packets during silence) reads as silence rather than loss. Its
//! target delay follows the network: the 95th percentile of how late packets arrived over the
//! last 4 s, plus one frame, from 20 ms to 300 ms.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;

use crate::{FRAME_SAMPLES, OpusDecoder};

/// One frame's length in microseconds.
const FRAME_US: i64 = 20_000;
/// RTP timestamp units per frame (48 kHz, 20 ms).
const TICKS_PER_FRAME: i64 = FRAME_SAMPLES as i64;
/// Arrivals remembered for the delay estimate: 4 s of 20 ms frames.
const DELAY_WINDOW: usize = 200;
/// Target delay bounds, in frames.
const MIN_TARGET: usize = 1;
const MAX_TARGET: usize = 15;
/// Frames held at most; beyond this the oldest are dropped.
const CAPACITY: usize = 50;
/// After this many concealed frames in a row the stream plays silence instead.
const MAX_CONCEALED_RUN: u32 = 10;
/// A packet this far ahead of the playout point restarts the stream (a long outage, or the
/// sender restarted its timestamps).
const RESYNC_FRAMES: i64 = 100;

/// What a jitter buffer has seen, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames decoded from their own packet.
    pub decoded: u64,
    /// Lost frames rebuilt from the next packet's FEC data.
    pub fec_recovered: u64,
    /// Lost (or undecodable) frames concealed.
    pub concealed: u64,
    /// Packets that arrived after their frame had been played.
    pub late: u64,
    /// Packets seen twice.
    pub duplicates: u64,
    /// Frames dropped to bring the delay back down (or because the buffer was full).
    pub dropped: u64,
    /// Times the stream restarted its timing.
    pub resyncs: u64,
    /// Frames held now.
    pub buffered: usize,
    /// The delay the buffer aims for now, in ms.
    pub target_ms: u32,
}

/// The jitter buffer and decoder of one remote audio stream.
#[derive(Debug)]
pub struct JitterBuffer {
    decoder: OpusDecoder,
    packets: BTreeMap<i64, Vec<u8>>,
    /// Frame index (RTP timestamp / 960, unwrapped) to play next; `None` until playout starts.
    next: Option<i64>,
    /// The last RTP timestamp seen, unwrapped, to extend the next one.
    last_timestamp: Option<i64>,
    /// Arrival time minus the frame's nominal time, µs, for the recent packets.
    lateness: VecDeque<i64>,
    concealed_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer with a mono decoder.
    pub fn new() -> Result<Self, crate::OpusError> {
        Ok(Self {
            decoder: OpusDecoder::new()?,
            packets: BTreeMap::new(),
            next: None,
            last_timestamp: None,
            lateness: VecDeque::with_capacity(DELAY_WINDOW),
            concealed_run: 0,
            stats: JitterStats { target_ms: (MIN_TARGET as u32) * 20, ..JitterStats::default() },
        })
    }

    /// Takes a packet: its RTP timestamp, its Opus payload, and when it arrived (µs, any clock
    /// that the caller also passes to [`JitterBuffer::pop`]).
    pub fn push(&mut self, rtp_timestamp: u32, payload: Vec<u8>, arrival_us: u64) {
        let timestamp = self.unwrap_timestamp(rtp_timestamp);
        let frame = timestamp.div_euclid(TICKS_PER_FRAME);
        if let Some(next) = self.next {
            if (frame - next).abs() > RESYNC_FRAMES {
                self.packets.clear();
                self.next = None;
                self.lateness.clear();
                self.stats.resyncs += 1;
            } else if frame < next {
                self.stats.late += 1;
                return;
            }
        }
        if self.packets.contains_key(&frame) {
            self.stats.duplicates += 1;
            return;
        }
        self.lateness.push_back(arrival_us as i64 - frame.saturating_mul(FRAME_US));
        if self.lateness.len() > DELAY_WINDOW {
            self.lateness.pop_front();
        }
        self.packets.insert(frame, payload);
        while self.packets.len() > CAPACITY {
            self.packets.pop_first();
            self.stats.dropped += 1;
        }
    }

    fn unwrap_timestamp(&mut self, rtp_timestamp: u32) -> i64 {
        let unwrapped = match self.last_timestamp {
            None => i64::from(rtp_timestamp),
            Some(last) => {
                // The nearest value with these low 32 bits.
                let delta = rtp_timestamp.wrapping_sub(last as u32) as i32;
                last + i64::from(delta)
            }
        };
        // Follow the newest; a jump far back (a restarted sender) is followed too.
        self.last_timestamp = Some(match self.last_timestamp {
            Some(last) if unwrapped < last && last - unwrapped < RESYNC_FRAMES * TICKS_PER_FRAME => last,
            _ => unwrapped,
        });
        unwrapped
    }

    /// The delay to aim for, in frames: the 95th percentile of lateness over the window (how
    /// much later than the earliest packet a packet may come), plus one frame.
    fn target_frames(&self) -> usize {
        if self.lateness.len() < 2 {
            return MIN_TARGET;
        }
        let mut sorted: Vec<i64> = self.lateness.iter().copied().collect();
        sorted.sort_unstable();
        let earliest = sorted[0];
        let p95 = sorted[(sorted.len() - 1) * 95 / 100];
        let spread_frames = ((p95 - earliest) as f64 / FRAME_US as f64).ceil() as usize;
        (spread_frames + 1).clamp(MIN_TARGET, MAX_TARGET)
    }

    /// The next 20 ms of this stream, or `None` while it has not started (or has gone quiet),
    /// which the mixer treats as silence.
    pub fn pop(&mut self) -> Option<Vec<i16>> {
        let target = self.target_frames();
        self.stats.target_ms = (target * 20) as u32;
        let next = match self.next {
            Some(next) => next,
            None => {
                // Start once the target delay is buffered.
                let (&first, _) = self.packets.first_key_value()?;
                let (&last, _) = self.packets.last_key_value()?;
                if ((last - first + 1) as usize) < target {
                    return None;
                }
                first
            }
        };
        // Too far behind the newest packet: skip ahead to the target delay.
        let mut next = next;
        if let Some((&newest, _)) = self.packets.last_key_value() {
            let behind = newest - next + 1;
            if behind > (target + 3) as i64 {
                let skip_to = newest + 1 - target as i64;
                let skipped = self.packets.range(..skip_to).count() as u64;
                self.packets = self.packets.split_off(&skip_to);
                self.stats.dropped += skipped.max(1);
                next = skip_to;
            }
        }
        self.next = Some(next + 1);
        let packet = self.packets.remove(&next);
        let follower = self.packets.get(&(next + 1)).map(Vec::as_slice);
        self.stats.buffered = self.packets.len();
        match (&packet, follower) {
            (Some(_), _) => self.stats.decoded += 1,
            (None, _) if self.concealed_run >= MAX_CONCEALED_RUN => {
                // Long gone quiet (an outage or DTX): silence, not an endless guess.
                return None;
            }
            (None, Some(_)) => self.stats.fec_recovered += 1,
            (None, None) => self.stats.concealed += 1,
        }
        let decoded = self.decoder.decode(packet.as_deref(), follower);
        match (decoded, packet.is_some()) {
            (Ok(frame), true) => {
                self.concealed_run = 0;
                Some(frame)
            }
            (Ok(frame), false) => {
                self.concealed_run += 1;
                Some(frame)
            }
            (Err(_), _) => {
                // Undecodable: the decoder concealed it; count it as such.
                self.stats.decoded = self.stats.decoded.saturating_sub(1);
                self.stats.concealed += 1;
                self.concealed_run += 1;
                None
            }
        }
    }

    /// What the buffer has seen.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }
}

/// Audio level in dBFS below which a stream counts as not speaking.
const SPEAKING_DBFS: f64 = -45.0;
/// A stream keeps its speaking state this long after its level falls (ms).
const SPEAKING_HANGOVER_MS: u32 = 400;
/// Another stream must be the loudest speaker this long before it becomes the active speaker.
const ACTIVE_SWITCH_MS: u32 = 300;

/// The level of one stream, for a speaking indicator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamLevel {
    /// Smoothed level, dBFS (-100 for silence): quick to rise, slow to fall.
    pub dbfs: f64,
    /// Whether the stream is speaking now (with a short hangover so words do not flicker).
    pub speaking: bool,
}

/// Measures one stream's level over successive frames.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    dbfs: f64,
    quiet_ms: u32,
}

impl Default for LevelMeter {
    fn default() -> Self {
        Self { dbfs: -100.0, quiet_ms: SPEAKING_HANGOVER_MS }
    }
}

impl LevelMeter {
    /// Takes one frame (any length, 48 kHz) and returns the level after it.
    pub fn update(&mut self, samples: &[i16]) -> StreamLevel {
        let frame_dbfs = dbfs(samples);
        let ms = (samples.len() as u32).saturating_mul(1_000) / crate::synthetic::SAMPLE_RATE;
        // Attack at once, release by 1 dB per 10 ms.
        let release = f64::from(ms) / 10.0;
        self.dbfs = if frame_dbfs > self.dbfs { frame_dbfs } else { (self.dbfs - release).max(frame_dbfs) };
        if frame_dbfs >= SPEAKING_DBFS {
            self.quiet_ms = 0;
        } else {
            self.quiet_ms = self.quiet_ms.saturating_add(ms);
        }
        self.level()
    }

    /// The level now.
    pub fn level(&self) -> StreamLevel {
        StreamLevel { dbfs: self.dbfs, speaking: self.quiet_ms < SPEAKING_HANGOVER_MS }
    }
}

/// RMS level of `samples` in dBFS (a full-scale square wave is 0), -100 for silence.
pub fn dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -100.0;
    }
    let mean_square = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
    if mean_square < 1e-9 {
        return -100.0;
    }
    (10.0 * (mean_square / (32_768.0f64 * 32_768.0)).log10()).max(-100.0)
}

/// One 20 ms frame of playout.
#[derive(Debug, Clone)]
pub struct PlayoutFrame<K> {
    /// All remote streams mixed, mono 48 kHz, 960 samples.
    pub samples: Vec<i16>,
    /// Each stream's level after this frame.
    pub levels: Vec<(K, StreamLevel)>,
    /// Who is speaking most, held steady against brief interruptions.
    pub active_speaker: Option<K>,
}

/// All remote audio streams of a call, mixed for the speakers.
#[derive(Debug)]
pub struct Playout<K> {
    streams: HashMap<K, (JitterBuffer, LevelMeter)>,
    active: Option<K>,
    challenger: Option<(K, u32)>,
}

impl<K: Clone + Eq + Hash + Ord> Default for Playout<K> {
    fn default() -> Self {
        Self { streams: HashMap::new(), active: None, challenger: None }
    }
}

impl<K: Clone + Eq + Hash + Ord> Playout<K> {
    /// A playout with no streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a remote stream (replacing one with the same key).
    pub fn add_stream(&mut self, key: K) -> Result<(), crate::OpusError> {
        self.streams.insert(key, (JitterBuffer::new()?, LevelMeter::default()));
        Ok(())
    }

    /// Removes a remote stream.
    pub fn remove_stream(&mut self, key: &K) {
        self.streams.remove(key);
        if self.active.as_ref() == Some(key) {
            self.active = None;
        }
    }

    /// Hands a stream its packet; packets of unknown streams are ignored (and `false`).
    pub fn push(&mut self, key: &K, rtp_timestamp: u32, payload: Vec<u8>, arrival_us: u64) -> bool {
        match self.streams.get_mut(key) {
            Some((buffer, _)) => {
                buffer.push(rtp_timestamp, payload, arrival_us);
                true
            }
            None => false,
        }
    }

    /// A stream's jitter buffer statistics.
    pub fn stats(&self, key: &K) -> Option<JitterStats> {
        self.streams.get(key).map(|(buffer, _)| buffer.stats())
    }

    /// The next 20 ms for the speakers: every stream's next frame, mixed with a soft limit so
    /// loud voices together do not wrap around.
    pub fn next_frame(&mut self) -> PlayoutFrame<K> {
        self.next_frame_each(|_, _| {})
    }

    /// [`Playout::next_frame`], also showing `each` every stream's own frame before mixing (to
    /// analyse one participant's audio, say).
    pub fn next_frame_each(&mut self, mut each: impl FnMut(&K, &[i16])) -> PlayoutFrame<K> {
        let mut sum = vec![0i32; FRAME_SAMPLES];
        let mut levels = Vec::with_capacity(self.streams.len());
        for (key, (buffer, meter)) in &mut self.streams {
            let level = match buffer.pop() {
                Some(frame) => {
                    each(key, &frame);
                    for (acc, &s) in sum.iter_mut().zip(&frame) {
                        *acc += i32::from(s);
                    }
                    meter.update(&frame)
                }
                None => meter.update(&[0; FRAME_SAMPLES]),
            };
            levels.push((key.clone(), level));
        }
        levels.sort_by(|a, b| a.0.cmp(&b.0));
        let samples = sum.into_iter().map(soft_limit).collect();
        self.update_active_speaker(&levels);
        PlayoutFrame { samples, levels, active_speaker: self.active.clone() }
    }

    fn update_active_speaker(&mut self, levels: &[(K, StreamLevel)]) {
        let loudest = levels
            .iter()
            .filter(|(_, level)| level.speaking)
            .max_by(|a, b| a.1.dbfs.total_cmp(&b.1.dbfs))
            .map(|(key, _)| key.clone());
        let Some(loudest) = loudest else {
            // Nobody speaks: the last speaker stays on the big tile.
            self.challenger = None;
            return;
        };
        if self.active.is_none() {
            self.active = Some(loudest);
            return;
        }
        if self.active.as_ref() == Some(&loudest) {
            self.challenger = None;
            return;
        }
        let held = match &self.challenger {
            Some((key, ms)) if *key == loudest => ms + 20,
            _ => 20,
        };
        if held >= ACTIVE_SWITCH_MS {
            self.active = Some(loudest);
            self.challenger = None;
        } else {
            self.challenger = Some((loudest, held));
        }
    }
}

/// Linear up to 3/4 of full scale, then a smooth knee that never exceeds full scale.
fn soft_limit(x: i32) -> i16 {
    const KNEE: f64 = 24_576.0;
    const HEADROOM: f64 = 32_767.0 - KNEE;
    let magnitude = f64::from(x.unsigned_abs());
    let limited =
        if magnitude <= KNEE { magnitude } else { KNEE + HEADROOM * ((magnitude - KNEE) / HEADROOM).tanh() };
    (limited.copysign(f64::from(x))).round().clamp(-32_767.0, 32_767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticMic, tone_hz, tone_level};
    use crate::{OpusConfig, OpusEncoder};

    /// `frames` Opus packets of participant `id`'s tone, with RTP timestamps from `first_ts`.
    fn stream(id: u32, frames: usize, first_ts: u32) -> Vec<(u32, Vec<u8>)> {
        let mut mic = SyntheticMic::tone_only(id);
        let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
        (0..frames)
            .map(|n| {
                let ts = first_ts.wrapping_add((n * FRAME_SAMPLES) as u32);
                (ts, encoder.encode(&mic.next_samples(FRAME_SAMPLES)).unwrap())
            })
            .collect()
    }

    #[test]
    fn packets_in_order_play_in_order_without_concealment() {
        let mut buffer = JitterBuffer::new().unwrap();
        let packets = stream(4, 50, 0);
        let mut played = 0;
        for (n, (ts, payload)) in packets.into_iter().enumerate() {
            buffer.push(ts, payload, n as u64 * 20_000 + 3_000);
            if let Some(frame) = buffer.pop() {
                played += 1;
                if played > 5 {
                    assert!(tone_level(&frame, tone_hz(4)) > 5_000.0);
                }
            }
        }
        let stats = buffer.stats();
        assert_eq!((stats.concealed, stats.fec_recovered, stats.late, stats.dropped), (0, 0, 0, 0));
        assert_eq!(stats.target_ms, 20);
        assert!(played >= 49);
    }

    #[test]
    fn reordered_duplicated_and_late_packets_are_sorted_out() {
        let mut buffer = JitterBuffer::new().unwrap();
        let packets = stream(2, 6, 0);
        // 0, 2, 1, 1 again, 3 ... arriving a little apart.
        for (i, &n) in [0usize, 2, 1, 1, 3].iter().enumerate() {
            buffer.push(packets[n].0, packets[n].1.clone(), i as u64 * 1_000);
        }
        for _ in 0..4 {
            assert!(buffer.pop().is_some());
        }
        buffer.push(packets[1].0, packets[1].1.clone(), 90_000);
        let stats = buffer.stats();
        assert_eq!((stats.decoded, stats.concealed, stats.duplicates, stats.late), (4, 0, 1, 1));
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_fec_or_concealed() {
        let mut buffer = JitterBuffer::new().unwrap();
        let packets = stream(1, 11, 0);
        let mut frames = 0;
        // Each pop comes one frame after its packet was due: the next packet is there for FEC.
        for (n, (ts, payload)) in packets.iter().enumerate() {
            if n != 3 && n != 7 && n != 8 {
                buffer.push(*ts, payload.clone(), n as u64 * 20_000);
            }
            if n > 0 {
                frames += usize::from(buffer.pop().is_some());
            }
        }
        assert_eq!(frames, 10);
        let stats = buffer.stats();
        // 3 and 7 have their follower; 8 has 9, but 7's FEC came from 8's packet, which is lost.
        assert_eq!((stats.decoded, stats.fec_recovered, stats.concealed), (7, 2, 1), "{stats:?}");
    }

    #[test]
    fn bursty_arrival_raises_the_target_and_stops_the_gaps() {
        let mut buffer = JitterBuffer::new().unwrap();
        let packets = stream(5, 400, 0);
        // Packets come in bursts of five every 100 ms; playout pulls every 20 ms.
        let mut arrivals = packets.into_iter().enumerate().peekable();
        let mut gaps_late = 0;
        for tick in 0..400u64 {
            let now = tick * 20_000;
            while let Some((n, _)) = arrivals.peek() {
                let arrives = (*n as u64 / 5 + 1) * 100_000;
                if arrives > now {
                    break;
                }
                let (_, (ts, payload)) = arrivals.next().unwrap();
                buffer.push(ts, payload, arrives);
            }
            let before = buffer.stats().concealed;
            buffer.pop();
            if tick > 200 && buffer.stats().concealed > before {
                gaps_late += 1;
            }
        }
        let stats = buffer.stats();
        assert!(stats.target_ms >= 100, "target {} ms for 100 ms bursts", stats.target_ms);
        assert_eq!(gaps_late, 0, "still concealing after adapting: {stats:?}");
    }

    #[test]
    fn the_timestamp_wraps_around_and_garbage_is_concealed() {
        let mut buffer = JitterBuffer::new().unwrap();
        let mut packets = stream(3, 20, u32::MAX - 5 * FRAME_SAMPLES as u32);
        packets[10].1 = vec![0xFF; 7];
        let mut played = 0;
        for (n, (ts, payload)) in packets.into_iter().enumerate() {
            buffer.push(ts, payload, n as u64 * 20_000);
            played += usize::from(buffer.pop().is_some());
        }
        let stats = buffer.stats();
        assert_eq!(played, 19, "{stats:?}");
        assert_eq!((stats.decoded, stats.concealed, stats.resyncs, stats.late), (19, 1, 0, 0));
    }

    #[test]
    fn a_sender_restarting_its_timestamps_is_followed() {
        let mut buffer = JitterBuffer::new().unwrap();
        for (n, (ts, payload)) in stream(3, 10, 0).into_iter().enumerate() {
            buffer.push(ts, payload, n as u64 * 20_000);
            buffer.pop();
        }
        for (n, (ts, payload)) in stream(3, 10, 3_000_000_000).into_iter().enumerate() {
            buffer.push(ts, payload, 200_000 + n as u64 * 20_000);
            buffer.pop();
        }
        let stats = buffer.stats();
        assert_eq!(stats.resyncs, 1);
        assert!(stats.decoded >= 18, "{stats:?}");
    }

    #[test]
    fn two_streams_are_mixed_and_each_is_heard() {
        let mut playout = Playout::new();
        playout.add_stream("ann").unwrap();
        playout.add_stream("bob").unwrap();
        let (ann, bob) = (stream(2, 50, 0), stream(9, 50, 777));
        let mut mixed = Vec::new();
        for n in 0..50 {
            playout.push(&"ann", ann[n].0, ann[n].1.clone(), n as u64 * 20_000);
            playout.push(&"bob", bob[n].0, bob[n].1.clone(), n as u64 * 20_000);
            mixed.extend(playout.next_frame().samples);
        }
        assert!(!playout.push(&"eve", 0, vec![1], 0), "an unknown stream is refused");
        let tail = &mixed[20 * FRAME_SAMPLES..];
        assert!(tone_level(tail, tone_hz(2)) > 8_000.0 && tone_level(tail, tone_hz(9)) > 8_000.0);
    }

    #[test]
    fn loud_streams_together_do_not_wrap_around() {
        assert_eq!(soft_limit(30_000 * 3), 32_767);
        assert_eq!(soft_limit(-30_000 * 3), -32_767);
        assert_eq!(soft_limit(10_000), 10_000);
        let mut last = 0;
        for x in (0..200_000).step_by(97) {
            let y = soft_limit(x);
            assert!(y >= last, "the limiter must not fold back");
            last = y;
        }
    }

    #[test]
    fn levels_and_the_active_speaker_follow_who_talks() {
        let mut playout: Playout<&str> = Playout::new();
        playout.add_stream("ann").unwrap();
        playout.add_stream("bob").unwrap();
        let (ann, bob) = (stream(2, 150, 0), stream(9, 150, 0));
        let mut active = Vec::new();
        for n in 0..150 {
            // Ann talks for 1 s, then Bob for 2 s; Bob coughs at 0.5 s for 100 ms.
            let ann_talks = n < 50;
            let bob_talks = n >= 50 || (25..30).contains(&n);
            if ann_talks {
                playout.push(&"ann", ann[n].0, ann[n].1.clone(), n as u64 * 20_000);
            }
            if bob_talks {
                playout.push(&"bob", bob[n].0, bob[n].1.clone(), n as u64 * 20_000);
            }
            let frame = playout.next_frame();
            active.push(frame.active_speaker);
            if n == 40 {
                assert!(frame.levels[0].1.speaking && frame.levels[0].1.dbfs > -20.0, "{:?}", frame.levels);
            }
            if n == 149 {
                assert!(!frame.levels[0].1.speaking, "ann stopped 2 s ago: {:?}", frame.levels);
                assert!(frame.levels[1].1.speaking);
            }
        }
        assert_eq!(active[45], Some("ann"), "a 100 ms cough does not take the active speaker");
        assert_eq!(active[149], Some("bob"));
        let switched_at = active.iter().position(|a| *a == Some("bob")).unwrap();
        assert!((50..80).contains(&switched_at), "switched to bob at frame {switched_at}");
        playout.remove_stream(&"bob");
        assert_eq!(playout.next_frame().active_speaker, None);
    }

    #[test]
    fn dbfs_of_silence_and_full_scale() {
        assert_eq!(dbfs(&[]), -100.0);
        assert_eq!(dbfs(&[0; 480]), -100.0);
        assert!(dbfs(&[i16::MAX, i16::MIN].repeat(240)).abs() < 0.01);
    }
}
