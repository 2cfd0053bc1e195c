//! Carrying out what the call's core decided ([`crate::call`]), and saying why a peer cannot be
//! reached: the cause from the candidates seen, made exact by our own requests to the meeting
//! server's TURN URLs.

use super::*;

/// `cause` as what the relay's URLs answered our own requests (`verdict`, once asked) makes it
/// more exact, with those answers in words ("; …", or nothing): a relay that could not be reached
/// may have refused our credentials; where relay candidates were exchanged and nothing got through,
/// the relay's relayed ports may be closed.
pub(super) fn refine(cause: NoPathCause, verdict: Option<&(NoPathCause, String)>) -> (NoPathCause, String) {
    match (cause, verdict) {
        (NoPathCause::RelayUnreachable, Some((refined, answers)))
        | (NoPathCause::Blocked, Some((refined @ NoPathCause::RelayPortsBlocked, answers))) => {
            (*refined, format!("; {answers}"))
        }
        _ => (cause, String::new()),
    }
}

impl Engine {
    /// Carries out what the call's core decided ([`crate::call`]).
    pub(super) async fn carry_out(&mut self) {
        while let Some(output) = self.call.poll_output() {
            match output {
                CallOutput::Open { peer, offerer } => self.open_peer(peer, offerer).await,
                CallOutput::Restart(id) => {
                    let Some(slot) = self.peers.get_mut(&id) else { continue };
                    match slot.peer.offer(true).await {
                        Ok(offer) => {
                            self.reports.entry(id.clone()).or_default().ice_restarts += 1;
                            self.signaling.signal(id, offer);
                        }
                        // The restart's deadline tries again.
                        Err(err) => {
                            tracing::warn!(peer = %id, %err, "an ICE restart offer could not be made");
                        }
                    }
                }
                CallOutput::AskRestart(id) => self.signaling.signal(id, SignalPayload::RestartIce),
                CallOutput::Connected(id) => self.connected(id).await,
                CallOutput::NoPathYet(id) => self.no_path(&id, None),
                CallOutput::GaveUp { peer, restarts } => self.no_path(&peer, Some(restarts)),
                CallOutput::Close { peer, timed_out } => {
                    self.remove_participant(&peer).await;
                    if timed_out {
                        let _ = self
                            .events
                            .send(EngineEvent::ParticipantLeft { id: peer, reason: LeaveReason::Timeout });
                    }
                }
            }
        }
    }

    /// Media flows with `id` (again): its path in the report, keyframes for it.
    pub(super) async fn connected(&mut self, id: PeerId) {
        let Some(slot) = self.peers.get(&id) else { return };
        let path = slot.peer.path().await;
        let report = self.reports.entry(id.clone()).or_default();
        report.path = path;
        report.connected_ms.get_or_insert(self.started.elapsed().as_millis() as u64);
        if let Some(layer) = slot.sent_layer.or(slot.layer) {
            self.sending.want_keyframes(1 << layer);
        }
        if let Some(sharing) = &self.sharing {
            sharing.request_keyframe();
        }
        let _ = self.events.send(EngineEvent::PeerConnected { id, path });
    }

    /// Says there is no path to `id`, with the cause found: yet (restarts go on), or after
    /// `gave_up_after` restarts.
    pub(super) fn no_path(&mut self, id: &PeerId, gave_up_after: Option<u32>) {
        let relay_offered = self.relay_offered();
        let known = self.relay_verdict();
        let Some(slot) = self.peers.get(id) else { return };
        let report = self.reports.entry(id.clone()).or_default();
        let name = if report.name.is_empty() { id.to_string() } else { report.name.clone() };
        let (gathered, received) = slot.peer.candidate_types();
        let diagnosed = NoPathCause::diagnose(&gathered, &received, relay_offered, self.config.relay_only);
        let (cause, relay_answers) = refine(diagnosed, known.as_ref());
        let relay_only = if self.config.relay_only { " (relay candidates only)" } else { "" };
        let summary = slot.peer.candidate_summary();
        let detail = match gave_up_after {
            None => format!("{}{relay_answers}; {summary}{relay_only}; still trying", cause.describe(&name)),
            Some(restarts) => format!(
                "{}{relay_answers}; no connection after {restarts} ICE restarts; {summary}{relay_only}",
                cause.describe(&name),
            ),
        };
        let retrying = gave_up_after.is_none();
        let _ = self.events.send(EngineEvent::PeerUnreachable {
            id: id.clone(),
            detail,
            cause: Some(cause),
            retrying,
        });
        if retrying
            && matches!(cause, NoPathCause::RelayUnreachable | NoPathCause::Blocked)
            && known.is_none()
            && relay_offered
        {
            self.diagnose_relay(id);
        }
    }

    /// Whether the meeting server offers any TURN URL.
    pub(super) fn relay_offered(&self) -> bool {
        self.session.as_ref().is_some_and(|session| session.ice_servers.offers_turn())
    }

    /// The relay's URLs answered our own requests (`relay_diagnosis`): the cause they point to
    /// and their failures in words; `None` until asked, or if every URL answered.
    pub(super) fn relay_verdict(&self) -> Option<(NoPathCause, String)> {
        let answers = self.relay_diagnosis.as_ref()?;
        let failures: Vec<String> = answers
            .iter()
            .filter_map(|(url, failure)| failure.as_ref().map(|(_, why)| format!("{url}: {why}")))
            .collect();
        if failures.is_empty() {
            return None;
        }
        let failed =
            |code: &str| answers.iter().any(|(_, failure)| failure.as_ref().is_some_and(|f| f.0 == code));
        let cause = if failed("credentials_refused") {
            NoPathCause::RelayCredentialsRefused
        } else if failed("relay_ports_blocked") {
            NoPathCause::RelayPortsBlocked
        } else {
            NoPathCause::RelayUnreachable
        };
        Some((cause, failures.join("; ")))
    }

    /// No relay candidate came, and the WebRTC stack does not say why: ask each of the meeting
    /// server's TURN URLs ourselves (5 s at most, as the lobby's check does), once, and tell the
    /// peers still waiting what they answered (`PeerEvent::RelayDiagnosis`).
    pub(super) fn diagnose_relay(&mut self, id: &PeerId) {
        self.awaiting_diagnosis.push(id.clone());
        if self.awaiting_diagnosis.len() > 1 {
            return;
        }
        let Some(session) = &self.session else { return };
        let routes = session.ice_servers.clone();
        let (events, who) = (self.peer_events.clone(), id.clone());
        // Bounded: each probe ends within its 5 s.
        self.probing.spawn(async move {
            let probes = routes.turn().map(|route| async move {
                let answer = crate::turn_probe::probe(route, crate::netcheck::SERVER_TIMEOUT).await;
                (route.url.to_string(), answer.err().map(|failure| (failure.code(), failure.to_string())))
            });
            let answers = futures_util::future::join_all(probes).await;
            events.probe_said(&who, PeerEvent::RelayDiagnosis(answers)).await;
        });
    }

    /// The relay's answers arrived: each peer still waiting and still not connected hears the
    /// cause they point to.
    pub(super) fn on_relay_diagnosis(&mut self, answers: Vec<RelayAnswer>) {
        self.relay_diagnosis = Some(answers);
        let waiting = std::mem::take(&mut self.awaiting_diagnosis);
        let Some((cause, failures)) = self.relay_verdict() else { return };
        for id in waiting {
            let waiting = self.peers.get(&id).is_some_and(|slot| {
                // Where relay candidates were exchanged the relay was reached: only closed
                // relayed ports explain that.
                let (gathered, received) = slot.peer.candidate_types();
                let relayed = gathered.contains("relay") || received.contains("relay");
                !self.call.is_connected(&id) && (!relayed || cause == NoPathCause::RelayPortsBlocked)
            });
            let report = self.reports.entry(id.clone()).or_default();
            if !waiting || report.connected_ms.is_some() {
                continue;
            }
            let name = if report.name.is_empty() { id.to_string() } else { report.name.clone() };
            let detail = format!("{}; {failures}; still trying", cause.describe(&name));
            let _ = self.events.send(EngineEvent::PeerUnreachable {
                id,
                detail,
                cause: Some(cause),
                retrying: true,
            });
        }
    }
}
