//! Job and step identifiers, validated so they are safe as file names and URL segments.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} id may contain only ASCII letters, digits, '-', '_' and '.', and may not start with '.'")]
    BadChar { kind: &'static str },
}

const MAX_ID: usize = 64;

fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID {
        return Err(IdError::TooLong { kind, max: MAX_ID });
    }
    let ok = s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok || s.starts_with('.') {
        return Err(IdError::BadChar { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, " id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.`.")]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

id_type!(JobId, "job");
id_type!(StepId, "step");

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(StepId::new(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn ids_are_safe_path_segments() {
        check("build", true);
        check("step-1_a.b", true);
        check("", false);
        check(".", false);
        check("..", false);
        check("../etc", false);
        check("a/b", false);
        check("a\\b", false);
        check("a\0b", false);
        check("é", false);
        check(&"x".repeat(64), true);
        check(&"x".repeat(65), false);
    }
}
