//! Criterion benches of Tailrace's hot paths live in `benches/`; this library is empty.
