//! What relay instances say to each other when they share rooms (see `cluster`), and the queue
//! it leaves by. Kept apart from Redis: the room registry only needs to hand a frame to a
//! connection held by another instance, not to know how it gets there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use confer_proto::{ClientMessage, ErrorCode, RoomId};
use tokio::sync::mpsc;

use crate::room::{ConnId, JoinRequest, ResumeRequest};

/// A relay instance in a cluster: random per process, shown as 16 hex digits.
pub(crate) type InstanceId = u64;

/// One message from one instance to another. The first four go to the instance holding a room
/// (from the instance its client is connected to), the last two come back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum Envelope {
    /// A client joins the room (its invite already verified by the sender).
    Join { room: RoomId, conn: ConnId, waiting_room: bool, request: JoinRequest },
    /// A client resumes its seat (its resume token already verified by the sender).
    Resume { room: RoomId, conn: ConnId, request: ResumeRequest },
    /// A seated client said this (already validated by the sender).
    Message { room: RoomId, conn: ConnId, message: ClientMessage },
    /// The client's connection ended.
    Disconnect { room: RoomId, conn: ConnId },
    /// Write this frame to the connection.
    Send { conn: ConnId, frame: String },
    /// End the connection, with an error or normally (after `leave`).
    Close { conn: ConnId, error: Option<(ErrorCode, String)> },
    /// Envelopes from the receiver were lost on the way to the sender: the receiver's clients
    /// seated in rooms the sender holds resume (and say again what was lost).
    Reset,
}

/// One envelope on its way out, as JSON.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) to: InstanceId,
    pub(crate) body: String,
}

/// Envelopes waiting to be written to Redis, at most. A holder's room hands frames to it under
/// the room's lock, so it must never wait: past this, an envelope is dropped, counted, and the
/// receiver sees the gap in its numbering (and makes the clients concerned resume).
pub(crate) const OUTBOX: usize = 16_384;

/// Bytes of envelopes waiting at most (a frame may be 128 KiB): the same policy past it.
pub(crate) const OUTBOX_BYTES: u64 = 64 * 1024 * 1024;

/// The queue envelopes leave by; the cluster's writer drains it in order.
#[derive(Debug)]
pub(crate) struct Outlet {
    tx: mpsc::Sender<Outgoing>,
    /// Envelopes dropped per destination since the writer last looked: it skips as many
    /// numbers, so that the receiver sees a gap.
    skipped: Mutex<HashMap<InstanceId, u64>>,
    pub(crate) dropped: AtomicU64,
    /// Envelopes queued and not yet written (or given up on) by the writer.
    pending: AtomicU64,
    /// Their bytes.
    pending_bytes: AtomicU64,
}

impl Outlet {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let outlet = Self {
            tx,
            skipped: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
        };
        (outlet, rx)
    }

    /// Queues an envelope; false if the queue is full (or the writer is gone) and it was dropped.
    pub(crate) fn send(&self, to: InstanceId, envelope: &Envelope) -> bool {
        // Serialising these types cannot fail (string keys, no failing Serialize impl).
        let body = serde_json::to_string(envelope).unwrap_or_default();
        let len = body.len() as u64;
        self.pending.fetch_add(1, Relaxed);
        let over = self.pending_bytes.fetch_add(len, Relaxed) + len > OUTBOX_BYTES;
        if !over && self.tx.try_send(Outgoing { to, body }).is_ok() {
            return true;
        }
        self.pending.fetch_sub(1, Relaxed);
        self.pending_bytes.fetch_sub(len, Relaxed);
        self.dropped.fetch_add(1, Relaxed);
        *self.skipped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(to).or_default() += 1;
        false
    }

    /// The writer is done with `count` envelopes of `bytes` bytes.
    pub(crate) fn done(&self, count: u64, bytes: u64) {
        self.pending.fetch_sub(count, Relaxed);
        self.pending_bytes.fetch_sub(bytes, Relaxed);
    }

    /// Whether everything queued has been written (or given up on).
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.load(Relaxed) == 0
    }

    /// How many envelopes to `to` were dropped since the last call.
    pub(crate) fn take_skipped(&self, to: InstanceId) -> u64 {
        let mut skipped = self.skipped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if skipped.is_empty() { 0 } else { skipped.remove(&to).unwrap_or(0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_survive_the_round_trip_through_json() {
        let room = RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let envelopes = [
            Envelope::Message { room: room.clone(), conn: 7, message: ClientMessage::Leave },
            Envelope::Disconnect { room, conn: 7 },
            Envelope::Send { conn: 9, frame: r#"{"type":"pong","nonce":1}"#.into() },
            Envelope::Close { conn: 9, error: Some((ErrorCode::ShuttingDown, "bye".into())) },
            Envelope::Reset,
        ];
        for envelope in envelopes {
            let json = serde_json::to_string(&envelope).unwrap();
            assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope, "{json}");
        }
    }

    #[test]
    fn a_full_outbox_drops_and_counts_what_it_could_not_take() {
        let (outlet, mut rx) = Outlet::new();
        for _ in 0..OUTBOX {
            let room = RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
            assert!(outlet.send(1, &Envelope::Disconnect { room, conn: 1 }));
        }
        assert!(!outlet.send(2, &Envelope::Close { conn: 3, error: None }));
        assert!(!outlet.send(2, &Envelope::Close { conn: 3, error: None }));
        assert_eq!(outlet.take_skipped(2), 2);
        assert_eq!(outlet.take_skipped(2), 0, "counted once");
        assert_eq!(outlet.take_skipped(1), 0);
        assert!(rx.try_recv().is_ok());
        assert!(outlet.send(2, &Envelope::Close { conn: 3, error: None }), "room again once drained");
    }

    #[test]
    fn the_outbox_holds_at_most_64_mib_of_frames() {
        let (outlet, mut rx) = Outlet::new();
        let frame = "x".repeat(1024 * 1024);
        let sent = (0..100)
            .take_while(|_| outlet.send(1, &Envelope::Send { conn: 1, frame: frame.clone() }))
            .count();
        assert_eq!(sent, 63, "64 MiB of 1 MiB frames and their envelopes");
        assert_eq!(outlet.take_skipped(1), 1);
        // The writer takes them all.
        let (mut count, mut bytes) = (0, 0);
        while let Ok(out) = rx.try_recv() {
            count += 1;
            bytes += out.body.len() as u64;
        }
        outlet.done(count, bytes);
        assert!(outlet.is_idle());
        assert!(outlet.send(1, &Envelope::Reset), "room again once written");
    }
}
