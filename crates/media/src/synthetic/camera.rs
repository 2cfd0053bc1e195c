//! The synthetic camera paints, into every frame, a machine-readable stamp (participant id,
//! frame counter, capture time) and something a person recognises (a colour of its own, a
//! moving square, and the participant's name at the bottom left). [`read_stamp`] reads the stamp
//! back from a decoded frame.
//!
//! The stamp is 128 bits in a 16 x 8 grid of black or white cells at the top left. A cell is
//! 1/40 of the frame's width (16 px at 640 wide), so the stamp survives H.264 at low bitrates
//! and any scaling that keeps the aspect ratio: the reader derives the grid from the frame it
//! is given. Bits: magic (8) | id (32) | counter (32) | capture time in Unix ms (48) | CRC-8 (8).

use super::font::{GLYPH_HEIGHT, GLYPH_WIDTH, glyph};
use crate::{FrameError, I420Frame};

/// What a stamped frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStamp {
    /// The sending participant's pattern id.
    pub id: u32,
    /// Frames since the camera started, from 0.
    pub counter: u32,
    /// When it was captured, Unix milliseconds (48 bits).
    pub captured_ms: u64,
}

const MAGIC: u8 = 0xC5;
const COLUMNS: usize = 16;
const ROWS: usize = 8;
const BLACK: u8 = 16;
const WHITE: u8 = 235;

/// A camera that needs no hardware.
#[derive(Debug)]
pub struct SyntheticCamera {
    id: u32,
    width: usize,
    height: usize,
    counter: u32,
    background: (u8, u8, u8),
    texture: Texture,
    name: String,
}

impl SyntheticCamera {
    /// A camera for pattern `id` at this size (even, at least 160 x 90).
    pub fn new(id: u32, width: usize, height: usize) -> Result<Self, FrameError> {
        if width < 160 || height < 90 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(FrameError::Dimensions { width, height });
        }
        let background = colour_of(id);
        let texture = Texture::new(width, height, background.0);
        Ok(Self { id, width, height, counter: 0, background, texture, name: String::new() })
    }

    /// Paints `name` at the bottom left of every frame, in capitals, cut to what fits in the
    /// left half of the frame (the square moves in the right half).
    pub fn with_name(mut self, name: &str) -> Self {
        let fits = self.width / 2 / (name_scale(self.width) * (GLYPH_WIDTH + 1));
        self.name = name.chars().take(fits).collect();
        self
    }

    /// The next frame, stamped with `captured_ms` (the caller's clock, so tests can fake it).
    pub fn next_frame(&mut self, captured_ms: u64) -> (I420Frame, FrameStamp) {
        let stamp =
            FrameStamp { id: self.id, counter: self.counter, captured_ms: captured_ms & 0xFFFF_FFFF_FFFF };
        self.counter = self.counter.wrapping_add(1);
        let mut frame = I420Frame::filled(self.width, self.height, self.background)
            .unwrap_or_else(|_| unreachable!("dimensions were checked in new()"));
        self.texture.paint(&mut frame, stamp.counter);
        paint_square(&mut frame, stamp.counter);
        paint_stamp(&mut frame, &stamp);
        paint_name(&mut frame, &self.name);
        (frame, stamp)
    }
}

/// A mid-bright colour of its own for each id, so people can tell tiles apart.
fn colour_of(id: u32) -> (u8, u8, u8) {
    let hue = f64::from(id.wrapping_mul(2_654_435_761) >> 8) / f64::from(1u32 << 24) * std::f64::consts::TAU;
    let (u, v) = (128.0 + 60.0 * hue.cos(), 128.0 + 60.0 * hue.sin());
    (110, u.round() as u8, v.round() as u8)
}

fn cell_size(width: usize) -> usize {
    (width / 40).max(4)
}

/// The texture repeats every this many pixels horizontally.
const TEXTURE_PERIOD: usize = 48;
/// Extra noise samples, so each frame can start reading the table somewhere else.
const NOISE_SLACK: usize = 8191;

/// What makes the picture as hard to encode as a camera's: a textured background that pans two
/// pixels a frame, and sensor noise (±4 luma levels) that differs in every frame. Both are made
/// once; a frame only copies rows and adds noise from a shifted window of the table.
#[derive(Debug)]
struct Texture {
    /// The background luma, `width + TEXTURE_PERIOD` wide so any pan offset is a plain slice.
    background: Vec<u8>,
    noise: Vec<i8>,
}

impl Texture {
    fn new(width: usize, height: usize, base_luma: u8) -> Self {
        let stride = width + TEXTURE_PERIOD;
        let mut background = Vec::with_capacity(stride * height);
        for y in 0..height {
            for x in 0..stride {
                // Diagonal stripes and a coarse checker: edges at several scales.
                let stripes = ((x + y) % 48) as i32 - 24;
                let checker = if ((x / 24) + (y / 24)) % 2 == 0 { 14 } else { -14 };
                background.push((i32::from(base_luma) + stripes + checker).clamp(20, 231) as u8);
            }
        }
        let mut state = 0x9E37_79B9_u32;
        let noise = (0..width * height + NOISE_SLACK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 9) as i8 - 4
            })
            .collect();
        Self { background, noise }
    }

    fn paint(&self, frame: &mut I420Frame, counter: u32) {
        let width = frame.width();
        let stride = width + TEXTURE_PERIOD;
        let shift = (counter as usize * 2) % TEXTURE_PERIOD;
        let start = (counter as usize).wrapping_mul(4099) % NOISE_SLACK;
        let noise = &self.noise[start..start + width * frame.height()];
        let (y, _, _) = frame.planes_mut();
        for (row, (line, grain)) in y.chunks_mut(width).zip(noise.chunks(width)).enumerate() {
            let source = &self.background[row * stride + shift..row * stride + shift + width];
            for ((pixel, &base), &n) in line.iter_mut().zip(source).zip(grain) {
                *pixel = base.saturating_add_signed(n);
            }
        }
    }
}

/// A white square that bounces across the right part of the frame, one step per frame.
fn paint_square(frame: &mut I420Frame, counter: u32) {
    let (w, h) = (frame.width(), frame.height());
    let size = (h / 6).max(8);
    let x0 = w / 2;
    let span_x = w.saturating_sub(x0 + size).max(1);
    let span_y = h.saturating_sub(size).max(1);
    let bounce = |t: usize, span: usize| {
        let p = t % (2 * span);
        if p < span { p } else { 2 * span - p }
    };
    let t = counter as usize * 4;
    frame.fill_rect(x0 + bounce(t, span_x), bounce(t * 3 / 4, span_y), size, size, (220, 128, 128));
}

/// Screen pixels per font pixel: 4 at 640 wide.
fn name_scale(width: usize) -> usize {
    (width / 160).max(1)
}

/// Where the name's first glyph starts (top left), and the scale.
fn name_origin(frame: &I420Frame) -> (usize, usize, usize) {
    let scale = name_scale(frame.width());
    (2 * scale, frame.height() - (GLYPH_HEIGHT + 2) * scale, scale)
}

/// White capitals on a dark band.
fn paint_name(frame: &mut I420Frame, name: &str) {
    if name.is_empty() {
        return;
    }
    let (x0, y0, scale) = name_origin(frame);
    let advance = (GLYPH_WIDTH + 1) * scale;
    let band_width = name.chars().count() * advance + 3 * scale;
    frame.fill_rect(0, y0 - scale, band_width, (GLYPH_HEIGHT + 2) * scale, (BLACK, 128, 128));
    for (i, c) in name.chars().enumerate() {
        let (_, rows) = glyph(c);
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH_WIDTH {
                if bits >> (GLYPH_WIDTH - 1 - col) & 1 == 1 {
                    let (x, y) = (x0 + i * advance + col * scale, y0 + row * scale);
                    frame.fill_rect(x, y, scale, scale, (WHITE, 128, 128));
                }
            }
        }
    }
}

fn stamp_bits(stamp: &FrameStamp) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0] = MAGIC;
    bytes[1..5].copy_from_slice(&stamp.id.to_be_bytes());
    bytes[5..9].copy_from_slice(&stamp.counter.to_be_bytes());
    bytes[9..15].copy_from_slice(&stamp.captured_ms.to_be_bytes()[2..]);
    bytes[15] = crc8(&bytes[..15]);
    bytes
}

pub(super) fn paint_stamp(frame: &mut I420Frame, stamp: &FrameStamp) {
    let cell = cell_size(frame.width());
    // A black frame one cell wide around the grid separates it from the background.
    frame.fill_rect(0, 0, (COLUMNS + 2) * cell, (ROWS + 2) * cell, (BLACK, 128, 128));
    let bytes = stamp_bits(stamp);
    for bit in 0..COLUMNS * ROWS {
        let on = bytes[bit / 8] >> (7 - bit % 8) & 1 == 1;
        let (col, row) = (bit % COLUMNS, bit / COLUMNS);
        let luma = if on { WHITE } else { BLACK };
        frame.fill_rect((col + 1) * cell, (row + 1) * cell, cell, cell, (luma, 128, 128));
    }
}

/// Reads the stamp from a frame, or `None` if there is none (or it is damaged: the CRC
/// catches that).
pub fn read_stamp(frame: &I420Frame) -> Option<FrameStamp> {
    let cell = cell_size(frame.width());
    if (ROWS + 2) * cell > frame.height() || (COLUMNS + 2) * cell > frame.width() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for bit in 0..COLUMNS * ROWS {
        let (col, row) = (bit % COLUMNS, bit / COLUMNS);
        // The middle half of the cell: edges blur under compression and scaling.
        let (x0, y0) = ((col + 1) * cell + cell / 4, (row + 1) * cell + cell / 4);
        let side = (cell / 2).max(1);
        let mut sum = 0u32;
        for y in y0..y0 + side {
            sum += frame.y()[y * frame.width() + x0..y * frame.width() + x0 + side]
                .iter()
                .map(|&p| u32::from(p))
                .sum::<u32>();
        }
        let mean = sum / (side * side) as u32;
        if mean > u32::from(BLACK / 2 + WHITE / 2) {
            bytes[bit / 8] |= 1 << (7 - bit % 8);
        }
    }
    if bytes[0] != MAGIC || crc8(&bytes[..15]) != bytes[15] {
        return None;
    }
    let id = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
    let counter = u32::from_be_bytes(bytes[5..9].try_into().ok()?);
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[9..15]);
    Some(FrameStamp { id, counter, captured_ms: u64::from_be_bytes(ms) })
}

/// CRC-8, polynomial 0x07.
fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |mut crc, &byte| {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_frame_carries_id_counter_and_time() {
        let mut camera = SyntheticCamera::new(0xDEAD_BEEF, 640, 360).unwrap();
        for n in 0..5u32 {
            let (frame, stamp) = camera.next_frame(1_795_000_000_000 + u64::from(n) * 33);
            assert_eq!(stamp.counter, n);
            assert_eq!(read_stamp(&frame), Some(stamp));
        }
    }

    /// Reads `chars` glyphs of the painted name back, with the camera's own font.
    fn read_name(frame: &I420Frame, chars: usize) -> String {
        let (x0, y0, scale) = name_origin(frame);
        (0..chars)
            .map(|i| {
                let mut rows = [0u8; GLYPH_HEIGHT];
                for (row, bits) in rows.iter_mut().enumerate() {
                    for col in 0..GLYPH_WIDTH {
                        let x = x0 + i * (GLYPH_WIDTH + 1) * scale + col * scale + scale / 2;
                        let y = y0 + row * scale + scale / 2;
                        if frame.y()[y * frame.width() + x] > 128 {
                            *bits |= 1 << (GLYPH_WIDTH - 1 - col);
                        }
                    }
                }
                crate::synthetic::font::GLYPHS.iter().find(|(_, g)| *g == rows).map_or('#', |(c, _)| *c)
            })
            .collect()
    }

    #[test]
    fn the_name_is_painted_legibly_and_cut_to_fit() {
        let mut camera = SyntheticCamera::new(3, 640, 360).unwrap().with_name("Zoë-9 q.");
        let (frame, stamp) = camera.next_frame(0);
        assert_eq!(read_name(&frame, 8), "ZO?-9 Q.");
        assert_eq!(read_stamp(&frame), Some(stamp), "the name leaves the stamp alone");
        let long = SyntheticCamera::new(3, 320, 180).unwrap().with_name(&"A".repeat(100));
        assert_eq!(long.name.len(), 13, "a long name is cut to the left half");
        let (small, _) = SyntheticCamera::new(3, 160, 90).unwrap().with_name("Bo").next_frame(0);
        assert_eq!(read_name(&small, 2), "BO");
    }

    #[test]
    fn cameras_differ_in_colour_and_the_square_moves() {
        let (a, _) = SyntheticCamera::new(1, 640, 360).unwrap().next_frame(0);
        let (b, _) = SyntheticCamera::new(2, 640, 360).unwrap().next_frame(0);
        let corner = |f: &I420Frame| (f.u()[f.u().len() - 1], f.v()[f.v().len() - 1]);
        assert_ne!(corner(&a), corner(&b), "two participants get two colours");
        let mut camera = SyntheticCamera::new(1, 640, 360).unwrap();
        let (first, _) = camera.next_frame(0);
        let (second, _) = camera.next_frame(33);
        let right_half =
            |f: &I420Frame| -> Vec<u8> { f.y().chunks(640).flat_map(|row| row[320..].to_vec()).collect() };
        assert_ne!(right_half(&first), right_half(&second), "the square moved");
    }

    #[test]
    fn a_frame_without_a_stamp_or_with_a_damaged_one_reads_as_none() {
        let plain = I420Frame::filled(640, 360, (110, 128, 128)).unwrap();
        assert_eq!(read_stamp(&plain), None);
        let (mut frame, _) = SyntheticCamera::new(7, 640, 360).unwrap().next_frame(5);
        // Flip one data cell: the CRC refuses the result.
        let cell = cell_size(640);
        let (x, y) = (5 * cell, 3 * cell);
        let luma = frame.y()[y * 640 + x + cell / 2];
        let flipped = if luma > 128 { BLACK } else { WHITE };
        frame.fill_rect(x, y, cell, cell, (flipped, 128, 128));
        assert_eq!(read_stamp(&frame), None);
    }

    #[test]
    fn the_stamp_survives_noise() {
        let (mut frame, stamp) = SyntheticCamera::new(42, 640, 360).unwrap().next_frame(123_456);
        let (y, _, _) = frame.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            let noise = ((i * 7919) % 61) as i16 - 30;
            *p = (i16::from(*p) + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read_stamp(&frame), Some(stamp));
    }

    proptest! {
        #[test]
        fn stamps_round_trip_at_any_size(id: u32, ms in 0u64..(1 << 48), w in 80usize..640, h in 45usize..400) {
            let (w, h) = (w * 2, h * 2);
            let mut camera = SyntheticCamera::new(id, w, h).unwrap();
            let (frame, stamp) = camera.next_frame(ms);
            if (ROWS + 2) * cell_size(w) <= h {
                prop_assert_eq!(read_stamp(&frame), Some(stamp));
            }
        }

        #[test]
        fn reading_any_frame_never_panics(w in 1usize..200, h in 1usize..200, fill: u8) {
            if let Ok(frame) = I420Frame::filled(w * 2, h * 2, (fill, 128, 128)) {
                let _ = read_stamp(&frame);
            }
        }
    }
}
