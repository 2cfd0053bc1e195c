//! Every message a client sends goes through `decode_client`: it must never panic, and whatever
//! it accepts must survive a round trip through JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = confer_proto::decode_client(text) {
        let again = serde_json::to_string(&msg).expect("accepted messages serialise");
        let back = confer_proto::decode_client(&again).expect("a re-encoded message decodes");
        assert_eq!(back, msg);
    }
    let _ = confer_proto::decode_server(text);
});
