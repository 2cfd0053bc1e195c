//! What a test participant measures of the audio it plays: which synthetic tone each peer's
//! audio carries (the tone naming the sender), and the audio latency from the synthetic
//! microphone's markers. `confer join` installs it ([`crate::engine::EngineConfig::probe`]); the
//! desktop app runs without it, so none of this is computed for a user's call.

use std::collections::HashMap;

use confer_media::synthetic::{MarkerDetector, tone_hz, tone_level};
use confer_proto::PeerId;

/// Audio kept per peer for naming its tone: one second at 48 kHz.
const WINDOW: usize = 48_000;

/// The stretch the tone is named from: the last 200 ms.
const TAIL: usize = 9_600;

/// The level (Goertzel magnitude) a tone must reach to be named; silence and a muted peer's
/// comfort noise stay far below it.
const NAMED: f64 = 1_000.0;

/// The tones a synthetic microphone may play ([`tone_hz`] of 0..24).
const TONES: u32 = 24;

/// Per peer, its recent audio and its marker detector.
#[derive(Debug, Default)]
pub(crate) struct AudioProbe {
    windows: HashMap<PeerId, Vec<i16>>,
    markers: HashMap<PeerId, MarkerDetector>,
}

impl AudioProbe {
    /// Takes `peer`'s next played frame (its first sample played at `now_us`, Unix µs); returns
    /// the latencies (ms) of the markers that ended in it.
    pub(crate) fn hear(&mut self, peer: &PeerId, samples: &[i16], now_us: u64) -> Vec<f64> {
        let window = self.windows.entry(peer.clone()).or_default();
        window.extend_from_slice(samples);
        let excess = window.len().saturating_sub(WINDOW);
        window.drain(..excess);
        self.markers.entry(peer.clone()).or_default().push(samples, now_us)
    }

    /// The synthetic tone `peer`'s last 200 ms carry, Hz, if one is clearly there.
    pub(crate) fn tone(&self, peer: &PeerId) -> Option<f64> {
        let window = self.windows.get(peer)?;
        let tail = window.get(window.len().checked_sub(TAIL)?..)?;
        let (best, level) = (0..TONES)
            .map(|p| (p, tone_level(tail, tone_hz(p))))
            .fold((0, 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
        (level > NAMED).then(|| tone_hz(best))
    }

    /// `peer` left.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.windows.remove(peer);
        self.markers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confer_media::synthetic::SyntheticMic;

    #[test]
    fn each_peer_is_named_by_its_tone_and_silence_names_nobody() {
        let (ann, bob) = (PeerId::parse("AAAA-AAAAAA").unwrap(), PeerId::parse("BBBB-BBBBBB").unwrap());
        let mut probe = AudioProbe::default();
        let (mut ann_mic, mut bob_mic) = (SyntheticMic::tone_only(3), SyntheticMic::tone_only(11));
        assert_eq!(probe.tone(&ann), None, "nothing heard yet");
        for i in 0..20u64 {
            probe.hear(&ann, &ann_mic.next_samples(960), i * 20_000);
            probe.hear(&bob, &bob_mic.next_samples(960), i * 20_000);
        }
        assert_eq!(probe.tone(&ann), Some(tone_hz(3)));
        assert_eq!(probe.tone(&bob), Some(tone_hz(11)));
        for i in 20..40u64 {
            probe.hear(&bob, &[0; 960], i * 20_000);
        }
        assert_eq!(probe.tone(&bob), None, "silence names no tone");
        probe.forget(&ann);
        assert_eq!(probe.tone(&ann), None);
    }
}
