//! `fctf check-config`: ok and exit 0, or every mistake and exit 64.

use super::{SECRET, Scratch, assert_exit, fctf, repo_path, run, stderr, stdout};

#[test]
fn the_example_config_is_ok() {
    let example = repo_path("fctf.example.toml");
    let example = example.to_str().unwrap();
    for args in [
        &["check-config", example][..],
        &["check-config", "-c", example][..],
    ] {
        let output = run(args);
        assert_exit(&output, 0);
        let out = stdout(&output);
        assert!(
            out.starts_with(&format!(
                "ok: {example} (store memory, queue memory, database sqlite://data/fctf.db"
            )),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

#[test]
fn a_production_config_is_ok_and_prints_without_secrets() {
    let scratch = Scratch::new();
    scratch.file("token-k1.key", &format!("{SECRET}\n"));
    let config = scratch.file(
        "fctf.toml",
        &format!(
            "[tokens]\nkeys = [{{ kid = \"k1\", secret_file = \"token-k1.key\" }}]\n\
             [signing]\nkeys = [{{ kid = \"s1\", secret = \"{SECRET}\" }}]\n\
             [store]\nbackend = \"redis\"\n\
             [database]\nurl = \"mysql://fctf:dbpass-hunter2@127.0.0.1:3306/test\"\n"
        ),
    );
    let output = run(&["check-config", config.to_str().unwrap(), "--print"]);
    assert_exit(&output, 0);
    let out = stdout(&output);
    assert!(out.contains("store redis"), "{out}");
    assert!(out.contains("token keys k1 (active)"), "{out}");
    assert!(
        out.contains("url = \"mysql://fctf:***@127.0.0.1:3306/test\""),
        "{out}"
    );
    assert!(
        !out.contains(SECRET) && !out.contains("hunter2"),
        "secret leaked:\n{out}"
    );
}

#[test]
fn three_mistakes_are_all_named_and_exit_64() {
    let scratch = Scratch::new();
    let config = scratch.file(
        "fctf.toml",
        "[tokens]\nskew_secs = 900\n\n[store]\nbackend = \"redsi\"\n\n[queue]\nmax_length = 0\n",
    );
    let output = run(&["check-config", config.to_str().unwrap()]);
    assert_exit(&output, 64);
    assert!(output.stdout.is_empty());
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("tokens.skew_secs: must be between 0 and 300, got 900"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("store.backend: must be one of"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("queue.max_length: must be between 1 and"),
        "{err}"
    );
    assert!(
        lines[3].ends_with("3 mistakes; see docs/configuration.md"),
        "{err}"
    );
}

#[test]
fn environment_overrides_are_checked_too() {
    let example = repo_path("fctf.example.toml");
    let output = fctf()
        .args(["check-config", example.to_str().unwrap()])
        .env("FCTF_STORE__REDIS_ULR", "redis://127.0.0.1:6379")
        .env("FCTF_STORE__TIMEOUT_MS", "0")
        .output()
        .unwrap();
    assert_exit(&output, 64);
    let err = stderr(&output);
    assert!(
        err.contains(
            "FCTF_STORE__REDIS_ULR: names no config field (did you mean FCTF_STORE__REDIS_URL?)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "store.timeout_ms: must be between 1 and 60000, got 0 [set by FCTF_STORE__TIMEOUT_MS]"
        ),
        "{err}"
    );
}

#[test]
fn invalid_toml_and_unreadable_files_exit_64() {
    let scratch = Scratch::new();
    let config = scratch.file("fctf.toml", "[store]\nbackend = memory\n");
    let output = run(&["check-config", config.to_str().unwrap()]);
    assert_exit(&output, 64);
    assert!(
        stderr(&output).starts_with("line 2, column 11: invalid TOML"),
        "{}",
        stderr(&output)
    );

    let output = run(&["check-config", "/nonexistent/fctf.toml"]);
    assert_exit(&output, 64);
    assert!(
        stderr(&output).starts_with("/nonexistent/fctf.toml: cannot read the config file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_file_is_required() {
    assert_exit(&run(&["check-config"]), 2);
}
