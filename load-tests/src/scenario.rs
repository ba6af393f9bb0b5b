//! Scenarios: what load to make, read from a TOML file in `load-tests/cases/`.

use std::path::Path;

use serde::{Deserialize, Deserializer};
use tailrace_agent::transport::TransportChoice;
use tailrace_agent::units::parse_size;

/// One load-test scenario. Sizes are bytes, or strings like `"64MiB"`, `"10KB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name for the report; the file name by default.
    #[serde(default)]
    pub name: String,
    /// What the scenario shows, in a sentence or two.
    pub purpose: String,
    /// Simulated agents running at once; each is one job.
    pub agents: u32,
    /// Steps each agent runs one after another.
    #[serde(default = "one")]
    pub steps_per_agent: u32,
    /// Output each step writes.
    #[serde(deserialize_with = "size")]
    pub step_bytes: u64,
    /// Bytes per second each step writes at; absent or 0 = as fast as the server takes them.
    #[serde(default, deserialize_with = "size")]
    pub rate: u64,
    /// Bytes per write of the simulated command (one spool chunk).
    #[serde(default = "default_write", deserialize_with = "size")]
    pub write_bytes: u64,
    /// Websocket tailers on every step, connected before the step writes its first byte.
    #[serde(default)]
    pub tailers_per_step: u32,
    /// Extra tailers on one step (the first step of the first agent): a hot step.
    #[serde(default)]
    pub hot_step_tailers: u32,
    /// Tailers pause this long after each message they receive: slow readers.
    #[serde(default)]
    pub tailer_pause_ms: u64,
    /// Steps stay open, idle, after writing until every step is open, then the server's RSS is
    /// read: memory per open step. Needs `steps_per_agent = 1`.
    #[serde(default)]
    pub hold_open: bool,
    /// `quic`, `http2` or `auto`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Corpus seed: the same seed streams the same bytes.
    #[serde(default = "one_u64")]
    pub seed: u64,
    /// Wait until every step is archived and read it back whole from the archive.
    #[serde(default = "yes")]
    pub verify_archive: bool,
    /// Steps at most between starting to connect and being accepted: agents start in a ramp
    /// rather than all handshaking in the same instant.
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: u32,
    /// Unacknowledged bytes each agent keeps in memory before spilling to its spool file.
    #[serde(default = "default_spool_mem", deserialize_with = "size")]
    pub spool_mem: u64,
}

fn one() -> u32 {
    1
}
fn one_u64() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_write() -> u64 {
    16 * 1024
}
fn default_spool_mem() -> u64 {
    1 << 20
}
fn default_connect_concurrency() -> u32 {
    100
}
fn default_transport() -> String {
    "quic".into()
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("could not read scenario {}: {e}", path.display()))?;
        let mut s: Scenario =
            toml::from_str(&text).map_err(|e| format!("bad scenario {}: {e}", path.display()))?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        s.check()?;
        Ok(s)
    }

    /// Refuses scenarios that cannot run, saying which field to change.
    pub fn check(&self) -> Result<(), String> {
        if self.agents == 0 || self.steps_per_agent == 0 {
            return Err("agents and steps_per_agent must be at least 1".into());
        }
        if self.write_bytes == 0 || self.write_bytes > 1 << 20 {
            return Err("write_bytes must be 1 B ..= 1 MiB".into());
        }
        if self.hold_open && self.steps_per_agent != 1 {
            return Err("hold_open needs steps_per_agent = 1 (every step open at once)".into());
        }
        self.transport_choice()?;
        Ok(())
    }

    pub fn transport_choice(&self) -> Result<TransportChoice, String> {
        match self.transport.as_str() {
            "quic" => Ok(TransportChoice::Quic),
            "http2" => Ok(TransportChoice::Http2),
            "auto" => Ok(TransportChoice::Auto),
            other => Err(format!("transport {other:?}: use quic, http2 or auto")),
        }
    }

    pub fn steps(&self) -> u64 {
        u64::from(self.agents) * u64::from(self.steps_per_agent)
    }

    pub fn total_bytes(&self) -> u64 {
        self.steps() * self.step_bytes
    }

    /// Multiplies the amount of output (bytes per step) by `f`, for quick runs of a big case.
    pub fn scale_bytes(&mut self, f: f64) {
        self.step_bytes = ((self.step_bytes as f64) * f).max(1.0) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_numbers_or_units_and_clear_refusals() {
        let s: Scenario =
            toml::from_str("purpose = 'x'\nagents = 2\nstep_bytes = '1MiB'\nrate = 10000").unwrap();
        assert_eq!(
            (s.step_bytes, s.rate, s.write_bytes, s.steps()),
            (1 << 20, 10_000, 16 * 1024, 2)
        );
        assert!(s.check().is_ok());
        let bad: Scenario = toml::from_str(
            "purpose = 'x'\nagents = 2\nsteps_per_agent = 2\nstep_bytes = 1\nhold_open = true",
        )
        .unwrap();
        assert!(bad.check().unwrap_err().contains("hold_open"));
        assert!(
            toml::from_str::<Scenario>("purpose = 'x'\nagents = 1\nstep_bytes = '1 parsec'")
                .is_err()
        );
        assert!(
            toml::from_str::<Scenario>("purpose = 'x'\nagents = 1\nstep_bytes = 1\ntailerz = 3")
                .is_err()
        );
    }

    #[test]
    fn every_case_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} cases in {}", dir.display());
    }
}
