//! The `fctf` binary, run as a user runs it: exit codes, standard output and standard error.
//!
//! Each test gets its own scratch directory and runs the binary with no `FCTF_*` variable from
//! this process's environment, so the config checks see only what the test gives them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod api_fuzz;
mod chaos;
mod check_config;
mod demo;
mod isolation;
mod journey;
mod migrate;
mod pipeline;
mod portal;
mod restart;
mod roles;
mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// A 44-byte secret (base64 of 32 random bytes, as the README makes one).
const SECRET: &str = "mC3Yl0n3oB0mH7lJ9P2s6cX1v4K8qT5wZr0dE2fG7hI=";

/// A directory of its own for one test, removed when dropped.
#[derive(Debug)]
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fctf-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary, with no `FCTF_*` variable inherited.
fn fctf() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fctf"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FCTF_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `fctf args...` to completion.
fn run(args: &[&str]) -> Output {
    fctf().args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// `output`'s exit code, with its streams in the message when it is not `expected`.
#[track_caller]
fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A file of the repository.
fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn version_is_printed_both_ways() {
    let expected = format!("fctf {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["version"][..], &["--version"][..]] {
        let output = run(args);
        assert_exit(&output, 0);
        assert_eq!(stdout(&output), expected);
    }
}

#[test]
fn help_lists_the_exit_codes() {
    let output = run(&["--help"]);
    assert_exit(&output, 0);
    let help = stdout(&output);
    for line in [
        "Exit codes:",
        "  64  invalid input",
        "  69  a service the role needs",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn config_docs_prints_the_committed_reference_and_example() {
    let output = run(&["config-docs"]);
    assert_exit(&output, 0);
    let committed = std::fs::read_to_string(repo_path("docs/configuration.md")).unwrap();
    assert!(
        stdout(&output) == committed,
        "run `fctf config-docs > docs/configuration.md`"
    );

    let output = run(&["config-docs", "--example"]);
    assert_exit(&output, 0);
    let committed = std::fs::read_to_string(repo_path("fctf.example.toml")).unwrap();
    assert!(
        stdout(&output) == committed,
        "run `fctf config-docs --example > fctf.example.toml`"
    );
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let output = run(&["frobnicate"]);
    assert_exit(&output, 2);
}
