//! Video frames in I420 (planar YUV 4:2:0, BT.601 limited range): what cameras are converted to,
//! what the encoder takes and the decoder gives back.

/// Why a frame could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Width and height must be even and non-zero (4:2:0 halves both for chroma).
    #[error("a frame must have even, non-zero dimensions, not {width}x{height}")]
    Dimensions {
        /// The width given.
        width: usize,
        /// The height given.
        height: usize,
    },
    /// A plane is shorter than its dimensions and stride need.
    #[error("the {plane} plane holds {got} bytes, {needed} are needed")]
    PlaneTooShort {
        /// Which plane.
        plane: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

/// One I420 frame with tightly packed planes (stride = width).
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

impl I420Frame {
    /// A frame filled with one colour.
    pub fn filled(width: usize, height: usize, (y, u, v): (u8, u8, u8)) -> Result<Self, FrameError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(FrameError::Dimensions { width, height });
        }
        let chroma = (width / 2) * (height / 2);
        Ok(Self { width, height, y: vec![y; width * height], u: vec![u; chroma], v: vec![v; chroma] })
    }

    /// A frame copied from planes with the given strides (as a decoder hands them out).
    pub fn from_planes(
        width: usize,
        height: usize,
        (y, u, v): (&[u8], &[u8], &[u8]),
        (y_stride, u_stride, v_stride): (usize, usize, usize),
    ) -> Result<Self, FrameError> {
        let mut frame = Self::filled(width, height, (0, 128, 128))?;
        let (cw, ch) = (width / 2, height / 2);
        copy_plane("y", &mut frame.y, width, height, y, y_stride)?;
        copy_plane("u", &mut frame.u, cw, ch, u, u_stride)?;
        copy_plane("v", &mut frame.v, cw, ch, v, v_stride)?;
        Ok(frame)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The luma plane (stride = width).
    pub fn y(&self) -> &[u8] {
        &self.y
    }

    /// The blue-difference chroma plane (stride = width / 2).
    pub fn u(&self) -> &[u8] {
        &self.u
    }

    /// The red-difference chroma plane (stride = width / 2).
    pub fn v(&self) -> &[u8] {
        &self.v
    }

    /// All three planes, mutably.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        (&mut self.y, &mut self.u, &mut self.v)
    }

    /// Paints a rectangle in one colour, clipped to the frame.
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, (cy, cu, cv): (u8, u8, u8)) {
        let (x_end, y_end) = ((x + w).min(self.width), (y + h).min(self.height));
        for row in y.min(self.height)..y_end {
            self.y[row * self.width + x..row * self.width + x_end].fill(cy);
        }
        let cw = self.width / 2;
        for row in (y / 2)..y_end.div_ceil(2).min(self.height / 2) {
            let (start, end) = (row * cw + x / 2, row * cw + x_end.div_ceil(2).min(cw));
            if start < end {
                self.u[start..end].fill(cu);
                self.v[start..end].fill(cv);
            }
        }
    }

    /// This frame scaled down to fit inside `width` x `height` (aspect kept, even dimensions;
    /// as a tile shows it, letterboxed), or `None` if it is not at least a quarter larger than
    /// that already.
    /// Halves by 2x2 averages while it can, then resamples bilinearly: no aliasing shimmer from
    /// skipped pixels, and a 2x step (640x360 to a 320x180 tile) is one pass of averages.
    pub fn scaled_to_fit(&self, width: usize, height: usize) -> Option<Self> {
        let (w, h) = (self.width as f64, self.height as f64);
        let scale = (width as f64 / w).min(height as f64 / h);
        if !(scale > 0.0 && scale <= 0.8) {
            return None;
        }
        let even = |v: f64| ((v / 2.0).round() as usize).max(1) * 2;
        let (out_w, out_h) = (even(w * scale), even(h * scale));
        let mut current = std::borrow::Cow::Borrowed(self);
        while current.width / 2 >= out_w
            && current.height / 2 >= out_h
            && current.width.is_multiple_of(4)
            && current.height.is_multiple_of(4)
        {
            current = std::borrow::Cow::Owned(current.halved());
        }
        if (current.width, current.height) == (out_w, out_h) {
            return Some(current.into_owned());
        }
        let (cw, ch) = (out_w / 2, out_h / 2);
        Some(Self {
            width: out_w,
            height: out_h,
            y: bilinear(&current.y, current.width, current.height, out_w, out_h),
            u: bilinear(&current.u, current.width / 2, current.height / 2, cw, ch),
            v: bilinear(&current.v, current.width / 2, current.height / 2, cw, ch),
        })
    }

    /// The picture as R G B bytes, row after row (BT.601, limited range): for a thumbnail, a
    /// test that paints it into a window.
    pub fn to_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut out = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            for col in 0..w {
                let y = i32::from(self.y[row * w + col]) - 16;
                let chroma = (row / 2) * (w / 2) + col / 2;
                let (u, v) = (i32::from(self.u[chroma]) - 128, i32::from(self.v[chroma]) - 128);
                let r = (298 * y + 409 * v + 128) >> 8;
                let g = (298 * y - 100 * u - 208 * v + 128) >> 8;
                let b = (298 * y + 516 * u + 128) >> 8;
                out.extend([r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8]);
            }
        }
        out
    }

    /// Half the size by 2x2 averages (width and height multiples of 4).
    fn halved(&self) -> Self {
        let (w, h) = (self.width / 2, self.height / 2);
        Self {
            width: w,
            height: h,
            y: halve(&self.y, self.width, w, h),
            u: halve(&self.u, self.width / 2, w / 2, h / 2),
            v: halve(&self.v, self.width / 2, w / 2, h / 2),
        }
    }

    /// Luma PSNR against another frame of the same size, in dB (`f64::INFINITY` if identical).
    pub fn luma_psnr(&self, other: &Self) -> Option<f64> {
        if (self.width, self.height) != (other.width, other.height) {
            return None;
        }
        let sse: u64 = self.y.iter().zip(&other.y).map(|(&a, &b)| u64::from(a.abs_diff(b)).pow(2)).sum();
        if sse == 0 {
            return Some(f64::INFINITY);
        }
        let mse = sse as f64 / self.y.len() as f64;
        Some(10.0 * (255.0 * 255.0 / mse).log10())
    }
}

/// A plane of `stride`-wide rows averaged 2x2 into `w` x `h`.
fn halve(src: &[u8], stride: usize, w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        let (top, bottom) = (&src[2 * row * stride..][..2 * w], &src[(2 * row + 1) * stride..][..2 * w]);
        out.extend(top.chunks_exact(2).zip(bottom.chunks_exact(2)).map(|(t, b)| {
            ((u16::from(t[0]) + u16::from(t[1]) + u16::from(b[0]) + u16::from(b[1]) + 2) / 4) as u8
        }));
    }
    out
}

/// A `w` x `h` plane resampled bilinearly to `out_w` x `out_h` (pixel centres aligned), in
/// 8-bit fixed point.
fn bilinear(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    // Source position of each output column or row: its integer part and a weight in 0..=256.
    let taps = |out: usize, len: usize| -> Vec<(usize, usize, u32)> {
        (0..out)
            .map(|i| {
                let pos = ((i as f64 + 0.5) * len as f64 / out as f64 - 0.5).clamp(0.0, (len - 1) as f64);
                let base = pos.floor() as usize;
                (base, (base + 1).min(len - 1), ((pos - base as f64) * 256.0).round() as u32)
            })
            .collect()
    };
    let (columns, rows) = (taps(out_w, w), taps(out_h, h));
    let mut out = Vec::with_capacity(out_w * out_h);
    for &(r0, r1, fy) in &rows {
        let (top, bottom) = (&src[r0 * w..][..w], &src[r1 * w..][..w]);
        out.extend(columns.iter().map(|&(c0, c1, fx)| {
            let blend = |row: &[u8]| u32::from(row[c0]) * (256 - fx) + u32::from(row[c1]) * fx;
            ((blend(top) * (256 - fy) + blend(bottom) * fy + (1 << 15)) >> 16) as u8
        }));
    }
    out
}

fn copy_plane(
    plane: &'static str,
    dst: &mut [u8],
    width: usize,
    height: usize,
    src: &[u8],
    stride: usize,
) -> Result<(), FrameError> {
    let needed = if height == 0 { 0 } else { stride * (height - 1) + width };
    if stride < width || src.len() < needed {
        return Err(FrameError::PlaneTooShort { plane, needed, got: src.len() });
    }
    for row in 0..height {
        dst[row * width..(row + 1) * width].copy_from_slice(&src[row * stride..row * stride + width]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_scale_down_to_fit_a_tile_keeping_colour_aspect_and_the_picture() {
        let frame = I420Frame::filled(640, 360, (90, 60, 200)).unwrap();
        // A 2x step, and an uneven one; colour survives both.
        for ((tw, th), (w, h)) in
            [((320, 180), (320, 180)), ((320, 240), (320, 180)), ((400, 100), (178, 100))]
        {
            let scaled = frame.scaled_to_fit(tw, th).unwrap();
            assert_eq!((scaled.width(), scaled.height()), (w, h), "fit into {tw}x{th}");
            assert!(scaled.y().iter().all(|&v| v == 90) && scaled.u().iter().all(|&v| v == 60));
            assert!(scaled.v().iter().all(|&v| v == 200));
        }
        // Not worth it (or an enlargement): the frame goes as it is.
        assert!(frame.scaled_to_fit(600, 340).is_none());
        assert!(frame.scaled_to_fit(1280, 720).is_none());
        assert!(frame.scaled_to_fit(0, 0).is_none());
        // Tiny tiles still get a valid frame.
        let tiny = frame.scaled_to_fit(1, 1).unwrap();
        assert_eq!((tiny.width(), tiny.height()), (2, 2));
        // The picture is the same picture: the synthetic camera's stamp reads after scaling.
        let mut camera = crate::synthetic::SyntheticCamera::new(9, 640, 360).unwrap();
        let (picture, stamp) = camera.next_frame(1_000);
        for (tw, th) in [(320, 180), (160, 90)] {
            let scaled = picture.scaled_to_fit(tw, th).unwrap();
            assert_eq!(crate::synthetic::read_stamp(&scaled), Some(stamp), "stamp at {tw}x{th}");
        }
        // An uneven step resamples: a ramp stays the same ramp.
        let mut ramp = I420Frame::filled(640, 360, (0, 128, 128)).unwrap();
        for x in 0..640 {
            ramp.fill_rect(x, 0, 1, 360, ((x * 255 / 639) as u8, 128, 128));
        }
        let scaled = ramp.scaled_to_fit(426, 300).unwrap();
        for (i, &value) in scaled.y()[..426].iter().enumerate() {
            let x = ((i as f64 + 0.5) * 640.0 / 426.0 - 0.5).clamp(0.0, 639.0);
            let expected = x * 255.0 / 639.0;
            assert!(
                (f64::from(value) - expected).abs() <= 2.0,
                "column {i}: {value}, expected {expected:.1}"
            );
        }
    }

    #[test]
    fn odd_or_empty_dimensions_are_refused() {
        assert!(I420Frame::filled(3, 2, (0, 0, 0)).is_err());
        assert!(I420Frame::filled(0, 2, (0, 0, 0)).is_err());
        assert!(I420Frame::filled(4, 2, (0, 0, 0)).is_ok());
    }

    #[test]
    fn planes_with_padding_are_copied_and_short_ones_refused() {
        let (w, h) = (4, 2);
        let y: Vec<u8> = (0..16).collect(); // stride 8
        let u = [1u8, 2, 0, 0];
        let v = [3u8, 4, 0, 0];
        let frame = I420Frame::from_planes(w, h, (&y, &u, &v), (8, 4, 4)).unwrap();
        assert_eq!(frame.y(), &[0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(frame.u(), &[1, 2]);
        assert!(matches!(
            I420Frame::from_planes(w, h, (&y[..10], &u, &v), (8, 4, 4)),
            Err(FrameError::PlaneTooShort { plane: "y", .. })
        ));
    }

    #[test]
    fn rgb_comes_back_to_the_same_picture() {
        let mut frame = I420Frame::filled(4, 2, (81, 90, 240)).unwrap();
        frame.fill_rect(2, 0, 2, 2, (235, 128, 128));
        let rgb = frame.to_rgb();
        assert_eq!(rgb.len(), 4 * 2 * 3);
        // Limited-range red (81, 90, 240) is full red; (235, 128, 128) is white.
        assert!(rgb[0] > 250 && rgb[1] < 5 && rgb[2] < 5, "{:?}", &rgb[..3]);
        assert_eq!(&rgb[6..9], &[255, 255, 255]);
        let back = crate::to_i420(crate::PixelFormat::Rgb, &rgb, 4, 2).unwrap();
        assert!(back.luma_psnr(&frame).unwrap() > 40.0);
    }

    #[test]
    fn psnr_is_infinite_for_identical_frames_and_finite_otherwise() {
        let a = I420Frame::filled(8, 8, (100, 128, 128)).unwrap();
        let mut b = a.clone();
        assert_eq!(a.luma_psnr(&b), Some(f64::INFINITY));
        b.fill_rect(0, 0, 1, 1, (110, 128, 128));
        let psnr = a.luma_psnr(&b).unwrap();
        // One pixel off by 10 in 64: MSE 100/64.
        assert!((psnr - 10.0 * (65025.0_f64 / (100.0 / 64.0)).log10()).abs() < 1e-9);
    }
}
