//! Artifact path normalisation on arbitrary text: an accepted path is relative, has no `.`,
//! `..`, empty or control-character components, no backslash, and is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailrace_protocol::artifact_path::normalize;

fuzz_target!(|raw: &str| {
    if let Ok(path) = normalize(raw) {
        assert!(!path.is_empty() && !path.starts_with('/') && !path.contains('\\'), "{raw:?} -> {path:?}");
        assert!(path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{raw:?} -> {path:?}");
        assert!(!path.chars().any(char::is_control));
        assert_eq!(normalize(&path).as_deref(), Ok(path.as_str()), "normalising twice changes {raw:?}");
    }
});
