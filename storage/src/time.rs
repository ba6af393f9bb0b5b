//! Calendar arithmetic for object keys, retention and `?since=`: UTC days ↔ civil dates
//! (Howard Hinnant's algorithms), and parsing of the timestamps the API accepts.

const DAY_MS: i64 = 86_400_000;

/// (year, month, day) of a Unix time in milliseconds, UTC.
pub fn civil_date(ms: u64) -> (i64, u32, u32) {
    let z = (ms / DAY_MS as u64) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let (y, m, d) = civil_date(ms);
    let s = (ms / 1000) % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, (s / 60) % 60, s % 60, ms % 1000)
}

pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fff]Z`, or a number of `unit_ms` milliseconds
/// since the epoch, into milliseconds since the epoch.
pub fn parse_timestamp_ms(s: &str, unit_ms: u64) -> Result<u64, String> {
    let bad = || format!("{s:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or a Unix time");
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(unit_ms).ok_or_else(bad);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let ymd: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
    let [y, m, d] = ymd[..] else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * DAY_MS;
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let parts: Vec<i64> = hms.split(':').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
        let [h, mi, sec] = parts[..] else { return Err(bad()) };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&sec) {
            return Err(bad());
        }
        let frac_ms = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            digits.parse::<i64>().map_err(|_| bad())?
        };
        ms += ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms;
    }
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(1_795_828_081_426), (2026, 11, 28));
        assert_eq!(civil_date(951_782_400_000), (2000, 2, 29));
        assert_eq!(civil_date(1_709_251_199_000), (2024, 2, 29));
        for ms in [0u64, 951_782_400_000, 1_795_828_081_426] {
            let (y, m, d) = civil_date(ms);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), (ms / 86_400_000) as i64);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-02", 1000), Ok(86_400_000));
        assert_eq!(parse_timestamp_ms("2026-11-28", 1000), Ok(1_795_824_000_000));
        assert_eq!(parse_timestamp_ms("2026-11-28T00:00:01.5Z", 1000), Ok(1_795_824_001_500));
        assert_eq!(parse_timestamp_ms("1700000000", 1000), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp_ms("1700000000123", 1), Ok(1_700_000_000_123));
        assert!(parse_timestamp_ms("2026-13-01", 1000).is_err());
        assert!(parse_timestamp_ms("2026-11-28T25:00:00Z", 1000).is_err());
        assert!(parse_timestamp_ms("2026-11-28T10:00:00", 1000).is_err(), "zone is required");
        assert!(parse_timestamp_ms("yesterday", 1000).is_err());
    }
}
