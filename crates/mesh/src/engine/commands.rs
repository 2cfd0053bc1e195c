//! What the app tells a running call: the handle's commands, queued without waiting (see
//! [`crate::queues`]), and the engine's side of them.

use super::*;

#[derive(Debug)]
pub(super) enum Command {
    Chat(String),
    React(String),
    SendFile(std::path::PathBuf),
    Mute(bool),
    Camera(bool),
    Hand(bool),
    SetCamera(CameraChoice),
    Microphone(DeviceChoice),
    Speaker(DeviceChoice),
    Host(ClientMessage),
    Share(Option<(ShareChoice, u32)>),
    Record(bool),
    View(Option<PeerId>, View),
    Report(tokio::sync::oneshot::Sender<HashMap<PeerId, PeerReport>>),
}

/// A handle to a running call; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(super) commands: mpsc::Sender<Command>,
    /// Leaving is not queued behind commands: it always gets through.
    pub(super) leave: Arc<tokio::sync::Notify>,
}

impl EngineHandle {
    /// Queues `command` without waiting ([`crate::queues::COMMANDS`]; when full it is dropped and
    /// logged).
    fn tell(&self, command: Command) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            tracing::error!(?command, "the call is {} commands behind: one dropped", crate::queues::COMMANDS);
        }
    }

    /// Shares a screen, a window or the synthetic page at `fps` (1–30) with everyone, in place
    /// of what is shared now; `None` stops sharing. Answered by [`EngineEvent::ShareStarted`] or
    /// [`EngineEvent::ShareStopped`] with the reason it could not start.
    pub fn share(&self, share: Option<(ShareChoice, u32)>) {
        self.tell(Command::Share(share));
    }

    /// Starts or stops recording the call into a Matroska file in
    /// [`EngineConfig::recordings`]. Everyone is told first (through the relay); writing starts
    /// once the relay confirms, with [`EngineEvent::RecordingStarted`]. Stopping (or leaving)
    /// finishes the file: [`EngineEvent::RecordingStopped`].
    pub fn record(&self, on: bool) {
        self.tell(Command::Record(on));
    }

    /// Tells `peer` (or everyone, and everyone who joins later, with `None`) what we show its
    /// camera in, in device pixels: it sends us the smallest layer that fills it, or no video
    /// for [`View::OFF`] (a minimised window, a tile off screen; audio goes on).
    pub fn view(&self, peer: Option<PeerId>, view: View) {
        self.tell(Command::View(peer, view));
    }

    /// Leaves the call.
    pub fn leave(&self) {
        self.leave.notify_one();
    }

    /// Sends a chat message to everyone (over the peers' data channels, not the relay). A text
    /// the others would refuse (empty, or over 4,000 characters) is refused here, with the
    /// reason, and nothing is sent.
    pub fn chat(&self, text: &str) -> Result<(), crate::data::DataError> {
        crate::data::check_chat(text)?;
        self.tell(Command::Chat(text.to_owned()));
        Ok(())
    }

    /// Sends the file at `path` to everyone connected now, each on a channel of its own
    /// (progress, then [`EngineEvent::FileSent`] or [`EngineEvent::FileFailed`] per peer).
    pub fn send_file(&self, path: &std::path::Path) {
        self.tell(Command::SendFile(path.to_owned()));
    }

    /// Sends a reaction (one of [`crate::data::REACTIONS`]) to everyone.
    pub fn react(&self, emoji: &str) -> Result<(), crate::data::DataError> {
        crate::data::check_reaction(emoji)?;
        self.tell(Command::React(emoji.to_owned()));
        Ok(())
    }

    /// Mutes or unmutes the microphone (nothing is sent while muted).
    pub fn mute(&self, muted: bool) {
        self.tell(Command::Mute(muted));
    }

    /// Turns the camera on or off (no video is sent while off).
    pub fn camera(&self, on: bool) {
        self.tell(Command::Camera(on));
    }

    /// Switches to another camera in the call. The old one keeps sending until the new one is
    /// open; if it cannot be opened, [`EngineEvent::DeviceFailed`] says why and nothing changes.
    pub fn set_camera(&self, choice: CameraChoice) {
        self.tell(Command::SetCamera(choice));
    }

    /// Switches to another microphone in the call (as [`EngineHandle::set_camera`]).
    pub fn set_microphone(&self, choice: DeviceChoice) {
        self.tell(Command::Microphone(choice));
    }

    /// Switches to another speaker in the call (as [`EngineHandle::set_camera`]).
    pub fn set_speaker(&self, choice: DeviceChoice) {
        self.tell(Command::Speaker(choice));
    }

    /// Raises or lowers this participant's hand.
    pub fn raise_hand(&self, raised: bool) {
        self.tell(Command::Hand(raised));
    }

    /// A host action: lock, unlock, admit, deny, remove.
    pub fn host(&self, message: ClientMessage) {
        self.tell(Command::Host(message));
    }

    /// What the engine knows of each remote participant now.
    pub async fn report(&self) -> HashMap<PeerId, PeerReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.commands.send(Command::Report(tx)).await;
        rx.await.unwrap_or_default()
    }
}

impl Engine {
    pub(super) async fn on_command(&mut self, command: Command) {
        match command {
            Command::Chat(text) => self.tell_everyone(&PeerMessage::Chat { text }).await,
            Command::React(emoji) => self.tell_everyone(&PeerMessage::Reaction { emoji }).await,
            Command::SendFile(path) => self.send_file(path),
            Command::Mute(muted) => {
                self.sending.audio.store(!muted, Ordering::Relaxed);
                let state = self.my_state();
                self.tell_everyone(&state).await;
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: Some(muted),
                    camera: None,
                    hand_raised: None,
                });
            }
            Command::Camera(on) => {
                self.sending.video.store(on, Ordering::Relaxed);
                let state = self.my_state();
                self.tell_everyone(&state).await;
                if on {
                    self.sending.want_keyframes(ALL_LAYERS);
                }
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: None,
                    camera: Some(on),
                    hand_raised: None,
                });
            }
            Command::Hand(raised) => {
                self.hand_raised = raised;
                let state = self.my_state();
                self.tell_everyone(&state).await;
                self.signaling.send(ClientMessage::Update {
                    name: None,
                    muted: None,
                    camera: None,
                    hand_raised: Some(raised),
                });
            }
            Command::Host(message) => self.signaling.send(message),
            Command::Share(Some((choice, fps))) => self.ask_to_share(choice, fps).await,
            Command::Share(None) => self.stop_sharing(None).await,
            Command::Record(true) => {
                if self.recorder.is_none() && !self.record_wanted {
                    self.record_wanted = true;
                    self.record_said = true;
                    self.signaling.send(ClientMessage::Record { on: true });
                }
            }
            Command::Record(false) => self.stop_recording(None, true),
            Command::View(peer, view) => self.set_view(peer, view).await,
            Command::Report(reply) => {
                let mut reports = self.reports.clone();
                for (id, slot) in &self.peers {
                    let (_, received) = slot.peer.candidate_types();
                    reports.entry(id.clone()).or_default().candidates_received =
                        received.into_iter().collect();
                }
                let _ = reply.send(reports);
            }
            Command::SetCamera(choice) => {
                let (width, height, fps) = (self.config.width, self.config.height, self.config.fps);
                let (swap, events) = (self.swaps.camera.clone(), self.events.clone());
                self.sending.want_keyframes(ALL_LAYERS);
                self.device_jobs.run(move || {
                    let opened = Camera::open(choice, width, height, fps, Duration::from_secs(5));
                    switched(&events, "camera", opened.map(|camera| swap.send(camera).is_ok()));
                });
            }
            Command::Microphone(choice) => {
                let (swap, events) = (self.swaps.microphone.clone(), self.events.clone());
                self.device_jobs.run(move || {
                    let opened = Microphone::open_checked(choice, Duration::from_secs(5));
                    switched(&events, "microphone", opened.map(|microphone| swap.send(microphone).is_ok()));
                });
            }
            Command::Speaker(choice) => {
                let (speaker, events) = (Arc::clone(&self.speaker), self.events.clone());
                self.device_jobs.run(move || {
                    let opened = Speaker::open_checked(choice, Duration::from_secs(5));
                    switched(
                        &events,
                        "speaker",
                        opened.map(|new| speaker.lock().map(|mut old| *old = new).is_ok()),
                    );
                });
            }
        }
    }
}
