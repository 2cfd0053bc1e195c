//! Finding message boundaries on a TURN stream (RFC 8656 §12.5, RFC 6062 §4).
//!
//! The first two bits of each message tell its kind: `00` a STUN message (20-byte header whose
//! bytes 2..4 give the length of the attributes, always a multiple of four, and bytes 4..8 the
//! magic cookie), `01` a ChannelData message (a 4-byte header: channel number 0x4000..=0x4FFF,
//! then the data's length; the data is padded to a multiple of four on a stream). Anything else
//! means the stream is not TURN, or lost its framing: it cannot be resynchronised and is closed.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The largest message a stream can carry: a STUN message whose length field says 65,532 (the
/// largest multiple of four), which is longer than the largest ChannelData (4 + 65,535 + 1
/// padding).
pub const MAX_FRAME: usize = STUN_HEADER + 65_532;

const STUN_HEADER: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The other side closed the stream between two messages.
    #[error("the stream was closed")]
    Closed,
    /// A message that is neither STUN nor ChannelData: the stream is not TURN, or lost its framing.
    #[error("not a TURN stream: a message began with {0:#04x}")]
    NotTurn(u8),
    /// A STUN message whose length is not a multiple of four.
    #[error("a STUN message with length {0}, not a multiple of four")]
    BadLength(u16),
    /// The stream failed, or ended inside a message.
    #[error("reading the stream: {0}")]
    Io(#[from] io::Error),
}

/// Reads the next message into `buf` (at least [`MAX_FRAME`] bytes long) and returns its length:
/// a whole STUN message, or a ChannelData message without its padding.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    if buf.len() < MAX_FRAME {
        return Err(FrameError::Io(io::Error::new(io::ErrorKind::InvalidInput, "frame buffer too small")));
    }
    // The first byte apart, to tell a clean close from one inside a message.
    if reader.read(&mut buf[..1]).await? == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut buf[1..4]).await?;
    let length = u16::from_be_bytes([buf[2], buf[3]]);
    match buf[0] >> 6 {
        0b00 => {
            if !length.is_multiple_of(4) {
                return Err(FrameError::BadLength(length));
            }
            let total = STUN_HEADER + usize::from(length);
            if total > buf.len() {
                return Err(FrameError::BadLength(length));
            }
            reader.read_exact(&mut buf[4..STUN_HEADER]).await?;
            if buf[4..8] != MAGIC_COOKIE {
                return Err(FrameError::NotTurn(buf[0]));
            }
            reader.read_exact(&mut buf[STUN_HEADER..total]).await?;
            Ok(total)
        }
        0b01 if buf[0] <= 0x4F => {
            let data = 4 + usize::from(length);
            let padded = data.next_multiple_of(4);
            reader.read_exact(&mut buf[4..padded]).await?;
            Ok(data)
        }
        _ => Err(FrameError::NotTurn(buf[0])),
    }
}

/// The bytes to write for `message` on a stream: a ChannelData message padded to a multiple of
/// four (the `turn` crate pads already; a sender that did not would desynchronise the reader).
pub(crate) fn padding(message: &[u8]) -> &'static [u8] {
    const ZEROS: [u8; 3] = [0; 3];
    let is_channel_data = message.first().is_some_and(|b| b >> 6 == 0b01);
    if is_channel_data { &ZEROS[..(4 - message.len() % 4) % 4] } else { &[] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(attributes: &[u8]) -> Vec<u8> {
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
        message.extend_from_slice(&MAGIC_COOKIE);
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(attributes);
        message
    }

    fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
        let mut message = channel.to_be_bytes().to_vec();
        message.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        message.extend_from_slice(data);
        message.resize(message.len().next_multiple_of(4), 0);
        message
    }

    async fn frames(stream: &[u8]) -> (Vec<Vec<u8>>, FrameError) {
        let mut reader = stream;
        let mut buf = vec![0; MAX_FRAME];
        let mut out = Vec::new();
        loop {
            match read_frame(&mut reader, &mut buf).await {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(e) => return (out, e),
            }
        }
    }

    #[tokio::test]
    async fn messages_back_to_back_come_apart_and_padding_is_dropped() {
        let first = stun(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let media = channel_data(0x4001, &[9; 5]);
        let largest = channel_data(0x4FFF, &vec![3; 65_535]);
        let largest_stun = stun(&vec![5; 65_532]);
        let stream = [first.clone(), media.clone(), largest.clone(), largest_stun, stun(&[])].concat();
        let (got, end) = frames(&stream).await;
        assert!(matches!(end, FrameError::Closed), "{end}");
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], first);
        assert_eq!(got[1], media[..9], "5 bytes of data after the header, 3 of padding gone");
        assert_eq!(got[2].len(), 4 + 65_535);
        assert_eq!(got[3].len(), 20 + 65_532, "the largest STUN message fits");
        assert_eq!(got[4].len(), 20);
    }

    #[test]
    fn unpadded_channel_data_is_padded_on_write() {
        assert_eq!(padding(&[0x40, 0x01, 0, 1, 9]).len(), 3);
        assert_eq!(padding(&[0x40, 0x01, 0, 4, 1, 2, 3, 4]).len(), 0);
        assert_eq!(padding(&stun(&[])).len(), 0);
        assert_eq!(padding(&[]).len(), 0);
    }

    #[tokio::test]
    async fn what_is_not_turn_ends_the_stream_with_its_reason() {
        let (_, end) = frames(b"GET / HTTP/1.1\r\n\r\n").await;
        // 'G' is 0x47, in the ChannelData range: read as one, then the stream ends inside it.
        assert!(matches!(end, FrameError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof), "{end}");
        let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        hello.resize(64, 0);
        let (_, end) = frames(&hello).await;
        // A TLS record header (16 03 01 LEN): bytes 2..4 read as a STUN length of 0x0102.
        assert!(matches!(end, FrameError::BadLength(258)), "a TLS hello sent to plain TCP: {end}");
        let (_, end) = frames(&[0x80, 0, 0, 0]).await;
        assert!(matches!(end, FrameError::NotTurn(0x80)), "{end}");
        let (_, end) = frames(&[0x50, 0, 0, 0]).await;
        assert!(matches!(end, FrameError::NotTurn(0x50)), "channel 0x5000 is reserved: {end}");
        let mut bad_cookie = stun(&[]);
        bad_cookie[4] = 0;
        let (_, end) = frames(&bad_cookie).await;
        assert!(matches!(end, FrameError::NotTurn(0)), "{end}");
        let mut odd = stun(&[0; 4]);
        odd[3] = 5;
        let (_, end) = frames(&odd).await;
        assert!(matches!(end, FrameError::BadLength(5)), "{end}");
        let (got, end) = frames(&stun(&[1; 8])[..25]).await;
        assert!(got.is_empty() && matches!(end, FrameError::Io(_)), "cut inside a message: {end}");
    }
}
