//! Property-based fuzzing of the whole Contestant Service API from its own OpenAPI document,
//! with schemathesis (PyPI), against a real `fctf up` subprocess on free ports: a fixed seed, a
//! bounded number of examples per operation, and the checks that hold the server to the
//! document (no 5xx, only documented statuses, content types, headers and bodies, schema-valid
//! requests accepted, credentials required where the document says so).
//!
//! The run uses the admin API token `fctf up` prints. Operations that would destroy that
//! credential (an admin revoking, demoting, banning or deleting whichever token or user a
//! generated id names) get their `{id}` pinned to a sacrificial user and token seeded for that
//! purpose, so every operation is still fuzzed (bodies, headers) and the run's own token lives.
//! Seeded objects (a bracket, a flag, a hint, a tag, a topic, an award, a notification, a
//! ticket) make `{id}` operations reach real rows half of the time. The team instance
//! operations run as the demo player (the admin has no team); Ctrl-C at the end stops the
//! instances they started.
//!
//! schemathesis: `$FCTF_SCHEMATHESIS`, else `~/.cache/fctf/venv/bin/schemathesis`, else `PATH`
//! (`bash .ci/run` installs it). Missing, the test fails with the install command.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Scratch;
use super::journey::{Client, Platform, start_with};

/// The schemathesis version CI pins (`.ci/run`).
const VERSION: &str = "4.32.5";

/// Test cases per operation (besides the coverage phase's boundary cases): one to two minutes
/// on two cores.
const MAX_EXAMPLES: &str = "10";

/// The seed of the run: the same cases every time, so a failure reproduces.
const SEED: &str = "20261123";

/// How long the whole schemathesis run may take before it counts as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

fn install_hint() -> String {
    format!(
        "python3 -m venv ~/.cache/fctf/venv && ~/.cache/fctf/venv/bin/pip install \
         schemathesis=={VERSION}   (or run `bash .ci/run`; or set FCTF_SCHEMATHESIS)"
    )
}

/// The schemathesis executable, or a loud failure naming the install command.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("FCTF_SCHEMATHESIS") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FCTF_SCHEMATHESIS={} is not a file; install it with: {}",
            path.display(),
            install_hint()
        );
        return path;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/fctf/venv/bin/schemathesis");
        if venv.is_file() {
            return venv;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("schemathesis");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "schemathesis is not installed; install it with: {}",
        install_hint()
    );
}

/// The id of a JSON answer's `data`, asserting a success.
fn created(answer: &super::journey::Answer, what: &str) -> i64 {
    assert_eq!(answer.status, 200, "seeding {what}: {}", answer.text());
    answer.json()["data"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("seeding {what}: no id in {}", answer.text()))
}

/// What the run may touch: ids of real rows, and the sacrificial user and token.
struct Seeds {
    ids: Vec<i64>,
    victim_user: i64,
    victim_token: i64,
    /// An API token of the demo player, who has a team (the admin has none).
    player_token: String,
}

fn seed(platform: &Platform) -> Seeds {
    let mut admin = Client::token(&platform.admin_token);
    let player = admin.api(
        platform,
        "POST",
        "/tokens",
        Some(json!({"user_id": 2, "description": "the fuzzer's player"})),
    );
    created(&player, "the demo player's token");
    let player_token = player.json()["data"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no token value in {}", player.text()))
        .to_owned();
    let mut post = |path: &str, body: Value| {
        let answer = admin.api(platform, "POST", path, Some(body));
        created(&answer, path)
    };
    let victim_user = post(
        "/users",
        json!({"name": "fuzz-victim", "password": "victim-password-1",
               "email": "victim@example.org"}),
    );
    let victim_token = post(
        "/tokens",
        json!({"user_id": victim_user, "description": "revoked by the fuzzer"}),
    );
    let mut ids = vec![
        post(
            "/brackets",
            json!({"name": "fuzz-bracket", "type": "teams"}),
        ),
        post(
            "/flags",
            json!({"challenge_id": 1, "type": "static", "content": "FCTF{fuzz}"}),
        ),
        post(
            "/hints",
            json!({"challenge_id": 1, "title": "fuzz", "content": "a hint", "cost": 0}),
        ),
        post("/tags", json!({"challenge_id": 1, "value": "fuzz-tag"})),
        post("/topics", json!({"challenge_id": 1, "value": "fuzz-topic"})),
        post(
            "/awards",
            json!({"team_id": 1, "name": "fuzz-award", "value": 1}),
        ),
        post(
            "/notifications",
            json!({"title": "fuzz", "content": "a notification"}),
        ),
        post(
            "/tickets",
            json!({"title": "fuzz", "content": "a ticket to read and close"}),
        ),
        victim_user,
        victim_token,
    ];
    // Users 1 (admin) and 2 (demo), team 1 (demo-team), challenges 1 to 3 exist after `fctf up`.
    ids.extend([1, 2, 3]);
    ids.sort_unstable();
    ids.dedup();
    Seeds {
        ids,
        victim_user,
        victim_token,
        player_token,
    }
}

/// The schemathesis config of the run (schemathesis.toml's format).
fn config(seeds: &Seeds, admin_token: &str) -> String {
    let ids: Vec<String> = seeds.ids.iter().map(i64::to_string).collect();
    format!(
        r#"# Written by tests/it/api_fuzz.rs for one run.

# Every operation runs as the admin `fctf up` made (its API token), except as below.
headers = {{ Authorization = "Token {admin_token}" }}

# No example database on disk: the seed alone decides the cases.
[generation]
database = "none"

# Half of the generated `{{id}}`s name rows that exist, so operations get past 404.
[dictionaries.seeded-ids]
values = [{ids}]

[parameters]
"path.id" = {{ dictionary = "seeded-ids", probability = 0.5 }}

# A schema-valid request must be accepted. Besides schemathesis' defaults (2xx, 3xx, 401, 403,
# 404, 409, 429), 422 is accepted: the server's answer to a well-formed request that the current
# state refuses (a referenced row that does not exist, an expiry already past, a value of the
# wrong kind for the named setting), which no schema can state. 400 stays a failure: every
# constraint a schema can state is in the document.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]

# Revoking a token by a generated id would sooner or later revoke the run's own admin token:
# only the sacrificial token is revoked.
[[operations]]
include-name = "DELETE /api/v1/tokens/{{id}}"
parameters = {{ "path.id" = {victim_token} }}

# Changing or deleting a user by a generated id would sooner or later demote, ban or delete the
# run's own admin: only the sacrificial user is changed and deleted.
[[operations]]
include-name = ["PATCH /api/v1/users/{{id}}", "DELETE /api/v1/users/{{id}}"]
parameters = {{ "path.id" = {victim_user} }}

# The instance operations act for the caller's team; the admin has none (only 403): they run
# as the demo player, whose team may start the demo challenges' instances.
[[operations]]
include-name = [
    "GET /api/v1/challenges/{{id}}/instance",
    "POST /api/v1/challenges/{{id}}/instance",
    "DELETE /api/v1/challenges/{{id}}/instance",
    "POST /api/v1/challenges/{{id}}/instance/extend",
]
headers = {{ Authorization = "Token {player_token}" }}
"#,
        ids = ids.join(", "),
        victim_token = seeds.victim_token,
        victim_user = seeds.victim_user,
        player_token = seeds.player_token,
    )
}

#[test]
fn schemathesis_finds_no_failure_in_the_contestant_api() {
    let schemathesis = schemathesis();
    let scratch = Scratch::new();
    // The API limits are raised far above what the run sends, so no operation is answered 429
    // (untested) instead of being exercised.
    let platform = start_with(
        &scratch,
        None,
        &[
            ("FCTF_CONTESTANT__API_IP_PER_SEC", "1000000"),
            ("FCTF_CONTESTANT__API_IP_BURST", "10000000"),
            ("FCTF_CONTESTANT__API_USER_PER_SEC", "1000000"),
            ("FCTF_CONTESTANT__API_USER_BURST", "10000000"),
            ("FCTF_CONTESTANT__WRONG_FLAGS_PER_MIN", "10000"),
        ],
    );
    let seeds = seed(&platform);
    let config = scratch.file("schemathesis.toml", &config(&seeds, &platform.admin_token));
    let schema = format!("http://127.0.0.1:{}/api/v1/openapi.json", platform.api);
    let mut child = Command::new(&schemathesis)
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &schema])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance,\
             positive_data_acceptance,ignored_auth",
        ])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        // One worker: CPython 3.11 (this machine's) keeps the AST builder's recursion depth per
        // interpreter, not per thread, and Hypothesis parses lambda sources from both workers,
        // which fails at random with "AST constructor recursion depth mismatch" (gh-106905).
        .args(["--workers", "1", "--request-timeout", "30"])
        .current_dir(&scratch.dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    // The warnings (operations only ever answered 401/403 or 404) and the summary.
    let summary = out
        .find(" WARNINGS ")
        .or_else(|| out.find(" SUMMARY "))
        .and_then(|at| out[..at].rfind('\n'))
        .map_or(out.as_str(), |at| &out[at..]);
    println!("schemathesis summary:{summary}");
    let Some(status) = status else {
        panic!(
            "schemathesis did not finish within {} s:\n{out}\n{err}",
            RUN_DEADLINE.as_secs()
        );
    };
    assert!(
        status.success(),
        "schemathesis found failures ({status}):\n{out}\n{err}"
    );
    // The run's own credential survived the destructive operations.
    let mut admin = Client::token(&platform.admin_token);
    let me = admin.api(&platform, "GET", "/users/me", None);
    assert_eq!(me.status, 200, "{}", me.text());
    stop(platform);
}

/// Ctrl-C, so `fctf up` stops the instances the run started, within a deadline.
fn stop(mut platform: Platform) {
    let pid = platform.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = platform.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "fctf up after Ctrl-C");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fctf up did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
