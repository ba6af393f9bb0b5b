//! What a process costs, read from `/proc`: CPU time and resident memory.

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

/// A `kB` field of `/proc/<pid>/status`: `VmRSS` (now) or `VmHWM` (peak).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds this process (the load generator) has used.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        // Burn CPU until the kernel has counted at least one tick of it.
        let mut x = 0u64;
        for round in 0..100_000u64 {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * round));
            }
            if cpu_seconds(pid).is_some_and(|s| s > 0.0) {
                break;
            }
        }
        assert!(cpu_seconds(pid).is_some_and(|s| s > 0.0));
        assert!(status_kib(pid, "VmRSS").is_some_and(|k| k > 100));
        assert!(status_kib(pid, "VmHWM").is_some());
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
