//! File transfer between peers (docs/PROTOCOL.md, section 10): each file goes to each peer on a
//! data channel of its own, labelled `file`, so a large file never holds up chat or state on
//! the `confer` channel. The first message is a JSON header (name, size, SHA-256), then the
//! bytes in binary messages of at most [`CHUNK`]; the receiver checks the size and the hash and
//! answers `file_done` (ok, or why not) before the sender closes the channel.
//!
//! What arrives is untrusted: the header is checked (a plain file name, at most [`MAX_FILE`]
//! bytes), the received file is written under a temporary name and renamed only once complete
//! and verified, and anything else (too many bytes, a bad hash, the channel closing early)
//! deletes it and says why. The sender keeps at most [`HIGH_WATER`] bytes queued in the channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::data_channel::data_channel_state::RTCDataChannelState;

use confer_proto::PeerId;

/// The data channel label of a file transfer.
pub(crate) const FILE_LABEL: &str = "file";
/// The largest file sent or taken, in bytes.
pub const MAX_FILE: u64 = 512 * 1024 * 1024;
/// Bytes per binary message.
pub(crate) const CHUNK: usize = 16 * 1024;
/// The sender waits while more than this is queued in the channel.
pub(crate) const HIGH_WATER: usize = 1024 * 1024;
/// ...until it drains below this.
const LOW_WATER: usize = 256 * 1024;
/// Messages the receiver holds before the channel's reader waits for it.
const INBOX: usize = 64;
/// How often progress is told.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long the sender waits for the receiver's verdict once everything is sent.
const VERDICT_WAIT: Duration = Duration::from_secs(30);
/// How long one message may take to be handed to the channel.
const SEND_WAIT: Duration = Duration::from_secs(10);
/// The longest file name taken, in bytes.
const MAX_NAME: usize = 255;

/// What the two ends of a file channel say to each other (text messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FileMessage {
    /// First on the channel, from the sender.
    File {
        /// The transfer's id (the sender's; 1 to 32 letters, digits, `-`).
        id: String,
        /// The file's name, without any folder.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256, 64 lowercase hex digits.
        sha256: String,
    },
    /// Last, from the receiver: the file arrived whole (`ok`), or why not.
    FileDone {
        /// Arrived and verified.
        ok: bool,
        /// Why not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read or written here.
    #[error("{0}")]
    Io(String),
    /// Over [`MAX_FILE`].
    #[error("the file is {0} bytes; at most {MAX_FILE} are sent")]
    TooLarge(u64),
    /// The header was not one this version reads, or named no plain file.
    #[error("not a file offer: {0}")]
    BadHeader(String),
    /// More bytes came than the header said, or the hash did not match.
    #[error("the file arrived damaged: {0}")]
    Damaged(String),
    /// The channel closed before the whole file was through (the peer left, or stopped it).
    #[error("the transfer stopped after {done} of {size} bytes (the other side left or closed it)")]
    Cut {
        /// Bytes through.
        done: u64,
        /// Bytes in the file.
        size: u64,
    },
    /// The receiver refused the file or found it damaged, in its words.
    #[error("the receiver could not take it: {0}")]
    Refused(String),
}

/// What a transfer reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileEvent {
    /// A file to send was checked and hashed: it can go.
    Ready { id: String, name: String, path: PathBuf, size: u64, sha256: String },
    /// Bytes through so far (sent or received).
    Progress { id: String, name: String, done: u64, size: u64, sending: bool },
    /// Received whole and verified, saved at `path`.
    Received { id: String, name: String, size: u64, sha256: String, path: PathBuf },
    /// Sent whole; the receiver verified it.
    Sent { id: String, name: String, size: u64 },
    /// Failed, sending or receiving.
    Failed { id: String, name: String, sending: bool, error: FileError },
}

/// A plain file name from an untrusted one: no folders, no control characters, not `.`/`..`,
/// at most [`MAX_NAME`] bytes.
pub(crate) fn plain_name(name: &str) -> Result<String, FileError> {
    let bad = |why: &str| {
        FileError::BadHeader(format!("file name {:?}: {why}", name.chars().take(64).collect::<String>()))
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("empty or too long"));
    }
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return Err(bad("not a plain file name"));
    }
    if name == "." || name == ".." {
        return Err(bad("not a file"));
    }
    Ok(name.to_owned())
}

fn check_id(id: &str) -> Result<(), FileError> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(FileError::BadHeader("a transfer id is 1 to 32 letters, digits or -".into()));
    }
    Ok(())
}

/// `dir/name`, or `dir/name (2)`, `(3)`…: the first that does not exist yet.
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    (2..).map(|n| dir.join(format!("{stem} ({n}){ext}"))).find(|p| !p.exists()).unwrap_or(first)
}

/// Checks a file to send (a plain name, at most [`MAX_FILE`], before reading it) and hashes it:
/// its size and SHA-256.
pub(crate) async fn prepare(path: &Path) -> Result<(u64, String), FileError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    plain_name(&name)?;
    let size =
        tokio::fs::metadata(path).await.map_err(|e| FileError::Io(format!("{}: {e}", path.display())))?.len();
    if size > MAX_FILE {
        return Err(FileError::TooLarge(size));
    }
    let (sha256, size) = digest(path).await?;
    if size > MAX_FILE {
        return Err(FileError::TooLarge(size));
    }
    Ok((size, sha256))
}

/// SHA-256 and size of the file at `path` (read on a blocking thread).
async fn digest(path: &Path) -> Result<(String, u64), FileError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file =
            std::fs::File::open(&path).map_err(|e| FileError::Io(format!("{}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(|e| FileError::Io(e.to_string()))?;
        Ok((hex(&hasher.finalize()), size))
    })
    .await
    .map_err(|e| FileError::Io(e.to_string()))?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `channel` is open (or gives up after 10 s).
async fn opened(channel: &RTCDataChannel) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.ready_state() != RTCDataChannelState::Open {
        if channel.ready_state() == RTCDataChannelState::Closed || Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// What a channel's handlers hand the transfer task, in order.
enum Inbound {
    Message(DataChannelMessage),
    Closed,
}

/// A `file` channel the peer opened, with its handlers in place.
pub(crate) struct Incoming {
    channel: Arc<RTCDataChannel>,
    messages: mpsc::Receiver<Inbound>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("label", &self.channel.label()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Message(_) => "Message",
            Self::Closed => "Closed",
        })
    }
}

/// Takes a `file` channel as the peer opens it. Called in the stack's `on_data_channel`, before
/// the channel reads anything, so nothing it receives is missed.
pub(crate) fn accept(channel: Arc<RTCDataChannel>) -> Incoming {
    let messages = inbox(&channel);
    Incoming { channel, messages }
}

impl Incoming {
    /// Refuses it (too many at once from one peer): closed once open.
    pub(crate) fn refuse(self) {
        refuse(&self.channel);
    }
}

/// Refuses a channel the peer opened: closed once open (closing it before the stack has opened
/// it would not stick).
pub(crate) fn refuse(channel: &Arc<RTCDataChannel>) {
    let closing = Arc::clone(channel);
    channel.on_open(Box::new(move || {
        Box::pin(async move {
            let _ = closing.close().await;
        })
    }));
}

/// Routes `channel`'s messages and its close into one bounded queue: while the queue is full,
/// the channel's reader waits (backpressure to the sender), and the close comes after every
/// message read before it.
fn inbox(channel: &RTCDataChannel) -> mpsc::Receiver<Inbound> {
    let (tx, rx) = mpsc::channel(INBOX);
    let messages = tx.clone();
    channel.on_message(Box::new(move |message: DataChannelMessage| {
        let messages = messages.clone();
        Box::pin(async move {
            let _ = messages.send(Inbound::Message(message)).await;
        })
    }));
    channel.on_close(Box::new(move || {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(Inbound::Closed).await;
        })
    }));
    rx
}

/// Where a transfer's events go, tagged with the peer on the other side.
struct Report {
    peer: PeerId,
    events: mpsc::Sender<(PeerId, FileEvent)>,
}

impl Report {
    /// Waits for room ([`crate::queues::FILE_EVENTS`]): a transfer goes no faster than the
    /// engine takes its reports.
    async fn tell(&self, event: FileEvent) {
        let _ = self.events.send((self.peer.clone(), event)).await;
    }
}

/// Sends the file at `path` as `name` (its hash and size already known) on `channel`, a fresh
/// `file` channel to one peer, reporting to `events`.
pub(crate) async fn send(
    channel: Arc<RTCDataChannel>,
    path: PathBuf,
    (id, name, size, sha256): (String, String, u64, String),
    to: PeerId,
    events: mpsc::Sender<(PeerId, FileEvent)>,
) {
    let report = Report { peer: to, events };
    let result = send_inner(&channel, &path, (&id, &name, size, &sha256), &report).await;
    let _ = channel.close().await;
    report
        .tell(match result {
            Ok(()) => FileEvent::Sent { id, name, size },
            Err(error) => FileEvent::Failed { id, name, sending: true, error },
        })
        .await;
}

async fn send_inner(
    channel: &Arc<RTCDataChannel>,
    path: &Path,
    (id, name, size, sha256): (&str, &str, u64, &str),
    report: &Report,
) -> Result<(), FileError> {
    let mut replies = inbox(channel);
    if !opened(channel).await {
        return Err(FileError::Cut { done: 0, size });
    }
    let drained = Arc::new(Notify::new());
    channel.set_buffered_amount_low_threshold(LOW_WATER).await;
    let notify = Arc::clone(&drained);
    channel
        .on_buffered_amount_low(Box::new(move || {
            notify.notify_one();
            Box::pin(async {})
        }))
        .await;
    let header =
        FileMessage::File { id: id.to_owned(), name: name.to_owned(), size, sha256: sha256.to_owned() };
    let cut = |done| FileError::Cut { done, size };
    channel.send_text(serde_json::to_string(&header).unwrap_or_default()).await.map_err(|_| cut(0))?;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| FileError::Io(e.to_string()))?;
    let (mut done, mut told) = (0u64, Instant::now());
    let mut buffer = vec![0u8; CHUNK];
    while done < size {
        let n = file.read(&mut buffer).await.map_err(|e| FileError::Io(e.to_string()))?;
        if n == 0 {
            return Err(FileError::Io("the file got shorter while it was sent".into()));
        }
        while channel.buffered_amount().await > HIGH_WATER {
            // Woken when the queue drains; the timeout only guards a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(200), drained.notified()).await;
            if channel.ready_state() != RTCDataChannelState::Open {
                return Err(cut(done));
            }
        }
        // (Bounded: a stack that stops taking data must not hold the transfer forever.)
        match tokio::time::timeout(SEND_WAIT, channel.send(&Bytes::copy_from_slice(&buffer[..n]))).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Err(cut(done)),
        }
        done += n as u64;
        if told.elapsed() >= PROGRESS_EVERY {
            told = Instant::now();
            report
                .tell(FileEvent::Progress {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    done,
                    size,
                    sending: true,
                })
                .await;
        }
    }
    // The receiver's verdict (the channel's close before it means it left).
    let verdict = tokio::time::timeout(VERDICT_WAIT, async {
        while let Some(inbound) = replies.recv().await {
            match inbound {
                Inbound::Message(m) if m.is_string => {
                    if let Ok(FileMessage::FileDone { ok, error }) = serde_json::from_slice(&m.data) {
                        return if ok { Ok(()) } else { Err(FileError::Refused(error.unwrap_or_default())) };
                    }
                }
                Inbound::Message(_) => {}
                Inbound::Closed => return Err(cut(done)),
            }
        }
        Err(cut(done))
    })
    .await;
    verdict.unwrap_or_else(|_| Err(FileError::Refused("no answer within 30 s".into())))
}

/// Receives one file on a `file` channel the peer opened into `dir`, reporting to `events`.
pub(crate) async fn receive(
    incoming: Incoming,
    dir: PathBuf,
    from: PeerId,
    events: mpsc::Sender<(PeerId, FileEvent)>,
) {
    let Incoming { channel, mut messages } = incoming;
    let mut header = None;
    let report = Report { peer: from.clone(), events };
    let result = receive_inner(&channel, &mut messages, &dir, &mut header, &report).await;
    let (id, name) = header.clone().unwrap_or_else(|| ("?".to_owned(), "?".to_owned()));
    let event = match result {
        Ok((size, sha256, path)) => {
            tracing::info!(peer = %from, %name, size, "file received");
            FileEvent::Received { id, name, size, sha256, path }
        }
        Err(error) => {
            tracing::info!(peer = %from, %name, %error, "file not received");
            let verdict = FileMessage::FileDone { ok: false, error: Some(error.to_string()) };
            let _ = channel.send_text(serde_json::to_string(&verdict).unwrap_or_default()).await;
            FileEvent::Failed { id, name, sending: false, error }
        }
    };
    report.tell(event).await;
    // The sender closes once it has the verdict; a sender that does not is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(inbound) = messages.recv().await {
            if matches!(inbound, Inbound::Closed) {
                break;
            }
        }
    })
    .await;
    let _ = channel.close().await;
}

async fn receive_inner(
    channel: &RTCDataChannel,
    messages: &mut mpsc::Receiver<Inbound>,
    dir: &Path,
    header: &mut Option<(String, String)>,
    report: &Report,
) -> Result<(u64, String, PathBuf), FileError> {
    // The header first.
    let (id, name, size, sha256) = match messages.recv().await {
        Some(Inbound::Message(m)) if m.is_string => match serde_json::from_slice(&m.data) {
            Ok(FileMessage::File { id, name, size, sha256 }) => (id, name, size, sha256),
            Ok(_) => return Err(FileError::BadHeader("the first message must be `file`".into())),
            Err(e) => return Err(FileError::BadHeader(e.to_string())),
        },
        Some(Inbound::Message(_)) => {
            return Err(FileError::BadHeader("the first message must be text".into()));
        }
        Some(Inbound::Closed) | None => return Err(FileError::Cut { done: 0, size: 0 }),
    };
    check_id(&id)?;
    let name = plain_name(&name)?;
    *header = Some((id.clone(), name.clone()));
    if size > MAX_FILE {
        return Err(FileError::TooLarge(size));
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(FileError::BadHeader("sha256 must be 64 lowercase hex digits".into()));
    }
    tokio::fs::create_dir_all(dir).await.map_err(|e| FileError::Io(format!("{}: {e}", dir.display())))?;
    let part = Part(dir.join(format!(".{id}.part")));
    let hash = write_body(messages, &part.0, (&id, &name, size), report).await?;
    if hash != sha256 {
        return Err(FileError::Damaged(format!("its SHA-256 is {hash}, not {sha256}")));
    }
    let path = free_path(dir, &name);
    tokio::fs::rename(&part.0, &path).await.map_err(|e| FileError::Io(e.to_string()))?;
    let verdict = FileMessage::FileDone { ok: true, error: None };
    let _ = channel.send_text(serde_json::to_string(&verdict).unwrap_or_default()).await;
    Ok((size, sha256, path))
}

/// A file being received: deleted when dropped unless it was renamed into place first, so
/// neither a failure nor the call ending mid-way (the task aborted) leaves a partial file.
struct Part(PathBuf);

impl Drop for Part {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the body to `part`; returns its SHA-256.
async fn write_body(
    messages: &mut mpsc::Receiver<Inbound>,
    part: &Path,
    (id, name, size): (&str, &str, u64),
    report: &Report,
) -> Result<String, FileError> {
    let mut file =
        tokio::fs::File::create(part).await.map_err(|e| FileError::Io(format!("{}: {e}", part.display())))?;
    let mut hasher = Sha256::new();
    let (mut done, mut told) = (0u64, Instant::now());
    while done < size {
        let data = match messages.recv().await {
            Some(Inbound::Message(m)) if !m.is_string => m.data,
            Some(Inbound::Message(_)) => {
                return Err(FileError::Damaged("text in the middle of the file".into()));
            }
            Some(Inbound::Closed) | None => return Err(FileError::Cut { done, size }),
        };
        if done + data.len() as u64 > size {
            return Err(FileError::Damaged(format!("more than the {size} bytes announced")));
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(|e| FileError::Io(e.to_string()))?;
        done += data.len() as u64;
        if told.elapsed() >= PROGRESS_EVERY {
            told = Instant::now();
            let progress =
                FileEvent::Progress { id: id.to_owned(), name: name.to_owned(), done, size, sending: false };
            report.tell(progress).await;
        }
    }
    file.flush().await.map_err(|e| FileError::Io(e.to_string()))?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_taken() {
        assert_eq!(plain_name("report 2026.pdf").unwrap(), "report 2026.pdf");
        assert_eq!(plain_name("Ärger.txt").unwrap(), "Ärger.txt");
        for bad in ["", ".", "..", "../etc/passwd", "a/b", "a\\b", "bell\u{7}", &"x".repeat(256)] {
            assert!(matches!(plain_name(bad), Err(FileError::BadHeader(_))), "{bad:?}");
        }
        assert!(check_id("a1-B2").is_ok());
        assert!(check_id("../x").is_err() && check_id("").is_err());
    }

    #[test]
    fn a_file_that_exists_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "old").unwrap();
        std::fs::write(dir.path().join("notes (2).txt"), "old").unwrap();
        assert_eq!(free_path(dir.path(), "notes.txt"), dir.path().join("notes (3).txt"));
        assert_eq!(free_path(dir.path(), "fresh.txt"), dir.path().join("fresh.txt"));
        std::fs::write(dir.path().join("Makefile"), "").unwrap();
        assert_eq!(free_path(dir.path(), "Makefile"), dir.path().join("Makefile (2)"));
    }

    #[test]
    fn the_wire_messages_read_as_documented() {
        let header: FileMessage = serde_json::from_str(
            r#"{"type":"file","id":"f1","name":"a.txt","size":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}"#,
        )
        .unwrap();
        assert!(matches!(header, FileMessage::File { size: 3, .. }));
        let done: FileMessage =
            serde_json::from_str(r#"{"type":"file_done","ok":false,"error":"disk full"}"#).unwrap();
        assert_eq!(done, FileMessage::FileDone { ok: false, error: Some("disk full".into()) });
    }
}
