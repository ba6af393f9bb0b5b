//! Artifact names: the one normal form both the uploader and the server hold paths in, and
//! the refusals (traversal, absolute paths, NUL, backslashes, drive letters) that keep a stored
//! name from ever meaning a place outside the job's artifacts.

/// Longest artifact path in bytes, after normalisation.
pub const MAX_PATH: usize = 1024;
/// Longest single component in bytes (what common filesystems allow).
pub const MAX_COMPONENT: usize = 255;

/// Why a name is not an acceptable artifact path. Messages say what to rename.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("artifact path is empty")]
    Empty,
    #[error("artifact path {0:?} is absolute; give a path relative to the job's artifacts")]
    Absolute(String),
    #[error("artifact path {0:?} contains `..`; paths may not leave the job's artifacts")]
    Traversal(String),
    #[error("artifact path {0:?} contains a backslash; use `/` between folders")]
    Backslash(String),
    #[error("artifact path {0:?} contains a NUL or control character")]
    Control(String),
    #[error("artifact path {0:?} starts with a drive letter; give a relative path")]
    Drive(String),
    #[error("artifact path is {0} bytes long; at most {MAX_PATH} are allowed")]
    TooLong(usize),
    #[error("a component of artifact path {0:?} is longer than {MAX_COMPONENT} bytes")]
    ComponentTooLong(String),
}

/// Normalises an artifact path: `.` components and repeated or trailing `/` are dropped, so
/// `./a//b/` and `a/b` are the same artifact. Refuses anything that could name a place outside
/// the job's artifacts or mean different things on different systems.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let shown = || raw.chars().take(200).collect::<String>();
    if raw.chars().any(|c| c.is_control()) {
        return Err(PathError::Control(shown()));
    }
    if raw.contains('\\') {
        return Err(PathError::Backslash(shown()));
    }
    if raw.starts_with('/') {
        return Err(PathError::Absolute(shown()));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathError::Traversal(shown())),
            c if c.len() > MAX_COMPONENT => return Err(PathError::ComponentTooLong(shown())),
            c => parts.push(c),
        }
    }
    let path = parts.join("/");
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    // Checked after `.` components are dropped: `./c:/x` is `c:/x` too (found by fuzzing).
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(PathError::Drive(shown()));
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong(path.len()));
    }
    Ok(path)
}

/// Joins a destination prefix and a relative name, then normalises the result.
pub fn join(prefix: Option<&str>, rel: &str) -> Result<String, PathError> {
    match prefix {
        Some(p) if !p.is_empty() => normalize(&format!("{p}/{rel}")),
        _ => normalize(rel),
    }
}

/// Percent-encodes one path component (everything but RFC 3986 unreserved characters).
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Percent-encodes a path for a URL, keeping its `/`.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode_component).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        assert_eq!(normalize("a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(normalize("./a//b/").unwrap(), "a/b");
        assert_eq!(normalize("a/./b").unwrap(), "a/b");
        assert_eq!(normalize("report.html").unwrap(), "report.html");
        assert_eq!(normalize("ünïcode/ファイル").unwrap(), "ünïcode/ファイル");
        assert_eq!(normalize("..foo/bar..").unwrap(), "..foo/bar..");
        assert_eq!(join(Some("out/"), "./x").unwrap(), "out/x");
        assert_eq!(join(None, "x").unwrap(), "x");
        assert_eq!(encode_path("a b/c?d/%"), "a%20b/c%3Fd/%25");
    }

    #[test]
    fn refusals() {
        for (p, want) in [
            ("", PathError::Empty),
            (".", PathError::Empty),
            ("//", PathError::Absolute("//".into())),
            ("/etc/passwd", PathError::Absolute("/etc/passwd".into())),
            ("../x", PathError::Traversal("../x".into())),
            ("a/../../x", PathError::Traversal("a/../../x".into())),
            ("a/..", PathError::Traversal("a/..".into())),
            ("..\\..\\x", PathError::Backslash("..\\..\\x".into())),
            ("a\\b", PathError::Backslash("a\\b".into())),
            ("a\0b", PathError::Control("a\0b".into())),
            ("a\nb", PathError::Control("a\nb".into())),
            ("C:/x", PathError::Drive("C:/x".into())),
            ("c:x", PathError::Drive("c:x".into())),
            ("./c:/x", PathError::Drive("./c:/x".into())),
            ("//./c:", PathError::Absolute("//./c:".into())),
        ] {
            assert_eq!(normalize(p), Err(want), "{p:?}");
        }
        assert!(matches!(normalize(&"a/".repeat(600)), Err(PathError::TooLong(_))));
        assert!(matches!(normalize(&"x".repeat(256)), Err(PathError::ComponentTooLong(_))));
        assert!(join(Some(".."), "x").is_err());
        assert!(join(Some("/abs"), "x").is_err());
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["a//b", "./x/./y/", "a/b/c"] {
            let n = normalize(p).unwrap();
            assert_eq!(normalize(&n).unwrap(), n);
        }
    }
}
