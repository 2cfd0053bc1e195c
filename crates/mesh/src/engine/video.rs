//! Video as the engine moves it: each peer sent its layer of our camera (switched on keyframes),
//! the layers steered by the peers' links, views and our uplink, and remote video handed to its
//! decoder thread and on to the app.

use super::*;

impl Engine {
    /// Sends each peer its layer of a captured picture. A peer moving to another layer keeps
    /// getting the old one until the new one's keyframe comes, so its picture never freezes.
    pub(super) async fn send_video(&mut self, units: Vec<LayerUnit>, captured_us: u64, duration: Duration) {
        if let Some(top) = units.iter().find(|unit| unit.layer == 0) {
            self.record_own_video(Medium::Camera, When::CapturedUs(captured_us), &top.data);
        }
        for (id, slot) in &mut self.peers {
            let wanted = slot.layer;
            if wanted != slot.sent_layer
                && wanted.is_none_or(|layer| units.iter().any(|unit| unit.layer == layer && unit.keyframe))
            {
                slot.sent_layer = wanted;
                let changes = &mut self.reports.entry(id.clone()).or_default().send_layers;
                if changes.len() < 100 {
                    changes.push((unix_us() / 1_000, wanted.map(|layer| self.ladder.size(layer))));
                }
            }
            let Some(unit) = slot.sent_layer.and_then(|layer| units.iter().find(|unit| unit.layer == layer))
            else {
                continue;
            };
            slot.video_bytes += unit.data.len() as u64;
            slot.peer.send_video(unit.data.clone(), duration).await;
        }
    }

    /// Tells the camera's thread which layers to encode, at what bitrates, and which must start
    /// with a keyframe: each layer someone gets or still gets (until its switch), the top one
    /// while we record.
    pub(super) fn steer(&mut self) {
        // What each peer's link and view allow, cut to our uplink if it is known (peers in id
        // order: of equals, the same ones keep the larger picture every time).
        let mut ids: Vec<PeerId> = self.peers.keys().cloned().collect();
        ids.sort();
        // A peer not connected (yet, or any more) keeps what it wants (nothing reaches it) and
        // takes nothing from the uplink.
        ids.retain(|id| {
            let Some(slot) = self.peers.get_mut(id) else { return false };
            slot.layer = slot.video.layer();
            self.call.is_connected(id)
        });
        let wanted: Vec<Option<usize>> =
            ids.iter().map(|id| self.peers.get(id).and_then(|slot| slot.video.layer())).collect();
        if let Some(kbps) = self.config.uplink_kbps {
            let layers = self.ladder.fit_uplink(&wanted, kbps.saturating_mul(1_000));
            for (id, layer) in ids.iter().zip(layers) {
                if let Some(slot) = self.peers.get_mut(id) {
                    slot.layer = layer;
                }
            }
        }
        let mut rates =
            self.ladder.bitrates_for(self.peers.values().map(|slot| (slot.layer, slot.video.estimate())));
        let mut keyframes = 0u8;
        for slot in self.peers.values() {
            if let Some(layer) = slot.sent_layer
                && rates[layer].is_none()
            {
                rates[layer] = Some(self.ladder.range(layer).0);
            }
            if let Some(layer) = slot.layer
                && slot.sent_layer != Some(layer)
            {
                keyframes |= 1 << layer;
            }
        }
        if self.recorder.is_some() && rates[0].is_none() {
            rates[0] = Some(self.ladder.range(0).1);
        }
        for (layer, rate) in rates.iter().enumerate() {
            self.sending.bitrates[layer].store(rate.unwrap_or(0), Ordering::Relaxed);
        }
        self.sending.want_keyframes(keyframes);
    }

    /// Tells `peer` (or everyone, from now on) what we show its camera in.
    pub(super) async fn set_view(&mut self, peer: Option<PeerId>, view: View) {
        let message = PeerMessage::View { width: view.width, height: view.height }.encode();
        match peer {
            Some(id) => {
                self.views.insert(id.clone(), view);
                if let Some(slot) = self.peers.get(&id) {
                    slot.peer.send_data(&message).await;
                }
            }
            None => {
                self.default_view = Some(view);
                for (id, slot) in &self.peers {
                    if !self.views.contains_key(id) {
                        slot.peer.send_data(&message).await;
                    }
                }
            }
        }
    }

    /// Hands an access unit of `from`'s camera (`screen` false) or share to its decoder thread
    /// (started on its first one).
    pub(super) fn decode(&mut self, from: PeerId, screen: bool, access_unit: Vec<u8>) {
        let decoder: &mut StreamDecoder = match self.decoders.entry((from.clone(), screen)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                match StreamDecoder::start(from.clone(), screen, self.decoded.clone()) {
                    Ok(decoder) => entry.insert(decoder),
                    Err(err) => {
                        tracing::warn!(peer = %from, error = %err, "no decoder thread: this video is not shown");
                        return;
                    }
                }
            }
        };
        if decoder.push(access_unit) == Pushed::Dropped {
            // This machine is behind on this stream: it resumes at the peer's next keyframe.
            if decoder.ask_keyframe(Instant::now())
                && let Some(slot) = self.peers.get(&from)
            {
                slot.peer.request_keyframes();
            }
            self.reports.entry(from).or_default().video_units_dropped += 1;
        }
    }

    /// A picture a decoder thread finished: counted in the peer's report, handed on.
    pub(super) fn on_decoded(&mut self, picture: Decoded) {
        let Decoded { from, screen, frame, stamp, at_us } = picture;
        if !self.decoders.contains_key(&(from.clone(), screen)) {
            // Decoded just before its stream ended (the peer left, its share stopped): the page
            // has forgotten its tile, and must not get it back.
            return;
        }
        let since_start = self.started.elapsed().as_millis() as u64;
        let report = self.reports.entry(from.clone()).or_default();
        if screen {
            report.share_frames_decoded += 1;
            report.share_first_frame_ms.get_or_insert(since_start);
            if let Some(stamp) = stamp {
                report.share_pattern_id = Some(stamp.id);
                let latency = (at_us / 1_000) as f64 - stamp.captured_ms as f64;
                if report.share_latency_ms.len() < 10_000 && (0.0..10_000.0).contains(&latency) {
                    report.share_latency_ms.push(latency);
                }
            }
            let _ = self.events.send(EngineEvent::ShareFrame { from, frame, stamp });
            return;
        }
        report.video_frames_decoded += 1;
        let size = (frame.width() as u32, frame.height() as u32);
        if report.video_sizes.last() != Some(&size) && report.video_sizes.len() < 100 {
            report.video_sizes.push(size);
        }
        report.first_frame_ms.get_or_insert(since_start);
        if let Some(last) = report.last_frame_ms.replace(since_start) {
            report.longest_video_gap_ms = report.longest_video_gap_ms.max(since_start.saturating_sub(last));
        }
        if let Some(stamp) = stamp {
            report.pattern_id = Some(stamp.id);
            let latency = (at_us / 1_000) as f64 - stamp.captured_ms as f64;
            if report.video_latency_ms.len() < 10_000 && (0.0..10_000.0).contains(&latency) {
                report.video_latency_ms.push(latency);
            }
        }
        let _ = self.events.send(EngineEvent::VideoFrame { from, frame, stamp });
    }
}
