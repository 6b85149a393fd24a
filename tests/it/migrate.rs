//! `fctf migrate`: applies the schema to the configured database once, then reports it up to
//! date; a database it cannot reach is exit 69 with the URL (password masked) in the message.

use super::{Scratch, assert_exit, run, stderr, stdout};

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let scratch = Scratch::new();
    let db = scratch.dir.join("data/fctf.db");
    let config = scratch.file(
        "fctf.toml",
        &format!("[database]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    let output = run(&["migrate", "-c", config.to_str().unwrap()]);
    assert_exit(&output, 0);
    assert!(
        stdout(&output).starts_with("applied migrations [1"),
        "{}",
        stdout(&output)
    );
    assert!(db.exists(), "the SQLite file and its directory are created");

    let output = run(&["migrate", "-c", config.to_str().unwrap()]);
    assert_exit(&output, 0);
    assert!(
        stdout(&output).starts_with("database schema is up to date (version "),
        "{}",
        stdout(&output)
    );
}

#[test]
fn migrate_needs_a_config_and_a_reachable_database() {
    let output = run(&["migrate"]);
    assert_exit(&output, 64);

    let scratch = Scratch::new();
    let config = scratch.file(
        "fctf.toml",
        "[database]\nurl = \"mysql://root:hunter2@127.0.0.1:1/test\"\n",
    );
    let output = run(&["migrate", "-c", config.to_str().unwrap()]);
    assert_exit(&output, 69);
    let message = stderr(&output);
    assert!(message.contains("migrating mysql://root:"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password is masked: {message}"
    );
}
