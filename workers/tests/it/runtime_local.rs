//! Conformance of the `local` runtime, with real processes (`sh`, `python3`): idempotent deploy
//! and remove, the whole process group killed, complete and honest snapshots, lifetime and
//! ready-timeout kills, adoption after a restart, output capture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{InstanceRef, InstanceRuntime, Observed, Phase, RuntimeError};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};

/// A directory of its own for one test, deleted when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("fctf-{test}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The deadline margin of the test settings: short, so lifetime kills come fast.
pub const MARGIN_MS: u64 = 200;

/// Test settings: short grace, ready timeout and deadline margin, so failures show fast.
pub fn settings() -> LocalSettings {
    LocalSettings {
        stop_grace: Duration::from_millis(300),
        ready_timeout: Duration::from_secs(20),
        deadline_margin: Duration::from_millis(MARGIN_MS),
        ..LocalSettings::default()
    }
}

/// A spec that runs `sh -c script` with `env`.
pub fn sh_spec(script: &str, env: &[(&str, &str)], lifetime_secs: u64) -> DeploySpec {
    DeploySpec {
        challenge_name: "local test".to_owned(),
        image: None,
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        container_port: 80,
        cpu_millicores: 100,
        memory_mib: 64,
        use_gvisor: false,
        harden: false,
        lifetime_secs,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// An HTTP server on `$PORT` (python3), after writing its pid and a grandchild's pid into `dir`.
pub fn http_spec(dir: &Path) -> DeploySpec {
    sh_spec(
        "echo $$ > \"$OUT/leader.pid\"; sleep 1000 & echo $! > \"$OUT/grandchild.pid\"; \
         exec python3 -m http.server \"$PORT\" --bind \"$HOST\"",
        &[("OUT", dir.to_str().unwrap())],
        3600,
    )
}

pub fn instance(team: i64) -> InstanceRef {
    InstanceRef {
        team: TeamId(team),
        challenge: ChallengeId(1),
        instance: InstanceId::new(),
    }
}

/// Polls the runtime's snapshot until `id` is observed in a state `want` accepts.
pub async fn wait_observed(
    runtime: &dyn InstanceRuntime,
    id: &InstanceRef,
    what: &str,
    want: impl Fn(&Observed) -> bool,
) -> Observed {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = runtime.snapshot().await.unwrap();
        if let Some(seen) = snapshot.iter().find(|o| o.id == *id)
            && want(seen)
        {
            return seen.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not observed; last snapshot {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn is_ready(o: &Observed) -> bool {
    o.phase == Phase::Started { ready: true }
}

/// Reads a pid a test program wrote, waiting for it to appear.
pub async fn read_pid(path: &Path) -> i32 {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pid in {}", path.display());
}

/// True while `pid` runs (a zombie does not).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

async fn wait_not_running(pid: i32) {
    for _ in 0..200 {
        if !running(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("process {pid} still runs");
}

async fn http_get(route: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(route).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn deploy_is_idempotent_and_becomes_ready_when_the_port_answers() {
    let scratch = Scratch::new("local-deploy");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let id = instance(1);
    // Listens only after a second: Creating must be observed first.
    let spec = sh_spec(
        "sleep 1; exec python3 -m http.server \"$PORT\" --bind \"$HOST\"",
        &[],
        3600,
    );
    let first = runtime.deploy(&id, &spec, 7).await.unwrap();
    let again = runtime.deploy(&id, &spec, 7).await.unwrap();
    assert_eq!(first, again);
    assert!(first.route.starts_with("127.0.0.1:"), "{}", first.route);

    let snapshot = runtime.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 1, "{snapshot:#?}");
    assert_eq!(snapshot[0].phase, Phase::Creating);
    assert_eq!(snapshot[0].route.as_deref(), Some(first.route.as_str()));
    assert_eq!(snapshot[0].lifetime, Duration::from_secs(3600));
    assert_eq!(runtime.in_progress().await.unwrap(), 1);

    let ready = wait_observed(&runtime, &id, "ready", is_ready).await;
    assert_eq!(ready.restarts, 0);
    assert!(!ready.terminating);
    assert_eq!(runtime.in_progress().await.unwrap(), 0);
    assert!(http_get(&first.route).await.starts_with("HTTP/1.0 200"));
    assert_eq!(runtime.deploy(&id, &spec, 7).await.unwrap(), first);
    assert_eq!(runtime.snapshot().await.unwrap().len(), 1);
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn one_instance_id_for_another_slot_is_rejected() {
    let scratch = Scratch::new("local-reuse");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let id = instance(1);
    runtime
        .deploy(&id, &sh_spec("sleep 100", &[], 60), 0)
        .await
        .unwrap();
    let mut other = id;
    other.team = TeamId(2);
    assert!(matches!(
        runtime
            .deploy(&other, &sh_spec("sleep 100", &[], 60), 0)
            .await,
        Err(RuntimeError::Rejected(_))
    ));
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn remove_kills_the_whole_group_even_when_it_ignores_sigterm() {
    let scratch = Scratch::new("local-remove");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let id = instance(1);
    let stubborn = sh_spec(
        "trap '' TERM; echo $$ > \"$OUT/leader.pid\"; sleep 1000 & echo $! > \"$OUT/grandchild.pid\"; \
         exec python3 -m http.server \"$PORT\" --bind \"$HOST\"",
        &[("OUT", scratch.0.to_str().unwrap())],
        3600,
    );
    runtime.deploy(&id, &stubborn, 0).await.unwrap();
    wait_observed(&runtime, &id, "ready", is_ready).await;
    let leader = read_pid(&scratch.path("leader.pid")).await;
    let grandchild = read_pid(&scratch.path("grandchild.pid")).await;
    assert!(running(leader) && running(grandchild));

    runtime.remove(&id).await.unwrap();
    assert!(!running(leader), "leader {leader} survived remove");
    assert!(
        !running(grandchild),
        "grandchild {grandchild} survived remove"
    );
    assert!(runtime.snapshot().await.unwrap().is_empty());
    assert!(matches!(
        runtime.logs(&id, 10).await,
        Err(RuntimeError::NotFound)
    ));
    // Idempotent, and nothing of the instance is left in the state directory.
    runtime.remove(&id).await.unwrap();
    runtime.remove(&instance(9)).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(scratch.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "work")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::read_dir(scratch.path("state/work"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_killed_or_exited_process_is_observed_ended_and_its_group_killed() {
    let scratch = Scratch::new("local-ended");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();

    let killed = instance(1);
    runtime
        .deploy(&killed, &http_spec(&scratch.0), 0)
        .await
        .unwrap();
    wait_observed(&runtime, &killed, "ready", is_ready).await;
    let leader = read_pid(&scratch.path("leader.pid")).await;
    let grandchild = read_pid(&scratch.path("grandchild.pid")).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let ended = wait_observed(&runtime, &killed, "ended", |o| {
        o.phase == Phase::Ended { succeeded: false }
    })
    .await;
    assert_eq!(ended.waiting_reason.as_deref(), Some("Error"));
    // The leader's death takes its group along.
    wait_not_running(grandchild).await;

    let exited = instance(2);
    runtime
        .deploy(&exited, &sh_spec("exit 0", &[], 60), 0)
        .await
        .unwrap();
    wait_observed(&runtime, &exited, "exit 0", |o| {
        o.phase == Phase::Ended { succeeded: true }
    })
    .await;

    // Complete: both are still reported (until removed), nothing is in progress.
    let snapshot = runtime.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 2);
    assert_eq!(runtime.in_progress().await.unwrap(), 0);
    runtime.remove(&killed).await.unwrap();
    runtime.remove(&exited).await.unwrap();
    assert!(runtime.snapshot().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_lifetime_is_enforced() {
    let scratch = Scratch::new("local-lifetime");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let id = instance(1);
    let mut spec = http_spec(&scratch.0);
    spec.lifetime_secs = 1;
    runtime.deploy(&id, &spec, 0).await.unwrap();
    let leader = read_pid(&scratch.path("leader.pid")).await;
    let grandchild = read_pid(&scratch.path("grandchild.pid")).await;
    let ended = wait_observed(&runtime, &id, "lifetime over", |o| {
        matches!(o.phase, Phase::Ended { .. })
    })
    .await;
    assert_eq!(ended.phase, Phase::Ended { succeeded: false });
    assert_eq!(ended.waiting_reason.as_deref(), Some("DeadlineExceeded"));
    // The kill is a backstop: the lifetime plus the margin after spawn, never before.
    assert!(ended.phase_since_ms >= ended.created_at_ms + 1000 + MARGIN_MS);
    assert!(!running(leader) && !running(grandchild));
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_moved_deadline_survives_a_reopen_and_the_kill_comes_at_the_new_end() {
    let scratch = Scratch::new("local-deadline");
    let state = scratch.path("state");
    let id = instance(1);
    let mut spec = http_spec(&scratch.0);
    spec.lifetime_secs = 1;
    let (created_at_ms, ends_at_ms) = {
        let first = LocalRuntime::open(&state, settings()).await.unwrap();
        first.deploy(&id, &spec, 0).await.unwrap();
        let ready = wait_observed(&first, &id, "ready", is_ready).await;
        assert!(matches!(
            first.set_deadline(&instance(2), ready.created_at_ms).await,
            Err(RuntimeError::NotFound)
        ));
        let ends_at_ms = ready.created_at_ms + 4000;
        first.set_deadline(&id, ends_at_ms).await.unwrap();
        // Written down, so the next runtime kills at the new end too.
        let file: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.join(format!("{}.json", id.instance))).unwrap(),
        )
        .unwrap();
        assert_eq!(file["deadline_ms"], ends_at_ms + MARGIN_MS);
        (ready.created_at_ms, ends_at_ms)
        // The first runtime is dropped here, as when the platform process stops.
    };
    let second = LocalRuntime::open(&state, settings()).await.unwrap();
    let leader = read_pid(&scratch.path("leader.pid")).await;
    wait_observed(&second, &id, "adopted", is_ready).await;
    // Past the old deadline (spawn + 1 s + margin) it still runs...
    let old_deadline = created_at_ms + 1000 + MARGIN_MS;
    while fctf_core::clock::unix_now_millis() < old_deadline + 500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = wait_observed(&second, &id, "still running", |_| true).await;
    assert!(is_ready(&seen), "ended at the old deadline: {seen:#?}");
    assert!(running(leader));
    // ...and is killed at the new one.
    let ended = wait_observed(&second, &id, "new deadline", |o| {
        matches!(o.phase, Phase::Ended { .. })
    })
    .await;
    assert_eq!(ended.waiting_reason.as_deref(), Some("DeadlineExceeded"));
    assert!(ended.phase_since_ms >= ends_at_ms + MARGIN_MS);
    assert!(!running(leader));
    // An ended instance keeps its end.
    second.set_deadline(&id, ends_at_ms + 60_000).await.unwrap();
    second.remove(&id).await.unwrap();
}

#[tokio::test]
async fn an_instance_that_never_listens_fails_at_the_ready_timeout() {
    let scratch = Scratch::new("local-never-ready");
    let runtime = LocalRuntime::open(
        scratch.path("state"),
        LocalSettings {
            ready_timeout: Duration::from_secs(1),
            ..settings()
        },
    )
    .await
    .unwrap();
    let id = instance(1);
    runtime
        .deploy(
            &id,
            &sh_spec(
                "echo $$ > \"$OUT/leader.pid\"; exec sleep 1000",
                &[("OUT", scratch.0.to_str().unwrap())],
                3600,
            ),
            0,
        )
        .await
        .unwrap();
    let leader = read_pid(&scratch.path("leader.pid")).await;
    assert_eq!(runtime.in_progress().await.unwrap(), 1);
    let failed = wait_observed(&runtime, &id, "failed", |o| o.phase == Phase::Failed).await;
    assert_eq!(failed.waiting_reason.as_deref(), Some("NeverReady"));
    assert!(!running(leader));
    assert_eq!(runtime.in_progress().await.unwrap(), 0);
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_reopened_runtime_adopts_live_children_and_reports_dead_ones() {
    let scratch = Scratch::new("local-adopt");
    let state = scratch.path("state");
    let live_dir = Scratch::new("local-adopt-live");
    let dead_dir = Scratch::new("local-adopt-dead");
    let live = instance(1);
    let dead = instance(2);
    let (live_route, dead_leader, dead_grandchild) = {
        let first = LocalRuntime::open(&state, settings()).await.unwrap();
        let route = first
            .deploy(&live, &http_spec(&live_dir.0), 0)
            .await
            .unwrap();
        first
            .deploy(&dead, &http_spec(&dead_dir.0), 0)
            .await
            .unwrap();
        wait_observed(&first, &live, "ready", is_ready).await;
        wait_observed(&first, &dead, "ready", is_ready).await;
        let leader = read_pid(&dead_dir.path("leader.pid")).await;
        let grandchild = read_pid(&dead_dir.path("grandchild.pid")).await;
        (route, leader, grandchild)
        // The first runtime is dropped here, as when the platform process stops.
    };
    // While no runtime watches, one instance's leader dies (its grandchild lives on).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead_leader),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_not_running(dead_leader).await;
    let live_leader = read_pid(&live_dir.path("leader.pid")).await;
    let live_grandchild = read_pid(&live_dir.path("grandchild.pid")).await;
    assert!(running(live_leader));

    let second = LocalRuntime::open(&state, settings()).await.unwrap();
    let seen = wait_observed(&second, &live, "adopted", is_ready).await;
    assert_eq!(seen.route.as_deref(), Some(live_route.route.as_str()));
    let gone = wait_observed(&second, &dead, "dead", |o| {
        matches!(o.phase, Phase::Ended { .. })
    })
    .await;
    assert_eq!(gone.phase, Phase::Ended { succeeded: false });
    // Nothing leaked: the dead leader's grandchild was killed on adoption.
    assert!(!running(dead_grandchild), "orphan {dead_grandchild} leaked");
    // Deploy after the restart still finds the live instance.
    assert_eq!(
        second
            .deploy(&live, &http_spec(&live_dir.0), 0)
            .await
            .unwrap(),
        live_route
    );
    assert!(
        http_get(&live_route.route)
            .await
            .starts_with("HTTP/1.0 200")
    );
    second.remove(&live).await.unwrap();
    second.remove(&dead).await.unwrap();
    assert!(!running(live_leader) && !running(live_grandchild));
    drop(second);
    let third = LocalRuntime::open(&state, settings()).await.unwrap();
    assert!(third.snapshot().await.unwrap().is_empty());
}

#[tokio::test]
async fn output_is_captured_and_the_environment_is_the_instances_own() {
    let scratch = Scratch::new("local-logs");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let id = instance(1);
    let spec = sh_spec(
        "echo \"flag=$FLAG port=$PORT host=$HOST\"; echo oops >&2; echo \"cwd=$(pwd)\"; \
         env | sed 's/^/env:/'; exec python3 -m http.server \"$PORT\" --bind \"$HOST\"",
        &[("FLAG", "FCTF{local}")],
        3600,
    );
    let placement = runtime.deploy(&id, &spec, 0).await.unwrap();
    wait_observed(&runtime, &id, "ready", is_ready).await;
    let port = placement.route.rsplit(':').next().unwrap();
    let logs = runtime.logs(&id, 100).await.unwrap();
    assert!(
        logs.contains(&format!("flag=FCTF{{local}} port={port} host=127.0.0.1")),
        "{logs}"
    );
    assert!(logs.contains("oops"), "{logs}");
    // Only what the runtime passes: none of the platform's own variables.
    let names: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .filter_map(|l| l.split('=').next())
        .collect();
    let allowed = [
        "PATH", "HOME", "LANG", "FLAG", "PORT", "HOST", "PWD", "SHLVL", "_",
    ];
    assert!(names.iter().all(|n| allowed.contains(n)), "{names:?}");
    assert!(names.contains(&"FLAG") && names.contains(&"PORT"));
    assert!(std::env::vars().any(|(n, _)| !allowed.contains(&n.as_str())));
    let cwd = logs
        .lines()
        .find_map(|l| l.strip_prefix("cwd="))
        .unwrap()
        .to_owned();
    assert!(
        cwd.starts_with(scratch.path("state").to_str().unwrap()),
        "{cwd}"
    );
    // A request shows up in the output; the tail keeps the newest lines.
    http_get(&placement.route).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = runtime.logs(&id, 1).await.unwrap();
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.contains("GET / HTTP/1.0"), "{last}");
    runtime.remove(&id).await.unwrap();
}

#[tokio::test]
async fn a_spec_the_local_runtime_cannot_run_is_rejected() {
    let scratch = Scratch::new("local-reject");
    let runtime = LocalRuntime::open(scratch.path("state"), settings())
        .await
        .unwrap();
    let mut spec = sh_spec("true", &[], 60);
    spec.command = Some(vec!["/nonexistent/fctf-challenge".to_owned()]);
    assert!(matches!(
        runtime.deploy(&instance(1), &spec, 0).await,
        Err(RuntimeError::Rejected(m)) if m.contains("/nonexistent/fctf-challenge")
    ));
    spec.command = None;
    spec.image = Some("registry/x:1".to_owned());
    assert!(matches!(
        runtime.deploy(&instance(1), &spec, 0).await,
        Err(RuntimeError::Rejected(_))
    ));
    assert!(runtime.snapshot().await.unwrap().is_empty());
}
