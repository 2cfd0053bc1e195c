//! A synthetic screen to share: a white page of dark text lines, what a shared document looks
//! like to an encoder (flat background, sharp small edges), scrolling a few pixels a frame or
//! standing still, with the synthetic camera's stamp at the top left so a receiver can read back
//! whose share arrived and how fresh it is.

use super::FrameStamp;
use super::camera::paint_stamp;
use super::font::{GLYPH_HEIGHT, GLYPH_WIDTH, glyph};
use crate::{FrameError, I420Frame};

const PAPER: u8 = 235;
const INK: u8 = 40;
/// Font pixels per glyph pixel.
const SCALE: usize = 2;
const LINE: usize = (GLYPH_HEIGHT + 4) * SCALE;
const ADVANCE: usize = (GLYPH_WIDTH + 1) * SCALE;

/// A page of text, scrolled `scroll` pixels further at every frame.
#[derive(Debug)]
pub struct SyntheticScreen {
    id: u32,
    width: usize,
    height: usize,
    scroll: usize,
    counter: u32,
    /// The page, taller than the frame by one screenful so scrolling wraps smoothly.
    page: Vec<u8>,
}

impl SyntheticScreen {
    /// A `width` x `height` screen (even, at least 160 x 90) showing pattern `id`, scrolling
    /// `scroll` pixels a frame (0: a still page).
    pub fn new(id: u32, width: usize, height: usize, scroll: usize) -> Result<Self, FrameError> {
        if width < 160 || height < 90 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(FrameError::Dimensions { width, height });
        }
        let rows = 2 * height;
        let mut page = vec![PAPER; width * rows];
        let mut state = id.wrapping_mul(2_654_435_761) | 1;
        let mut random = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize % below
        };
        let letters: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".chars().collect();
        for line in 0..rows / LINE {
            let (mut x, y) = (4 * SCALE, line * LINE + 2 * SCALE);
            // Ragged right edges, as text has.
            let end = width - 4 * SCALE - random(width / 3);
            while x + ADVANCE < end {
                let word = 2 + random(8);
                for _ in 0..word {
                    if x + ADVANCE >= end {
                        break;
                    }
                    paint_glyph(&mut page, width, (x, y), letters[random(letters.len())]);
                    x += ADVANCE;
                }
                x += ADVANCE;
            }
        }
        Ok(Self { id, width, height, scroll, counter: 0, page })
    }

    /// The next frame, stamped with `captured_ms`.
    pub fn next_frame(&mut self, captured_ms: u64) -> (I420Frame, FrameStamp) {
        let stamp =
            FrameStamp { id: self.id, counter: self.counter, captured_ms: captured_ms & 0xFFFF_FFFF_FFFF };
        let offset = (self.counter as usize * self.scroll) % self.height;
        self.counter = self.counter.wrapping_add(1);
        let mut frame = I420Frame::filled(self.width, self.height, (PAPER, 128, 128))
            .unwrap_or_else(|_| unreachable!("dimensions were checked in new()"));
        let (y, _, _) = frame.planes_mut();
        y.copy_from_slice(&self.page[offset * self.width..(offset + self.height) * self.width]);
        paint_stamp(&mut frame, &stamp);
        (frame, stamp)
    }
}

fn paint_glyph(page: &mut [u8], width: usize, (x0, y0): (usize, usize), c: char) {
    let (_, rows) = glyph(c);
    for (row, bits) in rows.iter().enumerate() {
        for col in 0..GLYPH_WIDTH {
            if bits >> (GLYPH_WIDTH - 1 - col) & 1 == 1 {
                for dy in 0..SCALE {
                    let start = (y0 + row * SCALE + dy) * width + x0 + col * SCALE;
                    page[start..start + SCALE].fill(INK);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::read_stamp;

    #[test]
    fn a_page_of_text_scrolls_and_carries_its_stamp() {
        let mut screen = SyntheticScreen::new(12, 640, 360, 4).unwrap();
        let (first, stamp) = screen.next_frame(1_000);
        assert_eq!(read_stamp(&first), Some(stamp));
        let ink = first.y().iter().filter(|&&p| p == INK).count();
        assert!(ink > 640 * 360 / 50, "there is text: {ink} dark pixels");
        let (second, _) = screen.next_frame(1_040);
        // Below the stamp, the second frame is the first moved up by 4 rows.
        let row = |f: &I420Frame, r: usize| f.y()[r * 640 + 320..r * 640 + 640].to_vec();
        assert_eq!(row(&second, 200), row(&first, 204));
        let mut still = SyntheticScreen::new(12, 640, 360, 0).unwrap();
        let (a, _) = still.next_frame(0);
        let (b, _) = still.next_frame(40);
        assert_eq!(row(&a, 300), row(&b, 300));
        assert!(SyntheticScreen::new(1, 100, 100, 0).is_err());
    }
}
