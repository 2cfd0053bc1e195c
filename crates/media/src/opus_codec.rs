//! Opus at 48 kHz, 20 ms frames, mono for voice or stereo for music mode: in-band FEC and DTX
//! configurable, and a decoder that recovers a lost frame from the next packet's FEC data when it
//! has it, and conceals it otherwise.

use crate::synthetic::SAMPLE_RATE;

/// Samples in one 20 ms frame, per channel.
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 50) as usize;

/// The largest packet the encoder may produce.
const MAX_PACKET: usize = 1_500;

/// Why Opus failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpusError {
    /// libopus refused a setting or failed.
    #[error("opus: {0}")]
    Codec(#[from] opus::Error),
    /// A frame was not 20 ms long.
    #[error("an Opus frame is {FRAME_SAMPLES} samples per channel, not {0} in all")]
    FrameLength(usize),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate, bits per second.
    pub bitrate_bps: i32,
    /// Put a low-bitrate copy of each frame into the next packet.
    pub fec: bool,
    /// The loss rate FEC is tuned for, in percent.
    pub expected_loss_percent: u8,
    /// Send (almost) nothing during silence.
    pub dtx: bool,
    /// Two channels, tuned for music rather than speech (music mode).
    pub stereo: bool,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self { bitrate_bps: 32_000, fec: true, expected_loss_percent: 10, dtx: false, stereo: false }
    }
}

impl OpusConfig {
    /// Music mode: stereo at 128 kbit/s, tuned for music, no DTX (quiet passages are music too).
    pub fn music() -> Self {
        Self { bitrate_bps: 128_000, fec: true, expected_loss_percent: 10, dtx: false, stereo: true }
    }

    fn channels(self) -> opus::Channels {
        if self.stereo { opus::Channels::Stereo } else { opus::Channels::Mono }
    }
}

/// An Opus encoder for one microphone.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    channels: usize,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder at 48 kHz: mono voice, or stereo music when `config.stereo`.
    pub fn new(config: OpusConfig) -> Result<Self, OpusError> {
        let application = if config.stereo { opus::Application::Audio } else { opus::Application::Voip };
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, config.channels(), application)?;
        encoder.set_bitrate(opus::Bitrate::Bits(config.bitrate_bps))?;
        encoder.set_inband_fec(config.fec)?;
        encoder.set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))?;
        encoder.set_dtx(config.dtx)?;
        Ok(Self { encoder, channels: if config.stereo { 2 } else { 1 } })
    }

    /// Retunes the running encoder: target bitrate, in-band FEC, and the loss (percent) FEC is
    /// tuned for. Takes effect from the next frame.
    pub fn tune(&mut self, bitrate_bps: i32, fec: bool, loss_percent: u8) -> Result<(), OpusError> {
        self.encoder.set_bitrate(opus::Bitrate::Bits(bitrate_bps))?;
        self.encoder.set_inband_fec(fec)?;
        self.encoder.set_packet_loss_perc(i32::from(loss_percent.min(100)))?;
        Ok(())
    }

    /// Encodes one 20 ms frame (interleaved when stereo).
    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, OpusError> {
        if frame.len() != FRAME_SAMPLES * self.channels {
            return Err(OpusError::FrameLength(frame.len()));
        }
        Ok(self.encoder.encode_vec(frame, MAX_PACKET)?)
    }
}

/// An Opus decoder for one remote stream.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    channels: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder at 48 kHz mono (a stereo stream is mixed down).
    pub fn new() -> Result<Self, OpusError> {
        Self::with_channels(false)
    }

    /// A decoder at 48 kHz giving interleaved stereo when `stereo` (a mono stream is spread to
    /// both channels).
    pub fn with_channels(stereo: bool) -> Result<Self, OpusError> {
        let channels = if stereo { opus::Channels::Stereo } else { opus::Channels::Mono };
        Ok(Self { decoder: opus::Decoder::new(SAMPLE_RATE, channels)?, channels: if stereo { 2 } else { 1 } })
    }

    /// One 20 ms frame of audio for the frame whose packet is `packet`.
    ///
    /// When the packet was lost (`None`): if the next packet has already arrived (`next`), the
    /// frame is rebuilt from its FEC data; otherwise it is concealed (extrapolated).
    /// A corrupt packet is concealed too, and reported.
    pub fn decode(&mut self, packet: Option<&[u8]>, next: Option<&[u8]>) -> Result<Vec<i16>, OpusError> {
        let mut out = vec![0i16; FRAME_SAMPLES * self.channels];
        let decoded = match (packet, next) {
            (Some(packet), _) => self.decoder.decode(packet, &mut out, false),
            (None, Some(next)) => self.decoder.decode(next, &mut out, true),
            (None, None) => self.decoder.decode(&[], &mut out, false),
        };
        match decoded {
            Ok(_) => Ok(out),
            Err(err) => {
                // Keep the stream going: conceal this frame, then report.
                let _ = self.decoder.decode(&[], &mut out, false);
                Err(err.into())
            }
        }
    }
}
