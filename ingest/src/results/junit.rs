//! Streaming JUnit XML parser (quick-xml), tolerant of the dialects real tools write and bounded
//! on hostile input.
//!
//! Dialects: `<testsuites>` or `<testsuite>` roots, suites nested to any depth (within
//! `max_depth`), missing `time`/`classname`/`file`, CDATA, captured output, BOMs, times such as
//! `2,503.1` or `1.4e-05`. A `<testcase>`'s result is its worst child (`error` > `failure` >
//! `skipped`; `status="notrun|skipped|disabled|ignored"` also skips it). Retries become attempts
//! of one test: Surefire/nextest `<flakyFailure>`/`<flakyError>` are failed attempts before the
//! final one, `<rerunFailure>`/`<rerunError>` failed attempts after it (the verdict stays the
//! `<testcase>`'s own), and repeated
//! `<testcase>`s with the same suites (name and `hostname`, which Playwright sets to the project),
//! classname, name and file (Gradle's test-retry plugin, retrying runners) are attempts in
//! document order. Declared totals that disagree with the test cases
//! are reported; the test cases are what counts.
//!
//! Limits: no DTD entity is ever expanded (a DOCTYPE declaring entities is refused, an undefined
//! entity reference is an error), so entity expansion and external entities cannot happen; one
//! element or text block may be at most `max_event` bytes (memory per parse is about that);
//! elements nest at most `max_depth` deep; messages are truncated to `max_message`; a file holds
//! at most `max_tests` test cases. Invalid UTF-8 is replaced by U+FFFD, with a warning.

use std::collections::HashMap;
use std::io::{BufRead, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::model::{Attempt, Parsed, TestCase, TestResult};

/// Bounds on what one file may cost.
#[derive(Debug, Clone)]
pub struct JunitLimits {
    /// Largest single element (with its attributes) or block of text, in bytes.
    pub max_event: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Longest message kept per attempt, in bytes.
    pub max_message: usize,
    /// Most `<testcase>` elements in one file.
    pub max_tests: usize,
}

impl Default for JunitLimits {
    fn default() -> Self {
        Self { max_event: 16 << 20, max_depth: 64, max_message: 16 << 10, max_tests: 1_000_000 }
    }
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JunitError {
    #[error("the file is empty")]
    Empty,
    #[error("not a JUnit XML file: the root element is <{0}>, expected <testsuites> or <testsuite>")]
    NotJunit(String),
    #[error("not well-formed XML at byte {at}: {message}")]
    Xml { at: u64, message: String },
    #[error("the file ends inside <{0}>: it is truncated")]
    Truncated(String),
    #[error("the DOCTYPE declares entities; entity declarations are refused (they allow entity expansion and external entity attacks)")]
    EntityDeclaration,
    #[error("undefined entity &{name}; at byte {at} (only the five XML entities and character references are understood)")]
    UndefinedEntity { name: String, at: u64 },
    #[error("an element or text block starting at byte {at} is larger than the {limit}-byte limit")]
    TooLarge { at: u64, limit: usize },
    #[error("elements nest deeper than {0} levels")]
    TooDeep(usize),
    #[error("more than {0} test cases in one file")]
    TooManyTests(usize),
    #[error("could not read the file: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses one JUnit XML file.
pub fn parse<R: BufRead>(input: R, limits: &JunitLimits) -> Result<Parsed, JunitError> {
    let mut reader = Reader::from_reader(Bounded { inner: input, used: 0, limit: limits.max_event });
    let mut buf = Vec::new();
    let mut st = State::new(limits);
    loop {
        reader.get_mut().used = 0;
        buf.clear();
        let at = reader.buffer_position();
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => {
                if reader.get_ref().used > limits.max_event {
                    return Err(JunitError::TooLarge { at, limit: limits.max_event });
                }
                return Err(match e {
                    quick_xml::Error::Io(io) => JunitError::Io(std::io::Error::new(io.kind(), io.to_string())),
                    other => JunitError::Xml { at: reader.error_position(), message: other.to_string() },
                });
            }
        };
        match event {
            Event::Start(e) => st.start(&e)?,
            Event::Empty(e) => {
                st.start(&e)?;
                st.end();
            }
            Event::End(_) => st.end(),
            Event::Text(t) => st.text(&t.into_inner(), at)?,
            Event::CData(t) => st.text(&t.into_inner(), at)?,
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(JunitError::Xml { at, message: format!("invalid character reference &{};", lossy(&r))}),
                    }
                } else {
                    match &*r {
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"amp" => "&".into(),
                        b"apos" => "'".into(),
                        b"quot" => "\"".into(),
                        other => return Err(JunitError::UndefinedEntity { name: String::from_utf8_lossy(other).into_owned(), at }),
                    }
                };
                st.text(resolved.as_bytes(), at)?;
            }
            Event::DocType(d) => {
                if memchr_find(&d, b"<!ENTITY") {
                    return Err(JunitError::EntityDeclaration);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    st.finish()
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A reader that fails once one event consumed more than `limit` bytes, so a huge attribute or
/// text block is refused before it is buffered whole.
struct Bounded<R> {
    inner: R,
    used: usize,
    limit: usize,
}

impl<R: BufRead> Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let b = self.fill_buf()?;
            let n = b.len().min(out.len());
            out[..n].copy_from_slice(&b[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Bounded<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.used > self.limit {
            return Err(std::io::Error::other("event larger than the limit"));
        }
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.used += n;
        self.inner.consume(n);
    }
}

/// Where a result element inside a `<testcase>` puts its attempt.
#[derive(Clone, Copy)]
enum Slot {
    Final(TestResult),
    Before(TestResult),
    After(TestResult),
}

/// A result element being read: its message attribute and body text.
struct Capture {
    slot: Slot,
    depth: usize,
    message: String,
    body: String,
}

#[derive(Default)]
struct CaseBuilder {
    suite: String,
    hosts: String,
    classname: String,
    name: String,
    file: Option<String>,
    time: Option<f64>,
    status_skipped: bool,
    finals: Vec<(TestResult, String)>,
    before: Vec<(TestResult, String)>,
    after: Vec<(TestResult, String)>,
}

struct State<'l> {
    limits: &'l JunitLimits,
    /// Open elements' local names, one after another in `names`; `stack` holds where each starts
    /// (no allocation per element).
    names: String,
    stack: Vec<usize>,
    seen_root: bool,
    hasher: std::collections::hash_map::RandomState,
    case: Option<(usize, CaseBuilder)>,
    capture: Option<Capture>,
    tests: Vec<TestCase>,
    /// Tests by a hash of their identity (suites, hosts, classname, name, file).
    index: HashMap<u64, usize>,
    /// The open suites' names and hosts joined with `/`, kept as suites open and close.
    suite_path: String,
    host_path: String,
    /// Lengths of `suite_path` and `host_path` before each open suite.
    suite_marks: Vec<(usize, usize)>,
    case_elements: u64,
    declared_root: Option<u64>,
    declared_suites: Option<u64>,
    warnings: Vec<String>,
    warned_utf8: bool,
    warned_truncated: bool,
}

impl<'l> State<'l> {
    fn new(limits: &'l JunitLimits) -> Self {
        Self {
            limits,
            names: String::new(),
            stack: Vec::new(),
            seen_root: false,
            hasher: std::collections::hash_map::RandomState::new(),
            case: None,
            capture: None,
            tests: Vec::new(),
            index: HashMap::new(),
            suite_path: String::new(),
            host_path: String::new(),
            suite_marks: Vec::new(),
            case_elements: 0,
            declared_root: None,
            declared_suites: None,
            warnings: Vec::new(),
            warned_utf8: false,
            warned_truncated: false,
        }
    }

    fn decode(&mut self, b: &[u8]) -> String {
        match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                if !self.warned_utf8 {
                    self.warned_utf8 = true;
                    self.warnings.push("invalid UTF-8 was replaced by U+FFFD".into());
                }
                String::from_utf8_lossy(b).into_owned()
            }
        }
    }

    /// The values of the attributes named `keys` (local names), in one pass over the element.
    fn attrs<const N: usize>(&mut self, e: &BytesStart, keys: [&[u8]; N]) -> [Option<String>; N] {
        let mut out = [const { None }; N];
        for a in e.attributes().with_checks(false).flatten() {
            if let Some(i) = keys.iter().position(|k| *k == a.key.local_name().as_ref())
                && out[i].is_none()
            {
                out[i] = Some(self.value(&a.value));
            }
        }
        out
    }

    fn value(&mut self, raw: &[u8]) -> String {
        let text = self.decode(raw);
        if !text.contains('&') {
            return text;
        }
        match quick_xml::escape::unescape(&text) {
            Ok(s) => s.into_owned(),
            Err(_) => text,
        }
    }

    fn start(&mut self, e: &BytesStart) -> Result<(), JunitError> {
        let local = e.local_name();
        let name = local.as_ref();
        if self.stack.len() >= self.limits.max_depth {
            return Err(JunitError::TooDeep(self.limits.max_depth));
        }
        if !self.seen_root {
            if name != b"testsuites" && name != b"testsuite" {
                return Err(JunitError::NotJunit(self.decode(name)));
            }
            self.seen_root = true;
        }
        let depth = self.stack.len();
        match name {
            b"testsuites" if depth == 0 => {
                let [tests] = self.attrs(e, [b"tests"]);
                self.declared_root = tests.and_then(|t| t.trim().parse().ok());
            }
            b"testsuite" => {
                let top = depth == 0 || (depth == 1 && self.names.starts_with("testsuites"));
                let [suite, host, tests] = self.attrs(e, [b"name", b"hostname", b"tests"]);
                if let (true, Some(n)) = (top, tests.and_then(|t| t.trim().parse::<u64>().ok())) {
                    *self.declared_suites.get_or_insert(0) += n;
                }
                self.suite_marks.push((self.suite_path.len(), self.host_path.len()));
                if self.suite_marks.len() > 1 {
                    self.suite_path.push('/');
                    self.host_path.push('/');
                }
                self.suite_path.push_str(suite.as_deref().unwrap_or_default());
                self.host_path.push_str(host.as_deref().unwrap_or_default());
            }
            b"testcase" if self.case.is_none() => self.open_case(e, depth)?,
            _ if self.case.is_some() && self.capture.is_none() => {
                let slot = match name {
                    b"failure" => Some(Slot::Final(TestResult::Failure)),
                    b"error" => Some(Slot::Final(TestResult::Error)),
                    b"skipped" => Some(Slot::Final(TestResult::Skipped)),
                    b"flakyFailure" => Some(Slot::Before(TestResult::Failure)),
                    b"flakyError" => Some(Slot::Before(TestResult::Error)),
                    b"rerunFailure" => Some(Slot::After(TestResult::Failure)),
                    b"rerunError" => Some(Slot::After(TestResult::Error)),
                    _ => None,
                };
                if let Some(slot) = slot {
                    let [message] = self.attrs(e, [b"message"]);
                    self.capture = Some(Capture { slot, depth, message: message.unwrap_or_default(), body: String::new() });
                }
            }
            _ => {}
        }
        self.stack.push(self.names.len());
        let name = self.decode(name);
        self.names.push_str(&name);
        Ok(())
    }

    fn open_case(&mut self, e: &BytesStart, depth: usize) -> Result<(), JunitError> {
        self.case_elements += 1;
        if self.case_elements > self.limits.max_tests as u64 {
            return Err(JunitError::TooManyTests(self.limits.max_tests));
        }
        let [name, time, status, classname, file] = self.attrs(e, [b"name", b"time", b"status", b"classname", b"file"]);
        let name = name.unwrap_or_default();
        let time = match time {
            None => None,
            Some(t) => {
                let v = t.trim().replace(',', "").parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
                if v.is_none() {
                    self.warnings.push(format!("test {name:?}: unreadable time {t:?}, left empty"));
                }
                v
            }
        };
        let status = status.unwrap_or_default().to_ascii_lowercase();
        let case = CaseBuilder {
            suite: self.suite_path.clone(),
            hosts: self.host_path.clone(),
            classname: classname.unwrap_or_default(),
            file,
            name,
            time,
            status_skipped: matches!(status.as_str(), "notrun" | "skipped" | "disabled" | "ignored"),
            ..Default::default()
        };
        self.case = Some((depth, case));
        Ok(())
    }

    fn end(&mut self) {
        let Some(start) = self.stack.pop() else { return };
        let depth = self.stack.len();
        let (is_case, is_suite) = (&self.names[start..] == "testcase", &self.names[start..] == "testsuite");
        self.names.truncate(start);
        if self.capture.as_ref().is_some_and(|c| c.depth == depth) {
            if let (Some(c), Some((_, case))) = (self.capture.take(), self.case.as_mut()) {
                let mut message = join_message(&c.message, &c.body);
                truncate(&mut message, self.limits.max_message);
                match c.slot {
                    Slot::Final(r) => case.finals.push((r, message)),
                    Slot::Before(r) => case.before.push((r, message)),
                    Slot::After(r) => case.after.push((r, message)),
                }
            }
            return;
        }
        if is_case && self.case.as_ref().is_some_and(|(d, _)| *d == depth) {
            if let Some((_, case)) = self.case.take() {
                self.close_case(case);
            }
        } else if is_suite && let Some((s, h)) = self.suite_marks.pop() {
            self.suite_path.truncate(s);
            self.host_path.truncate(h);
        }
    }

    fn text(&mut self, bytes: &[u8], at: u64) -> Result<(), JunitError> {
        if self.capture.is_some() {
            let room = self.limits.max_message.saturating_sub(self.capture.as_ref().map_or(0, |c| c.body.len()));
            if room == 0 {
                return Ok(());
            }
            let text = self.decode(&bytes[..bytes.len().min(room + 4)]);
            let mut cut = text.len().min(room);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut < text.len() && !self.warned_truncated {
                self.warned_truncated = true;
                self.warnings.push(format!("messages longer than {} bytes were truncated", self.limits.max_message));
            }
            if let Some(c) = self.capture.as_mut() {
                c.body.push_str(&text[..cut]);
            }
        } else if self.stack.is_empty() && bytes.iter().any(|b| !b.is_ascii_whitespace()) && !is_bom(bytes) {
            return Err(JunitError::Xml { at, message: "text outside the root element: this is not an XML file".into() });
        }
        Ok(())
    }

    fn close_case(&mut self, case: CaseBuilder) {
        let attempt = |(result, message): (TestResult, String)| Attempt { result, time: None, message: (!message.is_empty()).then_some(message) };
        let mut attempts: Vec<Attempt> = case.before.into_iter().map(attempt).collect();
        let worst = [TestResult::Error, TestResult::Failure, TestResult::Skipped]
            .into_iter()
            .find(|r| case.finals.iter().any(|(f, _)| f == r))
            .or(case.status_skipped.then_some(TestResult::Skipped))
            .unwrap_or(TestResult::Success);
        let messages: Vec<&str> = case.finals.iter().filter(|(r, m)| *r == worst && !m.is_empty()).map(|(_, m)| m.as_str()).collect();
        let mut message = messages.join("\n\n");
        truncate(&mut message, self.limits.max_message);
        attempts.push(Attempt { result: worst, time: case.time, message: (!message.is_empty()).then_some(message) });
        attempts.extend(case.after.into_iter().map(attempt));
        let key = std::hash::BuildHasher::hash_one(&self.hasher, (&case.suite, &case.hosts, &case.classname, &case.name, &case.file));
        match self.index.get(&key) {
            Some(&i) => {
                self.tests[i].attempts.extend(attempts);
                self.tests[i].result = worst;
            }
            None => {
                self.index.insert(key, self.tests.len());
                self.tests.push(TestCase { suite: case.suite, classname: case.classname, name: case.name, file: case.file, result: worst, attempts });
            }
        }
    }

    fn finish(mut self) -> Result<Parsed, JunitError> {
        if let Some(&start) = self.stack.last() {
            return Err(JunitError::Truncated(self.names[start..].to_owned()));
        }
        if !self.seen_root {
            return Err(JunitError::Empty);
        }
        if let Some(declared) = self.declared_root.or(self.declared_suites)
            && declared != self.case_elements
        {
            self.warnings.push(format!(
                "the file declares {declared} tests but holds {} test cases; the test cases were counted",
                self.case_elements
            ));
        }
        Ok(Parsed { tests: self.tests, warnings: self.warnings })
    }
}

fn is_bom(b: &[u8]) -> bool {
    b.strip_prefix(b"\xEF\xBB\xBF").is_some_and(|rest| rest.iter().all(u8::is_ascii_whitespace))
}

/// The attribute message, then the body if it says more.
fn join_message(attr: &str, body: &str) -> String {
    let body = body.trim();
    match (attr.trim(), body) {
        ("", b) => b.to_owned(),
        (a, "") => a.to_owned(),
        (a, b) if b.starts_with(a) => b.to_owned(),
        (a, b) => format!("{a}\n{b}"),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests;
