//! The synthetic camera through the real openh264 encoder and decoder: the picture keeps its
//! quality, every frame's stamp survives, keyframes come when asked, the bitrate follows, and
//! garbage is refused without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confer_media::synthetic::{SyntheticCamera, SyntheticScreen, read_stamp};
use confer_media::{H264Config, H264Decoder, H264Encoder};

const FPS: u32 = 30;

#[test]
fn at_640x360_and_800_kbps_every_frame_decodes_with_35_db_and_its_stamp() {
    let mut camera = SyntheticCamera::new(0x0C0F_FEE0, 640, 360).unwrap();
    let mut encoder = H264Encoder::new(H264Config::camera(FPS as f32, 800_000)).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let (mut bytes, mut worst, mut sum) = (0usize, f64::INFINITY, 0.0);
    let frames = 90u32;
    for n in 0..frames {
        let (frame, stamp) = camera.next_frame(1_795_000_000_000 + u64::from(n) * 33);
        let encoded = encoder.encode(&frame).unwrap().expect("no frame is skipped");
        assert_eq!(encoded.keyframe, n == 0, "frame {n}: only the first is a keyframe");
        bytes += encoded.data.len();
        let decoded = decoder.decode(&encoded.data).unwrap().expect("each access unit decodes to a picture");
        assert_eq!((decoded.width(), decoded.height()), (640, 360));
        assert_eq!(read_stamp(&decoded), Some(stamp), "frame {n}: the stamp survives");
        let psnr = decoded.luma_psnr(&frame).unwrap();
        worst = worst.min(psnr);
        sum += psnr;
    }
    let mean = sum / f64::from(frames);
    let kbps = bytes as f64 * 8.0 / (f64::from(frames) / f64::from(FPS)) / 1000.0;
    eprintln!("luma PSNR mean {mean:.1} dB, worst {worst:.1} dB, {kbps:.0} kbit/s");
    assert!(worst >= 35.0, "worst frame {worst:.1} dB");
    assert!(kbps < 800.0 * 1.5, "the encoder kept near its target: {kbps:.0} kbit/s");
}

#[test]
fn a_keyframe_comes_when_asked_and_decodes_on_its_own() {
    let mut camera = SyntheticCamera::new(5, 640, 360).unwrap();
    let mut encoder = H264Encoder::new(H264Config::default()).unwrap();
    for n in 0..10 {
        let (frame, _) = camera.next_frame(n * 33);
        assert!(!encoder.encode(&frame).unwrap().unwrap().keyframe || n == 0);
    }
    encoder.request_keyframe();
    let (frame, stamp) = camera.next_frame(330);
    let key = encoder.encode(&frame).unwrap().unwrap();
    assert!(key.keyframe);
    // A receiver that joins now decodes from this keyframe alone.
    let mut late = H264Decoder::new().unwrap();
    let picture = late.decode(&key.data).unwrap().unwrap();
    assert_eq!(read_stamp(&picture), Some(stamp));
}

#[test]
fn lowering_the_bitrate_while_running_shrinks_the_stream() {
    let mut camera = SyntheticCamera::new(9, 640, 360).unwrap();
    let mut encoder = H264Encoder::new(H264Config::camera(30.0, 1_500_000)).unwrap();
    let run = |encoder: &mut H264Encoder, camera: &mut SyntheticCamera, n: u64| -> usize {
        (0..n)
            .map(|i| encoder.encode(&camera.next_frame(i * 33).0).unwrap().map_or(0, |f| f.data.len()))
            .sum()
    };
    run(&mut encoder, &mut camera, 30);
    let high = run(&mut encoder, &mut camera, 60);
    encoder.set_bitrate(200_000).unwrap();
    run(&mut encoder, &mut camera, 30);
    let low = run(&mut encoder, &mut camera, 60);
    eprintln!("60 frames: {high} bytes at 1.5 Mbit/s, {low} bytes at 200 kbit/s");
    assert!(low * 3 < high, "the stream did not shrink: {high} -> {low} bytes");

    // And back up: raising the bitrate works too (the maximum has to follow the target).
    encoder.set_bitrate(1_500_000).unwrap();
    run(&mut encoder, &mut camera, 30);
    let again = run(&mut encoder, &mut camera, 60);
    eprintln!("60 frames: {again} bytes back at 1.5 Mbit/s");
    assert!(again > low * 3, "the stream did not grow again: {low} -> {again} bytes");
}

#[test]
fn garbage_is_refused_without_a_panic_and_the_decoder_recovers() {
    let mut decoder = H264Decoder::new().unwrap();
    for junk in
        [&b""[..], &[0, 0, 0, 1, 0xff, 0xff, 0xff][..], &[0x42; 4000][..], &[0, 0, 1, 0x65, 1, 2, 3][..]]
    {
        let _ = decoder.decode(junk);
    }
    let mut camera = SyntheticCamera::new(3, 320, 180).unwrap();
    let mut encoder = H264Encoder::new(H264Config::default()).unwrap();
    let (frame, stamp) = camera.next_frame(0);
    let key = encoder.encode(&frame).unwrap().unwrap();
    let picture = decoder.decode(&key.data).unwrap().unwrap();
    assert_eq!(read_stamp(&picture), Some(stamp));
}

/// Encodes `frames` of a synthetic page at 1920x1080 and 5 fps in screen content mode; returns
/// each frame's size in bytes and the worst luma PSNR, checking every stamp on the way.
fn share_page(scroll: usize, frames: u32) -> (Vec<usize>, f64) {
    let mut screen = SyntheticScreen::new(31, 1920, 1080, scroll).unwrap();
    let mut encoder = H264Encoder::new(H264Config::screen(5.0, 1_500_000)).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let (mut sizes, mut worst) = (Vec::new(), f64::INFINITY);
    for n in 0..frames {
        let (frame, stamp) = screen.next_frame(u64::from(n) * 200);
        let encoded = encoder.encode(&frame).unwrap().expect("no frame is skipped");
        sizes.push(encoded.data.len());
        let decoded = decoder.decode(&encoded.data).unwrap().expect("each access unit decodes");
        assert_eq!((decoded.width(), decoded.height()), (1920, 1080));
        assert_eq!(read_stamp(&decoded), Some(stamp), "frame {n}: the stamp survives");
        worst = worst.min(decoded.luma_psnr(&frame).unwrap());
    }
    (sizes, worst)
}

#[test]
fn a_shared_page_of_text_stays_sharp_at_1080p_and_a_still_one_costs_almost_nothing() {
    let (still, still_psnr) = share_page(0, 15);
    let (scrolling, scrolling_psnr) = share_page(8, 15);
    let rest = |sizes: &[usize]| sizes[1..].iter().sum::<usize>() / (sizes.len() - 1);
    eprintln!(
        "still page: keyframe {} B, then {} B a frame, worst {still_psnr:.1} dB; scrolling: keyframe {} B, \
         then {} B a frame, worst {scrolling_psnr:.1} dB",
        still[0],
        rest(&still),
        scrolling[0],
        rest(&scrolling)
    );
    assert!(still_psnr >= 35.0 && scrolling_psnr >= 30.0, "text stays legible");
    // A still screen: after the first picture, each frame is a small fraction of it.
    assert!(rest(&still) * 20 < still[0], "a still page keeps costing {} B a frame", rest(&still));
    assert!(rest(&scrolling) > rest(&still), "scrolling costs more than standing still");
}
