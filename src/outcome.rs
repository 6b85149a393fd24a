//! How a command ends: its exit code, or a failure with its cause.

use std::io::Write as _;
use std::process::ExitCode;

/// The exit codes of `fctf` (listed for users in [`crate::cli::EXIT_CODES`]). Codes 64 and up
/// follow BSD `sysexits.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// `token verify` refused the token (a verdict, not a malfunction).
    Refused = 1,
    /// Invalid input: a config file with mistakes, or one that cannot be read or parsed; a key
    /// file, argument or token input that cannot be used (`EX_USAGE`).
    InvalidInput = 64,
    /// The role is not built yet (`EX_UNAVAILABLE`).
    Unavailable = 69,
    /// The role failed while running: a listener could not bind, the store could not be opened
    /// (`EX_SOFTWARE`).
    Software = 70,
    /// Output could not be written (`EX_IOERR`).
    Io = 74,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A command that could not do its job: the exit code and the error chain (printed as
/// `error: <context>: <cause>`).
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub error: anyhow::Error,
}

/// Turns any error into a [`Failure`] with a given exit code.
pub trait OrExit<T> {
    /// The error, if any, as a failure exiting with `code`.
    fn or_exit(self, code: Exit) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: Exit) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            code,
            error: error.into(),
        })
    }
}

/// Writes `text` to standard output. Unlike `print!`, a closed pipe is an error to report, not a
/// panic.
pub fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("writing to standard output"))
        .or_exit(Exit::Io)
}
