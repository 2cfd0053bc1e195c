//! What the call shows and keeps beyond cameras and microphones: screen shares (ours, granted by
//! the relay, and the peers') and recordings (ours, announced through the relay, and the
//! peers').

use super::*;

impl Engine {
    /// A peer shares or not, as the relay's presence says (the relay grants shares).
    pub(super) fn peer_sharing(&mut self, id: &PeerId, sharing: bool) {
        let report = self.reports.entry(id.clone()).or_default();
        if report.sharing == sharing {
            return;
        }
        report.sharing = sharing;
        if !sharing {
            // The next share starts with a keyframe, maybe at another size. Its thread is
            // waited for off the engine's task.
            let decoder = self.decoders.remove(&(id.clone(), true));
            drop(tokio::task::spawn_blocking(move || drop(decoder)));
        }
        let _ = self.events.send(EngineEvent::PeerSharing { id: id.clone(), sharing });
    }

    /// Asks the relay for the share (one at a time per room); it starts once granted. Switching
    /// what we share needs no asking.
    pub(super) async fn ask_to_share(&mut self, choice: ShareChoice, fps: u32) {
        if self.sharing.is_some() {
            self.start_sharing(choice, fps).await;
            return;
        }
        self.share_wanted = Some((choice, fps));
        self.signaling.send(ClientMessage::Share { on: true });
    }

    /// Starts sharing `choice` at `fps` in place of any share running now.
    pub(super) async fn start_sharing(&mut self, choice: ShareChoice, fps: u32) {
        if let Some(old) = self.sharing.take() {
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        let out = self.share_out.clone();
        // Opening asks the display about the source: off the engine's thread.
        let started = tokio::task::spawn_blocking(move || Sharing::start(&choice, fps, out)).await;
        match started {
            Ok(Ok(sharing)) => {
                let source = sharing.source().to_owned();
                tracing::info!(%source, fps, "sharing");
                self.sharing = Some(sharing);
                let _ = self.events.send(EngineEvent::ShareStarted { source });
            }
            Ok(Err(err)) => self.share_failed(err.to_string()),
            Err(err) => self.share_failed(err.to_string()),
        }
    }

    /// The share could not start: the floor goes back.
    pub(super) fn share_failed(&mut self, reason: String) {
        self.signaling.send(ClientMessage::Share { on: false });
        let _ = self.events.send(EngineEvent::ShareStopped { reason: Some(reason) });
    }

    /// Stops our share, asked (`reason` `None`) or because it ended on its own.
    pub(super) async fn stop_sharing(&mut self, reason: Option<String>) {
        if self.share_wanted.take().is_some() {
            // Asked for and not granted yet: take the request back.
            self.signaling.send(ClientMessage::Share { on: false });
            let _ = self.events.send(EngineEvent::ShareStopped { reason });
            return;
        }
        let Some(sharing) = self.sharing.take() else { return };
        self.signaling.send(ClientMessage::Share { on: false });
        if sharing.dropped() > 0 {
            tracing::debug!(
                dropped = sharing.dropped(),
                "share access units dropped while the engine was behind"
            );
        }
        let _ = tokio::task::spawn_blocking(move || drop(sharing)).await;
        let _ = self.events.send(EngineEvent::ShareStopped { reason });
    }

    /// A peer records or not, as the relay says.
    pub(super) fn peer_recording(&mut self, id: &PeerId, recording: bool) {
        let report = self.reports.entry(id.clone()).or_default();
        if report.recording == recording {
            return;
        }
        report.recording = recording;
        let _ = self.events.send(EngineEvent::PeerRecording { id: id.clone(), recording });
    }

    /// The relay told everyone we record: the file is created and written from now on.
    pub(super) fn start_recording(&mut self) {
        self.record_wanted = false;
        let dir = self.config.recordings.clone();
        let title = "call";
        let started = std::fs::create_dir_all(&dir)
            .map_err(|source| confer_media::RecordError::Io { path: dir.clone(), source })
            .and_then(|()| Recorder::start(&crate::record::file_in(&dir, title), title));
        match started {
            Ok(recorder) => {
                let path = recorder.path().to_owned();
                tracing::info!(path = %path.display(), "recording");
                self.recorder = Some(recorder);
                // Every track starts with a keyframe, ours and the others'.
                self.steer();
                self.sending.want_keyframes(1);
                if let Some(sharing) = &self.sharing {
                    sharing.request_keyframe();
                }
                for slot in self.peers.values() {
                    slot.peer.request_keyframes();
                }
                let _ = self.events.send(EngineEvent::RecordingStarted { path });
            }
            Err(err) => {
                self.signaling.send(ClientMessage::Record { on: false });
                let _ = self.events.send(EngineEvent::RecordingStopped {
                    path: None,
                    reason: Some(err.to_string()),
                    duration_ms: 0,
                    bytes: 0,
                });
            }
        }
    }

    /// Stops recording (asked: `reason` `None`); `tell` says so to everyone (not when the call
    /// is over anyway). The file is finished (what is queued written, then its index) off the
    /// engine's task, which goes on with the call; [`EngineEvent::RecordingStopped`] follows.
    pub(super) fn stop_recording(&mut self, reason: Option<String>, tell: bool) {
        if std::mem::take(&mut self.record_wanted) && tell {
            self.signaling.send(ClientMessage::Record { on: false });
        }
        let Some(recorder) = self.recorder.take() else { return };
        if tell {
            self.signaling.send(ClientMessage::Record { on: false });
        }
        // The top layer is encoded for the recording no longer (unless someone gets it).
        self.steer();
        let events = self.events.clone();
        self.finishing.spawn(async move {
            let path = recorder.path().to_owned();
            let dropped = recorder.dropped();
            let finished = tokio::task::spawn_blocking(move || recorder.finish()).await;
            let _ = events.send(stopped(path, dropped, reason, finished));
        });
    }

    pub(super) fn record_own_video(&mut self, medium: Medium, when: When, access_unit: &[u8]) {
        let (Some(recorder), Some(session)) = (&mut self.recorder, &self.session) else { return };
        if recorder.video(&session.peer_id, &self.config.name, medium, when, access_unit) {
            match medium {
                Medium::Screen => {
                    if let Some(sharing) = &self.sharing {
                        sharing.request_keyframe();
                    }
                }
                _ => self.sending.want_keyframes(1),
            }
        }
    }

    pub(super) fn record_own_audio(&mut self, packet: &[u8]) {
        let (Some(recorder), Some(session)) = (&mut self.recorder, &self.session) else { return };
        self.own_audio_rtp = self.own_audio_rtp.wrapping_add(960);
        recorder.audio(&session.peer_id, &self.config.name, When::Rtp(self.own_audio_rtp), packet);
    }
}
