//! Which picture each peer is sent, free of IO and clocks so it can be tested in fake time.
//!
//! Each capture is encoded in up to [`LAYERS`] sizes (the capture size, then half and a quarter
//! of it), each by its own encoder, and each peer gets the one layer that suits it: the largest
//! its link carries, as estimated from the loss it reports for our video, and no larger than the
//! tile it shows us in (it says so on the data channel, [`View`]). A peer on a poor link no
//! longer drags everyone's picture down: only its own layer changes. Layers nobody gets are not
//! encoded.
//!
//! The estimate is loss-based (webrtc 0.17 has no delay-based estimator): above 10 % loss it
//! falls by half the loss, and below what is being sent; under 2 % it grows, 20 % after one
//! clean second, faster after each further one (1.2^n, at most doubling a second, so a link
//! given back is found within seconds); in between it holds. An upgrade is a probe: it needs the
//! next layer's floor with a 25 % margin, and one that fails (loss within 10 s) doubles the wait
//! before the next (2 s up to 8 s). A receiver that sends no report for 3 s while we send it
//! video is taken as swamped (50 % loss a second) until it reports again. Below the smallest
//! layer's floor video is paused and audio goes on.

use std::time::Duration;

use crate::decide::bitrate_ceiling;

/// Layers a capture can be encoded in.
pub const LAYERS: usize = 3;

/// Growth of the estimate in a loss-free second, raised to the number of such seconds in a row.
const GROWTH: f64 = 1.2;
/// The most the estimate grows in a second.
const MAX_GROWTH: f64 = 2.0;
/// An upgrade needs the next layer's floor times this.
const UPGRADE_MARGIN: f64 = 1.25;
/// The first wait after a downgrade before an upgrade may be tried.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// The longest wait.
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Seconds without a report, while video is sent, after which the link is taken as congested.
const SILENCE: u32 = 3;
/// The loss a silent receiver is taken to have, each further silent second.
const SILENT_LOSS: f64 = 0.5;
/// Loss this soon after an upgrade makes it a failed probe.
const PROBE_WINDOW: Duration = Duration::from_secs(10);

/// What a peer's stream costs on the uplink besides its video: Opus at its usual bitrate.
const AUDIO_BPS: f64 = 32_000.0;

/// RTP, SRTP, UDP and IP headers on top of the media bitrate (about 60 bytes on a 1,000-byte
/// packet, more on small audio packets).
const PACKET_OVERHEAD: f64 = 1.1;

/// The share of a measured uplink a call plans to use: the rest is for everything else the
/// machine sends, and for the measurement's error.
pub const USABLE_UPLINK: f64 = 0.8;

/// What a receiver shows a peer's video in, in device pixels; `0x0` is "not shown" (off screen,
/// minimised): pause video to it, keep audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct View {
    /// Width of the tile.
    pub width: u32,
    /// Height of the tile.
    pub height: u32,
}

impl View {
    /// Nothing shown.
    pub const OFF: Self = Self { width: 0, height: 0 };

    /// Whether the video is shown at all.
    pub fn shown(self) -> bool {
        self.width > 0 && self.height > 0
    }
}

/// The sizes and bitrates of the layers of one capture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    sizes: [(u32, u32); LAYERS],
    /// Per layer, the bitrate below which it is not chosen and the most it is given, bits/s.
    ranges: [(u32, u32); LAYERS],
    start: u32,
}

impl Ladder {
    /// The ladder of a `width` x `height` capture at `fps` within the configured video bitrate
    /// `(min, start, max)`: layer 0 from the configured minimum (or half its need, if more) to
    /// its need ([`bitrate_ceiling`]), each smaller layer from half its need to its need.
    pub fn new(width: u32, height: u32, fps: u32, (min, start, max): (u32, u32, u32)) -> Self {
        let even = |v: u32| (v / 2).max(1) * 2;
        let mut sizes = [(even(width), even(height)); LAYERS];
        for layer in 1..LAYERS {
            let (w, h) = sizes[layer - 1];
            // The even size `I420Frame::scaled_to_fit` makes for half of it.
            sizes[layer] = (((w + 2) / 4).max(1) * 2, ((h + 2) / 4).max(1) * 2);
        }
        let mut ranges = [(0, 0); LAYERS];
        for (layer, &(w, h)) in sizes.iter().enumerate() {
            let need = if layer == 0 {
                bitrate_ceiling(w, h, fps, (min, max))
            } else {
                bitrate_ceiling(w, h, fps, (1, max))
            };
            let floor = if layer == 0 { (need / 2).max(min).min(need) } else { need / 2 };
            ranges[layer] = (floor.max(1), need.max(1));
        }
        Self { sizes, ranges, start: start.clamp(ranges[0].0, ranges[0].1) }
    }

    /// The picture size of `layer`.
    pub fn size(&self, layer: usize) -> (u32, u32) {
        self.sizes[layer.min(LAYERS - 1)]
    }

    /// The bitrate range of `layer`: (floor, ceiling).
    pub fn range(&self, layer: usize) -> (u32, u32) {
        self.ranges[layer.min(LAYERS - 1)]
    }

    /// The smallest layer that fills a tile of this size (within 10 %), `None` if not shown.
    pub fn for_view(&self, view: View) -> Option<usize> {
        if !view.shown() {
            return None;
        }
        let fills = |&(w, h): &(u32, u32)| {
            f64::from(w) >= 0.9 * f64::from(view.width) || f64::from(h) >= 0.9 * f64::from(view.height)
        };
        Some((0..LAYERS).rev().find(|&layer| fills(&self.sizes[layer])).unwrap_or(0))
    }

    /// What sending one peer `layer` (`None`: audio alone) costs on the uplink, bits/s: the
    /// layer's full bitrate and Opus, with packet headers.
    pub fn peer_cost(&self, layer: Option<usize>) -> f64 {
        let video = layer.map_or(0.0, |layer| f64::from(self.range(layer).1));
        (video + AUDIO_BPS) * PACKET_OVERHEAD
    }

    /// The layers `wanted` (one per peer, in a stable order) cut to fit an uplink of
    /// `uplink_bps`, of which [`USABLE_UPLINK`] is planned on: while they cost more together
    /// ([`Ladder::peer_cost`]), the peer getting the largest picture (of equals, the last) moves
    /// one layer down, below the smallest to no video. Peers that asked for less keep it; audio
    /// is never cut.
    pub fn fit_uplink(&self, wanted: &[Option<usize>], uplink_bps: u32) -> Vec<Option<usize>> {
        let usable = f64::from(uplink_bps) * USABLE_UPLINK;
        let mut layers = wanted.to_vec();
        loop {
            let total: f64 = layers.iter().map(|&layer| self.peer_cost(layer)).sum();
            if total <= usable {
                return layers;
            }
            // The largest picture is the smallest layer index; of equals, the last peer.
            let Some((largest, _)) = layers
                .iter()
                .enumerate()
                .filter_map(|(i, layer)| layer.map(|layer| (i, layer)))
                .min_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            else {
                return layers;
            };
            layers[largest] = layers[largest].and_then(|layer| (layer + 1 < LAYERS).then_some(layer + 1));
        }
    }

    /// The bitrate each layer's encoder aims for, given the estimates of the peers that get it:
    /// the lowest of them within the layer's range; `None` for a layer nobody gets.
    pub fn bitrates<'a>(&self, peers: impl IntoIterator<Item = &'a PeerVideo>) -> [Option<u32>; LAYERS] {
        self.bitrates_for(peers.into_iter().map(|peer| (peer.layer, peer.estimate)))
    }

    /// [`Ladder::bitrates`] for peers given as (the layer each gets, its estimate).
    pub fn bitrates_for(
        &self,
        peers: impl IntoIterator<Item = (Option<usize>, u32)>,
    ) -> [Option<u32>; LAYERS] {
        let mut out = [None; LAYERS];
        for (layer, estimate) in peers {
            if let Some(layer) = layer {
                let slot: &mut Option<u32> = &mut out[layer];
                *slot = Some(slot.map_or(estimate, |b| b.min(estimate)));
            }
        }
        for (layer, slot) in out.iter_mut().enumerate() {
            let (floor, ceiling) = self.ranges[layer];
            *slot = slot.map(|b| b.clamp(floor, ceiling));
        }
        out
    }
}

/// What one peer is sent, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerVideo {
    /// What its link carries, bits/s, as its loss reports say.
    estimate: u32,
    /// What it asked for (`None`: nothing yet, the largest layer its link carries).
    view: Option<View>,
    /// The layer it gets (`None`: video paused).
    layer: Option<usize>,
    /// No upgrade before this.
    hold_until: Duration,
    backoff: Duration,
    /// Loss-free seconds in a row.
    clean: i32,
    /// Seconds in a row without a report while video is sent.
    silent: u32,
    /// When the last upgrade was made: a probe, until it has lasted [`PROBE_WINDOW`] without
    /// loss (then the wait goes back to its base).
    upgraded_at: Option<Duration>,
}

impl PeerVideo {
    /// A new peer: the ladder's start bitrate, the largest layer it allows.
    pub fn new(ladder: &Ladder) -> Self {
        let mut peer = Self {
            estimate: ladder.start,
            view: None,
            layer: None,
            hold_until: Duration::ZERO,
            backoff: BACKOFF_BASE,
            clean: 0,
            silent: 0,
            upgraded_at: None,
        };
        // The start is a guess, not a probe: no margin.
        peer.layer = (0..LAYERS).find(|&layer| peer.estimate >= ladder.range(layer).0);
        peer
    }

    /// The layer it gets (`None`: paused).
    pub fn layer(&self) -> Option<usize> {
        self.layer
    }

    /// What its link is estimated to carry, bits/s.
    pub fn estimate(&self) -> u32 {
        self.estimate
    }

    /// It said what it shows our video in.
    pub fn on_view(&mut self, view: View, ladder: &Ladder, now: Duration) {
        self.view = Some(view);
        self.choose(ladder, now);
    }

    /// A second of a connected peer went by; `loss` is what it reported of our video in it
    /// (0..1; `None` if it reported nothing). `sent` is what its layer's encoder aims for now.
    pub fn on_second(&mut self, loss: Option<f64>, sent: Option<u32>, ladder: &Ladder, now: Duration) {
        let loss = match (loss, self.layer) {
            (Some(loss), _) => {
                self.silent = 0;
                loss
            }
            // Paused, nothing is sent and nothing reported: audio alone flows, so the link may
            // be probed as if it were clean.
            (None, None) => {
                self.silent = 0;
                0.0
            }
            (None, Some(_)) => {
                // Receivers report every second: one that falls silent while we send is most
                // likely swamped (its reports lost on the way back, or never sent), not well.
                self.silent = self.silent.saturating_add(1);
                if self.silent < SILENCE {
                    return;
                }
                SILENT_LOSS
            }
        };
        if self.upgraded_at.is_some_and(|at| now.saturating_sub(at) >= PROBE_WINDOW) {
            // The last upgrade held: the link is as good as it was found.
            self.upgraded_at = None;
            self.backoff = BACKOFF_BASE;
        }
        let top = f64::from(ladder.range(0).1) * UPGRADE_MARGIN;
        let estimate = f64::from(self.estimate);
        if loss > 0.10 {
            let below_sent = sent.map_or(estimate, |s| 0.85 * f64::from(s));
            // Not below half the smallest layer's floor: a few clean seconds bring video back.
            let bottom = f64::from(ladder.range(LAYERS - 1).0) / 2.0;
            self.estimate = (estimate * (1.0 - loss / 2.0)).min(below_sent).max(bottom) as u32;
            if self.upgraded_at.take().is_some() {
                // A failed probe: wait longer before the next.
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
            self.hold_until = now + self.backoff;
        }
        if loss < 0.02 {
            self.clean = self.clean.saturating_add(1);
            let growth = GROWTH.powi(self.clean.min(8)).min(MAX_GROWTH);
            self.estimate = (estimate * growth).min(top) as u32;
        } else {
            self.clean = 0;
        }
        self.choose(ladder, now);
    }

    /// The layer its link carries: the largest whose floor the estimate reaches (with a margin,
    /// and only once the hold is over, to move up).
    fn by_link(&self, ladder: &Ladder, now: Duration) -> Option<usize> {
        let estimate = f64::from(self.estimate);
        (0..LAYERS).find(|&layer| {
            let floor = f64::from(ladder.range(layer).0);
            if self.layer.is_none_or(|current| layer < current) {
                now >= self.hold_until && estimate >= floor * UPGRADE_MARGIN
            } else {
                estimate >= floor
            }
        })
    }

    fn choose(&mut self, ladder: &Ladder, now: Duration) {
        let by_view = match self.view {
            Some(view) => match ladder.for_view(view) {
                Some(layer) => layer,
                None => {
                    self.layer = None;
                    return;
                }
            },
            None => 0,
        };
        let by_link = self.by_link(ladder, now);
        let next = by_link.map(|layer| layer.max(by_view));
        if next.is_some_and(|n| self.layer.is_none_or(|current| n < current)) && by_link == next {
            // Moving up because the link allows it: a probe.
            self.upgraded_at = Some(now);
        }
        self.layer = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::new(640, 360, 30, (300_000, 800_000, 1_500_000))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_ladder_halves_the_capture_and_gives_each_layer_its_range() {
        let ladder = ladder();
        assert_eq!([ladder.size(0), ladder.size(1), ladder.size(2)], [(640, 360), (320, 180), (160, 90)]);
        assert_eq!(ladder.range(0), (345_600, 691_200));
        assert_eq!(ladder.range(1), (86_400, 172_800));
        assert_eq!(ladder.range(2), (21_600, 43_200));
        // A 1280x720 capture: the same halving from a larger start.
        let big = Ladder::new(1280, 720, 30, (300_000, 1_500_000, 2_500_000));
        assert_eq!([big.size(0), big.size(1), big.size(2)], [(1280, 720), (640, 360), (320, 180)]);
    }

    #[test]
    fn a_tile_gets_the_smallest_layer_that_fills_it() {
        let ladder = ladder();
        let view = |width, height| ladder.for_view(View { width, height });
        assert_eq!(view(1920, 1080), Some(0), "larger than the capture: the capture");
        assert_eq!(view(640, 360), Some(0));
        assert_eq!(view(400, 225), Some(0));
        assert_eq!(view(320, 180), Some(1));
        assert_eq!(view(340, 190), Some(1), "within 10 %");
        assert_eq!(view(160, 90), Some(2));
        assert_eq!(view(40, 40), Some(2), "a thumbnail");
        assert_eq!(view(320, 900), Some(1), "a portrait tile is filled by its width");
        assert_eq!(view(2000, 180), Some(1), "a wide tile by its height");
        assert_eq!(view(0, 0), None, "not shown: paused");
    }

    #[test]
    fn a_new_peer_gets_the_top_layer_and_asks_for_less_by_its_view() {
        let ladder = ladder();
        let mut peer = PeerVideo::new(&ladder);
        assert_eq!(peer.layer(), Some(0));
        // At 15 fps the top layer's need (and so the start) is within the upgrade margin of its
        // floor: a start is not an upgrade, the top layer still.
        let slow = Ladder::new(640, 360, 15, (300_000, 800_000, 1_500_000));
        assert_eq!(PeerVideo::new(&slow).layer(), Some(0));
        peer.on_view(View { width: 160, height: 90 }, &ladder, secs(1));
        assert_eq!(peer.layer(), Some(2));
        peer.on_view(View::OFF, &ladder, secs(2));
        assert_eq!(peer.layer(), None, "minimised: video paused");
        peer.on_view(View { width: 1280, height: 720 }, &ladder, secs(3));
        assert_eq!(peer.layer(), Some(0), "enlarged again: at once, the link allowing");
    }

    /// One peer on a 300 kbit/s link with heavy loss while the top layer is sent: down to the
    /// middle layer within seconds, and not tried again while the loss stays.
    #[test]
    fn heavy_loss_moves_a_peer_down_and_a_clean_link_brings_it_back_within_ten_seconds() {
        let ladder = ladder();
        let mut peer = PeerVideo::new(&ladder);
        let mut now = secs(0);
        let mut layers = Vec::new();
        for _ in 0..5 {
            now += secs(1);
            let sent = ladder.bitrates([&peer])[peer.layer().unwrap_or(0)];
            peer.on_second(Some(0.35), sent, &ladder, now);
            layers.push(peer.layer());
        }
        assert_eq!(layers.last(), Some(&Some(1)), "down to 320x180: {layers:?}");
        // The limit's 5 % random loss: held, no probe upward.
        for _ in 0..30 {
            now += secs(1);
            peer.on_second(Some(0.05), Some(172_800), &ladder, now);
            assert_eq!(peer.layer(), Some(1), "at {now:?}");
        }
        // The limit lifted: back to the top within 10 s.
        let lifted = now;
        while peer.layer() != Some(0) {
            now += secs(1);
            assert!(now - lifted <= secs(10), "still {:?} after {:?}", peer.layer(), now - lifted);
            peer.on_second(Some(0.0), Some(172_800), &ladder, now);
        }
    }

    #[test]
    fn a_failed_probe_doubles_the_wait_before_the_next() {
        let ladder = ladder();
        let mut peer = PeerVideo::new(&ladder);
        let mut now = secs(0);
        // A 250 kbit/s link: the top layer overflows it, the middle one fits.
        let mut upgrades = Vec::new();
        for _ in 0..120 {
            now += secs(1);
            let layer = peer.layer();
            let sent = layer.and_then(|l| ladder.bitrates([&peer])[l]);
            let loss = if sent.unwrap_or(0) + 40_000 > 250_000 { 0.3 } else { 0.0 };
            peer.on_second(Some(loss), sent, &ladder, now);
            if peer.layer() == Some(0) && layer != Some(0) {
                upgrades.push(now.as_secs());
            }
        }
        let gaps: Vec<u64> = upgrades.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(upgrades.len() >= 3, "it keeps probing: {upgrades:?}");
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "waits grow: {gaps:?}");
        assert!(gaps.last().is_some_and(|&g| g > BACKOFF_MAX.as_secs()), "up to the longest wait: {gaps:?}");
        assert!(upgrades.len() <= 14, "not every few seconds: {upgrades:?}");
    }

    #[test]
    fn a_link_below_the_smallest_layer_pauses_video_and_a_quiet_link_resumes_it() {
        let ladder = ladder();
        let mut peer = PeerVideo::new(&ladder);
        let mut now = secs(0);
        for _ in 0..12 {
            now += secs(1);
            let sent = peer.layer().and_then(|l| ladder.bitrates([&peer])[l]);
            peer.on_second(Some(0.6), sent, &ladder, now);
        }
        assert_eq!(peer.layer(), None, "video gives way (audio goes on): {}", peer.estimate());
        // Nothing sent, nothing reported: the link is probed again after the hold.
        for _ in 0..30 {
            now += secs(1);
            peer.on_second(None, None, &ladder, now);
        }
        assert!(peer.layer().is_some(), "video back: {}", peer.estimate());
    }

    #[test]
    fn a_receiver_that_stops_reporting_is_taken_as_swamped() {
        let ladder = ladder();
        let mut peer = PeerVideo::new(&ladder);
        let mut now = secs(0);
        for _ in 0..2 {
            now += secs(1);
            peer.on_second(None, Some(691_200), &ladder, now);
        }
        assert_eq!(peer.layer(), Some(0), "a report may be late: nothing changes for 2 s");
        for _ in 0..6 {
            now += secs(1);
            let sent = peer.layer().and_then(|l| ladder.bitrates([&peer])[l]);
            peer.on_second(None, sent, &ladder, now);
        }
        assert!(peer.layer().is_some_and(|l| l > 0), "silence moved it down: {:?}", peer.layer());
        // Reports again, clean: back up.
        for _ in 0..12 {
            now += secs(1);
            let sent = peer.layer().and_then(|l| ladder.bitrates([&peer])[l]);
            peer.on_second(Some(0.0), sent, &ladder, now);
        }
        assert_eq!(peer.layer(), Some(0));
    }

    #[test]
    fn each_layer_is_encoded_for_the_weakest_peer_that_gets_it() {
        let ladder = ladder();
        let mut strong = PeerVideo::new(&ladder);
        let mut weak = PeerVideo::new(&ladder);
        let mut small = PeerVideo::new(&ladder);
        small.on_view(View { width: 160, height: 90 }, &ladder, secs(0));
        for s in 1..=5 {
            strong.on_second(Some(0.0), Some(691_200), &ladder, secs(s));
            weak.on_second(Some(0.4), Some(691_200), &ladder, secs(s));
        }
        assert_eq!((strong.layer(), weak.layer(), small.layer()), (Some(0), Some(1), Some(2)));
        let rates = ladder.bitrates([&strong, &weak, &small]);
        assert_eq!(rates[0], Some(691_200), "the strong peer alone sets the top layer");
        assert!(rates[1].is_some_and(|r| (86_400..=172_800).contains(&r)), "{rates:?}");
        assert!(rates[2].is_some(), "{rates:?}");
        let nobody_small = ladder.bitrates([&strong, &weak]);
        assert_eq!(nobody_small[2], None, "a layer nobody gets is not encoded");
    }

    #[test]
    fn an_uplink_budget_takes_the_largest_pictures_down_first_and_never_audio() {
        let ladder = ladder();
        // 640x360 costs 796 kbit/s a peer with audio and headers, 320x180 225, 160x90 83, audio 35.
        assert_eq!(ladder.peer_cost(Some(0)).round(), 795_520.0);
        assert_eq!(ladder.peer_cost(None).round(), 35_200.0);
        let full = [Some(0), Some(0), Some(0)];
        assert_eq!(ladder.fit_uplink(&full, 10_000_000), full, "a fast uplink cuts nothing");
        // 1.5 Mbit/s (1.2 planned on): two at 640x360 do not fit; the last moves down.
        assert_eq!(ladder.fit_uplink(&full[..2], 1_500_000), [Some(0), Some(1)]);
        // 2 Mbit/s for three: one keeps 640x360.
        assert_eq!(ladder.fit_uplink(&full, 2_000_000), [Some(0), Some(1), Some(1)]);
        // A thumbnail asked for stays; the large one gives way.
        assert_eq!(ladder.fit_uplink(&[Some(2), Some(0)], 300_000), [Some(2), Some(2)]);
        // Nothing fits: video stops, audio stays (nothing more to cut).
        assert_eq!(ladder.fit_uplink(&full, 50_000), [None, None, None]);
        // Whatever fits the lobby's prediction for N people fits the engine with N - 1 peers.
        let three = crate::netcheck::capacity(2_000, &ladder)[0].people as usize;
        assert_eq!(ladder.fit_uplink(&vec![Some(0); three - 1], 2_000_000), vec![Some(0); three - 1]);
    }
}
