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
