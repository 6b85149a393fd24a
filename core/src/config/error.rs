//! What a config mistake looks like: one [`ConfigError`] per mistake, all of them in
//! [`ConfigErrors`].

use std::fmt;

/// The class of a config mistake, for callers and tests that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not TOML; nothing else could be checked. Positions are 1-based.
    Syntax {
        /// Line of the first offending character.
        line: usize,
        /// Column (in characters) of the first offending character.
        column: usize,
    },
    /// The config file or a secret file could not be read.
    Unreadable,
    /// A key (or section) in the file that names no config field.
    UnknownKey,
    /// An `FCTF_*` environment variable that names no config field.
    UnknownEnvVar,
    /// A value of the wrong TOML type (a string where an integer belongs, ...).
    WrongType,
    /// A number outside the field's range.
    OutOfRange,
    /// A value of the right type that is still not acceptable (a malformed URL, an unknown
    /// backend name, a secret that is too short, ...).
    InvalidValue,
    /// A value that must be given and is not.
    Missing,
    /// Values that contradict each other (two secrets for one key, a duplicated key id, an
    /// active key id that names no key).
    Conflict,
}

/// One config mistake: where it is, what is wrong and, where there is one, how to fix it.
///
/// Displayed as `<key.path>: <what is wrong> (<hint>)`. Never contains a secret: secrets are
/// described (by length, by file name), never echoed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the mistake is: a key path such as `store.redis_url` or `tokens.keys[1].kid`; an
    /// environment variable name for an `FCTF_*` variable that names no field; `line L, column C`
    /// for a syntax error; the file name for an unreadable config file.
    pub path: String,
    /// The class of the mistake.
    pub kind: ErrorKind,
    /// What is wrong, in a short clause.
    pub message: String,
    /// How to fix it, when there is something better to say than the message.
    pub hint: Option<String>,
    /// The environment variable the offending value came from, when it did not come from the
    /// file.
    pub env_var: Option<String>,
}

impl ConfigError {
    /// A mistake at `path` with no hint and no environment variable.
    pub fn new(path: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            kind,
            message: message.into(),
            hint: None,
            env_var: None,
        }
    }

    /// The same mistake with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " [set by {var}]")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every mistake found in one config, in a stable order: unknown `FCTF_*` variables, unknown
/// sections and keys, each section's fields in the order of the reference, then the rules across
/// fields. (A syntax error or an unreadable file is reported alone: nothing else can be checked.)
/// Never empty when returned by [`load`](super::load).
///
/// Displayed one mistake per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The key paths of the mistakes, in order (handy in tests and summaries).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }

    /// How many mistakes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case for an error returned by `load`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The mistakes, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
