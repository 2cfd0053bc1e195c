//! Decoding peers' video off the engine's task: a thread per remote stream (a peer's camera, its
//! screen share), fed by a bounded queue of access units, handing decoded pictures back through
//! one bounded channel. The engine's task then only moves bytes and decides: a 640x360 decode
//! (milliseconds) no longer delays the playout tick or a signal, and several peers' pictures are
//! decoded on several cores.
//!
//! When a stream's queue is full (its thread is [`QUEUE`] pictures behind: the machine cannot
//! keep up), the access unit is dropped, the thread skips to the next keyframe (a picture
//! decoded from a broken reference chain is garbage), and the caller asks the peer for one.
//! When the engine is behind on decoded pictures, a picture is dropped (the next one replaces
//! it on screen anyway) and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;

use confer_media::synthetic::{FrameStamp, read_stamp};
use confer_media::{H264Decoder, I420Frame};
use confer_proto::PeerId;
use tokio::sync::mpsc;

/// Access units a stream's thread may be behind before they are dropped: 2 s at 30 fps, 4 s at
/// 15. A short burst of work (everyone's keyframes when a call starts, a busy moment of the
/// machine) passes without a loss; only a machine that stays too slow drops, and then each drop
/// costs a keyframe, which is more work again: so not sooner.
pub(crate) const QUEUE: usize = 60;

/// The least time between two keyframe requests of one stream's decoder.
pub(crate) const KEYFRAME_ASK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Decoded pictures waiting for the engine, all streams together, before one is dropped.
pub(crate) const DECODED_QUEUE: usize = 64;

/// A decoded picture of a peer's camera or (`screen`) share.
pub(crate) struct Decoded {
    pub(crate) from: PeerId,
    pub(crate) screen: bool,
    pub(crate) frame: Arc<I420Frame>,
    /// The synthetic camera's stamp, if the picture carries one (tests, benchmarks).
    pub(crate) stamp: Option<FrameStamp>,
    /// When it was decoded, Unix microseconds.
    pub(crate) at_us: u64,
}

/// What became of an access unit handed to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for decoding.
    Queued,
    /// The queue was full: dropped; the stream waits for a keyframe (ask the peer for one).
    Dropped,
    /// The stream's thread is gone (its decoder failed to start, or it panicked).
    Gone,
}

/// Which units can be decoded: after a gap (the count of drops before a unit changed), none
/// until a keyframe.
#[derive(Debug, Default)]
struct Gaps {
    drops_seen: u64,
    skipping: bool,
}

impl Gaps {
    fn decodable(&mut self, drops: u64, keyframe: bool) -> bool {
        if drops != self.drops_seen {
            self.drops_seen = drops;
            self.skipping = true;
        }
        self.skipping &= !keyframe;
        !self.skipping
    }
}

/// One remote stream's decoder thread. Dropping it ends the thread and waits for it (at most
/// one decode: what is still queued is thrown away).
pub(crate) struct StreamDecoder {
    /// Each unit goes with the number of drops before it: where that number changes, units were
    /// dropped, and the thread skips to the next keyframe (even past one queued before the gap).
    queue: Option<std_mpsc::SyncSender<(u64, Vec<u8>)>>,
    drops: u64,
    /// Set when the decoder is dropped: the thread stops at once, nothing more is decoded.
    stop: Arc<AtomicBool>,
    /// Pictures decoded and dropped because the engine was behind.
    dropped: Arc<AtomicU64>,
    /// When this stream last asked the peer for a keyframe.
    last_ask: Option<std::time::Instant>,
    thread: Option<JoinHandle<()>>,
}

impl StreamDecoder {
    /// Starts the thread for `from`'s camera or (`screen`) share; its pictures go to `out`.
    pub(crate) fn start(from: PeerId, screen: bool, out: mpsc::Sender<Decoded>) -> std::io::Result<Self> {
        let (queue, units) = std_mpsc::sync_channel::<(u64, Vec<u8>)>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let dropped = Arc::new(AtomicU64::new(0));
        let thread_dropped = Arc::clone(&dropped);
        let name = if screen { "confer-decode-share" } else { "confer-decode" };
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let Ok(mut decoder) = H264Decoder::new() else {
                tracing::warn!(peer = %from, "the H.264 decoder did not start: this peer's video is not shown");
                return;
            };
            let mut gaps = Gaps::default();
            // Ends when the engine drops its end of the queue.
            while let Ok((drops, unit)) = units.recv() {
                if thread_stop.load(Ordering::Relaxed) {
                    return;
                }
                if !gaps.decodable(drops, crate::record::is_keyframe(&unit)) {
                    continue;
                }
                let Ok(Some(frame)) = decoder.decode(&unit) else { continue };
                let stamp = read_stamp(&frame);
                let at_us = crate::engine::unix_us();
                let decoded = Decoded { from: from.clone(), screen, frame: Arc::new(frame), stamp, at_us };
                match out.try_send(decoded) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        thread_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        })?;
        Ok(Self { queue: Some(queue), drops: 0, stop, dropped, last_ask: None, thread: Some(thread) })
    }

    /// Pictures decoded and dropped so far because the engine was behind.
    pub(crate) fn pictures_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether to ask the peer for a keyframe after a drop now: at most once per
    /// [`KEYFRAME_ASK_INTERVAL`] (the answer takes a round trip; asking more only makes the peer
    /// send everyone more keyframes).
    pub(crate) fn ask_keyframe(&mut self, now: std::time::Instant) -> bool {
        if self.last_ask.is_some_and(|at| now.duration_since(at) < KEYFRAME_ASK_INTERVAL) {
            return false;
        }
        self.last_ask = Some(now);
        true
    }

    /// Hands an access unit to the thread.
    pub(crate) fn push(&mut self, unit: Vec<u8>) -> Pushed {
        let Some(queue) = &self.queue else { return Pushed::Gone };
        match queue.try_send((self.drops, unit)) {
            Ok(()) => Pushed::Queued,
            Err(std_mpsc::TrySendError::Full(_)) => {
                self.drops += 1;
                Pushed::Dropped
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => Pushed::Gone,
        }
    }
}

impl Drop for StreamDecoder {
    fn drop(&mut self) {
        // The thread stops at its next unit, and closing the queue ends its wait for one.
        self.stop.store(true, Ordering::Relaxed);
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confer_media::{H264Config, H264Encoder};

    /// `count` access units of a moving synthetic camera, the first a keyframe, and another
    /// at `keyframe_at` (an encoder asked for one).
    fn stream(count: usize, keyframe_at: Option<usize>) -> Vec<Vec<u8>> {
        stream_of((160, 90), count, keyframe_at)
    }

    fn stream_of((width, height): (usize, usize), count: usize, keyframe_at: Option<usize>) -> Vec<Vec<u8>> {
        let mut camera = confer_media::synthetic::SyntheticCamera::new(7, width, height).unwrap();
        let mut encoder = H264Encoder::new(H264Config::camera(15.0, 200_000)).unwrap();
        (0..count)
            .map(|i| {
                if Some(i) == keyframe_at {
                    encoder.request_keyframe();
                }
                let (frame, _) = camera.next_frame(1_000 + i as u64 * 66);
                encoder.encode(&frame).unwrap().expect("no frame skipped").data
            })
            .collect()
    }

    /// The stamps' counters of the pictures decoded, until `last` (or 5 s).
    fn counters_until(decoded: &mut mpsc::Receiver<Decoded>, last: u32) -> Vec<u32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut counters = Vec::new();
        while counters.last() != Some(&last) && std::time::Instant::now() < deadline {
            match decoded.try_recv() {
                Ok(picture) => {
                    assert_eq!((picture.from.clone(), picture.screen), (peer(), false));
                    counters.push(picture.stamp.unwrap().counter);
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        counters
    }

    fn peer() -> PeerId {
        PeerId::parse("AAAA-AAAAAA").unwrap()
    }

    #[test]
    fn pictures_are_decoded_off_the_callers_thread_in_order_with_their_stamps() {
        let (out, mut decoded) = mpsc::channel(DECODED_QUEUE);
        let mut decoder = StreamDecoder::start(peer(), false, out).unwrap();
        let units = stream(10, None);
        for unit in &units {
            assert_eq!(decoder.push(unit.clone()), Pushed::Queued);
        }
        // Everything queued is decoded before the decoder is dropped (dropping stops at once).
        let counters = counters_until(&mut decoded, units.len() as u32 - 1);
        let dropped = decoder.pictures_dropped();
        drop(decoder);
        assert_eq!(counters, (0..units.len() as u32).collect::<Vec<_>>());
        assert_eq!(dropped, 0);
    }

    #[test]
    fn a_full_queue_drops_and_the_stream_resumes_at_the_next_keyframe() {
        let (out, mut decoded) = mpsc::channel(DECODED_QUEUE * 4);
        // A keyframe well past what the queue holds.
        let k = QUEUE + 30;
        let units = stream(k + 10, Some(k));
        let mut decoder = StreamDecoder::start(peer(), false, out).unwrap();
        // Pushed all at once, faster than it decodes: some are dropped.
        let outcomes: Vec<Pushed> = units[..k].iter().map(|u| decoder.push(u.clone())).collect();
        assert!(outcomes.contains(&Pushed::Dropped), "{outcomes:?}");
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        for unit in &units[k..] {
            assert_eq!(decoder.push(unit.clone()), Pushed::Queued);
        }
        let counters = counters_until(&mut decoded, k as u32 + 9);
        drop(decoder);
        // Every picture from the keyframe on is there, in order; before it, only an unbroken
        // run from the start (nothing decoded from a broken chain).
        let k = k as u32;
        let resumed = counters.iter().position(|&c| c == k).expect("the keyframe was decoded");
        assert_eq!(counters[resumed..], (k..k + 10).collect::<Vec<u32>>());
        assert_eq!(counters[..resumed], (0..resumed as u32).collect::<Vec<u32>>());
        assert!(resumed < k as usize, "some pictures before the keyframe were dropped: {counters:?}");
    }

    #[test]
    fn keyframes_are_asked_for_at_most_once_a_second() {
        let (out, _decoded) = mpsc::channel(1);
        let mut decoder = StreamDecoder::start(peer(), false, out).unwrap();
        let t0 = std::time::Instant::now();
        assert!(decoder.ask_keyframe(t0));
        assert!(!decoder.ask_keyframe(t0 + std::time::Duration::from_millis(900)));
        assert!(decoder.ask_keyframe(t0 + KEYFRAME_ASK_INTERVAL));
    }

    #[test]
    fn nothing_is_decoded_across_a_gap_even_past_a_keyframe_queued_before_it() {
        let mut gaps = Gaps::default();
        // Before any drop: everything.
        assert!(gaps.decodable(0, true));
        assert!(gaps.decodable(0, false));
        // A keyframe queued before the gap is still decodable, and what follows it before the gap.
        assert!(gaps.decodable(0, true));
        assert!(gaps.decodable(0, false));
        // The first unit after a drop: skipped, and so on until a keyframe after the gap.
        assert!(!gaps.decodable(1, false));
        assert!(!gaps.decodable(1, false));
        // Another drop while skipping: still skipping.
        assert!(!gaps.decodable(2, false));
        assert!(gaps.decodable(2, true));
        assert!(gaps.decodable(2, false));
    }

    #[test]
    fn a_dropped_decoder_stops_without_decoding_what_is_queued() {
        let (out, mut decoded) = mpsc::channel(DECODED_QUEUE * 4);
        let mut decoder = StreamDecoder::start(peer(), false, out).unwrap();
        // Full-size pictures: the queue takes far longer to decode than to fill.
        for unit in stream_of((640, 360), QUEUE, None) {
            decoder.push(unit);
        }
        drop(decoder);
        let mut count = 0;
        while decoded.try_recv().is_ok() {
            count += 1;
        }
        assert!(count < QUEUE, "all {count} queued pictures were decoded after the drop");
    }
}
