//! The `local` runtime: each instance is the challenge's command ([`DeploySpec::command`]) run as
//! a child process group on a free loopback port. It carries `fctf up` and the end-to-end tests.
//!
//! - **The process.** The command runs in its own process group (`process_group(0)`), in a
//!   working directory of its own, with a clean environment: `PATH`, `HOME`, `LANG`, the spec's
//!   `env` (which carries the team's `FLAG`), then `PORT` and `HOST` (the address to listen on,
//!   `[runtime].local_host`). The platform's own environment (config overrides, secrets) never
//!   reaches a challenge.
//! - **Stop** signals the whole group (SIGTERM, SIGKILL after [`LocalSettings::stop_grace`]), so
//!   grandchildren die too, and returns once none of them runs.
//! - **Observed honestly.** `Creating` until the port accepts connections, then
//!   `Started { ready: true }`; `Ended` once the leader exited (the rest of its group is then
//!   killed: nothing is leaked); `Failed` when it never became ready within
//!   `[runtime].local_ready_timeout_secs` (killed). Restarts are always 0: the runtime never
//!   restarts a process.
//! - **Lifetime, as a backstop.** Killed at spawn time plus [`DeploySpec::lifetime_secs`] plus
//!   [`LocalSettings::deadline_margin`] (observed as `Ended { succeeded: false }` with reason
//!   `DeadlineExceeded`, as a Kubernetes Job's `activeDeadlineSeconds` would). The record's
//!   expiry (ready time plus lifetime) governs: the listener removes the instance then; the
//!   margin keeps this kill from coming first. [`InstanceRuntime::set_deadline`] (an extension)
//!   moves the kill to the new end plus the margin, and writes it to the state file, so a
//!   re-adopted instance keeps it.
//! - **Survives a restart of the platform.** One JSON file per instance in the state directory
//!   (pid, group, `/proc` start time, port, identity, lifetime). [`LocalRuntime::open`] reads them
//!   back: a child still running is adopted and observed again, one that died meanwhile is
//!   reported `Ended`. The process's start time guards against a recycled pid. Output goes to a
//!   file (not a pipe), so a child never dies of SIGPIPE because the platform restarted.
//! - **Output** (stdout and stderr, interleaved) is kept per instance under a size bound
//!   ([`LocalSettings::log_limit_bytes`]; the oldest half is dropped past it).
//! - **Concurrent, one instance at a time.** Deploys, removes and deadline moves of one instance
//!   are serialised by a lock of that instance (two deliveries of one job never spawn two
//!   processes), while different instances spawn in parallel. Ports are chosen under the
//!   instance table's lock and never given to two live instances, or to two spawns under way.
//! - **Readiness without a fixed poll.** A starting instance is probed after 1 ms, then at
//!   doubling intervals up to [`POLL`], so a process that listens within a few milliseconds is
//!   seen ready within a few milliseconds.
//! - **Changes are announced.** Every change of what [`InstanceRuntime::snapshot`] shows (a
//!   spawn, readiness, an end, a remove) bumps a process-wide counter ([`changes`]): the
//!   listener's [`SnapshotPoller`](crate::listener::poll::SnapshotPoller) and the consumer's
//!   budget wait wake on it instead of waiting for their next poll.

mod output;
mod process;
mod state_file;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fctf_core::clock;
use fctf_core::config::RuntimeConfig;
use fctf_core::ids::InstanceId;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{
    DEADLINE_MARGIN, InstanceRef, InstanceRuntime, Observed, Phase, Placement, RuntimeError,
    RuntimeResult,
};
use tokio::process::Child;
use tokio::sync::{OwnedMutexGuard, watch};

use self::state_file::{InstanceFile, Outcome};

/// How often each instance is checked (exit of an adopted process, lifetime); the longest wait
/// between two readiness probes.
const POLL: Duration = Duration::from_millis(100);

/// The first wait before a readiness probe; doubled after each failed probe, up to [`POLL`].
const FIRST_PROBE: Duration = Duration::from_millis(1);

/// How often an instance's output is trimmed to its bound.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Attempts at a port no live instance and no spawn under way holds.
const PORT_ATTEMPTS: usize = 64;

/// The lowest port instances are given when the machine's ephemeral range leaves room below it.
const LOWEST_PORT: u16 = 20_000;

/// The ports instances are given: below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), from [`LOWEST_PORT`], when there is room. A port
/// chosen there can never be taken, between the choice and the process's own bind, by the
/// source port of an outgoing connection (a readiness probe, the platform's connections to its
/// store, queue and database), which the kernel picks from the ephemeral range: the process
/// would then fail to bind. `None` (no room, or the range unreadable): the kernel's choice
/// (port 0), with that small risk.
fn instance_ports() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let high = ephemeral_low.checked_sub(1)?;
    (high >= LOWEST_PORT.saturating_add(1000)).then_some(LOWEST_PORT..=high)
}

/// The process-wide change counter (see [`changes`]).
static CHANGES: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Says that what some local runtime's snapshot shows changed.
fn announce() {
    CHANGES.send_modify(|n| *n = n.wrapping_add(1));
}

/// A receiver that sees a change whenever what a snapshot of any [`LocalRuntime`] of this
/// process shows has changed (an instance spawned, became ready, ended, is being removed or was
/// removed). Process-wide, not per runtime: a wake-up for another runtime's change costs the
/// waiter one look at its own, which is all a spurious hint ever costs. It carries no data: the
/// waiter takes a snapshot and compares.
pub fn changes() -> watch::Receiver<u64> {
    CHANGES.subscribe()
}

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The `local` runtime's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    /// Address instances listen on and the gateway connects to (`[runtime].local_host`).
    pub host: String,
    /// How long an instance may take to accept connections before it is Failed.
    pub ready_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub stop_grace: Duration,
    /// Most bytes of output kept per instance.
    pub log_limit_bytes: u64,
    /// How long after its end (spawn plus lifetime, or the end [`InstanceRuntime::set_deadline`]
    /// gave) an instance is killed by the runtime itself: the listener ends it at its record's
    /// expiry, which starts later (when it is ready), so the runtime's kill must come after.
    pub deadline_margin: Duration,
}

impl LocalSettings {
    /// The settings of `[runtime]` (stop grace 2 s, 1 MiB of output per instance, the
    /// [`DEADLINE_MARGIN`] after an instance's end).
    pub fn from_config(config: &RuntimeConfig) -> Self {
        Self {
            host: config.local_host.clone(),
            ready_timeout: Duration::from_secs(config.local_ready_timeout_secs),
            ..Self::default()
        }
    }
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(2),
            log_limit_bytes: 1 << 20,
            deadline_margin: DEADLINE_MARGIN,
        }
    }
}

/// Why [`LocalRuntime::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalRuntimeError {
    /// The state directory could not be created or read.
    #[error("local runtime state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The `local` runtime. Cheap to clone; clones share the instances.
#[derive(Clone, Debug)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    settings: LocalSettings,
    entries: Mutex<HashMap<InstanceId, Entry>>,
    /// Ports chosen by spawns under way (not yet in `entries`). Locked after `entries`.
    spawning_ports: Mutex<HashSet<u16>>,
    /// Where instances' ports come from ([`instance_ports`]), and the next one to try there:
    /// the choice goes round the range, so a port freed a moment ago is not given again soon.
    ports: Option<std::ops::RangeInclusive<u16>>,
    next_port: std::sync::atomic::AtomicU32,
    /// One lock per instance with a deploy, remove or deadline move under way: two deliveries
    /// of one job can never spawn two processes, while other instances go on in parallel.
    locks: Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
}

/// The lock of one instance, held; its table entry goes when nobody else holds or waits. Owned
/// (not borrowed), so a deploy's blocking part can keep it until it is done.
struct InstanceGuard {
    inner: Arc<Inner>,
    instance: InstanceId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Clones are only taken under this table lock: two references (the table's and the one
        // in our guard) mean no one else waits for it.
        if locks
            .get(&self.instance)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            locks.remove(&self.instance);
        }
        // Unlocked while the table is still held, so a new locker finds the entry or none.
        drop(self.guard.take());
    }
}

/// What the runtime knows of one instance.
#[derive(Debug)]
struct Entry {
    file: InstanceFile,
    phase: Phase,
    phase_since_ms: u64,
    waiting_reason: Option<String>,
    terminating: bool,
    supervisor: Option<tokio::task::AbortHandle>,
}

impl Entry {
    fn id(&self) -> InstanceRef {
        InstanceRef {
            team: self.file.team,
            challenge: self.file.challenge,
            instance: self.file.instance,
        }
    }

    fn route(&self) -> String {
        route(&self.file.host, self.file.port)
    }

    fn set_phase(&mut self, phase: Phase, reason: Option<&str>, now_ms: u64) {
        if self.phase != phase {
            self.phase = phase;
            self.phase_since_ms = now_ms;
            announce();
        }
        self.waiting_reason = reason.map(str::to_owned);
    }
}

/// `d` in milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `host:port`, with brackets around an IPv6 address.
fn route(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The phase and reason an ended instance is observed with.
fn ended_phase(outcome: &Outcome) -> (Phase, &'static str) {
    match outcome {
        Outcome::Exited { succeeded: true } => (Phase::Ended { succeeded: true }, "Completed"),
        Outcome::Exited { succeeded: false } => (Phase::Ended { succeeded: false }, "Error"),
        Outcome::LifetimeOver => (Phase::Ended { succeeded: false }, "DeadlineExceeded"),
        Outcome::NeverReady => (Phase::Failed, "NeverReady"),
        Outcome::Vanished => (Phase::Ended { succeeded: false }, "Vanished"),
    }
}

impl LocalRuntime {
    /// Opens the runtime on state directory `dir` (created when missing) and adopts the
    /// instances its files describe: still running ones are watched again, dead ones reported
    /// `Ended` (and whatever is left of their process group killed). Needs a Tokio runtime.
    pub async fn open(
        dir: impl AsRef<Path>,
        settings: LocalSettings,
    ) -> Result<Self, LocalRuntimeError> {
        let dir = dir.as_ref().to_path_buf();
        let state_dir_error = |source| LocalRuntimeError::StateDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join("work")).map_err(state_dir_error)?;
        let files = state_file::read_all(&dir).map_err(state_dir_error)?;
        let runtime = Self {
            inner: Arc::new(Inner {
                dir: dir.clone(),
                settings,
                entries: Mutex::new(HashMap::new()),
                spawning_ports: Mutex::new(HashSet::new()),
                ports: instance_ports(),
                // A different start per runtime, so two runtimes on one machine rarely meet.
                next_port: std::sync::atomic::AtomicU32::new(
                    u32::try_from(InstanceId::new().0.as_u128() % 65_536).unwrap_or(0),
                ),
                locks: Mutex::new(HashMap::new()),
            }),
        };
        for file in files {
            match file {
                Ok(file) => runtime.adopt(file).await,
                Err(path) => {
                    tracing::warn!(path = %path.display(), "unreadable local instance file ignored");
                }
            }
        }
        Ok(runtime)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn adopt(&self, mut file: InstanceFile) {
        let now = clock::unix_now_millis();
        if file.outcome.is_none()
            && !process::leader_alive(file.pid, file.start_ticks)
            && process::group_is_ours(file.pid, file.start_ticks)
        {
            // Died while nobody watched: kill what may be left of its group, say so for good.
            if let Err(e) = process::stop_group(file.pgid, self.inner.settings.stop_grace).await {
                tracing::warn!(instance = %file.instance, "{e}");
            }
        }
        let alive = file.outcome.is_none() && process::leader_alive(file.pid, file.start_ticks);
        if file.outcome.is_none() && !alive {
            file.outcome = Some(Outcome::Vanished);
            file.ended_at_ms = Some(now);
            if let Err(e) = state_file::write(&self.inner.dir, &file) {
                tracing::warn!(instance = %file.instance, "cannot record the end: {e}");
            }
        }
        let (phase, reason, since) = match &file.outcome {
            Some(outcome) => {
                let (phase, reason) = ended_phase(outcome);
                (phase, Some(reason), file.ended_at_ms.unwrap_or(now))
            }
            None => (Phase::Creating, Some("ProcessStarting"), now),
        };
        let instance = file.instance;
        let entry = Entry {
            file,
            phase,
            phase_since_ms: since,
            waiting_reason: reason.map(str::to_owned),
            terminating: false,
            supervisor: None,
        };
        self.inner.entries().insert(instance, entry);
        announce();
        if alive {
            tracing::info!(%instance, "local instance adopted");
            self.supervise(instance, None);
        }
    }

    /// Starts the task that watches `instance` (with its [`Child`] when this process spawned it).
    fn supervise(&self, instance: InstanceId, child: Option<Child>) {
        let task = tokio::spawn(supervise(Arc::downgrade(&self.inner), instance, child));
        if let Some(entry) = self.inner.entries().get_mut(&instance) {
            entry.supervisor = Some(task.abort_handle());
        }
    }

    /// Spawns the instance's process on `port` (chosen by [`Inner::choose_port`]).
    fn spawn(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        port: u16,
    ) -> RuntimeResult<(InstanceFile, Child)> {
        let inner = &self.inner;
        let Some((program, args)) = spec.command.as_deref().and_then(|c| c.split_first()) else {
            return Err(RuntimeError::Rejected(
                "this challenge has no command to run on the local runtime".to_owned(),
            ));
        };
        let unavailable =
            |what: &str, e: io::Error| RuntimeError::Unavailable(format!("{what}: {e}"));
        let host = inner.settings.host.clone();
        let work = state_file::work_dir(&inner.dir, id.instance);
        std::fs::create_dir_all(&work).map_err(|e| unavailable("working directory", e))?;
        let out = output::create(&state_file::log_path(&inner.dir, id.instance))
            .map_err(|e| unavailable("output file", e))?;
        let err = out.try_clone().map_err(|e| unavailable("output file", e))?;

        let mut command = std::process::Command::new(program);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .args(args)
            .current_dir(&work)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", &work)
            .env("LANG", "C.UTF-8")
            .envs(&spec.env)
            .env("PORT", port.to_string())
            .env("HOST", &host)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = tokio::process::Command::from(command)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    RuntimeError::Rejected(format!("cannot run `{program}`: {e}"))
                }
                _ => unavailable("spawn", e),
            })?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| RuntimeError::Unavailable("spawned process has no pid".to_owned()))?;
        let created_at_ms = clock::unix_now_millis();
        let lifetime_ms = spec.lifetime_secs.saturating_mul(1000);
        let margin_ms = millis(inner.settings.deadline_margin);
        let file = InstanceFile {
            team: id.team,
            challenge: id.challenge,
            instance: id.instance,
            pid,
            pgid: pid,
            start_ticks: process::proc_stat(pid).map(|s| s.start_ticks),
            host,
            port,
            created_at_ms,
            started_at_ms: 0,
            lifetime_secs: spec.lifetime_secs,
            deadline_ms: created_at_ms
                .saturating_add(lifetime_ms)
                .saturating_add(margin_ms),
            outcome: None,
            ended_at_ms: None,
        };
        Ok((file, child))
    }
}

impl LocalRuntime {
    /// The blocking part of a deploy (on the blocking pool, under the instance's lock): spawns,
    /// writes the state file, records and watches the instance.
    fn spawn_and_record(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        port: u16,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        let (mut file, child) = match self.spawn(id, spec, port) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Err(clean) = state_file::delete(&self.inner.dir, id.instance) {
                    tracing::warn!(instance = %id.instance, "cannot clean up: {clean}");
                }
                return Err(e);
            }
        };
        file.started_at_ms = started_at_ms;
        if let Err(e) = state_file::write(&self.inner.dir, &file) {
            // Without its file a restart could not find the process again: do not run it.
            let stopped = tokio::runtime::Handle::current().block_on(process::stop_group(
                file.pgid,
                self.inner.settings.stop_grace,
            ));
            if let Err(stop) = stopped {
                tracing::warn!(instance = %id.instance, "{stop}");
            }
            return Err(RuntimeError::Unavailable(format!("state file: {e}")));
        }
        let placement = Placement {
            route: route(&file.host, file.port),
        };
        tracing::info!(instance = %id.instance, pid = file.pid, route = %placement.route, "local instance started");
        let now = file.created_at_ms;
        self.inner.entries().insert(
            id.instance,
            Entry {
                file,
                phase: Phase::Creating,
                phase_since_ms: now,
                waiting_reason: Some("ProcessStarting".to_owned()),
                terminating: false,
                supervisor: None,
            },
        );
        announce();
        self.supervise(id.instance, Some(child));
        Ok(placement)
    }
}

impl Inner {
    fn entries(&self) -> MutexGuard<'_, HashMap<InstanceId, Entry>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still sound.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawning_ports(&self) -> MutexGuard<'_, HashSet<u16>> {
        self.spawning_ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the lock of `instance` (deploy, remove and deadline moves of one instance, one at
    /// a time).
    async fn lock_instance(self: &Arc<Self>, instance: InstanceId) -> InstanceGuard {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(instance)
            .or_default()
            .clone();
        InstanceGuard {
            inner: self.clone(),
            instance,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// A free port that no instance of this runtime holds and no spawn under way has chosen,
    /// reserved for the caller (see [`PortReservation`]): the next one of [`Inner::ports`] that
    /// can be bound now (or the kernel's choice without a range). A port is free once its
    /// probe socket is closed, before the process binds it, so the runtime's own table decides
    /// what is taken.
    fn choose_port(&self, host: &str) -> RuntimeResult<u16> {
        let entries = self.entries();
        let mut spawning = self.spawning_ports();
        for _ in 0..PORT_ATTEMPTS {
            let wanted = self.ports.as_ref().map_or(0, |range| {
                let (low, high) = (u32::from(*range.start()), u32::from(*range.end()));
                let n = self
                    .next_port
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                u16::try_from(low + n % (high - low + 1)).unwrap_or(0)
            });
            let port =
                match std::net::TcpListener::bind((host, wanted)).and_then(|l| l.local_addr()) {
                    Ok(addr) => addr.port(),
                    // Taken by something else on the machine: the next one.
                    Err(e) if wanted != 0 && e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(RuntimeError::Unavailable(format!("no free port: {e}"))),
                };
            let held = spawning.contains(&port)
                || entries
                    .values()
                    .any(|e| e.file.port == port && e.file.outcome.is_none());
            if !held {
                spawning.insert(port);
                return Ok(port);
            }
        }
        Err(RuntimeError::Unavailable(
            "no free port that no instance holds".to_owned(),
        ))
    }

    /// Records how `instance` ended (in memory and in its file), unless it is being removed.
    fn record_end(&self, instance: InstanceId, outcome: Outcome) {
        let now = clock::unix_now_millis();
        let file = {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(&instance) else {
                return;
            };
            if entry.terminating || entry.file.outcome.is_some() {
                return;
            }
            let (phase, reason) = ended_phase(&outcome);
            entry.set_phase(phase, Some(reason), now);
            entry.file.outcome = Some(outcome);
            entry.file.ended_at_ms = Some(now);
            entry.file.clone()
        };
        if let Err(e) = state_file::write(&self.dir, &file) {
            tracing::warn!(%instance, "cannot record the end: {e}");
        }
    }
}

/// A port chosen for a spawn under way; released from [`Inner::spawning_ports`] on drop.
struct PortReservation {
    inner: Arc<Inner>,
    port: u16,
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        self.inner.spawning_ports().remove(&self.port);
    }
}

/// What the supervisor reads of an entry each tick.
struct Watch {
    pid: i32,
    pgid: i32,
    start_ticks: Option<u64>,
    host: String,
    port: u16,
    created_at_ms: u64,
    deadline_ms: u64,
    creating: bool,
}

/// Watches one instance until it ended or is removed: readiness, exit (with its status when
/// `child` is ours), ready timeout, lifetime, output bound. Holds the runtime weakly, so it ends
/// when the runtime is dropped (the process lives on, to be adopted by the next one).
async fn supervise(runtime: Weak<Inner>, instance: InstanceId, mut child: Option<Child>) {
    // Readiness is probed at 1, 2, 4, ... ms after the start, then every POLL: a process that
    // listens at once is seen at once, one that takes long costs a probe per POLL.
    let mut wait = FIRST_PROBE;
    let mut trimmed = Instant::now();
    loop {
        let exited = match child.as_mut() {
            Some(c) => tokio::select! {
                status = c.wait() => Some(status.map(|s| s.success()).unwrap_or(false)),
                () = tokio::time::sleep(wait) => None,
            },
            None => {
                tokio::time::sleep(wait).await;
                None
            }
        };
        wait = wait.saturating_mul(2).min(POLL);
        let Some(inner) = runtime.upgrade() else {
            return;
        };
        let watch = {
            let entries = inner.entries();
            let Some(entry) = entries.get(&instance) else {
                return;
            };
            if entry.terminating || entry.file.outcome.is_some() {
                return;
            }
            Watch {
                pid: entry.file.pid,
                pgid: entry.file.pgid,
                start_ticks: entry.file.start_ticks,
                host: entry.file.host.clone(),
                port: entry.file.port,
                created_at_ms: entry.file.created_at_ms,
                deadline_ms: entry.file.deadline_ms,
                creating: entry.phase == Phase::Creating,
            }
        };
        let grace = inner.settings.stop_grace;
        let exited = exited.or_else(|| {
            // An adopted process is not our child: its exit is seen in /proc, status unknown.
            (child.is_none() && !process::leader_alive(watch.pid, watch.start_ticks))
                .then_some(false)
        });
        if let Some(succeeded) = exited {
            // The leader is gone: what it left in its group must not outlive it.
            if process::group_is_ours(watch.pid, watch.start_ticks)
                && let Err(e) = process::stop_group(watch.pgid, grace).await
            {
                tracing::warn!(%instance, "{e}");
            }
            let outcome = if child.is_some() {
                Outcome::Exited { succeeded }
            } else {
                Outcome::Vanished
            };
            inner.record_end(instance, outcome);
            return;
        }
        let now = clock::unix_now_millis();
        if now >= watch.deadline_ms {
            tracing::info!(%instance, "local instance reached the end of its lifetime");
            end_by_kill(&inner, instance, &watch, Outcome::LifetimeOver).await;
            return;
        }
        if watch.creating {
            if probe(&watch.host, watch.port).await {
                let mut entries = inner.entries();
                if let Some(entry) = entries.get_mut(&instance)
                    && entry.phase == Phase::Creating
                    && !entry.terminating
                {
                    entry.set_phase(Phase::Started { ready: true }, None, now);
                }
            } else if now
                >= watch
                    .created_at_ms
                    .saturating_add(millis(inner.settings.ready_timeout))
            {
                tracing::info!(%instance, "local instance never accepted connections");
                end_by_kill(&inner, instance, &watch, Outcome::NeverReady).await;
                return;
            }
        }
        if trimmed.elapsed() >= TRIM_EVERY {
            trimmed = Instant::now();
            if let Err(e) = output::trim(
                &state_file::log_path(&inner.dir, instance),
                inner.settings.log_limit_bytes,
            ) {
                tracing::warn!(%instance, "cannot trim the output: {e}");
            }
        }
    }
}

async fn end_by_kill(inner: &Inner, instance: InstanceId, watch: &Watch, outcome: Outcome) {
    if let Err(e) = process::stop_group(watch.pgid, inner.settings.stop_grace).await {
        tracing::warn!(%instance, "{e}");
    }
    inner.record_end(instance, outcome);
}

/// Runs `work` (file system calls) on the blocking pool, off the async worker threads.
async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// True when something accepts TCP connections at `host:port`.
async fn probe(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

#[async_trait]
impl InstanceRuntime for LocalRuntime {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn deploy(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        let serial = self.inner.lock_instance(id.instance).await;
        if let Some(entry) = self.inner.entries().get(&id.instance) {
            if entry.id() != *id {
                return Err(RuntimeError::Rejected(
                    "this instance id already belongs to another team or challenge".to_owned(),
                ));
            }
            return Ok(Placement {
                route: entry.route(),
            });
        }
        let port = self.inner.choose_port(&self.inner.settings.host)?;
        // Given back when the spawn is done either way: from then on the entry holds the port.
        let reserved = PortReservation {
            inner: self.inner.clone(),
            port,
        };
        // On the blocking pool: fork, exec and the files take milliseconds that would stall
        // every task of this worker thread (readiness probes, the listener's passes). The lock
        // and the reservation go with it, so a cancelled call cannot let a second spawn of this
        // instance, or of this port, start before the first is recorded.
        let (runtime, id, spec) = (self.clone(), *id, spec.clone());
        tokio::task::spawn_blocking(move || {
            let placement = runtime.spawn_and_record(&id, &spec, port, started_at_ms);
            drop((reserved, serial));
            placement
        })
        .await
        .map_err(|e| RuntimeError::Unavailable(format!("spawn task: {e}")))?
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        // Under the instance's lock, so a deploy of this instance is either complete (and is
        // ended here) or starts after (and finds it terminating).
        let serial = self.inner.lock_instance(id.instance).await;
        let target = {
            let mut entries = self.inner.entries();
            entries.get_mut(&id.instance).map(|entry| {
                entry.terminating = true;
                if let Some(task) = entry.supervisor.take() {
                    task.abort();
                }
                (entry.file.pid, entry.file.pgid, entry.file.start_ticks)
            })
        };
        let Some(target) = target else {
            // Nothing runs; leftovers of a failed spawn may remain.
            let (dir, instance) = (self.inner.dir.clone(), id.instance);
            return blocking_io(move || state_file::delete(&dir, instance))
                .await
                .map_err(|e| RuntimeError::Unavailable(format!("instance files: {e}")));
        };
        announce();
        drop(serial);
        let (pid, pgid, start_ticks) = target;
        if process::group_is_ours(pid, start_ticks) {
            process::stop_group(pgid, self.inner.settings.stop_grace)
                .await
                .map_err(RuntimeError::Unavailable)?;
        }
        let (dir, instance) = (self.inner.dir.clone(), id.instance);
        blocking_io(move || state_file::delete(&dir, instance))
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("instance files: {e}")))?;
        self.inner.entries().remove(&id.instance);
        announce();
        tracing::info!(instance = %id.instance, "local instance removed");
        Ok(())
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        let creating = self
            .inner
            .entries()
            .values()
            .filter(|e| e.phase == Phase::Creating && !e.terminating)
            .count();
        Ok(u32::try_from(creating).unwrap_or(u32::MAX))
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        Ok(self
            .inner
            .entries()
            .values()
            .map(|entry| Observed {
                id: entry.id(),
                route: Some(entry.route()),
                phase: entry.phase.clone(),
                restarts: 0,
                waiting_reason: entry.waiting_reason.clone(),
                created_at_ms: entry.file.created_at_ms,
                phase_since_ms: entry.phase_since_ms,
                lifetime: Duration::from_secs(entry.file.lifetime_secs),
                terminating: entry.terminating,
            })
            .collect())
    }

    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        if !self.inner.entries().contains_key(&id.instance) {
            return Err(RuntimeError::NotFound);
        }
        output::tail(
            &state_file::log_path(&self.inner.dir, id.instance),
            tail,
            self.inner.settings.log_limit_bytes,
        )
        .map_err(|e| RuntimeError::Unavailable(format!("instance output: {e}")))
    }

    /// Moves the kill to `ends_at_ms` plus [`LocalSettings::deadline_margin`], in memory (the
    /// supervisor reads it each tick) and in the state file (a restarted runtime adopts it with
    /// the moved deadline). An instance that already ended or is being removed keeps its end.
    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        // Under the instance's lock: two moves of one deadline write their files in order.
        let _serial = self.inner.lock_instance(id.instance).await;
        let deadline_ms = ends_at_ms.saturating_add(millis(self.inner.settings.deadline_margin));
        let (file, previous) = {
            let mut entries = self.inner.entries();
            let Some(entry) = entries.get_mut(&id.instance).filter(|e| e.id() == *id) else {
                return Err(RuntimeError::NotFound);
            };
            if entry.terminating || entry.file.outcome.is_some() {
                return Ok(());
            }
            let previous = entry.file.deadline_ms;
            entry.file.deadline_ms = deadline_ms;
            (entry.file.clone(), previous)
        };
        let dir = self.inner.dir.clone();
        if let Err(e) = blocking_io(move || state_file::write(&dir, &file)).await {
            // Not persisted: a restart would kill at the old deadline, so do not claim the move.
            if let Some(entry) = self.inner.entries().get_mut(&id.instance)
                && entry.file.deadline_ms == deadline_ms
            {
                entry.file.deadline_ms = previous;
            }
            return Err(RuntimeError::Unavailable(format!("state file: {e}")));
        }
        tracing::info!(instance = %id.instance, deadline_ms, "local instance deadline moved");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_bracket_ipv6_hosts() {
        assert_eq!(route("127.0.0.1", 4000), "127.0.0.1:4000");
        assert_eq!(route("::1", 4000), "[::1]:4000");
    }

    #[test]
    fn every_outcome_maps_to_an_end() {
        assert_eq!(
            ended_phase(&Outcome::Exited { succeeded: true }).0,
            Phase::Ended { succeeded: true }
        );
        assert_eq!(ended_phase(&Outcome::NeverReady).0, Phase::Failed);
        assert_eq!(
            ended_phase(&Outcome::LifetimeOver),
            (Phase::Ended { succeeded: false }, "DeadlineExceeded")
        );
    }
}
