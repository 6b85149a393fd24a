//! `fctf`: one binary for every FCTF role, a subcommand each. Which ones run today, and what
//! the exit codes mean, is in `fctf --help` ([`cli::EXIT_CODES`]).

mod check_config;
mod cli;
mod demo;
mod outcome;
mod platform;
mod roles;
mod token;
mod up;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::outcome::{Exit, Failure};

/// mimalloc instead of the system allocator: the gateway's request path makes about 80
/// allocations per request, which glibc's malloc serves several times slower
/// (docs/benchmarks.md, "Gateway hot path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_service() {
        init_logging();
    }
    match run(cli.command) {
        Ok(exit) => exit.into(),
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            code.into()
        }
    }
}

fn run(command: Command) -> Result<Exit, Failure> {
    match command {
        Command::CheckConfig(args) => check_config::run(&args),
        Command::Token(command) => token::run(command),
        Command::ConfigDocs(args) => {
            let text = if args.example {
                fctf_core::config::example_toml()
            } else {
                fctf_core::config::reference_markdown()
            };
            outcome::write_stdout(&text)?;
            Ok(Exit::Ok)
        }
        Command::Version => {
            outcome::write_stdout(&format!("fctf {}\n", env!("CARGO_PKG_VERSION")))?;
            Ok(Exit::Ok)
        }
        Command::Up(args) => up::up(&args),
        Command::Gateway(args) => roles::gateway(&args),
        Command::Contestant(args) => roles::contestant(&args),
        Command::DeploymentCenter(args) => roles::deployment_center(&args),
        Command::Consumer(args) => roles::consumer(&args),
        Command::Listener(args) => roles::listener(&args),
        Command::Migrate(args) => roles::migrate(&args),
        Command::DemoChallenge(args) => demo::run(args.kind),
    }
}

/// Logs of the long-running roles (the gateway's access log included) go to standard error, one
/// line each with their fields as `key=value`; `RUST_LOG` sets the filter (default `info`). The
/// variable is not `FCTF_*` because those are config overrides.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
