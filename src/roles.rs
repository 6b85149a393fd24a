//! The roles: each loads its config (every mistake listed, exit 64), connects to what it needs
//! (exit 69 when something is unreachable) and runs until SIGTERM or SIGINT.

use anyhow::anyhow;
use fctf_core::config::{self, Config, ProcessSource};
use fctf_core::db::Database;

use crate::check_config;
use crate::cli::RoleArgs;
use crate::outcome::{Exit, Failure, OrExit as _};
use crate::platform;

/// `fctf gateway -c FILE`: the Challenge Gateway until a signal stops it.
pub fn gateway(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load(args, "gateway")?;
    fctf_gateway::server::run_from_config(&config).map_err(|e| {
        // A key that does not match its certificate is the config's fault: 64, as for every
        // other config mistake.
        let code = if e.is_config() {
            Exit::InvalidInput
        } else {
            Exit::Software
        };
        Failure {
            code,
            error: anyhow::Error::from(e).context("running the gateway"),
        }
    })?;
    Ok(Exit::Ok)
}

/// The role's config file with the process's `FCTF_*` overrides, or exit 64 with every mistake.
pub(crate) fn load(args: &RoleArgs, role: &str) -> Result<Config, Failure> {
    let path = args
        .config
        .as_deref()
        .ok_or_else(|| {
            anyhow!("`fctf {role}` needs its config file: -c FILE (see fctf.example.toml)")
        })
        .or_exit(Exit::InvalidInput)?;
    config::load_file(path, &ProcessSource).map_err(|errors| Failure {
        code: Exit::InvalidInput,
        error: anyhow!("{}", check_config::mistakes(path, &errors)),
    })
}

/// `fctf migrate -c FILE`: applies the schema migrations to `[database].url`, then exits.
pub fn migrate(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load(args, "migrate")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .or_exit(Exit::Software)?;
    let url = config.database.url.as_str().to_owned();
    let applied = runtime
        .block_on(async {
            let db = Database::connect(&url, 1).await?;
            let applied = db.migrate().await?;
            let version = db.schema_version().await?;
            db.close().await;
            Ok::<_, fctf_core::db::DbError>((applied, version))
        })
        .map_err(|e| anyhow!("migrating {}: {e}", config.database.url.redacted()))
        .or_exit(Exit::Unavailable)?;
    let (applied, version) = applied;
    if applied.is_empty() {
        println!("database schema is up to date (version {version})");
    } else {
        println!("applied migrations {applied:?}; database schema is at version {version}");
    }
    Ok(Exit::Ok)
}

/// `fctf deployment-center -c FILE`: the Deployment Center until a signal.
pub fn deployment_center(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load_shared(args, "deployment-center")?;
    block_on(async {
        let store = platform::store(&config).await.or_exit(Exit::Unavailable)?;
        let queue = platform::queue(&config).await.or_exit(Exit::Unavailable)?;
        // Logs need the runtime; without one the Deployment Center still serves (logs: 503).
        let runtime = match platform::runtime(&config).await {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                eprintln!("warning: no instance runtime, logs will answer 503: {e:#}");
                None
            }
        };
        // Image builds (up-challenge-template) need Argo; other runtimes answer 503 to them.
        let builder: Option<std::sync::Arc<dyn fctf_core::builds::ImageBuilder>> =
            match config.runtime.kind {
                fctf_core::config::RuntimeKind::Argo => Some(std::sync::Arc::new(
                    fctf_workers::runtime::argo_builds::ArgoBuilder::connect(&config.runtime)
                        .await
                        .map_err(anyhow::Error::from)
                        .map_err(|e| e.context("connecting to the Kubernetes API for image builds"))
                        .or_exit(Exit::Unavailable)?,
                )),
                _ => None,
            };
        fctf_control::deployment::run_with_builder(
            &config,
            store,
            queue,
            runtime,
            builder,
            shutdown_signal(),
        )
        .await
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("running the Deployment Center"))
        .or_exit(Exit::Software)
    })?;
    Ok(Exit::Ok)
}

/// `fctf consumer -c FILE`: the Deployment Consumer until a signal.
pub fn consumer(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load_shared(args, "consumer")?;
    block_on(async {
        let store = platform::store(&config).await.or_exit(Exit::Unavailable)?;
        let queue = platform::queue(&config).await.or_exit(Exit::Unavailable)?;
        // The consumer is the one process that spawns local instances: before it spawns
        // anything, what a killed predecessor spawned but never recorded is stopped.
        let swept = platform::sweep_unrecorded_instances_if_local(&config);
        if swept > 0 {
            tracing::warn!(
                swept,
                "stopped instance programs a killed consumer left unrecorded"
            );
        }
        let runtime = platform::runtime(&config)
            .await
            .or_exit(Exit::Unavailable)?;
        let settings = fctf_workers::consumer::ConsumerSettings::from_config(&config);
        let metrics = std::sync::Arc::new(fctf_workers::consumer::ConsumerMetrics::default());
        let counted = metrics.clone();
        serve_metrics(
            &config.consumer.metrics_listen,
            std::sync::Arc::new(move || counted.snapshot().to_prometheus()),
        )
        .await?;
        fctf_workers::consumer::run_with_metrics(
            queue,
            store,
            runtime,
            settings,
            metrics,
            shutdown_signal(),
        )
        .await
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("running the Deployment Consumer"))
        .or_exit(Exit::Software)
    })?;
    Ok(Exit::Ok)
}

/// `fctf contestant -c FILE`: the Contestant Service (players' and admins' API on
/// `[contestant].listen`, health and metrics on `admin_listen`) until a signal. It reaches the
/// Deployment Center over signed HTTP (`[contestant].deployment_center_url`).
pub fn contestant(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load_shared(args, "contestant")?;
    block_on(async {
        let store = platform::store(&config).await.or_exit(Exit::Unavailable)?;
        let db = platform::database(&config)
            .await
            .or_exit(Exit::Unavailable)?;
        let client = fctf_control::deployment::client::DeploymentClient::from_config(&config)
            .map_err(anyhow::Error::from)
            .map_err(|e| e.context("configuring the Deployment Center client"))
            .or_exit(Exit::InvalidInput)?;
        fctf_control::contestant::run(
            std::sync::Arc::new(config),
            db,
            store,
            std::sync::Arc::new(client),
            shutdown_signal(),
        )
        .await
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("running the Contestant Service"))
        .or_exit(Exit::Software)
    })?;
    Ok(Exit::Ok)
}

/// `fctf listener -c FILE`: the Deployment Listener until a signal.
pub fn listener(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load_shared(args, "listener")?;
    block_on(async {
        let store = platform::store(&config).await.or_exit(Exit::Unavailable)?;
        let db = platform::database(&config)
            .await
            .or_exit(Exit::Unavailable)?;
        let runtime = platform::runtime(&config)
            .await
            .or_exit(Exit::Unavailable)?;
        // The contest end is read from the contest settings in the database.
        let contest = platform::contest_window(&config, db.clone());
        let feed = platform::change_feed(&config, &runtime)
            .await
            .or_exit(Exit::Unavailable)?;
        let metrics = std::sync::Arc::new(fctf_workers::listener::ListenerMetrics::default());
        let counted = metrics.clone();
        serve_metrics(
            &config.listener.metrics_listen,
            std::sync::Arc::new(move || counted.snapshot().to_prometheus()),
        )
        .await?;
        fctf_workers::listener::run_with_metrics(
            runtime,
            store,
            db,
            contest,
            feed,
            config.listener.clone(),
            metrics,
            shutdown_signal(),
        )
        .await;
        Ok(())
    })?;
    Ok(Exit::Ok)
}

/// Binds a worker role's `/metrics` on `listen` (exit 69 when it cannot) and serves it for the
/// rest of the process.
async fn serve_metrics(listen: &str, render: fctf_workers::metrics::Render) -> Result<(), Failure> {
    let server = fctf_workers::metrics::MetricsServer::bind(listen)
        .await
        .map_err(|e| anyhow!("binding the metrics listener {listen}: {e}"))
        .or_exit(Exit::Unavailable)?;
    tokio::spawn(server.serve(render, std::future::pending()));
    Ok(())
}

/// A role that runs as a process of its own must share its state with the others: the
/// in-process store and queue (and generated keys) of the embedded default cannot be shared, so
/// such a config is refused (exit 64) rather than run as an island.
fn load_shared(args: &RoleArgs, role: &str) -> Result<Config, Failure> {
    let config = load(args, role)?;
    if config.is_embedded() {
        return Err(Failure {
            code: Exit::InvalidInput,
            error: anyhow!(
                "`fctf {role}` runs as a process of its own and needs the shared backends: set \
                 [store] backend = \"redis\" and [queue] backend = \"rabbitmq\" (with their keys), \
                 or run the whole platform in one process with `fctf up`"
            ),
        });
    }
    Ok(config)
}

/// Runs `work` on a multi-threaded Tokio runtime.
pub(crate) fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .or_exit(Exit::Software)?
        .block_on(work)
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C): the role then stops taking work, finishes
/// what is in flight and exits 0.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
