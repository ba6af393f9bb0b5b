//! `Range` header parsing on arbitrary text and lengths: every range it accepts lies inside the
//! output and is non-empty (half-open `[start, end)`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailrace_query::ranges::{parse_range, parse_ranges};

fuzz_target!(|input: (&str, u64)| {
    let (value, len) = input;
    if let Ok(ranges) = parse_ranges(value, len) {
        for (start, end) in ranges {
            assert!(start < end && end <= len, "{value:?} over {len}: {start}-{end}");
        }
    }
    if let Ok((start, end)) = parse_range(value, len) {
        assert!(start < end && end <= len, "{value:?} over {len}: {start}-{end}");
    }
});
