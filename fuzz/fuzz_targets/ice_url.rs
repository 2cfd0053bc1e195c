//! ICE server URLs arrive from the relay (`joined`, `resumed`, the network check): parsing must
//! never panic, and a parsed URL must keep its text and parse again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(url) = confer_proto::IceUrl::parse(text) {
        assert_eq!(url.as_str(), text);
        assert_eq!(confer_proto::IceUrl::parse(url.as_str()).as_ref(), Ok(&url));
        assert!(url.port != 0 && !url.host.is_empty());
    }
});
