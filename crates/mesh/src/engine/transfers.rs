//! File transfers as the engine runs them: each file hashed off the task, then sent to every
//! connected peer on a channel of its own; what peers send us received (at most
//! [`MAX_INCOMING`] at once per peer); progress and results said to the app.

use super::*;

/// Files received at once from one peer; a further `file` channel is refused.
pub(super) const MAX_INCOMING: usize = 4;

/// A file transfer with one peer, as far as the engine knows it.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) handle: tokio::task::AbortHandle,
    /// The transfer's id, once known (a received file says it in its header).
    pub(super) id: Option<String>,
    pub(super) name: String,
    pub(super) sending: bool,
    pub(super) done: u64,
    pub(super) size: u64,
}

impl Running {
    pub(super) fn new(
        handle: tokio::task::AbortHandle,
        id: Option<String>,
        name: &str,
        sending: bool,
        size: u64,
    ) -> Self {
        Self { handle, id, name: name.to_owned(), sending, done: 0, size }
    }
}

impl Engine {
    /// Sends the file at `path` to every connected peer.
    /// Checks and hashes the file at `path` off the engine's task (a large file takes seconds);
    /// once that is done ([`FileEvent::Ready`]) it goes to every connected peer.
    pub(super) fn send_file(&mut self, path: std::path::PathBuf) {
        let Some(me) = self.session.as_ref().map(|s| s.peer_id.clone()) else { return };
        let events = self.file_events.clone();
        self.transfers.spawn(async move {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let id = format!("{:016x}", rand::random::<u64>());
            let event = match crate::files::prepare(&path).await {
                Ok((size, sha256)) => FileEvent::Ready { id, name, path, size, sha256 },
                Err(error) => FileEvent::Failed { id, name, sending: true, error },
            };
            let _ = events.send((me, event)).await;
        });
    }

    /// Opens a `file` channel to every connected peer and sends the file on each.
    pub(super) async fn send_ready_file(
        &mut self,
        (id, name, path, size, sha256): (String, String, std::path::PathBuf, u64, String),
    ) {
        for (peer, slot) in &self.peers {
            if !self.call.is_connected(peer) {
                continue;
            }
            match slot.peer.file_channel().await {
                Ok(channel) => {
                    let header = (id.clone(), name.clone(), size, sha256.clone());
                    let events = self.file_events.clone();
                    let handle = self.transfers.spawn(crate::files::send(
                        channel,
                        path.clone(),
                        header,
                        peer.clone(),
                        events,
                    ));
                    let running = Running::new(handle, Some(id.clone()), &name, true, size);
                    self.peer_transfers.entry(peer.clone()).or_default().push(running);
                }
                Err(err) => {
                    let failed = EngineEvent::FileFailed {
                        peer: peer.clone(),
                        name: name.clone(),
                        sending: true,
                        reason: err.to_string(),
                    };
                    let _ = self.events.send(failed);
                }
            }
        }
    }

    pub(super) async fn on_file(&mut self, peer: PeerId, event: FileEvent) {
        if let Some(running) = self.peer_transfers.get_mut(&peer) {
            running.retain(|transfer| !transfer.handle.is_finished());
            if let FileEvent::Progress { id, name, done, size, sending } = &event
                && let Some(transfer) = running
                    .iter_mut()
                    .find(|t| t.sending == *sending && (t.id.as_ref() == Some(id) || t.id.is_none()))
            {
                (transfer.id, transfer.name, transfer.done, transfer.size) =
                    (Some(id.clone()), name.clone(), *done, *size);
            }
        }
        let event = match event {
            FileEvent::Ready { id, name, path, size, sha256 } => {
                return self.send_ready_file((id, name, path, size, sha256)).await;
            }
            FileEvent::Progress { id, name, done, size, sending } => {
                EngineEvent::FileProgress { id, peer, name, done, size, sending }
            }
            FileEvent::Received { name, size, sha256, path, .. } => {
                self.received_one(&peer);
                EngineEvent::FileReceived { from: peer, name, size, sha256, path }
            }
            FileEvent::Sent { name, size, .. } => EngineEvent::FileSent { to: peer, name, size },
            FileEvent::Failed { name, sending, error, .. } => {
                if !sending {
                    self.received_one(&peer);
                }
                EngineEvent::FileFailed { peer, name, sending, reason: error.to_string() }
            }
        };
        let _ = self.events.send(event);
    }

    pub(super) fn received_one(&mut self, peer: &PeerId) {
        if let Some(count) = self.receiving.get_mut(peer) {
            *count = count.saturating_sub(1);
        }
    }
}
