//! Invite links arrive from clipboards and deep links: parsing must never panic, and a parsed
//! link must print to forms that parse back to the same link.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(link) = confer_proto::InviteLink::parse(text) {
        assert_eq!(confer_proto::InviteLink::parse(&link.app_link()).as_ref(), Ok(&link));
        assert_eq!(confer_proto::InviteLink::parse(&link.web_link()).as_ref(), Ok(&link));
    }
});
