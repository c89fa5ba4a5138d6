//! Feeds arbitrary bytes to the framing and the decoder, on both kinds of session, and
//! checks what must hold for any input: no panic, session resets only as errors, and a
//! message decoded without errors survives encode and decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tortie_bgp::packet::{ErrorAction, Message, Negotiated, message_length};

fuzz_target!(|data: &[u8]| {
    for negotiated in [Negotiated { four_octet_as: true }, Negotiated { four_octet_as: false }] {
        let _ = message_length(data);
        let Ok(decoded) = Message::decode(data, &negotiated) else { continue };
        assert!(decoded.errors.iter().all(|e| e.action != ErrorAction::SessionReset));
        if decoded.errors.is_empty() && negotiated.four_octet_as {
            let mut again = Vec::new();
            if decoded.message.encode(&negotiated, &mut again).is_ok() {
                let twice = Message::decode(&again, &negotiated).map(|d| d.message);
                assert_eq!(twice.as_ref(), Ok(&decoded.message));
            }
        }
    }
});
