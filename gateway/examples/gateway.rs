//! `cargo run --release -p fctf-gateway --example gateway -- -c fctf.toml`: the gateway alone,
//! as `fctf gateway -c` runs it, without the other roles of the `fctf` binary. For profiling
//! (`benches/gateway/profile.sh` builds and runs this): it builds in a fraction of the time.

use std::process::ExitCode;

use fctf_core::config::{ProcessSource, load_file};

/// The allocator of the `fctf` binary, so this example measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, path] = args.as_slice() else {
        eprintln!("usage: gateway -c fctf.toml");
        return ExitCode::from(2);
    };
    if flag != "-c" {
        eprintln!("usage: gateway -c fctf.toml");
        return ExitCode::from(2);
    }
    let config = match load_file(std::path::Path::new(path), &ProcessSource) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    match fctf_gateway::server::run_from_config(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway: {error}");
            ExitCode::FAILURE
        }
    }
}
