//! Builds the shared backends a role needs from the config: the state store, the deploy queue,
//! the database and the instance runtime. Each role (and `fctf up`, which runs them all) calls
//! these, so a backend is chosen in one place: `[store].backend`, `[queue].backend`,
//! `[database].url`, `[runtime].kind`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fctf_control::contestant::accounts::settings::stored_settings;
use fctf_core::config::{Config, QueueBackend, RuntimeKind, StoreBackend};
use fctf_core::db::Database;
use fctf_core::queue::{AmqpQueue, JobQueue, MemoryQueue, Topology};
use fctf_core::runtime::InstanceRuntime;
use fctf_core::store::{MemoryStore, RedisStore, StateStore};
use fctf_workers::listener::poll::SnapshotPoller;
use fctf_workers::listener::{ChangeFeed, ContestWindow};
use fctf_workers::runtime::argo::ArgoRuntime;
use fctf_workers::runtime::kubernetes::{KubernetesRuntime, WatchSettings};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};

/// The deploy queue topology of `[queue]`.
pub fn topology(config: &Config) -> Topology {
    let q = &config.queue;
    Topology {
        vhost: q.vhost.clone(),
        exchange: q.exchange.clone(),
        routing_key: q.routing_key.clone(),
        queue: q.queue.clone(),
        max_length: q.max_length,
        ..Topology::default()
    }
}

/// The state store of `[store]`: in-process, or Redis (checked with a round trip).
pub async fn store(config: &Config) -> anyhow::Result<Arc<dyn StateStore>> {
    let s = &config.store;
    Ok(match s.backend {
        StoreBackend::Memory => Arc::new(MemoryStore::new()),
        StoreBackend::Redis => {
            let store = RedisStore::connect(s.redis_url.as_str(), &s.key_prefix, s.timeout())
                .await
                .with_context(|| format!("connecting to Redis at {}", s.redis_url.redacted()))?;
            Arc::new(store)
        }
    })
}

/// The deploy queue of `[queue]`: in-process, or RabbitMQ (topology declared).
pub async fn queue(config: &Config) -> anyhow::Result<Arc<dyn JobQueue>> {
    let q = &config.queue;
    let topology = topology(config);
    Ok(match q.backend {
        QueueBackend::Memory => Arc::new(MemoryQueue::new(&topology)),
        QueueBackend::RabbitMq => {
            let queue = AmqpQueue::connect(q.amqp_url.as_str(), &topology, q.publish_timeout())
                .await
                .with_context(|| format!("connecting to RabbitMQ at {}", q.amqp_url.redacted()))?;
            Arc::new(queue)
        }
    })
}

/// The database of `[database]`, migrated to the current schema.
pub async fn database(config: &Config) -> anyhow::Result<Database> {
    let d = &config.database;
    let db = Database::connect(d.url.as_str(), d.max_connections)
        .await
        .with_context(|| format!("connecting to the database at {}", d.url.redacted()))?;
    db.migrate()
        .await
        .with_context(|| format!("migrating the database at {}", d.url.redacted()))?;
    Ok(db)
}

/// The instance runtime of `[runtime]`. The local runtime keeps its state (one file per
/// instance, so a restart re-adopts or reports what it left) in `[runtime].local_state_dir`.
pub async fn runtime(config: &Config) -> anyhow::Result<Arc<dyn InstanceRuntime>> {
    let r = &config.runtime;
    Ok(match r.kind {
        RuntimeKind::Local => {
            let runtime = LocalRuntime::open(&r.local_state_dir, LocalSettings::from_config(r))
                .await
                .with_context(|| format!("opening the local runtime in {}", r.local_state_dir))?;
            Arc::new(runtime)
        }
        RuntimeKind::Kubernetes => Arc::new(
            KubernetesRuntime::connect(r)
                .await
                .context("connecting to the Kubernetes API")?,
        ),
        RuntimeKind::Argo => Arc::new(
            ArgoRuntime::connect(r)
                .await
                .context("connecting to the Kubernetes API for Argo Workflows")?,
        ),
    })
}

/// The contest end as the Contestant Service stores it (`contest_config`), for the Deployment
/// Listener. Read at each pass; a database error reads as "no end" (nothing is removed for it).
#[derive(Debug)]
pub struct StoredContestWindow {
    db: Database,
    config: Arc<Config>,
}

#[async_trait::async_trait]
impl ContestWindow for StoredContestWindow {
    async fn ends_at_ms(&self) -> Option<u64> {
        match stored_settings(&self.db, &self.config).await {
            Ok(settings) => settings.end_ms.and_then(|ms| u64::try_from(ms).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the contest end failed");
                None
            }
        }
    }
}

/// [`StoredContestWindow`] over `db`.
pub fn contest_window(config: &Config, db: Database) -> Arc<dyn ContestWindow> {
    Arc::new(StoredContestWindow {
        db,
        config: Arc::new(config.clone()),
    })
}

/// What tells the Deployment Listener of instance changes between its full resyncs: on the
/// local runtime a snapshot poller (woken by the runtime's own change announcements), on a
/// cluster (`kubernetes`, `argo`) a watch on challenge pods through a client of its own.
pub async fn change_feed(
    config: &Config,
    runtime: &Arc<dyn InstanceRuntime>,
) -> anyhow::Result<Option<Arc<dyn ChangeFeed>>> {
    Ok(Some(match config.runtime.kind {
        RuntimeKind::Local => Arc::new(SnapshotPoller::new(
            runtime.clone(),
            Duration::from_millis(100),
        )) as Arc<dyn ChangeFeed>,
        RuntimeKind::Kubernetes | RuntimeKind::Argo => {
            let cluster = KubernetesRuntime::connect(&config.runtime)
                .await
                .context("connecting to the Kubernetes API for the pod watch")?;
            Arc::new(cluster.pod_watch(WatchSettings::default()))
        }
    }))
}

/// [`sweep_unrecorded_instances`] on the local runtime's state directory when the runtime is
/// local (0 otherwise): `fctf up`, and `fctf consumer` when the roles run apart.
pub fn sweep_unrecorded_instances_if_local(config: &Config) -> usize {
    if config.runtime.kind != fctf_core::config::RuntimeKind::Local {
        return 0;
    }
    sweep_unrecorded_instances(std::path::Path::new(&config.runtime.local_state_dir))
}

/// Kills what a killed predecessor may have left unrecorded in the local runtime's state
/// directory `dir`: an instance program runs in `dir/work/<instance>`, and its `<instance>.json`
/// is written just after the spawn, so a process killed in between (SIGKILL, OOM) leaves a
/// running program that no state file names, which the runtime cannot adopt and nothing would
/// ever stop. Every live process whose working directory is under `dir/work/` and whose
/// instance has no state file gets its process group killed. Call it before the runtime
/// deploys anything, from the one process that spawns into `dir` (`fctf up`, or `fctf
/// consumer` when the roles run apart). Returns the groups killed.
pub fn sweep_unrecorded_instances(dir: &std::path::Path) -> usize {
    let Ok(work) = std::fs::canonicalize(dir.join("work")) else {
        return 0;
    };
    let Ok(canonical_dir) = std::fs::canonicalize(dir) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups = std::collections::BTreeSet::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        let Some(instance) = cwd
            .strip_prefix(&work)
            .ok()
            .and_then(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
        else {
            continue;
        };
        if canonical_dir.join(format!("{instance}.json")).exists() {
            continue;
        }
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some(pgid) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                (fields.first() != Some(&"Z"))
                    .then(|| fields.get(2)?.parse::<i32>().ok())
                    .flatten()
            })
        else {
            continue;
        };
        // Never our own group (a program started from inside the directory by hand).
        if pgid > 1 && !is_own_group(pgid) {
            groups.insert(pgid);
        }
    }
    for pgid in &groups {
        tracing::warn!(
            pgid,
            "killing an instance program no state file names (left by a killed process)"
        );
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    groups.len()
}

/// True when `pgid` is this process's own process group.
fn is_own_group(pgid: i32) -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(2)?.parse::<i32>().ok()
        })
        == Some(pgid)
}
