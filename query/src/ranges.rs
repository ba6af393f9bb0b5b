//! `Range: bytes=…` headers: single, open-ended, suffix and multiple ranges, resolved against a
//! length into half-open `[start, end)` byte ranges.

/// Most ranges served in one multipart answer; more are refused (a request for thousands of
/// tiny ranges costs the server far more than the bytes it gets).
pub const MAX_RANGES: usize = 64;

/// Parses `bytes=a-b, c-, -n, …` against `len` bytes. Ranges that start at or after the end
/// are dropped (RFC 9110 §14.2); if none is left, or the header is malformed, the error says why.
pub fn parse_ranges(value: &str, len: u64) -> Result<Vec<(u64, u64)>, String> {
    let spec = value.trim().strip_prefix("bytes=").ok_or("only `bytes=` ranges are supported")?;
    let mut out = Vec::new();
    for one in spec.split(',') {
        let (a, b) = one.split_once('-').ok_or("malformed range: expected bytes=START-END")?;
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| format!("malformed range bound {s:?}"));
        let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, false) => (len.saturating_sub(num(b)?), len),
            (false, true) => (num(a)?, len),
            (false, false) => {
                let (s, e) = (num(a)?, num(b)?);
                if e < s {
                    return Err("malformed range: end before start".into());
                }
                (s, e.saturating_add(1).min(len))
            }
            (true, true) => return Err("malformed range: expected bytes=START-END".into()),
        };
        if start < len && start < end {
            out.push((start, end));
        }
    }
    if out.len() > MAX_RANGES {
        return Err(format!("at most {MAX_RANGES} ranges may be asked for at once"));
    }
    if out.is_empty() {
        return Err(format!("range starts at or after the end ({len} bytes)"));
    }
    Ok(out)
}

/// Parses exactly one range (see [`parse_ranges`]).
pub fn parse_range(value: &str, len: u64) -> Result<(u64, u64), String> {
    match parse_ranges(value, len)?.as_slice() {
        [one] => Ok(*one),
        _ => Err("multiple ranges are not supported here; ask for one range".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        fn check(v: &str, len: u64, expected: Result<(u64, u64), &str>) {
            let got = parse_range(v, len);
            match expected {
                Ok(r) => assert_eq!(got, Ok(r), "{v}"),
                Err(m) => assert!(got.as_ref().is_err_and(|e| e.contains(m)), "{v}: {got:?}"),
            }
        }
        check("bytes=0-9", 100, Ok((0, 10)));
        check("bytes=90-200", 100, Ok((90, 100)));
        check("bytes=10-", 100, Ok((10, 100)));
        check("bytes=-5", 100, Ok((95, 100)));
        check("bytes=-500", 100, Ok((0, 100)));
        check("bytes=100-", 100, Err("at or after the end"));
        check("bytes=5-4", 100, Err("end before start"));
        check("bytes=0-1,4-5", 100, Err("multiple ranges"));
        check("items=0-1", 100, Err("only `bytes=`"));
        check("bytes=x-1", 100, Err("malformed range bound"));
        check("bytes=0-0", 0, Err("at or after the end"));
        check("bytes=-0", 100, Err("at or after the end"));
    }

    #[test]
    fn multiple_ranges() {
        assert_eq!(parse_ranges("bytes=0-0, 50-59,-1", 100), Ok(vec![(0, 1), (50, 60), (99, 100)]));
        assert_eq!(parse_ranges("bytes=0-0,200-300", 100), Ok(vec![(0, 1)]), "unsatisfiable ones are dropped");
        assert!(parse_ranges("bytes=200-300,400-", 100).is_err());
        assert!(parse_ranges("bytes=0-1,", 100).is_err());
        let many = format!("bytes={}", (0..65).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
        assert!(parse_ranges(&many, 100).unwrap_err().contains("at most"));
    }
}
