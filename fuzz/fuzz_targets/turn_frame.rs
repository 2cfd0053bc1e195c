//! TURN over TCP and TLS reads messages off a stream anyone can write to: whatever the bytes,
//! the framing never panics, never reads past what it was given, and every message it hands the
//! TURN server is a whole STUN message (20-byte header, length a multiple of four, the magic
//! cookie) or a whole ChannelData message (channel 0x4000..=0x4FFF, as long as it says).
#![no_main]

use std::sync::LazyLock;

use confer_turn_stream::{MAX_FRAME, read_frame};
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));

fuzz_target!(|data: &[u8]| {
    RUNTIME.block_on(async {
        let mut stream = data;
        let mut buf = vec![0; MAX_FRAME];
        while let Ok(n) = read_frame(&mut stream, &mut buf).await {
            let message = &buf[..n];
            let length = usize::from(u16::from_be_bytes([message[2], message[3]]));
            match message[0] {
                0x00 | 0x01 => {
                    assert_eq!(n, 20 + length);
                    assert_eq!(length % 4, 0);
                    assert_eq!(message[4..8], [0x21, 0x12, 0xA4, 0x42]);
                }
                0x40..=0x4F => assert_eq!(n, 4 + length),
                other => panic!("a message starting {other:#04x} was handed on"),
            }
        }
    });
});
