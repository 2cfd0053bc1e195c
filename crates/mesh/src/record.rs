//! Recording a call on this machine: the H.264 and Opus the engine already sends and receives,
//! written by a thread of its own into one Matroska file ([`confer_media::Recording`]) with a
//! camera, a microphone and a screen track per participant (ourselves included), each created
//! when its first media arrives.
//!
//! The engine hands media over a bounded queue ([`QUEUE`]): file writes never stall the call.
//! When the writer is behind, what does not fit is dropped and counted; a video track that lost
//! an access unit skips to its next keyframe (a P frame after a gap would decode wrong), an
//! audio track just has a gap. The first write error (a full disk) ends the recording with its
//! reason; what was written stays playable.
//!
//! Times, from the start of the recording: what others send from its RTP timestamps (90 kHz
//! video, 48 kHz audio), anchored at the arrival of a stream's first packet and again whenever
//! they drift from arrival by more than [`REANCHOR`] (a sender that was muted, or restarted), so
//! the recording plays at the pace it was captured, without the jitter and bursts of its
//! arrival; our own camera at its capture time, our own audio by its packet count (anchored the
//! same way).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use confer_media::{RecordError, Recording, RecordingSummary, TrackId, TrackKind};
use confer_proto::PeerId;

/// Items waiting for the writer: about two seconds of a 4-party call.
pub(crate) const QUEUE: usize = 1_024;
/// Bytes waiting for the writer at most (access units can be large).
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Audio whose RTP time strays this far from its arrival is anchored again.
pub(crate) const REANCHOR: Duration = Duration::from_millis(400);

/// Which of a participant's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Medium {
    Camera,
    Microphone,
    Screen,
}

impl Medium {
    fn kind(self) -> TrackKind {
        match self {
            Self::Microphone => TrackKind::Audio,
            Self::Camera | Self::Screen => TrackKind::Video,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Camera => "camera",
            Self::Microphone => "microphone",
            Self::Screen => "screen",
        }
    }
}

type Key = (PeerId, Medium);

/// When a piece of media belongs in the recording.
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    /// Its RTP timestamp (90 kHz video, 48 kHz audio).
    Rtp(u32),
    /// Its capture time, Unix microseconds (anchored like RTP: the wall clock may jump).
    CapturedUs(u64),
    /// Now.
    Now,
}

/// A stream's clock, anchored: a timestamp in its ticks and the recording time it is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    ticks: u64,
    at: Duration,
}

enum Item {
    Track { key: Key, name: String },
    Media { key: Key, at: Duration, data: Vec<u8> },
}

/// A recording under way. Dropping it stops the writer and finishes the file (on the dropping
/// thread: use [`Recorder::finish`] from async code, on a blocking thread).
pub(crate) struct Recorder {
    path: PathBuf,
    started: Instant,
    queue: Option<SyncSender<Item>>,
    writer: Option<JoinHandle<Result<RecordingSummary, RecordError>>>,
    /// Tracks asked for.
    tracks: HashSet<Key>,
    /// Video tracks that lost an access unit: skipped until their next keyframe.
    broken: HashSet<Key>,
    /// Per stream: where its clock is anchored.
    anchors: HashMap<Key, Anchor>,
    dropped: u64,
    /// Bytes queued and not yet written (the writer takes off what it wrote).
    queued_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("path", &self.path).field("dropped", &self.dropped).finish()
    }
}

impl Recorder {
    /// Creates the file at `path` (never over one that exists) and starts the writer.
    pub(crate) fn start(path: &Path, title: &str) -> Result<Self, RecordError> {
        let recording = Recording::create(path, title)?;
        let (queue, items) = std::sync::mpsc::sync_channel(QUEUE);
        let queued_bytes = std::sync::Arc::default();
        let written = std::sync::Arc::clone(&queued_bytes);
        let writer = std::thread::Builder::new()
            .name("confer-record".into())
            .spawn(move || write(recording, &items, &written))
            .map_err(|source| RecordError::Io { path: path.to_owned(), source })?;
        Ok(Self {
            path: path.to_owned(),
            started: Instant::now(),
            queue: Some(queue),
            writer: Some(writer),
            tracks: HashSet::new(),
            broken: HashSet::new(),
            anchors: HashMap::new(),
            dropped: 0,
            queued_bytes,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Items dropped because the writer was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The writer stopped on its own: a write failed.
    pub(crate) fn failed(&self) -> bool {
        self.writer.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// An H.264 access unit (Annex B) of `who`'s camera or screen. Returns true when the
    /// track lost one and waits for a keyframe: the caller asks its sender for one.
    #[must_use]
    pub(crate) fn video(
        &mut self,
        who: &PeerId,
        name: &str,
        medium: Medium,
        when: When,
        access_unit: &[u8],
    ) -> bool {
        let key = (who.clone(), medium);
        if self.broken.contains(&key) {
            if !is_keyframe(access_unit) {
                return false;
            }
            self.broken.remove(&key);
        }
        let at = self.stamp(&key, when);
        if self.send_media(key.clone(), name, at, access_unit.to_vec()) {
            false
        } else {
            self.broken.insert(key);
            true
        }
    }

    /// An Opus packet of `who`'s microphone.
    pub(crate) fn audio(&mut self, who: &PeerId, name: &str, when: When, packet: &[u8]) {
        let key = (who.clone(), Medium::Microphone);
        let at = self.stamp(&key, when);
        self.send_media(key, name, at, packet.to_vec());
    }

    /// Where media of `key` arriving now belongs in the recording.
    fn stamp(&mut self, key: &Key, when: When) -> Duration {
        let arrival = self.started.elapsed();
        // The offset from the anchor, in µs, from the stream's own clock (signed: a packet
        // that arrives out of order is a little before the one before it, not 13 hours after).
        let ticks = match when {
            When::Now => return arrival,
            When::CapturedUs(us) => us,
            When::Rtp(timestamp) => u64::from(timestamp),
        };
        let offset_us = |anchor: u64| match when {
            When::Rtp(timestamp) => {
                let khz: i64 = if key.1 == Medium::Microphone { 48 } else { 90 };
                i64::from(timestamp.wrapping_sub(anchor as u32) as i32) * 1_000 / khz
            }
            _ => ticks as i64 - anchor as i64,
        };
        let at = self.anchors.get(key).and_then(|anchor| {
            let offset = offset_us(anchor.ticks);
            let at = if offset >= 0 {
                anchor.at.checked_add(Duration::from_micros(offset.unsigned_abs()))
            } else {
                anchor.at.checked_sub(Duration::from_micros(offset.unsigned_abs()))
            }?;
            (at.abs_diff(arrival) <= REANCHOR).then_some(at)
        });
        at.unwrap_or_else(|| {
            self.anchors.insert(key.clone(), Anchor { ticks, at: arrival });
            arrival
        })
    }

    /// Queues one item (and the track first, the first time): false if it was dropped.
    fn send_media(&mut self, key: Key, name: &str, at: Duration, data: Vec<u8>) -> bool {
        let Some(queue) = &self.queue else { return false };
        if !self.tracks.contains(&key) {
            let name = format!("{name}: {}", key.1.label());
            // Not queued: asked again with the next item.
            if queue.try_send(Item::Track { key: key.clone(), name }).is_err() {
                self.dropped += 1;
                return false;
            }
            self.tracks.insert(key.clone());
        }
        let len = data.len();
        if self.queued_bytes.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.dropped += 1;
            return false;
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        match queue.try_send(Item::Media { key, at, data }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.dropped += 1;
                false
            }
        }
    }

    /// Ends the recording: writes what is queued, then the file's index and duration. Blocks
    /// until the file is complete.
    pub(crate) fn finish(mut self) -> Result<RecordingSummary, RecordError> {
        self.queue = None;
        let Some(writer) = self.writer.take() else {
            return Err(RecordError::Encode("the recording was finished already".into()));
        };
        writer.join().unwrap_or_else(|_| Err(RecordError::Encode("the recording's writer panicked".into())))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer's thread: takes items until the queue closes, then finishes the file. Bad data
/// costs that item and a track past the limit is not recorded; a write error ends the
/// recording (finished as far as the disk allows, so what was written plays).
fn write(
    mut recording: Recording,
    items: &Receiver<Item>,
    queued_bytes: &std::sync::atomic::AtomicUsize,
) -> Result<RecordingSummary, RecordError> {
    let mut tracks: HashMap<Key, Option<TrackId>> = HashMap::new();
    let mut names: HashMap<Key, String> = HashMap::new();
    while let Ok(item) = items.recv() {
        let written = match item {
            Item::Track { key, name } => match recording.add_track(key.1.kind(), &name, 1) {
                Ok(id) => {
                    names.insert(key.clone(), name);
                    tracks.insert(key, Some(id));
                    Ok(())
                }
                Err(RecordError::TooManyTracks) => {
                    tracing::info!(track = %name, "not recorded: the recording holds all the tracks it can");
                    tracks.insert(key, None);
                    Ok(())
                }
                Err(err) => Err(err),
            },
            Item::Media { key, at, data } => {
                queued_bytes.fetch_sub(data.len(), Ordering::Relaxed);
                match tracks.get(&key).copied().flatten() {
                    None => Ok(()),
                    Some(track) if key.1.kind() == TrackKind::Video => {
                        match recording.video(track, at, &data) {
                            // Another size (a camera switched, another window shared): a track of
                            // its own, named with its size.
                            Err(RecordError::SizeChanged { now: (width, height), .. }) => {
                                let name = names.get(&key).map_or("?", String::as_str);
                                match recording.add_track(
                                    TrackKind::Video,
                                    &format!("{name} ({width}x{height})"),
                                    1,
                                ) {
                                    Ok(id) => {
                                        tracks.insert(key, Some(id));
                                        recording.video(id, at, &data).map(|_| ())
                                    }
                                    Err(RecordError::TooManyTracks) => Ok(()),
                                    Err(err) => Err(err),
                                }
                            }
                            written => written.map(|_| ()),
                        }
                    }
                    Some(track) => recording.audio(track, at, &data),
                }
            }
        };
        match written {
            Ok(()) => {}
            // A peer's bad packet costs that packet, not the recording.
            Err(err @ RecordError::BadData { .. }) => tracing::debug!(error = %err, "not recorded"),
            Err(err) => {
                let _ = recording.finish();
                return Err(err);
            }
        }
    }
    recording.finish()
}

/// Whether an Annex B access unit holds an IDR slice.
pub(crate) fn is_keyframe(access_unit: &[u8]) -> bool {
    access_unit.windows(4).any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1F == 5)
}

/// A file name for a recording made now in `dir` of the room `title`: `Confer <title>
/// 2026-12-07 14.05.mkv` (characters file systems refuse are replaced).
pub(crate) fn file_in(dir: &Path, title: &str) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let clean: String = title
        .chars()
        .map(|c| if c.is_alphanumeric() || c == ' ' || c == '-' { c } else { '_' })
        .take(60)
        .collect();
    let stem = format!(
        "Confer {} {year:04}-{month:02}-{day:02} {:02}.{:02}.{:02}",
        clean.trim(),
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    );
    let mut path = dir.join(format!("{stem}.mkv"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem} ({n}).mkv"));
        n += 1;
    }
    path
}

/// The civil date (UTC) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_come_out_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_429), (2025, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_file_name_is_clean_and_never_one_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let first = file_in(dir.path(), "Team/../sync: *weekly*");
        let name = first.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("Confer Team____sync_ _weekly_ "), "{name}");
        assert!(name.ends_with(".mkv"));
        std::fs::write(&first, b"x").unwrap();
        let second = file_in(dir.path(), "Team/../sync: *weekly*");
        assert_ne!(first, second);
        assert_eq!(second.parent(), Some(dir.path()));
    }

    #[test]
    fn audio_follows_its_rtp_clock_and_is_anchored_again_after_a_jump() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::start(&dir.path().join("a.mkv"), "t").unwrap();
        let who = PeerId::parse("QWxpY2VBbGk").unwrap();
        recorder.audio(&who, "Alice", When::Rtp(1_000), &[1, 2, 3]);
        let anchor = recorder.anchors[&(who.clone(), Medium::Microphone)];
        recorder.audio(&who, "Alice", When::Rtp(1_000 + 960), &[1, 2, 3]);
        assert_eq!(recorder.anchors[&(who.clone(), Medium::Microphone)], anchor, "20 ms later: same anchor");
        // A packet from before the last one (reordered): behind it, not hours ahead.
        let at = recorder.stamp(&(who.clone(), Medium::Microphone), When::Rtp(1_000 + 480));
        assert!(at < Duration::from_millis(100), "{at:?}");
        assert_eq!(recorder.anchors[&(who.clone(), Medium::Microphone)], anchor);
        // Our camera's capture times are anchored the same way: the wall clock jumping an hour
        // ahead (a laptop waking) starts a new anchor rather than an hour of silence.
        let camera = (who.clone(), Medium::Camera);
        let first = recorder.stamp(&camera, When::CapturedUs(5_000_000));
        let jumped = recorder.stamp(&camera, When::CapturedUs(5_000_000 + 3_600_000_000));
        assert!(jumped.abs_diff(first) < REANCHOR, "{first:?} then {jumped:?}");
        // The sender's clock jumps by a minute (a restart): anchored again at arrival.
        recorder.audio(&who, "Alice", When::Rtp(1_000 + 48_000 * 60), &[1, 2, 3]);
        assert_ne!(recorder.anchors[&(who.clone(), Medium::Microphone)].ticks, anchor.ticks);
        assert_eq!(recorder.dropped(), 0);
        let summary = recorder.finish().unwrap();
        assert_eq!(summary.blocks, 3);
    }
}
