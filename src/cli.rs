//! The command line: every subcommand and flag, with its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fctf_core::config::TokensConfig;
use fctf_core::ids::InstanceId;

/// Exit codes, shown after `--help` (keep in step with [`crate::outcome::Exit`]).
pub const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   token verify: the token was refused (the reason is on standard error)
  2   the command line could not be parsed
  64  invalid input: a config file with mistakes (each listed), unreadable or not TOML;
      a key file, argument or token input that cannot be used
  69  a service the role needs (database, store, queue, runtime) is unreachable
  70  the role failed while running (for example a listener could not bind)
  74  output could not be written";

/// FCTF: a CTF platform. One binary, one subcommand per role.
#[derive(Debug, Parser)]
#[command(name = "fctf", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file and report every mistake at once (FCTF_* overrides included).
    #[command(after_help = EXIT_CODES)]
    CheckConfig(CheckConfigArgs),
    /// Mint or verify a challenge access token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the configuration reference (docs/configuration.md) or the example config.
    ConfigDocs(ConfigDocsArgs),
    /// Print the version.
    Version,
    /// Run the whole platform in one process: without -c on the embedded default (SQLite in
    /// data/, in-process store and queue, local runtime, demo challenges, loopback listeners);
    /// with -c on the backends the file names. Ctrl-C stops it, instances first.
    #[command(after_help = EXIT_CODES)]
    Up(RoleArgs),
    /// Run the Challenge Gateway (HTTP 8080, TCP 1337, admin 127.0.0.1:9100) until a signal:
    /// SIGTERM drains, SIGINT stops at once, SIGQUIT hands the listeners to a new process.
    #[command(after_help = EXIT_CODES)]
    Gateway(RoleArgs),
    /// Run the Contestant Service (players' and admins' API) until a signal.
    #[command(after_help = EXIT_CODES)]
    Contestant(RoleArgs),
    /// Run the Deployment Center, the instance control API ([deployment].listen), until a signal.
    #[command(after_help = EXIT_CODES)]
    DeploymentCenter(RoleArgs),
    /// Run the Deployment Consumer, the deploy queue worker, until a signal.
    #[command(after_help = EXIT_CODES)]
    Consumer(RoleArgs),
    /// Run the Deployment Listener, which reconciles instance state, until a signal.
    #[command(after_help = EXIT_CODES)]
    Listener(RoleArgs),
    /// Create or upgrade the database schema named by `[database].url`, then exit.
    #[command(after_help = EXIT_CODES)]
    Migrate(RoleArgs),
    /// Run a demo challenge instance program (the local runtime starts it with PORT and FLAG).
    DemoChallenge(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which demo: `http` (a web page) or `tcp` (a line service for nc / pwntools).
    #[arg(value_enum)]
    pub kind: DemoKind,
}

/// The demo challenge programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoKind {
    Http,
    Tcp,
}

impl Command {
    /// True for the long-running roles, which log.
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Self::Up(_)
                | Self::Gateway(_)
                | Self::Contestant(_)
                | Self::DeploymentCenter(_)
                | Self::Consumer(_)
                | Self::Listener(_)
        )
    }
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file.
    #[arg(
        value_name = "FILE",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub file: Option<PathBuf>,
    /// The config file (same as FILE).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also print the config in force as TOML, secrets redacted.
    #[arg(long)]
    pub print: bool,
}

impl CheckConfigArgs {
    /// The file to check, however it was given.
    pub fn path(&self) -> Option<&PathBuf> {
        self.file.as_ref().or(self.config.as_ref())
    }
}

#[derive(Debug, Args)]
pub struct ConfigDocsArgs {
    /// Print the example config (fctf.example.toml) instead of the reference.
    #[arg(long)]
    pub example: bool,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token and print it.
    Mint(MintArgs),
    /// Verify a token: print its claims as JSON (exit 0) or why it was refused (exit 1).
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// File holding the key's secret (at least 32 bytes; trailing whitespace is trimmed).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Id of the key.
    #[arg(long, default_value = "k1")]
    pub kid: String,
    /// Team id (0: admin preview, -1: shared instance).
    #[arg(long, allow_negative_numbers = true)]
    pub team: i64,
    /// Challenge id.
    #[arg(long)]
    pub challenge: i64,
    /// Instance id, 32 lowercase hex digits [default: a fresh one].
    #[arg(long, value_name = "ID")]
    pub instance: Option<InstanceId>,
    /// Where the gateway sends the traffic: a namespace name or host:port.
    #[arg(long)]
    pub route: String,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = TokensConfig::default().ttl_secs)]
    pub ttl: u64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// File holding the key's secret.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Id of the key.
    #[arg(long, default_value = "k1")]
    pub kid: String,
    /// Tolerated clock difference, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = TokensConfig::default().skew_secs)]
    pub skew: u64,
    /// The token; `-` or absent: read one line from standard input.
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
