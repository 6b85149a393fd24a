//! Where config input comes from: the process (environment and file system) in production, a
//! map in tests. Nothing else in the config module touches the environment or the disk, so a
//! test never has to set a process environment variable (which would leak into every other test
//! running in parallel).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// The largest file [`ProcessSource::read_file`] reads. Config and key files are tiny; the cap
/// turns a path that names a device or a huge file by mistake into an error instead of a hang.
pub const MAX_FILE_LEN: u64 = 1024 * 1024;

/// The environment and files a config is read from.
pub trait ConfigSource {
    /// The value of one environment variable, if it is set.
    fn env_var(&self, name: &str) -> Option<String>;
    /// Every environment variable, as (name, value).
    fn env_vars(&self) -> Vec<(String, String)>;
    /// The whole contents of a file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSource;

impl ConfigSource for ProcessSource {
    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }

    fn env_vars(&self) -> Vec<(String, String)> {
        // Lossy rather than `std::env::vars()`, which panics on a variable that is not UTF-8.
        std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut contents = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_LEN + 1)
            .read_to_end(&mut contents)?;
        if contents.len() as u64 > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_FILE_LEN} bytes"),
            ));
        }
        Ok(contents)
    }
}

/// An environment and a file system held in memory, for tests.
///
/// ```
/// use fctf_core::config::{self, MapSource};
/// let source = MapSource::new()
///     .with_env("FCTF_STORE__TIMEOUT_MS", "250")
///     .with_file("/keys/k1", "0123456789abcdef0123456789abcdef\n");
/// let config = config::load(
///     "[[tokens.keys]]\nkid = \"k1\"\nsecret_file = \"/keys/k1\"\n",
///     &source,
/// )
/// .unwrap();
/// assert_eq!(config.store.timeout_ms, 250);
/// ```
#[derive(Clone, Default)]
pub struct MapSource {
    env: BTreeMap<String, String>,
    files: HashMap<PathBuf, Vec<u8>>,
}

impl MapSource {
    /// No variables, no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same source with one more environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The same source with one more file.
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }
}

impl fmt::Debug for MapSource {
    // Names only: test files hold secrets too, and a Debug line should not spread them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapSource")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConfigSource for MapSource {
    fn env_var(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn env_vars(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory (not in this MapSource)",
            )
        })
    }
}
