//! Realistic CI output, deterministic from a seed: compiler progress and diagnostics with ANSI
//! colour, test-runner lines, `\r` progress bars, timestamped log lines, occasional long lines
//! (minified JSON, base64) and rare binary noise (invalid UTF-8, NUL, stray escapes).
//!
//! The generator is its own SplitMix64, not a crate's RNG, so a seed means the same bytes on
//! every machine and every version of the dependencies.

/// SplitMix64: small, fast, and stable forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const CRATES: &[&str] = &[
    "serde", "tokio", "hyper", "bytes", "rand", "regex", "syn", "quote", "libc", "log", "clap",
    "anyhow", "futures", "mio", "zstd", "quinn", "rustls", "ring", "http", "tracing", "app-core",
    "app-web", "app-db",
];
const FILES: &[&str] = &[
    "src/lib.rs",
    "src/main.rs",
    "src/server/mod.rs",
    "src/db/query.rs",
    "src/api/handlers.rs",
    "tests/it.rs",
    "src/parser.rs",
    "src/config.rs",
];
const WORDS: &[&str] = &[
    "request", "handler", "cache", "user", "session", "token", "parse", "render", "upload",
    "retry", "timeout", "index", "query", "migrate", "schema", "payload", "stream", "buffer",
    "worker", "queue", "connect",
];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
const ERRORS: &[(&str, &str)] = &[
    ("E0308", "mismatched types"),
    ("E0382", "borrow of moved value: `buf`"),
    (
        "E0599",
        "no method named `unwrap_or_default` found for enum `Option`",
    ),
    ("E0425", "cannot find value `cfg` in this scope"),
];

/// Generates `len` bytes of CI output from `seed`; the same arguments always give the same bytes.
pub fn generate(seed: u64, len: usize) -> Vec<u8> {
    let mut g = Generator {
        rng: Rng::new(seed),
        out: Vec::with_capacity(len + 70_000),
        clock_ms: 1_764_000_000_000,
    };
    while g.out.len() < len {
        g.block();
    }
    g.out.truncate(len);
    g.out
}

struct Generator {
    rng: Rng,
    out: Vec<u8>,
    clock_ms: u64,
}

impl Generator {
    fn push(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// One burst of output of one kind, chosen by weight.
    fn block(&mut self) {
        match self.rng.below(1000) {
            0..=279 => self.compiling(),
            280..=529 => self.test_lines(),
            530..=699 => self.log_lines(),
            700..=829 => self.progress_bar(),
            830..=939 => self.diagnostic(),
            940..=993 => self.pytest_lines(),
            994..=998 => self.long_line(),
            _ => self.binary_noise(),
        }
    }

    fn compiling(&mut self) {
        for _ in 0..1 + self.rng.below(12) {
            let name = self.rng.pick(CRATES);
            let (a, b, c) = (self.rng.below(3), self.rng.below(40), self.rng.below(20));
            self.push(&format!(
                "\x1b[1m\x1b[32m   Compiling\x1b[0m {name} v{a}.{b}.{c}\n"
            ));
        }
    }

    fn test_lines(&mut self) {
        let module = self.rng.pick(WORDS);
        for _ in 0..1 + self.rng.below(30) {
            let (w1, w2, n) = (
                self.rng.pick(WORDS),
                self.rng.pick(WORDS),
                self.rng.below(500),
            );
            let result = match self.rng.below(100) {
                0..=1 => "\x1b[31mFAILED\x1b[0m",
                2..=4 => "\x1b[33mignored\x1b[0m",
                _ => "\x1b[32mok\x1b[0m",
            };
            self.push(&format!(
                "test {module}::tests::{w1}_{w2}_{n} ... {result}\n"
            ));
        }
    }

    fn pytest_lines(&mut self) {
        let file = self.rng.pick(WORDS);
        let n = 1 + self.rng.below(20);
        for i in 0..n {
            let w = self.rng.pick(WORDS);
            let pct = (i + 1) * 100 / n;
            self.push(&format!(
                "tests/test_{file}.py::test_{w}_{i} \x1b[32mPASSED\x1b[0m{:>10}\n",
                format!("[{pct:3}%]")
            ));
        }
    }

    fn log_lines(&mut self) {
        for _ in 0..1 + self.rng.below(20) {
            self.clock_ms += self.rng.below(250);
            let (secs, ms) = (self.clock_ms / 1000, self.clock_ms % 1000);
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            let level = self.rng.pick(LEVELS);
            let (w1, w2, id) = (
                self.rng.pick(WORDS),
                self.rng.pick(WORDS),
                self.rng.next_u64() & 0xffff_ffff,
            );
            let elapsed = self.rng.below(5000);
            self.push(&format!("2026-11-28T{h:02}:{m:02}:{s:02}.{ms:03}Z [{level}] {w1} {w2} id={id:08x} elapsed={elapsed}ms\n"));
        }
    }

    /// A progress bar redrawn in place with `\r`, ending in a newline.
    fn progress_bar(&mut self) {
        let what = self.rng.pick(CRATES);
        let steps = 2 + self.rng.below(20);
        for i in 0..=steps {
            let filled = (i * 30 / steps) as usize;
            let bar = format!("{}>{}", "=".repeat(filled), " ".repeat(30 - filled));
            let pct = i * 100 / steps;
            let (mb, tenth) = (self.rng.below(90), self.rng.below(10));
            self.push(&format!(
                "\rDownloading {what} [{bar}] {pct:3}% {mb}.{tenth} MB/s"
            ));
        }
        self.push("\n");
    }

    fn diagnostic(&mut self) {
        let (code, msg) = ERRORS[self.rng.below(ERRORS.len() as u64) as usize];
        let file = self.rng.pick(FILES);
        let (line, col) = (1 + self.rng.below(900), 1 + self.rng.below(80));
        let w = self.rng.pick(WORDS);
        let (kind, colour) = if self.rng.below(3) == 0 {
            ("error", "31")
        } else {
            ("warning", "33")
        };
        self.push(&format!(
            "\x1b[1m\x1b[{colour}m{kind}[{code}]\x1b[0m\x1b[1m: {msg}\x1b[0m\n\
             \x1b[1m\x1b[34m  --> \x1b[0m{file}:{line}:{col}\n\
             \x1b[1m\x1b[34m   |\x1b[0m\n\
             \x1b[1m\x1b[34m{line:>3}|\x1b[0m     let {w} = {w}_from(&buf)?;\n\
             \x1b[1m\x1b[34m   |\x1b[0m         \x1b[1m\x1b[{colour}m^^^^\x1b[0m\n\n"
        ));
    }

    /// A 4–64 KiB line: minified JSON or base64, as bundlers and test reporters print.
    fn long_line(&mut self) {
        let len = 4096 + self.rng.below(60 * 1024) as usize;
        let start = self.out.len();
        if self.rng.below(2) == 0 {
            self.push("{\"stats\":[");
            while self.out.len() - start < len {
                let (w, n) = (self.rng.pick(WORDS), self.rng.below(100_000));
                self.push(&format!("{{\"name\":\"{w}\",\"size\":{n}}},"));
            }
            self.push("{}]}\n");
        } else {
            const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            for _ in 0..len {
                let c = B64[self.rng.below(64) as usize];
                self.out.push(c);
            }
            self.push("\n");
        }
    }

    /// 16–256 random bytes: a binary file cat'ed by mistake.
    fn binary_noise(&mut self) {
        for _ in 0..16 + self.rng.below(240) {
            let b = self.rng.next_u64() as u8;
            self.out.push(b);
        }
        self.push("\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = generate(7, 200_000);
        assert_eq!(a.len(), 200_000);
        assert_eq!(a, generate(7, 200_000));
        assert_ne!(a, generate(8, 200_000));
        // A shorter corpus is a prefix of a longer one with the same seed.
        assert_eq!(generate(7, 1000), a[..1000]);
    }

    #[test]
    fn looks_like_ci_output() {
        let c = generate(1, 4 << 20);
        let count = |needle: &[u8]| c.windows(needle.len()).filter(|w| *w == needle).count();
        assert!(count(b"\x1b[") > 1000, "ANSI escapes");
        assert!(count(b"\r") > 100, "progress bars");
        assert!(count(b"Compiling") > 100);
        assert!(count(b" ... ") > 100, "test lines");
        assert!(count(b"] ") > 100, "log levels");
        assert!(
            std::str::from_utf8(&c).is_err(),
            "binary noise makes it invalid UTF-8 somewhere"
        );
        let longest = c.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
        assert!(longest >= 4096, "long lines, longest {longest}");
    }
}
