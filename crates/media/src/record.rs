//! A call recording: encoded H.264 and Opus, as they were sent or received, written into one
//! Matroska file (RFC 9559) with a video and an audio track per participant.
//!
//! Nothing is decoded or encoded again: an H.264 access unit becomes one block (its NAL units
//! length-prefixed, as `V_MPEG4/ISO/AVC` wants, the parameter sets kept in band as well as in the
//! track's `CodecPrivate`), an Opus packet one block of an `A_OPUS` track. The EBML is written by
//! `webm-iterable`; this module decides the layout:
//!
//! - A region at the head of the segment is reserved (a `Void`) and rewritten whenever a track
//!   becomes known, with the `SeekHead`, `Info` and `Tracks`: participants join while the file
//!   is written, and a video track's size and parameter sets are only known at its first
//!   keyframe. So the file on disk always describes what it holds, and a recording cut short (a
//!   crash, a full disk) still plays up to its last cluster: the segment's size says "unknown"
//!   until [`Recording::finish`] writes it, with the duration and the `Cues`.
//! - Blocks are held [`REORDER`] long and written in timestamp order, so tracks whose packets
//!   arrive out of step still interleave; a block later than that is moved up to the last one
//!   written (never backwards in a track).
//! - A cluster closes after [`CLUSTER_SPAN`], at [`CLUSTER_BYTES`], or at a video keyframe once it
//!   holds a second of media, so keyframes tend to start clusters, and each keyframe gets a cue.
//! - A video track's blocks before its first keyframe cannot be decoded and are not written.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use webm_iterable::matroska_spec::{Master, MatroskaSpec, SimpleBlock};
use webm_iterable::{WebmWriter, WriteOptions};

/// Tracks one recording holds at most (video and audio of 32 participants).
pub const MAX_TRACKS: usize = 64;
/// How long blocks are held to be written in timestamp order.
pub const REORDER: Duration = Duration::from_millis(500);
/// A cluster spans at most this long (block timestamps are 16-bit milliseconds from it).
pub const CLUSTER_SPAN: Duration = Duration::from_secs(5);
/// A cluster holds at most about this many bytes.
pub const CLUSTER_BYTES: usize = 4 << 20;
/// A block's payload is at most this large (a 1080p keyframe is well under it).
pub const MAX_BLOCK: usize = 8 << 20;
/// A parameter set (SPS or PPS) is at most this long: real ones are tens of bytes, and the
/// head must hold one of each per track.
pub const MAX_PARAMETER_SET: usize = 256;
/// The room at the head of the segment for the `SeekHead`, `Info` and `Tracks`: at most
/// [`MAX_TRACKS`] entries of a 100-character name and two parameter sets fit.
const HEAD_ROOM: usize = 128 << 10;
/// EBML element IDs this module writes by hand (the rest are `webm-iterable`'s).
const SEGMENT_ID: [u8; 4] = [0x18, 0x53, 0x80, 0x67];
const VOID_ID: u8 = 0xEC;
const INFO_ID: [u8; 4] = [0x15, 0x49, 0xA9, 0x66];
const TRACKS_ID: [u8; 4] = [0x16, 0x54, 0xAE, 0x6B];
const CUES_ID: [u8; 4] = [0x1C, 0x53, 0xBB, 0x6B];
/// Seconds from 1970 to 2001, the epoch of Matroska's `DateUTC`.
const MATROSKA_EPOCH: u64 = 978_307_200;

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file could not be created or written (a full disk, no permission, a file already
    /// there: a recording never overwrites one).
    #[error("could not write the recording {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// More tracks than [`MAX_TRACKS`].
    #[error("a recording holds at most {MAX_TRACKS} tracks")]
    TooManyTracks,
    /// No such track in this recording.
    #[error("no track {0} in this recording")]
    NoSuchTrack(u64),
    /// The data given is not what the track holds (no H.264 NAL units, an empty or oversized
    /// packet, an unreadable sequence parameter set). Nothing was written.
    #[error("not written to track {track}: {why}")]
    BadData { track: u64, why: &'static str },
    /// A keyframe describes a picture of another size than the track's (a camera switched, or
    /// another window shared): nothing was written; a player wants a track per size, so the
    /// caller adds one and writes it there.
    #[error("track {track} is {was:?}; this keyframe is {now:?}")]
    SizeChanged { track: u64, was: (u32, u32), now: (u32, u32) },
    /// The EBML writer refused an element (a bug here, not in the input).
    #[error("could not encode the recording: {0}")]
    Encode(String),
}

/// What a track holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// H.264 video.
    Video,
    /// Opus audio at 48 kHz.
    Audio,
}

/// A track of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(u64);

impl TrackId {
    /// The track's number in the file (1, 2, …).
    pub fn number(self) -> u64 {
        self.0
    }
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingSummary {
    pub path: PathBuf,
    /// From the start to the end of the last block.
    pub duration: Duration,
    pub bytes: u64,
    /// Tracks that got at least one block.
    pub tracks: usize,
    pub blocks: u64,
    /// Video access units not written: they came before their track's first keyframe.
    pub skipped: u64,
}

#[derive(Debug)]
struct Track {
    kind: TrackKind,
    name: String,
    channels: u8,
    /// For video: the first keyframe's size and `AVCDecoderConfigurationRecord`.
    video: Option<(u32, u32, Vec<u8>)>,
    /// The last block's time, in milliseconds, and the time between its last two.
    last_ms: Option<u64>,
    step_ms: u64,
    blocks: u64,
}

impl Track {
    /// In the `Tracks` element: audio from its first packet, video from its first keyframe.
    fn described(&self) -> bool {
        self.kind == TrackKind::Audio || self.video.is_some()
    }
}

#[derive(Debug)]
struct Block {
    track: u64,
    keyframe: bool,
    data: Vec<u8>,
}

/// The cluster being filled.
#[derive(Debug, Default)]
struct Cluster {
    start_ms: u64,
    blocks: Vec<(u64, Block)>,
    bytes: usize,
}

/// A Matroska file being written. Made by [`Recording::create`], fed with
/// [`Recording::video`] and [`Recording::audio`], closed by [`Recording::finish`] (dropping it
/// unfinished leaves a file that plays up to its last full cluster).
#[derive(Debug)]
pub struct Recording {
    path: PathBuf,
    file: File,
    title: String,
    date: SystemTime,
    /// Where the segment's data starts (positions in the file's `SeekHead` and `Cues` count
    /// from there).
    segment_data: u64,
    /// The end of the file: where the next cluster goes.
    end: u64,
    tracks: Vec<Track>,
    /// Blocks held for ordering, by time (ms) and arrival.
    held: BTreeMap<(u64, u64), Block>,
    arrivals: u64,
    /// The newest block time given.
    newest_ms: u64,
    /// The last block time written (blocks are written in order).
    written_ms: u64,
    cluster: Cluster,
    /// Per keyframe: time, track and its cluster's position.
    cues: Vec<(u64, u64, u64)>,
    blocks: u64,
    skipped: u64,
}

impl Recording {
    /// Creates the file at `path` (never over an existing file) titled `title`.
    pub fn create(path: &Path, title: &str) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io { path: path.to_owned(), source };
        let mut file = File::options().write(true).create_new(true).open(path).map_err(io)?;
        let mut head = Vec::new();
        let mut writer = WebmWriter::new(&mut head);
        writer
            .write(&MatroskaSpec::Ebml(Master::Full(vec![
                MatroskaSpec::EbmlVersion(1),
                MatroskaSpec::EbmlReadVersion(1),
                MatroskaSpec::EbmlMaxIdLength(4),
                MatroskaSpec::EbmlMaxSizeLength(8),
                MatroskaSpec::DocType("matroska".into()),
                MatroskaSpec::DocTypeVersion(4),
                MatroskaSpec::DocTypeReadVersion(2),
            ])))
            .map_err(|e| RecordError::Encode(e.to_string()))?;
        drop(writer);
        // The segment's size is "unknown" (all ones) until finish writes it.
        head.extend_from_slice(&SEGMENT_ID);
        head.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let segment_data = head.len() as u64;
        head.extend_from_slice(&void(HEAD_ROOM));
        file.write_all(&head).map_err(io)?;
        let mut recording = Self {
            path: path.to_owned(),
            file,
            title: title.to_owned(),
            date: SystemTime::now(),
            segment_data,
            end: head.len() as u64,
            tracks: Vec::new(),
            held: BTreeMap::new(),
            arrivals: 0,
            newest_ms: 0,
            written_ms: 0,
            cluster: Cluster::default(),
            cues: Vec::new(),
            blocks: 0,
            skipped: 0,
        };
        recording.write_head(None)?;
        Ok(recording)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a track named `name` (shown by players: "Alice: camera"). An audio track has
    /// `channels` channels (1 or 2; Opus decodes either packet into either).
    pub fn add_track(&mut self, kind: TrackKind, name: &str, channels: u8) -> Result<TrackId, RecordError> {
        if self.tracks.len() >= MAX_TRACKS {
            return Err(RecordError::TooManyTracks);
        }
        self.tracks.push(Track {
            kind,
            name: name.chars().take(100).collect(),
            channels: channels.clamp(1, 2),
            video: None,
            last_ms: None,
            step_ms: if kind == TrackKind::Audio { 20 } else { 33 },
            blocks: 0,
        });
        if kind == TrackKind::Audio {
            self.write_head(None)?;
        }
        Ok(TrackId(self.tracks.len() as u64))
    }

    /// Adds an H.264 access unit (Annex B: start codes between NAL units) at `at` from the
    /// recording's start. Returns whether it will be written: access units before the track's
    /// first keyframe are not (nothing could decode them).
    pub fn video(&mut self, track: TrackId, at: Duration, annex_b: &[u8]) -> Result<bool, RecordError> {
        let number = track.0;
        let bad = |why| RecordError::BadData { track: number, why };
        let slot = self.track(track, TrackKind::Video)?;
        if annex_b.len() > MAX_BLOCK {
            return Err(bad("an access unit over 8 MiB"));
        }
        let nals: Vec<&[u8]> = annex_b_nals(annex_b).collect();
        if nals.is_empty() {
            return Err(bad("no H.264 NAL unit in it"));
        }
        let keyframe = nals.iter().any(|n| n[0] & 0x1F == 5);
        if let (true, Some((width, height, _))) = (keyframe, &slot.video)
            && let Some(sps) = nals.iter().find(|n| n[0] & 0x1F == 7)
            && let Some(now) = sps_size(sps)
            && now != (*width, *height)
        {
            return Err(RecordError::SizeChanged { track: number, was: (*width, *height), now });
        }
        let mut described = false;
        if slot.video.is_none() {
            if !keyframe {
                self.skipped += 1;
                return Ok(false);
            }
            let sps = nals.iter().find(|n| n[0] & 0x1F == 7).ok_or(bad("a keyframe without its SPS"))?;
            let pps = nals.iter().find(|n| n[0] & 0x1F == 8).ok_or(bad("a keyframe without its PPS"))?;
            if sps.len() > MAX_PARAMETER_SET || pps.len() > MAX_PARAMETER_SET {
                return Err(bad("a parameter set over 256 bytes"));
            }
            let (width, height) = sps_size(sps).ok_or(bad("an unreadable SPS"))?;
            slot.video = Some((width, height, avc_config(sps, pps)));
            described = true;
        }
        let mut data = Vec::with_capacity(annex_b.len() + 4 * nals.len());
        for nal in &nals {
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(nal);
        }
        if described {
            self.write_head(None)?;
        }
        self.hold(number, at, keyframe, data)?;
        Ok(true)
    }

    /// Adds an Opus packet at `at` from the recording's start.
    pub fn audio(&mut self, track: TrackId, at: Duration, packet: &[u8]) -> Result<(), RecordError> {
        let number = track.0;
        self.track(track, TrackKind::Audio)?;
        if packet.is_empty() || packet.len() > 1_275 * 3 {
            return Err(RecordError::BadData {
                track: number,
                why: "not an Opus packet (empty or too long)",
            });
        }
        self.hold(number, at, true, packet.to_vec())
    }

    /// Writes what is held, the cues, the duration and the segment's size, and closes the file.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordError> {
        self.flush_held(u64::MAX)?;
        self.close_cluster()?;
        let cues_at = if self.cues.is_empty() { None } else { Some(self.write_cues()?) };
        let duration_ms = self.duration_ms();
        self.write_head(Some((cues_at.unwrap_or(0), duration_ms)))?;
        // The segment's size, now known.
        let size = self.end - self.segment_data;
        let mut field = size.to_be_bytes();
        field[0] = 0x01;
        let at = self.segment_data - 8;
        self.write_at(at, &field)?;
        let io = |source| RecordError::Io { path: self.path.clone(), source };
        self.file.sync_all().map_err(io)?;
        Ok(RecordingSummary {
            path: self.path.clone(),
            duration: Duration::from_millis(duration_ms),
            bytes: self.end,
            tracks: self.tracks.iter().filter(|t| t.blocks > 0).count(),
            blocks: self.blocks,
            skipped: self.skipped,
        })
    }

    fn track(&mut self, track: TrackId, kind: TrackKind) -> Result<&mut Track, RecordError> {
        match self.tracks.get_mut((track.0 as usize).wrapping_sub(1)) {
            Some(slot) if slot.kind == kind => Ok(slot),
            Some(_) => Err(RecordError::BadData {
                track: track.0,
                why: if kind == TrackKind::Video {
                    "video for an audio track"
                } else {
                    "audio for a video track"
                },
            }),
            None => Err(RecordError::NoSuchTrack(track.0)),
        }
    }

    /// The end of the last block, from the recording's start (time 0 of every track).
    fn duration_ms(&self) -> u64 {
        self.tracks.iter().filter_map(|t| t.last_ms.map(|last| last + t.step_ms)).max().unwrap_or(0)
    }

    fn hold(&mut self, track: u64, at: Duration, keyframe: bool, data: Vec<u8>) -> Result<(), RecordError> {
        let ms = at.as_millis() as u64;
        self.newest_ms = self.newest_ms.max(ms);
        self.arrivals += 1;
        self.held.insert((ms, self.arrivals), Block { track, keyframe, data });
        let ripe = self.newest_ms.saturating_sub(REORDER.as_millis() as u64);
        self.flush_held(ripe)
    }

    /// Writes the held blocks up to `until_ms`, in order.
    fn flush_held(&mut self, until_ms: u64) -> Result<(), RecordError> {
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > until_ms {
                break;
            }
            let ((ms, _), block) = entry.remove_entry();
            self.write_block(ms, block)?;
        }
        Ok(())
    }

    fn write_block(&mut self, ms: u64, block: Block) -> Result<(), RecordError> {
        let slot = &mut self.tracks[block.track as usize - 1];
        // Never backwards: in the file, or in the track (a block later than the reordering
        // window moves up to the last one written).
        let mut ms = ms.max(self.written_ms);
        if let Some(last) = slot.last_ms {
            ms = ms.max(last + 1);
            slot.step_ms = (ms - last).clamp(1, 1_000);
        }
        slot.last_ms = Some(ms);
        slot.blocks += 1;
        let video_keyframe = slot.kind == TrackKind::Video && block.keyframe;
        self.written_ms = ms;
        let cluster_age = ms.saturating_sub(self.cluster.start_ms);
        if !self.cluster.blocks.is_empty()
            && (cluster_age >= CLUSTER_SPAN.as_millis() as u64
                || self.cluster.bytes + block.data.len() > CLUSTER_BYTES
                || (video_keyframe && cluster_age >= 1_000))
        {
            self.close_cluster()?;
        }
        if self.cluster.blocks.is_empty() {
            self.cluster.start_ms = ms;
        }
        // One cue per video track per cluster, at its first keyframe there (the cluster's
        // position is known once written: filled in then).
        if video_keyframe && !self.cues.iter().any(|c| c.2 == u64::MAX && c.1 == block.track) {
            self.cues.push((ms, block.track, u64::MAX));
        }
        self.cluster.bytes += block.data.len() + 16;
        self.cluster.blocks.push((ms, block));
        self.blocks += 1;
        Ok(())
    }

    fn close_cluster(&mut self) -> Result<(), RecordError> {
        if self.cluster.blocks.is_empty() {
            return Ok(());
        }
        let cluster = std::mem::take(&mut self.cluster);
        let mut children = Vec::with_capacity(cluster.blocks.len() + 1);
        children.push(MatroskaSpec::Timestamp(cluster.start_ms));
        for (ms, block) in &cluster.blocks {
            let relative = i16::try_from(ms - cluster.start_ms).unwrap_or(i16::MAX);
            let simple = SimpleBlock::new_uncheked(
                &block.data,
                block.track,
                relative,
                false,
                None,
                false,
                block.keyframe,
            );
            children.push(simple.into());
        }
        let bytes = encode(&MatroskaSpec::Cluster(Master::Full(children)))?;
        let position = self.end - self.segment_data;
        for cue in self.cues.iter_mut().filter(|c| c.2 == u64::MAX) {
            cue.2 = position;
        }
        let end = self.end;
        self.write_at(end, &bytes)?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Writes the cues at the end; returns their position in the segment.
    fn write_cues(&mut self) -> Result<u64, RecordError> {
        let points = self
            .cues
            .iter()
            .map(|&(ms, track, cluster)| {
                MatroskaSpec::CuePoint(Master::Full(vec![
                    MatroskaSpec::CueTime(ms),
                    MatroskaSpec::CueTrackPositions(Master::Full(vec![
                        MatroskaSpec::CueTrack(track),
                        MatroskaSpec::CueClusterPosition(cluster),
                    ])),
                ]))
            })
            .collect();
        let bytes = encode(&MatroskaSpec::Cues(Master::Full(points)))?;
        let position = self.end - self.segment_data;
        let end = self.end;
        self.write_at(end, &bytes)?;
        self.end += bytes.len() as u64;
        Ok(position)
    }

    /// Rewrites the head of the segment: `SeekHead`, `Info` (with the duration and the cues'
    /// position once finished) and the tracks known so far, then a `Void` to the first cluster.
    fn write_head(&mut self, finished: Option<(u64, u64)>) -> Result<(), RecordError> {
        let info = self.info(finished.map(|(_, duration)| duration))?;
        // A finished file lists only the tracks that got blocks.
        let tracks = self.tracks_element(finished.is_some())?;
        // The seek head's own size depends on the positions it holds: sized with placeholders
        // of the same width (8-byte positions).
        let seek = |id: &[u8], position: u64| {
            MatroskaSpec::Seek(Master::Full(vec![
                MatroskaSpec::SeekID(id.to_vec()),
                MatroskaSpec::SeekPosition(position | (1 << 56)),
            ]))
        };
        let cues = finished.map(|(at, _)| at).filter(|&at| at > 0);
        let seek_head = |info_at: u64, tracks_at: u64| {
            let mut entries = vec![seek(&INFO_ID, info_at)];
            if !tracks.is_empty() {
                entries.push(seek(&TRACKS_ID, tracks_at));
            }
            if let Some(at) = cues {
                entries.push(seek(&CUES_ID, at));
            }
            encode(&MatroskaSpec::SeekHead(Master::Full(entries)))
        };
        let size = seek_head(0, 0)?.len() as u64;
        let head = seek_head(size, size + info.len() as u64)?;
        // Positions were written with a bit set to fix their width; take it off again.
        let head = unfix_positions(head);
        let mut all = head;
        all.extend_from_slice(&info);
        all.extend_from_slice(&tracks);
        let room = HEAD_ROOM;
        if all.len() + 9 > room {
            return Err(RecordError::TooManyTracks);
        }
        all.extend_from_slice(&void(room - all.len()));
        let at = self.segment_data;
        self.write_at(at, &all)
    }

    fn info(&self, duration_ms: Option<u64>) -> Result<Vec<u8>, RecordError> {
        let since_2001 = self
            .date
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64 - (MATROSKA_EPOCH as i64) * 1_000_000_000);
        let app = concat!("confer ", env!("CARGO_PKG_VERSION"));
        let mut children = vec![
            MatroskaSpec::TimestampScale(1_000_000),
            MatroskaSpec::MuxingApp(app.into()),
            MatroskaSpec::WritingApp(app.into()),
            MatroskaSpec::DateUTC(since_2001),
            MatroskaSpec::Title(self.title.clone()),
        ];
        if let Some(ms) = duration_ms {
            children.push(MatroskaSpec::Duration(ms as f64));
        }
        encode(&MatroskaSpec::Info(Master::Full(children)))
    }

    fn tracks_element(&self, used_only: bool) -> Result<Vec<u8>, RecordError> {
        let mut entries = Vec::new();
        let listed = |track: &Track| track.described() && (!used_only || track.blocks > 0);
        for (index, track) in self.tracks.iter().enumerate().filter(|(_, t)| listed(t)) {
            let number = index as u64 + 1;
            let mut entry = vec![
                MatroskaSpec::TrackNumber(number),
                MatroskaSpec::TrackUID(number),
                MatroskaSpec::FlagLacing(0),
                MatroskaSpec::Name(track.name.clone()),
                MatroskaSpec::Language("und".into()),
            ];
            match (track.kind, &track.video) {
                (TrackKind::Video, Some((width, height, config))) => {
                    entry.extend([
                        MatroskaSpec::TrackType(1),
                        MatroskaSpec::CodecID("V_MPEG4/ISO/AVC".into()),
                        MatroskaSpec::CodecPrivate(config.clone()),
                        MatroskaSpec::Video(Master::Full(vec![
                            MatroskaSpec::PixelWidth(u64::from(*width)),
                            MatroskaSpec::PixelHeight(u64::from(*height)),
                        ])),
                    ]);
                }
                (TrackKind::Video, None) => continue,
                (TrackKind::Audio, _) => {
                    entry.extend([
                        MatroskaSpec::TrackType(2),
                        MatroskaSpec::CodecID("A_OPUS".into()),
                        MatroskaSpec::CodecPrivate(opus_head(track.channels)),
                        MatroskaSpec::CodecDelay(0),
                        MatroskaSpec::SeekPreRoll(80_000_000),
                        MatroskaSpec::Audio(Master::Full(vec![
                            MatroskaSpec::SamplingFrequency(48_000.0),
                            MatroskaSpec::Channels(u64::from(track.channels)),
                        ])),
                    ]);
                }
            }
            entries.push(MatroskaSpec::TrackEntry(Master::Full(entry)));
        }
        // A `Tracks` element must hold an entry: none yet, none written.
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        encode(&MatroskaSpec::Tracks(Master::Full(entries)))
    }

    fn write_at(&mut self, at: u64, bytes: &[u8]) -> Result<(), RecordError> {
        let io = |source| RecordError::Io { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        self.file.write_all(bytes).map_err(io)
    }
}

/// One child of the segment, encoded. The writer checks where each element may stand, so it is
/// written inside a segment of unknown size whose header (ID and 8-byte size) is cut off again.
fn encode(tag: &MatroskaSpec) -> Result<Vec<u8>, RecordError> {
    let failed = |e: webm_iterable::errors::TagWriterError| RecordError::Encode(e.to_string());
    let mut bytes = Vec::new();
    let mut writer = WebmWriter::new(&mut bytes);
    writer
        .write_advanced(&MatroskaSpec::Segment(Master::Start), WriteOptions::is_unknown_sized_element())
        .map_err(failed)?;
    writer.write(tag).map_err(failed)?;
    writer.write(&MatroskaSpec::Segment(Master::End)).map_err(failed)?;
    drop(writer);
    if bytes.get(..4) != Some(&SEGMENT_ID[..]) || bytes.len() < 12 {
        return Err(RecordError::Encode("the segment's header was not where expected".into()));
    }
    Ok(bytes.split_off(12))
}

/// A `Void` element of exactly `total` bytes (at least 9).
fn void(total: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; total];
    bytes[0] = VOID_ID;
    let mut size = ((total - 9) as u64).to_be_bytes();
    size[0] = 0x01;
    bytes[1..9].copy_from_slice(&size);
    bytes
}

/// `SeekPosition`s were written as 8-byte integers with bit 56 set (so the seek head's size does
/// not depend on them); clears that bit in each (the element is `53 AC 88` then 8 bytes).
fn unfix_positions(mut head: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while i + 11 <= head.len() {
        if head[i..i + 3] == [0x53, 0xAC, 0x88] {
            head[i + 3] = 0;
            i += 11;
        } else {
            i += 1;
        }
    }
    head
}

/// The NAL units of an Annex B byte stream (start codes of 3 or 4 bytes), empty ones skipped.
fn annex_b_nals(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
        // A 4-byte start code's leading zero belongs to it, not to this NAL unit.
        while end > start && stream[end - 1] == 0 && starts.get(k + 1).is_some() {
            end -= 1;
        }
        if end > start {
            nals.push(&stream[start..end]);
        }
    }
    nals.into_iter()
}

/// The picture size a sequence parameter set describes (cropping applied).
fn sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::nal::sps::SeqParameterSet;
    let rbsp = h264_reader::rbsp::decode_nal(sps).ok()?;
    let parsed = SeqParameterSet::from_bits(h264_reader::rbsp::BitReader::new(&rbsp[..])).ok()?;
    let (width, height) = parsed.pixel_dimensions().ok()?;
    (width > 0 && height > 0 && width <= 8_192 && height <= 8_192).then_some((width, height))
}

/// The `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1) for one SPS and one PPS,
/// NAL units in the blocks prefixed by 4-byte lengths.
fn avc_config(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut config = vec![1, sps.get(1).copied().unwrap_or(66), sps.get(2).copied().unwrap_or(0)];
    config.push(sps.get(3).copied().unwrap_or(31));
    config.push(0xFF); // 6 reserved bits, length size 4 (3 + 1)
    config.push(0xE1); // 3 reserved bits, one SPS
    config.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    config.extend_from_slice(sps);
    config.push(1);
    config.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    config.extend_from_slice(pps);
    config
}

/// The Ogg Opus identification header (RFC 7845 §5.1), which `A_OPUS` keeps as its
/// `CodecPrivate`: no pre-skip (the streams start mid-call), 48 kHz, mapping family 0.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

#[cfg(test)]
mod tests;
