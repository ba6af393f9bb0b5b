//! Hostile and odd input: each is refused with a clear error or parsed within the limits; nothing
//! panics and memory stays bounded. (Real files from real tools: `ingest/tests/junit_corpus.rs`.)

#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Read};

use proptest::prelude::*;

use super::*;

fn parse_str(xml: &str) -> Result<Parsed, JunitError> {
    parse(xml.as_bytes(), &JunitLimits::default())
}

#[test]
fn billion_laughs_is_refused_before_any_expansion() {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
        xml.push_str(&format!(" <!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10)));
    }
    xml.push_str("]>\n<testsuite name=\"&lol9;\"><testcase name=\"a\"/></testsuite>");
    let err = parse_str(&xml).unwrap_err();
    assert!(matches!(err, JunitError::EntityDeclaration), "{err:?}");
    assert!(err.to_string().contains("entity declarations are refused"));
}

#[test]
fn external_entities_are_refused() {
    let xml = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><testsuite><testcase name=\"&xxe;\"/></testsuite>";
    assert!(matches!(parse_str(xml), Err(JunitError::EntityDeclaration)));
    // Without a DTD, an entity the parser does not know is an error, never a lookup.
    let xml = "<testsuite><testcase name=\"a\"><failure>&xxe;</failure></testcase></testsuite>";
    let err = parse_str(xml).unwrap_err();
    assert!(matches!(&err, JunitError::UndefinedEntity { name, .. } if name == "xxe"), "{err:?}");
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let depth = 100_000;
    let xml = format!("{}{}", "<testsuite>".repeat(depth), "</testsuite>".repeat(depth));
    let err = parse_str(&xml).unwrap_err();
    assert!(matches!(err, JunitError::TooDeep(64)), "{err:?}");
    // Within the limit it parses.
    let xml = format!("{}<testcase name=\"x\"/>{}", "<testsuite name=\"s\">".repeat(60), "</testsuite>".repeat(60));
    let parsed = parse_str(&xml).unwrap();
    assert_eq!(parsed.tests.len(), 1);
    assert_eq!(parsed.tests[0].suite.split('/').count(), 60);
}

/// A 100 MB attribute, generated on the fly; counts what the parser pulled from it.
struct HugeAttribute {
    head: &'static [u8],
    remaining: usize,
    pulled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Read for HugeAttribute {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if !self.head.is_empty() {
            let n = self.head.len().min(buf.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head = &self.head[n..];
            n
        } else {
            let n = self.remaining.min(buf.len());
            buf[..n].fill(b'a');
            self.remaining -= n;
            n
        };
        self.pulled.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn a_100_mb_attribute_is_refused_after_reading_only_the_limit() {
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let input = HugeAttribute { head: b"<testsuite><testcase name=\"", remaining: 100 << 20, pulled: pulled.clone() };
    let limits = JunitLimits::default();
    let err = parse(BufReader::new(input), &limits).unwrap_err();
    assert!(matches!(err, JunitError::TooLarge { limit, .. } if limit == limits.max_event), "{err:?}");
    assert!(err.to_string().contains("larger than the 16777216-byte limit"));
    let read = pulled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read <= limits.max_event + (64 << 10), "read {read} bytes of a 100 MB attribute: memory is not bounded");
}

#[test]
fn invalid_utf8_is_replaced_and_reported() {
    let xml = b"<testsuite name=\"s\xff\"><testcase classname=\"c\" name=\"t\xc3\x28\"><failure message=\"m\xfe\">body</failure></testcase></testsuite>";
    let parsed = parse(&xml[..], &JunitLimits::default()).unwrap();
    assert_eq!(parsed.tests[0].name, "t\u{fffd}(");
    assert_eq!(parsed.tests[0].suite, "s\u{fffd}");
    assert_eq!(parsed.tests[0].attempts[0].message.as_deref(), Some("m\u{fffd}\nbody"));
    assert!(parsed.warnings.iter().any(|w| w.contains("invalid UTF-8")), "{:?}", parsed.warnings);
}

#[test]
fn truncated_files_are_refused_at_every_cut() {
    let xml = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/junit/quick-junit/crates__quick-junit-tests__tests__fixtures__basic_report.xml")).unwrap();
    let end = xml.iter().rposition(|&b| b == b'>').unwrap() + 1;
    for cut in 0..end {
        match parse(&xml[..cut], &JunitLimits::default()) {
            Err(JunitError::Empty | JunitError::Truncated(_) | JunitError::Xml { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    assert_eq!(parse(&xml[..end], &JunitLimits::default()).unwrap().tests.len(), 8);
}

#[test]
fn not_junit_and_empty_files_say_so() {
    assert!(matches!(parse_str(""), Err(JunitError::Empty)));
    assert!(matches!(parse_str("<?xml version=\"1.0\"?>\n"), Err(JunitError::Empty)));
    assert!(parse_str("<html><body/></html>").unwrap_err().to_string().contains("root element is <html>"));
    assert!(parse_str("just text").unwrap_err().to_string().contains("not an XML file"));
    assert!(parse_str("\u{feff}<testsuites/>").unwrap().tests.is_empty(), "a BOM is fine");
}

#[test]
fn messages_are_truncated_at_a_character_boundary() {
    let limits = JunitLimits { max_message: 10, ..JunitLimits::default() };
    let xml = "<testsuite><testcase name=\"t\"><failure>ééééééééééééé</failure></testcase></testsuite>";
    let parsed = parse(xml.as_bytes(), &limits).unwrap();
    let m = parsed.tests[0].attempts[0].message.clone().unwrap();
    assert_eq!(m, "ééééé");
    assert!(parsed.warnings.iter().any(|w| w.contains("truncated")));
}

#[test]
fn too_many_test_cases_are_refused() {
    let limits = JunitLimits { max_tests: 3, ..JunitLimits::default() };
    let xml = format!("<testsuite>{}</testsuite>", "<testcase name=\"t\"/>".repeat(4));
    assert!(matches!(parse(xml.as_bytes(), &limits), Err(JunitError::TooManyTests(3))));
}

#[test]
fn retries_are_attempts_and_totals_that_lie_are_reported() {
    let xml = r#"<testsuite name="s" tests="40">
        <testcase classname="c" name="flaky" time="1,000.5"><flakyFailure message="first"/><flakyError/></testcase>
        <testcase classname="c" name="rerun" time="0."><failure message="boom"/><rerunFailure/><rerunError/></testcase>
        <testcase classname="c" name="dup" time="1.4e-05"><error/></testcase>
        <testcase classname="c" name="dup" time="-3"/>
        <testcase classname="c" name="notrun" status="notrun"/>
    </testsuite>"#;
    let parsed = parse_str(xml).unwrap();
    let t = |name: &str| parsed.tests.iter().find(|t| t.name == name).unwrap();
    let results = |name: &str| t(name).attempts.iter().map(|a| a.result).collect::<Vec<_>>();
    use TestResult::*;
    assert_eq!(results("flaky"), [Failure, Error, Success]);
    assert!(t("flaky").is_flaky());
    assert_eq!(t("flaky").time(), Some(1000.5));
    assert_eq!(t("flaky").attempts[0].message.as_deref(), Some("first"));
    assert_eq!(results("rerun"), [Failure, Failure, Error]);
    assert_eq!(t("rerun").result(), Failure);
    assert!(!t("rerun").is_flaky());
    assert_eq!(results("dup"), [Error, Success]);
    assert!(t("dup").is_flaky());
    assert_eq!(t("dup").time(), Some(1.4e-05));
    assert_eq!(t("notrun").result(), Skipped);
    assert!(parsed.warnings.iter().any(|w| w.contains("unreadable time \"-3\"")), "{:?}", parsed.warnings);
    assert!(parsed.warnings.iter().any(|w| w.contains("declares 40 tests but holds 5 test cases")), "{:?}", parsed.warnings);
    let c = parsed.counts();
    assert_eq!((c.tests, c.success, c.failure, c.error, c.skipped, c.flaky, c.attempts), (4, 2, 1, 0, 1, 2, 9));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes[..], &JunitLimits::default());
    }

    #[test]
    fn mutated_junit_never_panics(pos in 0usize..400, byte in any::<u8>()) {
        let mut xml = br#"<testsuites><testsuite name="a" tests="2"><testcase classname="c" name="n" time="1"><failure message="m">x &amp; y</failure><system-out><![CDATA[out]]></system-out></testcase><testcase name="m"/></testsuite></testsuites>"#.to_vec();
        let i = pos % xml.len();
        xml[i] = byte;
        let _ = parse(&xml[..], &JunitLimits::default());
    }
}
