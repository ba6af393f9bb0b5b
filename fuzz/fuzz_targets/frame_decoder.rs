//! The ingest frame decoder on arbitrary bytes: never panics, never returns a frame larger than
//! its limit, and every frame it returns encodes and decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tailrace_protocol::Decoder;

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder::new(4096);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let wire = frame.to_bytes();
        let mut again = BytesMut::from(&wire[..]);
        let back = decoder.decode(&mut again).expect("an encoded frame decodes").expect("whole frame");
        assert_eq!(back, frame);
        assert!(again.is_empty());
    }
});
