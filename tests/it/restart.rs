//! `fctf up` restarted on the same data directory (issue 6: "data survives a restart; in-flight
//! instances are reconciled, never leaked"), on the embedded default (SQLite file, in-process
//! store and queue, local runtime):
//!
//! - **SIGTERM** (a clean shutdown) stops every instance, the Running one and the one still
//!   starting: their process groups are gone, their tracking rows closed. The next start finds
//!   the users, teams and solves in SQLite, seeds nothing twice, and the team's quota is whole.
//! - **SIGKILL** (no shutdown at all) leaves the instance processes running in their own process
//!   groups. The next start re-adopts them from the local runtime's state directory: the Running
//!   one, which has an open tracking row, gets its state record back (the listener restores it
//!   from the row) and opens through the gateway with the token the status API now gives (keys
//!   are generated at each start, so tokens of the previous run are refused); the one still
//!   starting had no row and no record any more: the listener removes it as a ghost. The team's
//!   quota counts the re-adopted instance exactly once.
//!
//! A program spawned but never recorded (the process killed between the spawn and the state
//! file) is stopped at the next start.
//!
//! Processes are checked by process group, from the pids in the runtime's state files.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Scratch;
use super::journey::{
    Client, Platform, challenge_id, register_team, start_instance, start_with, submit,
};

/// Ghosts go after 3 s (default 60 s) and the listener resyncs every second, so the test
/// waits seconds rather than minutes; the rules are the same.
const OVERRIDES: [(&str, &str); 2] = [
    ("FCTF_LISTENER__GHOST_GRACE_SECS", "3"),
    ("FCTF_LISTENER__RESYNC_SECS", "1"),
];

/// The team's password (as `register_team` sets it).
const PASSWORD: &str = "journey-password-1";

#[test]
fn a_restarted_fctf_up_keeps_its_data_and_leaks_no_instance() {
    let scratch = Scratch::new();
    let state_dir = scratch.dir.join("data/instances");
    let exe = env!("CARGO_BIN_EXE_fctf");

    // First run: content, a player with a solve, one instance Running and one still starting.
    let platform = start_with(&scratch, None, &OVERRIDES);
    let mut admin = Client::token(&platform.admin_token);
    for name in ["Slow web", "Spare web"] {
        import_slow_challenge(&mut admin, &platform, name, exe);
    }
    let mut alice = register_team(&platform, "alice", "team-alice");
    let warmup = challenge_id(&mut alice, &platform, "Warm-up");
    let web = challenge_id(&mut alice, &platform, "Demo web");
    let shell = challenge_id(&mut alice, &platform, "Demo shell");
    let slow = challenge_id(&mut alice, &platform, "Slow web");
    let spare = challenge_id(&mut alice, &platform, "Spare web");
    assert_eq!(
        submit(&mut alice, &platform, warmup, "FCTF{welcome_to_fctf}"),
        "correct"
    );
    let first = in_flight(&mut alice, &platform, web, slow, &state_dir);

    // SIGTERM: a clean shutdown stops both, closes their rows, exits 0.
    let status = signal_and_wait(platform, "TERM");
    assert_eq!(status.code(), Some(0), "fctf up exits 0 on SIGTERM");
    for (instance, pgid) in &first {
        assert!(!group_alive(*pgid), "instance {instance} still runs");
    }
    assert!(state_files(&state_dir).is_empty(), "state files left");
    assert!(open_rows(&scratch).is_empty(), "tracking rows left open");

    // Second run: the data is there, nothing was seeded twice, the quota is whole.
    let platform = start_with(&scratch, None, &OVERRIDES);
    assert_seeded_once(&platform);
    let mut alice = login(&platform, "alice");
    assert_eq!(
        submit(&mut alice, &platform, warmup, "FCTF{welcome_to_fctf}"),
        "already_solved",
        "the solve survived the restart"
    );
    wait_for_score(&mut alice, &platform, "team-alice", 100);
    let web_status = instance_status(&mut alice, &platform, web);
    assert!(
        web_status["state"] != "running",
        "an instance stopped at shutdown is not Running: {web_status}"
    );
    let second = in_flight(&mut alice, &platform, web, slow, &state_dir);
    let (web_instance, web_group) = second
        .iter()
        .find(|(i, _)| **i == instance_of(&mut alice, &platform, web))
        .map(|(i, g)| (i.clone(), *g))
        .unwrap();
    let (slow_instance, slow_group) = second
        .iter()
        .find(|(i, _)| **i != web_instance)
        .map(|(i, g)| (i.clone(), *g))
        .unwrap();
    let open_before = open_rows(&scratch);
    assert_eq!(
        open_before,
        vec![web_instance.clone()],
        "one open row, the Running one"
    );

    // SIGKILL: nothing runs the shutdown; both instances outlive the platform.
    let mut platform = platform;
    platform.child.kill().unwrap();
    platform.child.wait().unwrap();
    drop(platform);
    assert!(
        group_alive(web_group),
        "the Running instance survives SIGKILL"
    );
    assert!(
        group_alive(slow_group),
        "the starting instance survives SIGKILL"
    );

    // Third run: the Running one is re-adopted, the starting one removed, the quota counts once.
    let platform = start_with(&scratch, None, &OVERRIDES);
    assert_seeded_once(&platform);
    let mut alice = login(&platform, "alice");
    let restored = wait_state(&mut alice, &platform, web, Duration::from_secs(20), |s| {
        s["state"] == "running"
    });
    assert_eq!(
        restored["instance"].as_str(),
        Some(web_instance.as_str()),
        "the same instance, re-adopted: {restored}"
    );
    let token = restored["access"]["token"].as_str().unwrap().to_owned();
    let mut browser = Client::default();
    let visit = browser.send("GET", platform.http, &format!("/?fctftoken={token}"), None);
    assert_eq!(visit.status, 302, "{}", visit.text());
    let page = browser.send("GET", platform.http, "/", None);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("demo web challenge"),
        "{}",
        page.text()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while group_alive(slow_group) || state_files(&state_dir).contains_key(&slow_instance) {
        assert!(
            Instant::now() < deadline,
            "the instance that was starting when the platform died is still there after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(group_alive(web_group), "the re-adopted instance still runs");
    let slow_status = instance_status(&mut alice, &platform, slow);
    assert!(
        slow_status["state"] != "running",
        "the removed instance is not Running: {slow_status}"
    );
    assert_eq!(open_rows(&scratch), vec![web_instance.clone()]);

    // Quota 3: the re-adopted instance counts once, so two more starts fit and a third does not.
    let _ = start_instance(&mut alice, &platform, shell);
    let answer = alice.api(
        &platform,
        "POST",
        &format!("/challenges/{slow}/instance"),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = alice.api(
        &platform,
        "POST",
        &format!("/challenges/{spare}/instance"),
        None,
    );
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(
        answer.json()["error"],
        "quota_exceeded",
        "{}",
        answer.text()
    );

    // A last clean shutdown: every instance of every run is gone, every row closed.
    std::thread::sleep(Duration::from_millis(500));
    let last = state_files(&state_dir);
    let status = signal_and_wait(platform, "TERM");
    assert_eq!(status.code(), Some(0));
    for (instance, pgid) in first.iter().chain(&second).chain(&last) {
        assert!(!group_alive(*pgid), "instance {instance} still runs");
    }
    assert!(state_files(&state_dir).is_empty(), "state files left");
    assert!(open_rows(&scratch).is_empty(), "tracking rows left open");
}

/// A program of the local runtime's directory that no state file names (what a `fctf up`
/// SIGKILLed between a spawn and its state file leaves) is stopped at the next start.
#[test]
fn an_unrecorded_instance_program_is_stopped_at_the_next_start() {
    let scratch = Scratch::new();
    let work = scratch
        .dir
        .join("data/instances/work/0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&work).unwrap();
    let mut command = std::process::Command::new("sleep");
    command.arg("300").current_dir(&work);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut orphan = command.spawn().unwrap();
    let pgid = i32::try_from(orphan.id()).unwrap();
    assert!(group_alive(pgid));

    let platform = start_with(&scratch, None, &OVERRIDES);
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphan.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the unrecorded program still runs after the start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!group_alive(pgid));
    let status = signal_and_wait(platform, "TERM");
    assert_eq!(status.code(), Some(0));
}

/// An HTTP challenge whose program listens only after 25 s: an instance that stays "starting".
fn import_slow_challenge(admin: &mut Client, platform: &Platform, name: &str, exe: &str) {
    let exe = serde_json::to_string(exe).unwrap();
    let yml = format!(
        "name: {name}\ncategory: web\nvalue: 50\nprotocol: http\n\
         description: slow to start\n\
         extra:\n  command: [\"sh\", \"-c\", \"sleep 25; exec \\\"$0\\\" demo-challenge http\", {exe}]\n  \
         team_flag: true\n  lifetime_secs: 1800\n"
    );
    let mut head = format!(
        "POST /api/v1/challenges/import HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: {}\r\nContent-Type: application/yaml\r\n",
        admin.authorization.as_deref().unwrap()
    );
    head.push_str(&format!("Content-Length: {}\r\n\r\n{yml}", yml.len()));
    let answer = raw_request(platform.api, head.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 201"),
        "{answer}"
    );
}

fn raw_request(port: u16, bytes: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// Starts `web` (until Running) and `slow` (until its process is spawned); returns every
/// instance of the state directory with its process group.
fn in_flight(
    alice: &mut Client,
    platform: &Platform,
    web: i64,
    slow: i64,
    state_dir: &std::path::Path,
) -> BTreeMap<String, i32> {
    let _ = start_instance(alice, platform, web);
    let answer = alice.api(
        platform,
        "POST",
        &format!("/challenges/{slow}/instance"),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let files = state_files(state_dir);
        if files.len() == 2 {
            let status = instance_status(alice, platform, slow);
            assert_ne!(status["state"], "running", "{status}");
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "the slow instance was not spawned within 20 s: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The runtime's instances: instance id -> process group, from `<instance>.json`.
fn state_files(dir: &std::path::Path) -> BTreeMap<String, i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let file: Value = serde_json::from_str(&text).ok()?;
            let pgid = i32::try_from(file["pgid"].as_i64()?).ok()?;
            let stem = e.path().file_stem()?.to_string_lossy().into_owned();
            Some((stem, pgid))
        })
        .collect()
}

/// True while a live (not zombie) process of group `pgid` exists.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// Sends SIGTERM or SIGINT and waits (up to 60 s) for the exit.
fn signal_and_wait(mut platform: Platform, signal: &str) -> ExitStatus {
    let pid = platform.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = platform.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "fctf up did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The open tracking rows of the SQLite file, by instance id.
fn open_rows(scratch: &Scratch) -> Vec<String> {
    let url = format!("sqlite://{}/data/fctf.db", scratch.dir.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = fctf_core::db::Database::connect(&url, 1).await.unwrap();
        let mut rows: Vec<String> = db
            .tracking_open_rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.instance.to_string())
            .collect();
        db.close().await;
        rows.sort();
        rows
    })
}

/// The banner of a second start: no new password for the seeded accounts, the same demo
/// challenges; the challenge list holds each name once.
fn assert_seeded_once(platform: &Platform) {
    for line in [
        "admin (password as shown at first start)",
        "demo (password as shown at first start)",
        "Warm-up, Demo web, Demo shell",
    ] {
        assert!(platform.banner.contains(line), "{}", platform.banner);
    }
    let mut admin = Client::token(&platform.admin_token);
    let list = admin.api(platform, "GET", "/challenges", None);
    assert_eq!(list.status, 200, "{}", list.text());
    let mut names: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["Demo shell", "Demo web", "Slow web", "Spare web", "Warm-up"],
        "each challenge once"
    );
}

fn login(platform: &Platform, name: &str) -> Client {
    let mut client = Client::default();
    let answer = client.api(
        platform,
        "POST",
        "/auth/login",
        Some(json!({"name": name, "password": PASSWORD})),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    client
}

fn instance_status(client: &mut Client, platform: &Platform, challenge: i64) -> Value {
    let answer = client.api(
        platform,
        "GET",
        &format!("/challenges/{challenge}/instance"),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["data"].clone()
}

fn instance_of(client: &mut Client, platform: &Platform, challenge: i64) -> String {
    instance_status(client, platform, challenge)["instance"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn wait_state(
    client: &mut Client,
    platform: &Platform,
    challenge: i64,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let status = instance_status(client, platform, challenge);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "instance of challenge {challenge} not as expected after {limit:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_score(client: &mut Client, platform: &Platform, team: &str, score: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let board = client.api(platform, "GET", "/scoreboard", None).json();
        let found = board["data"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == team && r["score"] == score);
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "scoreboard: {board}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
