//! Streaming mono resampling between a device's rate and Confer's 48 kHz, through rubato's FFT
//! resampler (fixed ratio, anti-aliased). Push any number of samples, take whole output samples
//! as they are ready. Used inside audio callbacks: after construction it allocates nothing but
//! its output queue's growth.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Why a resampler could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot resample {from} Hz to {to} Hz: {reason}")]
pub struct ResampleError {
    from: u32,
    to: u32,
    reason: String,
}

/// A mono resampler from one fixed rate to another.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    input: VecDeque<f32>,
    chunk_in: Vec<f32>,
    chunk_out: Vec<f32>,
    output: VecDeque<f32>,
    ratio: f64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler").field("passthrough", &self.inner.is_none()).finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz (a pass-through when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let error = |reason: String| ResampleError { from, to, reason };
        if from == 0 || to == 0 || from > 768_000 || to > 768_000 {
            return Err(error("unsupported rate".into()));
        }
        let inner = if from == to {
            None
        } else {
            // 10 ms of input per chunk where the rate allows it.
            let chunk = (from as usize / 100).max(32);
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| error(e.to_string()))?,
            )
        };
        let (chunk_in, chunk_out) = match &inner {
            Some(fft) => (vec![0.0; fft.input_frames_max()], vec![0.0; fft.output_frames_max()]),
            None => (Vec::new(), Vec::new()),
        };
        let ratio = f64::from(to) / f64::from(from);
        Ok(Self { inner, input: VecDeque::new(), chunk_in, chunk_out, output: VecDeque::new(), ratio })
    }

    /// The delay the resampler adds, in output samples.
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |fft| fft.output_delay())
    }

    /// Takes input samples (in [-1, 1]).
    pub fn push(&mut self, samples: impl IntoIterator<Item = f32>) {
        let Some(fft) = self.inner.as_mut() else {
            self.output.extend(samples);
            return;
        };
        self.input.extend(samples);
        loop {
            let needed = fft.input_frames_next();
            if self.input.len() < needed {
                break;
            }
            for (slot, sample) in self.chunk_in[..needed].iter_mut().zip(self.input.drain(..needed)) {
                *slot = sample;
            }
            let capacity = self.chunk_out.len();
            let processed = match (
                InterleavedSlice::new(&self.chunk_in[..needed], 1, needed),
                InterleavedSlice::new_mut(&mut self.chunk_out[..], 1, capacity),
            ) {
                (Ok(input), Ok(mut output)) => fft.process_into_buffer(&input, &mut output, None).ok(),
                _ => None,
            };
            match processed {
                Some((_, produced)) => self.output.extend(&self.chunk_out[..produced]),
                // Cannot happen with buffers sized from the resampler; if it did, a gap of
                // silence is better than a stall.
                None => self.output.extend(std::iter::repeat_n(0.0, (needed as f64 * self.ratio) as usize)),
            }
        }
    }

    /// Output samples ready now.
    pub fn available(&self) -> usize {
        self.output.len()
    }

    /// Takes up to `max` output samples.
    pub fn take(&mut self, max: usize) -> impl Iterator<Item = f32> + '_ {
        let n = max.min(self.output.len());
        self.output.drain(..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate: u32, samples: usize) -> Vec<f32> {
        (0..samples)
            .map(|n| (std::f64::consts::TAU * hz * n as f64 / f64::from(rate)).sin() as f32 * 0.5)
            .collect()
    }

    /// Amplitude of `hz` in `samples` at `rate` (Goertzel).
    fn level(samples: &[f32], hz: f64, rate: u32) -> f64 {
        let k = 2.0 * (std::f64::consts::TAU * hz / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s0 = f64::from(x) + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - k * s1 * s2).max(0.0).sqrt() / samples.len() as f64
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_level_across_rates() {
        for (from, to) in
            [(44_100, 48_000), (48_000, 44_100), (16_000, 48_000), (48_000, 48_000), (96_000, 48_000)]
        {
            let mut resampler = StreamResampler::new(from, to).unwrap();
            // Pushed in odd-sized pieces, as callbacks deliver them.
            let input = sine(1_000.0, from, from as usize);
            for piece in input.chunks(333) {
                resampler.push(piece.iter().copied());
            }
            let out: Vec<f32> = resampler.take(usize::MAX).collect();
            let expected = to as usize;
            assert!(
                out.len() + to as usize / 20 >= expected && out.len() <= expected,
                "{from}->{to}: {}",
                out.len()
            );
            let steady = &out[out.len() / 4..out.len() * 3 / 4];
            let at_pitch = level(steady, 1_000.0, to);
            assert!((at_pitch - 0.5).abs() < 0.02, "{from}->{to}: level {at_pitch}");
            assert!(level(steady, 1_088.0, to) < 0.05, "{from}->{to}: the pitch moved");
        }
    }

    #[test]
    fn silly_rates_are_refused() {
        assert!(StreamResampler::new(0, 48_000).is_err());
        assert!(StreamResampler::new(48_000, 10_000_000).is_err());
    }
}
