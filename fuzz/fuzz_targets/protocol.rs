//! Bytes from the guest (or an exec client) as the control channel reads them: never a panic,
//! and whatever decodes encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_shared::protocol::{Decoder, Message};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    // In two pieces, as a stream delivers them.
    let split = data.len() / 2;
    decoder.push(&data[..split]);
    decoder.push(&data[split..]);
    while let Ok(Some(message)) = decoder.next_message() {
        let frame = message.encode();
        assert_eq!(Message::decode(&frame[4..]).ok(), Some(message));
    }
    if let Ok(message) = Message::decode(data) {
        assert_eq!(Message::decode(&message.encode()[4..]).ok(), Some(message));
    }
});
