//! `pipeline_latency`: the control plane's share of "start request -> Running" on the local
//! runtime, with many starts queued at once (issue 5's benchmark; goal p99 <= 50 ms).
//!
//! ```text
//! pipeline_latency [--count 300] [--poll-ms 100] [--prefetch 40] [--real [--publish-channels 64]]
//! ```
//!
//! The Deployment Center, the Deployment Consumer and the Deployment Listener run in this
//! process, on the in-process queue and store (or RabbitMQ + Redis + MariaDB with `--real`), over
//! the local runtime. Each instance runs this same binary as a trivial TCP server
//! (`pipeline_latency --serve`: bind `$HOST:$PORT`, print `listening <unix ms>`, accept
//! forever). `--count` starts are sent at once; then, per instance (all times on this machine's
//! wall clock, in milliseconds):
//!
//! - `total` = Running written to the store (the record's `updated_at_ms`) - start request sent;
//! - `process` = the instance's own start: spawned (the runtime's `created_at_ms`, taken when
//!   `exec` succeeded) -> listening (the instance's own line, printed once it bound its port);
//! - `control` = `total - process`: everything the control plane adds, including the wait
//!   behind the other starts, the runtime's readiness detection, the listener and the writes.
//!
//! `control` is split into stages (each instance's own stamps; a `deploy` wrapper stamps when
//! the consumer called the runtime):
//!
//! - `request -> accepted`: the Deployment Center's start (quota reservation, record, publish),
//!   itself split into `request -> publish` (the reservation), `publish -> confirmed` (the
//!   broker's confirm, measured around [`JobQueue::publish`]) and `confirmed -> accepted` (the
//!   answer: the queue position);
//! - `accepted -> deploy call` (**queued behind others**): the job waits in the queue and the
//!   consumer's prefetch window for the earlier jobs, then the consumer's own reads;
//! - `deploy call -> spawned`: the runtime's deploy up to the process running (its locks, port,
//!   directories, fork and exec);
//! - `listening -> ready seen`: the runtime's readiness detection;
//! - `ready seen -> Running`: the listener learning of it and writing Running.
//!
//! `control, own work` = `control - queued behind others` is what one start costs the control
//! plane on its own; the queueing is reported next to it, not hidden.
//!
//! `--poll-ms` is the listener's snapshot poll of the local runtime, its backstop (`fctf up`
//! uses 100): the runtime announces its changes, which wakes the poller at once.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::num::NonZeroU16;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fctf_control::deployment::contract::{DeploymentControl, InstanceKey, StartRequest};
use fctf_control::deployment::{CenterKeys, DeploymentCenter};
use fctf_core::clock::unix_now_millis;
use fctf_core::config::DeploymentConfig;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{
    AmqpQueue, DeployJob, DeploySpec, JobConsumer, JobQueue, MemoryQueue, ParkedJob, QueueError,
    QueueStats, Topology,
};
use fctf_core::runtime::{InstanceRef, InstanceRuntime, Observed, Phase, Placement, RuntimeResult};
use fctf_core::store::{DeploymentState, MemoryStore, RedisStore, StateStore};
use fctf_workers::consumer::{self, ConsumerSettings};
use fctf_workers::listener::poll::SnapshotPoller;
use fctf_workers::listener::{ChangeFeed, FixedContestWindow, Listener, Rules};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};

#[derive(Debug)]
struct Args {
    count: u32,
    poll: Duration,
    /// The consumer's prefetch (its default, 40, unless given).
    prefetch: Option<NonZeroU16>,
    /// Publishes awaiting their confirm at once on RabbitMQ (`AmqpQueue`'s default unless
    /// given).
    publish_channels: Option<usize>,
    real: bool,
}

const USAGE: &str = "usage: pipeline_latency [--count N] [--poll-ms MS] [--prefetch N] [--real [--publish-channels N]] | --serve";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        count: 300,
        poll: Duration::from_millis(100),
        prefetch: None,
        publish_channels: None,
        real: false,
    };
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number\n{USAGE}"))
        };
        match flag.as_str() {
            "--count" => {
                parsed.count = u32::try_from(value("--count")?).map_err(|e| e.to_string())?;
            }
            "--poll-ms" => parsed.poll = Duration::from_millis(value("--poll-ms")?),
            "--prefetch" => {
                let n = u16::try_from(value("--prefetch")?).map_err(|e| e.to_string())?;
                parsed.prefetch =
                    Some(NonZeroU16::new(n).ok_or_else(|| format!("--prefetch 0\n{USAGE}"))?);
            }
            "--real" => parsed.real = true,
            "--publish-channels" => {
                parsed.publish_channels =
                    Some(usize::try_from(value("--publish-channels")?).map_err(|e| e.to_string())?);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

/// The instance program: accept connections on `$HOST:$PORT` until killed.
/// Appends `message` to the run's error file (`$PIPELINE_LATENCY_ERRORS`), which outlives the
/// instance's own output (removed with it), so a failed start can be told apart.
fn report(message: &str) {
    eprintln!("{message}");
    if let Some(path) = std::env::var_os("PIPELINE_LATENCY_ERRORS")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "pid {}: {message}", std::process::id());
    }
}

fn serve() -> ExitCode {
    std::panic::set_hook(Box::new(|info| report(&format!("panic: {info}"))));
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let Some(port) = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        eprintln!("PORT is not set");
        return ExitCode::FAILURE;
    };
    let listener = match std::net::TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            report(&format!("bind {host}:{port}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // The instance's own account of when it could take connections (stdout is the runtime's
    // log file of this instance).
    println!("listening {}", unix_now_millis());
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        drop(conn);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve") {
        return serve();
    }
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The local runtime, with the time each instance's `deploy` was called.
#[derive(Debug)]
struct Stamped {
    local: LocalRuntime,
    deploy_called_ms: Mutex<HashMap<InstanceId, u64>>,
}

impl Stamped {
    fn deploy_called(&self, instance: InstanceId) -> Option<u64> {
        self.deploy_called_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&instance)
            .copied()
    }
}

#[async_trait::async_trait]
impl InstanceRuntime for Stamped {
    fn kind(&self) -> &'static str {
        self.local.kind()
    }

    async fn deploy(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        // The first call counts (a redelivery finds the instance).
        self.deploy_called_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.instance)
            .or_insert_with(unix_now_millis);
        self.local.deploy(id, spec, started_at_ms).await
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        self.local.remove(id).await
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        self.local.in_progress().await
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        self.local.snapshot().await
    }

    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        self.local.logs(id, tail).await
    }

    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        self.local.set_deadline(id, ends_at_ms).await
    }
}

/// The deploy queue, with when each start job's publish was called and when it returned.
#[derive(Debug)]
struct TimedQueue {
    inner: Arc<dyn JobQueue>,
    publishes: Mutex<HashMap<InstanceId, (u64, u64)>>,
}

impl TimedQueue {
    fn publish_of(&self, instance: InstanceId) -> Option<(u64, u64)> {
        self.publishes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&instance)
            .copied()
    }
}

#[async_trait::async_trait]
impl JobQueue for TimedQueue {
    async fn publish(&self, job: &DeployJob) -> Result<(), QueueError> {
        let called = unix_now_millis();
        let result = self.inner.publish(job).await;
        if job.spec().is_some() {
            self.publishes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(job.instance)
                .or_insert((called, unix_now_millis()));
        }
        result
    }

    async fn consume(&self, prefetch: NonZeroU16) -> Result<JobConsumer, QueueError> {
        self.inner.consume(prefetch).await
    }

    async fn take_parked(&self, max: usize) -> Result<Vec<ParkedJob>, QueueError> {
        self.inner.take_parked(max).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

/// The `listening <unix ms>` line an instance printed.
fn listening_at(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("listening ")?.trim().parse().ok())
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), for the record: the machine is shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The `p`-th percentile (nearest rank) of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn line(name: &str, mut values: Vec<u64>) -> String {
    values.sort_unstable();
    format!(
        "{name:<28} p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms",
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(0)
    )
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: &Args) -> Result<(), BoxError> {
    let unique = format!("fctf-bench:pipeline:{}:", InstanceId::new());
    let dir = std::env::temp_dir().join(format!("fctf-pipeline-latency-{}", InstanceId::new()));
    let topology = Topology {
        exchange: format!("{unique}exchange"),
        queue: format!("{unique}queue"),
        dead_letter_exchange: format!("{unique}dlx"),
        parked_queue: format!("{unique}parked"),
        max_length: args.count.max(300),
        ..Topology::default()
    };
    let (store, queue, db, scratch): (Arc<dyn StateStore>, Arc<dyn JobQueue>, Database, _) = if args
        .real
    {
        let store =
            RedisStore::connect("redis://127.0.0.1:6379", &unique, Duration::from_secs(5)).await?;
        let queue = AmqpQueue::connect(
            "amqp://guest:guest@127.0.0.1:5672",
            &topology,
            Duration::from_secs(5),
        )
        .await?;
        let queue = match args.publish_channels {
            Some(n) => queue.with_publish_channels(n),
            None => queue,
        };
        let scratch = ScratchDatabase::create("mysql://root@127.0.0.1:3306/test", 8).await?;
        scratch.db.migrate().await?;
        let db = scratch.db.clone();
        (Arc::new(store), Arc::new(queue), db, Some(scratch))
    } else {
        let db = Database::connect("sqlite::memory:", 1).await?;
        db.migrate().await?;
        (
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryQueue::new(&topology)),
            db,
            None,
        )
    };
    let local = LocalRuntime::open(
        dir.join("state"),
        LocalSettings {
            stop_grace: Duration::from_millis(500),
            ready_timeout: Duration::from_secs(60),
            ..LocalSettings::default()
        },
    )
    .await?;
    let stamped = Arc::new(Stamped {
        local: local.clone(),
        deploy_called_ms: Mutex::new(HashMap::new()),
    });
    let instance_runtime: Arc<dyn InstanceRuntime> = stamped.clone();
    let timed = Arc::new(TimedQueue {
        inner: queue.clone(),
        publishes: Mutex::new(HashMap::new()),
    });
    let center = Arc::new(DeploymentCenter::new(
        store.clone(),
        timed.clone(),
        &DeploymentConfig::default(),
        CenterKeys::ephemeral(),
    ));

    let consumer_settings = ConsumerSettings {
        prefetch: args
            .prefetch
            .unwrap_or(ConsumerSettings::default().prefetch),
        ..ConsumerSettings::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let consumer = tokio::spawn(consumer::run(
        queue.clone(),
        store.clone(),
        instance_runtime.clone(),
        consumer_settings.clone(),
        stopped(stop_rx.clone()),
    ));
    let listener = Arc::new(Listener::new(
        instance_runtime.clone(),
        store.clone(),
        db.clone(),
        Arc::new(FixedContestWindow(None)),
        Rules::default(),
    ));
    let feed: Arc<dyn ChangeFeed> =
        Arc::new(SnapshotPoller::new(instance_runtime.clone(), args.poll));
    let listener_metrics = listener.metrics();
    let listening = tokio::spawn(listener.run(
        Some(feed),
        Duration::from_secs(30),
        8,
        stopped(stop_rx.clone()),
    ));

    // Measured in a block of its own, so the instances, the queue and the database are
    // cleaned up however it ends.
    let measured: Result<(), BoxError> = async {
        let program = std::env::current_exe()?.to_string_lossy().into_owned();
        let errors = dir.join("errors.log");
        let spec = DeploySpec {
            challenge_name: "latency".to_owned(),
            image: None,
            command: Some(vec![program, "--serve".to_owned()]),
            container_port: 80,
            cpu_millicores: 100,
            memory_mib: 64,
            use_gvisor: false,
            harden: false,
            lifetime_secs: 3600,
            env: BTreeMap::from([(
                "PIPELINE_LATENCY_ERRORS".to_owned(),
                errors.to_string_lossy().into_owned(),
            )]),
        };
        // The cost of one spawn (the local runtime's `deploy`, which runs one at a time): 20
        // deploys straight on the runtime, one after the other, then removed.
        let mut spawn_costs = Vec::new();
        for i in 0..20 {
            let id = fctf_core::runtime::InstanceRef {
                team: TeamId(1_000_000 + i),
                challenge: ChallengeId(1),
                instance: InstanceId::new(),
            };
            let before = Instant::now();
            local.deploy(&id, &spec, unix_now_millis()).await?;
            spawn_costs.push(u64::try_from(before.elapsed().as_micros()).unwrap_or(u64::MAX));
            local.remove(&id).await?;
        }
        spawn_costs.sort_unstable();

        // 3 challenges per team, as a contest's teams start them.
        let keys: Vec<InstanceKey> = (0..args.count)
            .map(|i| InstanceKey {
                team: TeamId(i64::from(i / 3) + 1),
                challenge: ChallengeId(i64::from(i % 3) + 1),
            })
            .collect();
        let load_before = load_average();
        let began = Instant::now();
        let mut starts = tokio::task::JoinSet::new();
        for key in &keys {
            let (center, request) = (
                center.clone(),
                StartRequest {
                    key: *key,
                    quota: 3,
                    spec: spec.clone(),
                    contest_ends_at_ms: None,
                },
            );
            starts.spawn(async move {
                let sent = unix_now_millis();
                let answer = center.start(&request).await;
                (request.key, sent, unix_now_millis(), answer)
            });
        }
        let mut sent_at = HashMap::new();
        let mut accepted_at = HashMap::new();
        let mut instance_of = HashMap::new();
        for (key, sent, accepted, answer) in starts.join_all().await {
            let status = answer.map_err(|e| format!("start {key:?}: {e:?}"))?;
            sent_at.insert(key, sent);
            accepted_at.insert(key, accepted);
            instance_of.insert(key, status.instance.ok_or("no instance id")?);
        }
        let queued_in = began.elapsed();

        // Every record Running (bounded: 120 s).
        let mut running_at = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while running_at.len() < keys.len() {
            for key in &keys {
                if running_at.contains_key(key) {
                    continue;
                }
                if let Some(record) = store.get_deployment(key.team, key.challenge).await? {
                    match record.state {
                        DeploymentState::Running => {
                            running_at.insert(*key, record.updated_at_ms);
                        }
                        DeploymentState::Failed => {
                            let said = std::fs::read_to_string(&errors).unwrap_or_default();
                            return Err(format!(
                                "{key:?} failed: {:?}; instances reported: {said:?}",
                                record.reason
                            )
                            .into());
                        }
                        _ => {}
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {} Running in 120 s",
                    running_at.len(),
                    keys.len()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_running_in = began.elapsed();
        let load_after = load_average();

        let observed: HashMap<_, _> = local
            .snapshot()
            .await?
            .into_iter()
            .map(|o| (o.id.instance, o))
            .collect();
        let mut s = Stages::default();
        for key in &keys {
            let o = observed
                .get(&instance_of[key])
                .ok_or_else(|| format!("{key:?}: no process"))?;
            if o.phase != (Phase::Started { ready: true }) {
                return Err(format!("{key:?}: {:?}", o.phase).into());
            }
            let output = local.logs(&o.id, 20).await?;
            let listening = listening_at(&output)
                .ok_or_else(|| format!("{key:?}: no `listening` line in {output:?}"))?;
            let called = stamped
                .deploy_called(o.id.instance)
                .ok_or_else(|| format!("{key:?}: deploy never called"))?;
            let (sent, accepted, running) = (sent_at[key], accepted_at[key], running_at[key]);
            let (spawned, ready_seen) = (o.created_at_ms, o.phase_since_ms);
            let total = running.saturating_sub(sent);
            let process = listening.saturating_sub(spawned);
            let control = total.saturating_sub(process);
            let queued = called.saturating_sub(accepted);
            s.total.push(total);
            s.process.push(process);
            s.control.push(control);
            s.own.push(control.saturating_sub(queued));
            s.accept.push(accepted.saturating_sub(sent));
            let (publish_called, publish_done) = timed
                .publish_of(o.id.instance)
                .ok_or_else(|| format!("{key:?}: never published"))?;
            s.reserve.push(publish_called.saturating_sub(sent));
            s.confirm.push(publish_done.saturating_sub(publish_called));
            s.answer.push(accepted.saturating_sub(publish_done));
            s.queued.push(queued);
            s.in_deploy.push(spawned.saturating_sub(called));
            s.detect.push(ready_seen.saturating_sub(listening));
            s.listener.push(running.saturating_sub(ready_seen));
            s.old_process.push(ready_seen.saturating_sub(spawned));
            s.old_control
                .push(total.saturating_sub(ready_seen.saturating_sub(spawned)));
        }

        println!(
            "pipeline_latency: {} starts at once ({}; local runtime; listener poll {} ms; consumer prefetch {})",
            keys.len(),
            if args.real {
                "RabbitMQ + Redis + MariaDB"
            } else {
                "in-process queue and store, SQLite"
            },
            args.poll.as_millis(),
            consumer_settings.prefetch
        );
        println!(
            "all accepted in {} ms; all Running in {} ms; load average {load_before} before, {load_after} after",
            queued_in.as_millis(),
            all_running_in.as_millis()
        );
        println!("{}", line("request -> Running (total)", s.total));
        println!("{}", line("spawned -> listening (proc)", s.process));
        println!("{}", line("control = total - proc", s.control.clone()));
        println!("{}", line("  control, own work", s.own));
        println!("{}", line("  request -> accepted", s.accept));
        println!("{}", line("    request -> publish", s.reserve));
        println!("{}", line("    publish -> confirmed", s.confirm));
        println!("{}", line("    confirmed -> accepted", s.answer));
        println!("{}", line("  accepted -> deploy call", s.queued));
        println!("{}", line("  deploy call -> spawned", s.in_deploy));
        println!("{}", line("  listening -> ready seen", s.detect));
        println!("{}", line("  ready seen -> Running", s.listener));
        println!("{}", line("old def.: spawn -> ready seen", s.old_process));
        println!("{}", line("old def.: total - that", s.old_control));
        let mut control = s.control;
        println!(
            "one spawn (deploy call, alone) p50 {:.1} ms  max {:.1} ms: {} spawns in a row take ~{} ms",
            percentile(&spawn_costs, 50.0) as f64 / 1000.0,
            spawn_costs.last().copied().unwrap_or(0) as f64 / 1000.0,
            keys.len(),
            percentile(&spawn_costs, 50.0) * keys.len() as u64 / 1000
        );
        let m = listener_metrics.snapshot();
        println!(
            "listener: {} full passes, {} hint passes, {} hints ({} dropped), {} lost races",
            m.passes_full, m.passes_instance, m.hints, m.hints_dropped, m.conflicts
        );
        control.sort_unstable();
        let p99 = percentile(&control, 99.0);
        println!(
            "goal p99 <= 50 ms: {}",
            if p99 <= 50 { "met" } else { "NOT met" }
        );
        Ok(())
    }
    .await;

    // The consumer and listener first, so nothing is redeployed or touched while it goes.
    let _ = stop_tx.send(true);
    let _ = consumer.await;
    let _ = listening.await;
    for o in local.snapshot().await.unwrap_or_default() {
        let _ = local.remove(&o.id).await;
    }
    if let Some(scratch) = scratch {
        scratch.drop_database().await?;
        delete_topology(&topology).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// Per instance, in start order: the metric and its stages (see the module docs).
#[derive(Debug, Default)]
struct Stages {
    total: Vec<u64>,
    process: Vec<u64>,
    control: Vec<u64>,
    own: Vec<u64>,
    accept: Vec<u64>,
    /// `accept`'s parts: the reservation, the publish (its confirm), the answer.
    reserve: Vec<u64>,
    confirm: Vec<u64>,
    answer: Vec<u64>,
    queued: Vec<u64>,
    in_deploy: Vec<u64>,
    detect: Vec<u64>,
    listener: Vec<u64>,
    /// The definitions of the first version of this benchmark, for comparison: the process
    /// start as the runtime saw it (readiness detection included) and `total` minus it.
    old_process: Vec<u64>,
    old_control: Vec<u64>,
}

/// Deletes the benchmark's queues and exchanges from the broker (`--real`).
async fn delete_topology(topology: &Topology) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{}", topology.vhost);
    let Ok(connection) =
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    for queue in [&topology.queue, &topology.parked_queue] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "benchmark done".into()).await;
}
