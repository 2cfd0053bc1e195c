//! How our Opus encoder follows the links it is sent over. The microphone is encoded once for
//! every peer (one audio track), so it follows the worst of them: in-band FEC and the loss it is
//! tuned for from the loss the peers report of our audio (RTCP receiver reports), its bitrate
//! from the tightest link's estimate (the camera layers' estimate, [`crate::layers::PeerVideo`]).
//! Video gives way first: audio narrows to 3/4 of its bitrate only once that link is down to the
//! smallest layer, and to half once video to it is paused.
//!
//! Sans-IO: the engine feeds reports and seconds, with the time; nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

/// How long a loss report counts: FEC stays on this long after the last loss seen.
pub const LOSS_MEMORY: Duration = Duration::from_secs(10);

/// The most loss FEC is tuned for, percent (beyond it more redundancy costs more than it saves).
pub const MAX_LOSS_PERCENT: u8 = 25;

/// How far above a threshold a link must come back before the bitrate widens again.
const WIDEN_MARGIN: f64 = 1.2;

/// What the encoder is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusTuning {
    /// Target bitrate, bits/s.
    pub bitrate_bps: u32,
    /// In-band FEC on.
    pub fec: bool,
    /// The loss FEC is tuned for, percent (0 when off).
    pub loss_percent: u8,
}

/// The tuning for one encoder sent to many peers.
#[derive(Debug)]
pub struct VoiceRate<K> {
    base_bps: u32,
    /// Links (bits/s) under which the bitrate narrows to 3/4, then to 1/2 of its base.
    narrow_below: [u32; 2],
    /// Per peer, its recent loss reports of our audio (time, fraction lost).
    losses: HashMap<K, VecDeque<(Duration, f64)>>,
    /// How far the bitrate is narrowed: 0 (base), 1 (3/4), 2 (1/2).
    narrowed: usize,
    current: OpusTuning,
}

impl<K: Eq + Hash + Clone> VoiceRate<K> {
    /// An encoder at `base_bps` when every link is good, with FEC off until a loss is reported;
    /// narrowed to 3/4 on links under `narrow_below[0]` and to half under `narrow_below[1]` (the
    /// engine gives the smallest camera layer's ceiling and floor).
    pub fn new(base_bps: u32, narrow_below: [u32; 2]) -> Self {
        Self {
            base_bps,
            narrow_below: [narrow_below[0].max(narrow_below[1]), narrow_below[1]],
            losses: HashMap::new(),
            narrowed: 0,
            current: OpusTuning { bitrate_bps: base_bps, fec: false, loss_percent: 0 },
        }
    }

    /// What the encoder should be set to now.
    pub fn tuning(&self) -> OpusTuning {
        self.current
    }

    /// `peer` reported `loss` (0..1) of our audio.
    pub fn on_loss(&mut self, peer: &K, loss: f64, now: Duration) {
        let loss = if loss.is_finite() { loss.clamp(0.0, 1.0) } else { return };
        let reports = self.losses.entry(peer.clone()).or_default();
        reports.push_back((now, loss));
        // Reports come about once a second: a bound for a peer that floods them.
        while reports.len() > 64 {
            reports.pop_front();
        }
    }

    /// `peer` left: its link no longer counts.
    pub fn forget(&mut self, peer: &K) {
        self.losses.remove(peer);
    }

    /// A second went by; `tightest` is the smallest estimate of the peers' links (bits/s;
    /// `None`: nobody connected). Returns the new tuning when it changed.
    pub fn on_second(&mut self, tightest: Option<u32>, now: Duration) -> Option<OpusTuning> {
        for reports in self.losses.values_mut() {
            while reports.front().is_some_and(|(at, _)| now.saturating_sub(*at) > LOSS_MEMORY) {
                reports.pop_front();
            }
        }
        self.losses.retain(|_, reports| !reports.is_empty());
        let worst = self.losses.values().flatten().map(|(_, loss)| *loss).fold(0.0, f64::max);
        // Fraction lost comes in 1/256 steps: any loss reported counts as at least 1 %.
        let loss_percent =
            if worst > 0.0 { ((worst * 100.0).ceil() as u8).clamp(1, MAX_LOSS_PERCENT) } else { 0 };
        if let Some(link) = tightest {
            let link = f64::from(link);
            // Narrow as soon as a threshold is crossed; widen only with a margin above it.
            while self.narrowed < self.narrow_below.len()
                && link < f64::from(self.narrow_below[self.narrowed])
            {
                self.narrowed += 1;
            }
            while self.narrowed > 0 && link >= f64::from(self.narrow_below[self.narrowed - 1]) * WIDEN_MARGIN
            {
                self.narrowed -= 1;
            }
        } else {
            self.narrowed = 0;
        }
        let bitrate_bps = match self.narrowed {
            0 => self.base_bps,
            1 => self.base_bps / 4 * 3,
            _ => self.base_bps / 2,
        };
        let next = OpusTuning { bitrate_bps, fec: loss_percent > 0, loss_percent };
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const NARROW: [u32; 2] = [300_000, 150_000];

    fn seconds(n: u32) -> Duration {
        S * n
    }

    #[test]
    fn a_clean_call_sends_at_the_base_rate_without_fec() {
        let mut voice = VoiceRate::<u8>::new(32_000, NARROW);
        for t in 1..20 {
            voice.on_loss(&1, 0.0, seconds(t));
            assert_eq!(voice.on_second(Some(2_000_000), seconds(t)), None);
        }
        assert_eq!(voice.tuning(), OpusTuning { bitrate_bps: 32_000, fec: false, loss_percent: 0 });
    }

    #[test]
    fn fec_follows_the_worst_peers_loss_and_goes_off_once_it_is_clean_for_a_while() {
        let mut voice = VoiceRate::<u8>::new(32_000, NARROW);
        voice.on_loss(&1, 0.0, seconds(1));
        voice.on_loss(&2, 5.0 / 256.0, seconds(1));
        let tuned = voice.on_second(Some(2_000_000), seconds(1)).unwrap();
        assert_eq!(tuned, OpusTuning { bitrate_bps: 32_000, fec: true, loss_percent: 2 });
        // A worse second for peer 1: tuned for it.
        voice.on_loss(&1, 0.12, seconds(2));
        assert_eq!(voice.on_second(Some(2_000_000), seconds(2)).unwrap().loss_percent, 12);
        // Clean from then on: the 12 % counts for LOSS_MEMORY, then the 2 % is gone too.
        for t in 3..=12 {
            voice.on_loss(&1, 0.0, seconds(t));
            voice.on_loss(&2, 0.0, seconds(t));
            let changed = voice.on_second(Some(2_000_000), seconds(t));
            assert!(changed.is_none(), "second {t}: {changed:?}");
        }
        assert_eq!(voice.on_second(Some(2_000_000), seconds(13)).unwrap().loss_percent, 0);
        assert!(!voice.tuning().fec);
    }

    #[test]
    fn heavy_loss_is_capped_and_bad_numbers_are_ignored() {
        let mut voice = VoiceRate::<u8>::new(32_000, NARROW);
        voice.on_loss(&1, f64::NAN, seconds(1));
        voice.on_loss(&1, -3.0, seconds(1));
        assert_eq!(voice.on_second(None, seconds(1)), None);
        voice.on_loss(&1, 0.9, seconds(2));
        assert_eq!(voice.on_second(None, seconds(2)).unwrap().loss_percent, MAX_LOSS_PERCENT);
    }

    #[test]
    fn a_peer_that_leaves_takes_its_loss_with_it() {
        let mut voice = VoiceRate::<u8>::new(32_000, NARROW);
        voice.on_loss(&1, 0.2, seconds(1));
        assert!(voice.on_second(None, seconds(1)).unwrap().fec);
        voice.forget(&1);
        assert!(!voice.on_second(None, seconds(2)).unwrap().fec);
    }

    #[test]
    fn the_bitrate_narrows_with_the_tightest_link_and_widens_with_a_margin() {
        let mut voice = VoiceRate::<u8>::new(32_000, NARROW);
        let rate = |voice: &mut VoiceRate<u8>, link, t| {
            voice.on_second(Some(link), seconds(t));
            voice.tuning().bitrate_bps
        };
        assert_eq!(rate(&mut voice, 1_000_000, 1), 32_000);
        assert_eq!(rate(&mut voice, 250_000, 2), 24_000);
        assert_eq!(rate(&mut voice, 100_000, 3), 16_000);
        // Straight from good to very poor: both steps at once.
        let mut other = VoiceRate::<u8>::new(32_000, NARROW);
        assert_eq!(rate(&mut other, 90_000, 1), 16_000);
        // Back just above a threshold: not yet (the margin), then one step at a time.
        assert_eq!(rate(&mut voice, 160_000, 4), 16_000);
        assert_eq!(rate(&mut voice, 185_000, 5), 24_000);
        assert_eq!(rate(&mut voice, 330_000, 6), 24_000);
        assert_eq!(rate(&mut voice, 365_000, 7), 32_000);
        // Alone in the call: the base.
        assert_eq!(rate(&mut voice, 100_000, 8), 16_000);
        voice.on_second(None, seconds(9));
        assert_eq!(voice.tuning().bitrate_bps, 32_000);
    }
}
