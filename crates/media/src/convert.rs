//! What cameras deliver, converted to I420 (BT.601 limited range): YUYV (4:2:2 packed), NV12
//! (4:2:0 with interleaved chroma), MJPEG (JPEG, full range, decoded with zune-jpeg), grey and
//! RGB. Odd widths or heights lose their last column or row (4:2:0 needs even sizes). Every
//! buffer is checked against the size it claims before it is read: a short or corrupt frame is
//! an error, never a panic.

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::{FrameError, I420Frame};

/// A camera's pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Y0 U Y1 V, 2 bytes per pixel.
    Yuyv,
    /// Y plane, then interleaved U V at half resolution.
    Nv12,
    /// One JPEG per frame.
    Mjpeg,
    /// Y only.
    Gray,
    /// R G B, 3 bytes per pixel.
    Rgb,
    /// B G R, 3 bytes per pixel.
    Bgr,
    /// B G R and an unused byte, 4 bytes per pixel: what X11, Windows and macOS screen
    /// captures give.
    Bgrx,
}

/// Why a camera frame could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The frame is smaller than 2 x 2 or its size does not fit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Fewer bytes than the format and size need.
    #[error("a {format:?} frame of {width}x{height} needs {needed} bytes, got {got}")]
    TooShort {
        /// The format.
        format: PixelFormat,
        /// Width.
        width: usize,
        /// Height.
        height: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The JPEG could not be decoded.
    #[error("bad MJPEG frame: {0}")]
    Jpeg(String),
}

/// Converts one camera frame to I420.
pub fn to_i420(
    format: PixelFormat,
    data: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, ConvertError> {
    match format {
        PixelFormat::Yuyv => yuyv_to_i420(data, width, height),
        PixelFormat::Nv12 => nv12_to_i420(data, width, height),
        PixelFormat::Mjpeg => mjpeg_to_i420(data),
        PixelFormat::Gray => gray_to_i420(data, width, height),
        PixelFormat::Rgb | PixelFormat::Bgr | PixelFormat::Bgrx => rgb_to_i420(format, data, width, height),
    }
}

fn check(
    format: PixelFormat,
    data: &[u8],
    width: usize,
    height: usize,
    needed: usize,
) -> Result<(usize, usize), ConvertError> {
    if data.len() < needed {
        return Err(ConvertError::TooShort { format, width, height, needed, got: data.len() });
    }
    let (w, h) = (width & !1, height & !1);
    if w == 0 || h == 0 {
        return Err(FrameError::Dimensions { width, height }.into());
    }
    Ok((w, h))
}

/// YUYV (4:2:2) to I420: luma copied, chroma of each pair of rows averaged.
pub(crate) fn yuyv_to_i420(data: &[u8], width: usize, height: usize) -> Result<I420Frame, ConvertError> {
    let stride = width.checked_mul(2).ok_or(FrameError::Dimensions { width, height })?;
    let needed = stride.checked_mul(height).ok_or(FrameError::Dimensions { width, height })?;
    let (w, h) = check(PixelFormat::Yuyv, data, width, height, needed)?;
    let mut frame = I420Frame::filled(w, h, (0, 128, 128))?;
    let (y, u, v) = frame.planes_mut();
    for row in 0..h {
        let line = &data[row * stride..row * stride + w * 2];
        for (x, pixel) in y[row * w..(row + 1) * w].iter_mut().enumerate() {
            *pixel = line[x * 2];
        }
    }
    let cw = w / 2;
    for row in 0..h / 2 {
        let (top, bottom) = (&data[2 * row * stride..], &data[(2 * row + 1) * stride..]);
        for x in 0..cw {
            let avg = |i: usize| (u16::from(top[4 * x + i]) + u16::from(bottom[4 * x + i])).div_ceil(2) as u8;
            u[row * cw + x] = avg(1);
            v[row * cw + x] = avg(3);
        }
    }
    Ok(frame)
}

/// NV12 to I420: the chroma plane is de-interleaved.
pub(crate) fn nv12_to_i420(data: &[u8], width: usize, height: usize) -> Result<I420Frame, ConvertError> {
    let luma = width.checked_mul(height).ok_or(FrameError::Dimensions { width, height })?;
    let chroma_stride = width.div_ceil(2) * 2;
    let needed = luma + chroma_stride * height.div_ceil(2);
    let (w, h) = check(PixelFormat::Nv12, data, width, height, needed)?;
    let mut frame = I420Frame::filled(w, h, (0, 128, 128))?;
    let (y, u, v) = frame.planes_mut();
    for row in 0..h {
        y[row * w..(row + 1) * w].copy_from_slice(&data[row * width..row * width + w]);
    }
    let cw = w / 2;
    for row in 0..h / 2 {
        let line = &data[luma + row * chroma_stride..];
        for x in 0..cw {
            u[row * cw + x] = line[2 * x];
            v[row * cw + x] = line[2 * x + 1];
        }
    }
    Ok(frame)
}

/// Grey to I420 (full-range grey to limited-range luma, neutral chroma).
pub(crate) fn gray_to_i420(data: &[u8], width: usize, height: usize) -> Result<I420Frame, ConvertError> {
    let needed = width.checked_mul(height).ok_or(FrameError::Dimensions { width, height })?;
    let (w, h) = check(PixelFormat::Gray, data, width, height, needed)?;
    let mut frame = I420Frame::filled(w, h, (0, 128, 128))?;
    let (y, _, _) = frame.planes_mut();
    for row in 0..h {
        for (out, &g) in y[row * w..(row + 1) * w].iter_mut().zip(&data[row * width..]) {
            *out = full_to_limited_luma(g);
        }
    }
    Ok(frame)
}

/// RGB (or BGR) to I420 with BT.601 limited-range coefficients.
pub(crate) fn rgb_to_i420(
    format: PixelFormat,
    data: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, ConvertError> {
    let (bytes, bgr) = match format {
        PixelFormat::Bgrx => (4, true),
        PixelFormat::Bgr => (3, true),
        _ => (3, false),
    };
    let stride = width.checked_mul(bytes).ok_or(FrameError::Dimensions { width, height })?;
    let needed = stride.checked_mul(height).ok_or(FrameError::Dimensions { width, height })?;
    let (w, h) = check(format, data, width, height, needed)?;
    let mut frame = I420Frame::filled(w, h, (0, 128, 128))?;
    let (y, u, v) = frame.planes_mut();
    let rgb_at = |x: usize, row: usize| {
        let p = &data[row * stride + bytes * x..row * stride + bytes * x + 3];
        let (r, g, b) = if bgr { (p[2], p[1], p[0]) } else { (p[0], p[1], p[2]) };
        (i32::from(r), i32::from(g), i32::from(b))
    };
    for row in 0..h {
        for x in 0..w {
            let (r, g, b) = rgb_at(x, row);
            y[row * w + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16).clamp(0, 255) as u8;
        }
    }
    let cw = w / 2;
    for row in 0..h / 2 {
        for x in 0..cw {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (pr, pg, pb) = rgb_at(2 * x + dx, 2 * row + dy);
                (r, g, b) = (r + pr, g + pg, b + pb);
            }
            let (r, g, b) = (r / 4, g / 4, b / 4);
            u[row * cw + x] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
            v[row * cw + x] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
        }
    }
    Ok(frame)
}

fn full_to_limited_luma(value: u8) -> u8 {
    (16 + (u32::from(value) * 219 + 127) / 255) as u8
}

fn full_to_limited_chroma(value: u8) -> u8 {
    (128 + ((i32::from(value) - 128) * 224 + 127 * (i32::from(value) - 128).signum()) / 255) as u8
}

/// Largest MJPEG frame accepted, in pixels (8K): a corrupt header cannot make us allocate more.
const MAX_JPEG_PIXELS: usize = 7_680 * 4_320;

/// MJPEG to I420: the JPEG is decoded to YCbCr (no detour through RGB), chroma averaged to 4:2:0
/// and both moved from JPEG's full range to limited range.
pub(crate) fn mjpeg_to_i420(data: &[u8]) -> Result<I420Frame, ConvertError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::YCbCr)
        .set_max_width(7_680)
        .set_max_height(7_680);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder.decode_headers().map_err(|e| ConvertError::Jpeg(e.to_string()))?;
    let info = decoder.info().ok_or_else(|| ConvertError::Jpeg("no header".into()))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    if width * height > MAX_JPEG_PIXELS {
        return Err(ConvertError::Jpeg(format!("{width}x{height} is larger than 8K")));
    }
    let components = decoder.output_colorspace().map_or(3, |c| c.num_components());
    let pixels = decoder.decode().map_err(|e| ConvertError::Jpeg(e.to_string()))?;
    let needed = width * height * components;
    if pixels.len() < needed {
        return Err(ConvertError::TooShort {
            format: PixelFormat::Mjpeg,
            width,
            height,
            needed,
            got: pixels.len(),
        });
    }
    if components == 1 {
        return gray_to_i420(&pixels, width, height);
    }
    if components != 3 {
        return Err(ConvertError::Jpeg(format!("{components} colour components")));
    }
    let (w, h) = (width & !1, height & !1);
    let mut frame = I420Frame::filled(w, h, (0, 128, 128))?;
    let (y, u, v) = frame.planes_mut();
    let stride = width * 3;
    for row in 0..h {
        for x in 0..w {
            y[row * w + x] = full_to_limited_luma(pixels[row * stride + 3 * x]);
        }
    }
    let cw = w / 2;
    for row in 0..h / 2 {
        for x in 0..cw {
            let sum = |c: usize| {
                let at =
                    |dx: usize, dy: usize| u16::from(pixels[(2 * row + dy) * stride + 3 * (2 * x + dx) + c]);
                ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 2) / 4) as u8
            };
            u[row * cw + x] = full_to_limited_chroma(sum(1));
            v[row * cw + x] = full_to_limited_chroma(sum(2));
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::synthetic::{SyntheticCamera, read_stamp};

    fn camera_frame() -> I420Frame {
        SyntheticCamera::new(21, 640, 360).unwrap().with_name("Cam").next_frame(1_795_000_000_123).0
    }

    fn to_yuyv(frame: &I420Frame) -> Vec<u8> {
        let (w, h) = (frame.width(), frame.height());
        let mut out = Vec::with_capacity(w * h * 2);
        for row in 0..h {
            for x in (0..w).step_by(2) {
                let c = (row / 2) * (w / 2) + x / 2;
                out.extend([frame.y()[row * w + x], frame.u()[c], frame.y()[row * w + x + 1], frame.v()[c]]);
            }
        }
        out
    }

    fn to_nv12(frame: &I420Frame) -> Vec<u8> {
        let mut out = frame.y().to_vec();
        for (u, v) in frame.u().iter().zip(frame.v()) {
            out.extend([*u, *v]);
        }
        out
    }

    /// The frame as a full-range YCbCr JPEG, as a webcam's MJPEG would carry it.
    fn to_jpeg(frame: &I420Frame, quality: u8) -> Vec<u8> {
        let (w, h) = (frame.width(), frame.height());
        let expand = |l: u8| ((i32::from(l) - 16) * 255 / 219).clamp(0, 255) as u8;
        let expand_c = |c: u8| (128 + (i32::from(c) - 128) * 255 / 224).clamp(0, 255) as u8;
        let mut ycbcr = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            for x in 0..w {
                let c = (row / 2) * (w / 2) + x / 2;
                ycbcr.extend([
                    expand(frame.y()[row * w + x]),
                    expand_c(frame.u()[c]),
                    expand_c(frame.v()[c]),
                ]);
            }
        }
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, quality);
        encoder.encode(&ycbcr, w as u16, h as u16, jpeg_encoder::ColorType::Ycbcr).unwrap();
        out
    }

    #[test]
    fn yuyv_and_nv12_come_back_as_they_were_sent() {
        let original = camera_frame();
        let from_yuyv = yuyv_to_i420(&to_yuyv(&original), 640, 360).unwrap();
        let from_nv12 = nv12_to_i420(&to_nv12(&original), 640, 360).unwrap();
        assert_eq!(from_yuyv, original);
        assert_eq!(from_nv12, original);
    }

    #[test]
    fn mjpeg_is_decoded_close_to_the_original_with_the_stamp_intact() {
        let original = camera_frame();
        let mut jpeg = to_jpeg(&original, 90);
        // Webcams pad MJPEG buffers after the end-of-image marker.
        jpeg.extend([0u8; 300]);
        let decoded = mjpeg_to_i420(&jpeg).unwrap();
        let psnr = decoded.luma_psnr(&original).unwrap();
        assert!(psnr > 35.0, "MJPEG luma PSNR {psnr:.1} dB");
        assert_eq!(read_stamp(&decoded), read_stamp(&original));
        let chroma_error =
            decoded.u().iter().zip(original.u()).map(|(a, b)| a.abs_diff(*b) as u32).max().unwrap();
        assert!(chroma_error <= 12, "chroma off by up to {chroma_error}");
    }

    #[test]
    fn rgb_grey_and_odd_sizes() {
        // Pure red, green, blue and white in BT.601 limited range.
        let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let frame = rgb_to_i420(PixelFormat::Rgb, &rgb, 2, 2).unwrap();
        // 16 + 219 x (0.299, 0.587, 0.114, 1), within the integer formula's rounding.
        for (got, want) in frame.y().iter().zip([81.5, 144.6, 41.0, 235.0]) {
            assert!((f64::from(*got) - want).abs() <= 1.0, "{:?}", frame.y());
        }
        let bgr = [0u8, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255];
        assert_eq!(rgb_to_i420(PixelFormat::Bgr, &bgr, 2, 2).unwrap(), frame);
        // A screen capture's B G R X: the fourth byte is ignored, whatever it holds.
        let bgrx = [0u8, 0, 255, 7, 0, 255, 0, 0, 255, 0, 0, 255, 255, 255, 255, 9];
        assert_eq!(to_i420(PixelFormat::Bgrx, &bgrx, 2, 2).unwrap(), frame);
        assert!(matches!(to_i420(PixelFormat::Bgrx, &bgrx[..15], 2, 2), Err(ConvertError::TooShort { .. })));
        let grey = gray_to_i420(&[0, 255, 128, 0, 255, 128], 3, 2).unwrap();
        assert_eq!((grey.width(), grey.height()), (2, 2));
        assert_eq!(grey.y(), &[16, 235, 16, 235]);
    }

    #[test]
    fn short_and_corrupt_frames_are_errors() {
        assert!(matches!(yuyv_to_i420(&[0; 100], 640, 360), Err(ConvertError::TooShort { .. })));
        assert!(matches!(nv12_to_i420(&[0; 640 * 360], 640, 360), Err(ConvertError::TooShort { .. })));
        assert!(matches!(to_i420(PixelFormat::Rgb, &[0; 3], 1, 1), Err(ConvertError::Frame(_))));
        assert!(matches!(mjpeg_to_i420(b"not a jpeg"), Err(ConvertError::Jpeg(_))));
        let jpeg = to_jpeg(&camera_frame(), 80);
        // A truncated JPEG may decode partly or be refused; either way nothing panics.
        let _ = mjpeg_to_i420(&jpeg[..jpeg.len() / 3]);
        assert!(matches!(yuyv_to_i420(&[], usize::MAX, 3), Err(ConvertError::Frame(_))));
    }

    proptest! {
        #[test]
        fn any_bytes_as_any_format_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..5_000),
            w in 0usize..80,
            h in 0usize..80,
            format in 0usize..7,
        ) {
            let format = [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Mjpeg, PixelFormat::Gray, PixelFormat::Rgb, PixelFormat::Bgr, PixelFormat::Bgrx][format];
            let _ = to_i420(format, &data, w, h);
        }
    }
}
