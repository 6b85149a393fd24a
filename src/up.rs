//! `fctf up`: the whole platform in one process: the Challenge Gateway (HTTP and TCP), the
//! Contestant Service, the Deployment Center, the Deployment Consumer and the Deployment
//! Listener.
//!
//! Without `-c` it runs on the embedded default (a SQLite file under `data/`, the in-process
//! store and queue, the local runtime, keys generated at each start), on loopback, with demo
//! content seeded on first start: an admin, a demo player and three challenges (a static flag,
//! an HTTP instance and a TCP instance whose programs are this binary's `demo-challenge`). With
//! `-c FILE` the same single process runs on the backends the file names (Redis, RabbitMQ,
//! MariaDB). `FCTF_*` variables override either, as for every role.
//!
//! Ctrl-C (or SIGTERM) stops taking work, stops every instance this process runs (closing their
//! tracking rows) and exits 0. Instances left by a process that was killed are found in the
//! local runtime's state directory at the next start and reconciled by the listener, so none is
//! leaked: one that was Running has an open tracking row, from which its state record is
//! rebuilt (re-adopted, counted once in its team's quota, reachable with a token from the status
//! API: keys are generated at each start, so old tokens are refused); one that was still
//! starting has neither row nor record any more and is removed as a ghost after
//! `[listener].ghost_grace_secs`. A program the killed process spawned but had not yet recorded
//! (its state file is written just after the spawn) cannot be adopted: it is found by its
//! working directory and stopped before anything starts. `tests/it/restart.rs` checks all three.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fctf_control::contestant::{self, AppState, accounts::bootstrap};
use fctf_control::deployment::center::DeploymentCenter;
use fctf_control::deployment::contract::DeploymentControl;
use fctf_core::config::{self, Config, ProcessSource, RuntimeKind};
use fctf_core::db::Database;
use fctf_core::runtime::InstanceRuntime;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::cli::RoleArgs;
use crate::outcome::{Exit, Failure, OrExit as _};
use crate::{check_config, platform, roles};

/// The embedded default's listeners: loopback, so a laptop's contest is not a LAN service unless
/// a config file says so.
const EMBEDDED: &str = "\
[gateway]
http_listen = \"127.0.0.1:8080\"
tcp_listen = \"127.0.0.1:1337\"

[contestant]
listen = \"127.0.0.1:8000\"
";

/// The names of the accounts seeded on first start.
pub const ADMIN_NAME: &str = "admin";
pub const DEMO_PLAYER: &str = "demo";
pub const DEMO_TEAM: &str = "demo-team";

/// `fctf up [-c FILE]`.
pub fn up(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = match &args.config {
        Some(_) => roles::load(args, "up")?,
        None => config::load(EMBEDDED, &ProcessSource).map_err(|errors| Failure {
            code: Exit::InvalidInput,
            error: anyhow!(
                "{}",
                check_config::mistakes(std::path::Path::new("(embedded default)"), &errors)
            ),
        })?,
    };
    roles::block_on(run(config))?;
    Ok(Exit::Ok)
}

async fn run(config: Config) -> Result<(), Failure> {
    let store = platform::store(&config).await.or_exit(Exit::Unavailable)?;
    let queue = platform::queue(&config).await.or_exit(Exit::Unavailable)?;
    let db = platform::database(&config)
        .await
        .or_exit(Exit::Unavailable)?;
    // Before the runtime deploys anything: what a killed predecessor spawned but never
    // recorded cannot be adopted, so it is stopped here rather than leaked.
    let swept = platform::sweep_unrecorded_instances_if_local(&config);
    if swept > 0 {
        eprintln!("fctf up: stopped {swept} instance program(s) left unrecorded by a killed run");
    }
    let runtime = platform::runtime(&config)
        .await
        .or_exit(Exit::Unavailable)?;
    let feed = platform::change_feed(&config, &runtime)
        .await
        .or_exit(Exit::Unavailable)?;
    let center =
        DeploymentCenter::from_config(&config, store.clone(), queue.clone(), Some(runtime.clone()))
            .context("building the Deployment Center")
            .or_exit(Exit::InvalidInput)?;
    let deployment: Arc<dyn DeploymentControl> = Arc::new(center);
    let shared = Arc::new(config.clone());
    let state = AppState::new(db.clone(), store.clone(), shared, deployment)
        .await
        .map_err(|e| anyhow!("starting the Contestant Service: {}", e.message))
        .or_exit(Exit::Software)?;

    let seeded = seed(&state, &config).await.or_exit(Exit::Software)?;

    let api = tokio::net::TcpListener::bind(&config.contestant.listen)
        .await
        .with_context(|| {
            format!(
                "binding the Contestant Service to {}",
                config.contestant.listen
            )
        })
        .or_exit(Exit::Software)?;
    let api_admin = tokio::net::TcpListener::bind(&config.contestant.admin_listen)
        .await
        .with_context(|| {
            format!(
                "binding the Contestant Service's admin listener to {}",
                config.contestant.admin_listen
            )
        })
        .or_exit(Exit::Software)?;
    let options = fctf_gateway::server::GatewayOptions::from_config(&config, store.clone())
        .context("configuring the gateway")
        .or_exit(Exit::InvalidInput)?;
    let gateway = fctf_gateway::server::spawn(options)
        .context("starting the gateway")
        .or_exit(Exit::Software)?;

    let (stop, stopped) = watch::channel(false);
    let consumer = tokio::spawn(fctf_workers::consumer::run(
        queue.clone(),
        store.clone(),
        runtime.clone(),
        fctf_workers::consumer::ConsumerSettings::from_config(&config),
        until(stopped.clone()),
    ));
    let listener = tokio::spawn(fctf_workers::listener::run(
        runtime.clone(),
        store.clone(),
        db.clone(),
        platform::contest_window(&config, db.clone()),
        feed,
        config.listener.clone(),
        until(stopped.clone()),
    ));
    let serving = tokio::spawn(contestant::serve(
        api,
        Some(api_admin),
        state,
        until(stopped.clone()),
    ));

    println!("{}", banner(&config, &seeded));

    roles::shutdown_signal().await;
    eprintln!("fctf up: stopping (instances are stopped first; Ctrl-C again does not hurry this)");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), listener).await;
    stop_instances(runtime.as_ref(), &db).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    gateway.stop();
    db.close().await;
    eprintln!("fctf up: stopped");
    Ok(())
}

/// Resolves once `stop` turns true.
async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Removes every instance the runtime holds and closes its tracking row: on the embedded default
/// they are this process's children and would otherwise outlive it. A shared runtime
/// (Kubernetes) is left alone: its instances belong to the deployment, not to this process.
async fn stop_instances(runtime: &dyn InstanceRuntime, db: &Database) {
    if runtime.kind() != "local" {
        return;
    }
    let Ok(observed) = runtime.snapshot().await else {
        eprintln!("fctf up: could not list instances to stop them");
        return;
    };
    let now = i64::try_from(fctf_core::clock::unix_now_millis()).unwrap_or(i64::MAX);
    for instance in observed {
        if let Err(e) = runtime.remove(&instance.id).await {
            eprintln!("fctf up: stopping instance {}: {e}", instance.id.instance);
        }
        let _ = db
            .tracking_close(instance.id.instance, now, "the platform stopped")
            .await;
    }
}

/// What was seeded, for the banner.
#[derive(Debug)]
struct Seeded {
    admin: bootstrap::Account,
    admin_token: String,
    player: bootstrap::Account,
    challenges: Vec<String>,
}

/// First-start content: the admin (and a fresh API token), the demo player, the demo challenges
/// (imported through the admin API as `challenge.yml`, so by name: a restart updates them).
async fn seed(state: &AppState, config: &Config) -> anyhow::Result<Seeded> {
    let (admin, admin_token) = bootstrap::ensure_admin(state, ADMIN_NAME)
        .await
        .map_err(|e| anyhow!("creating the admin account: {}", e.message))?;
    let player = bootstrap::ensure_player(state, DEMO_PLAYER, DEMO_TEAM)
        .await
        .map_err(|e| anyhow!("creating the demo player: {}", e.message))?;
    let mut challenges = Vec::new();
    // Instance challenges need the local runtime, which runs this binary's demo programs.
    let with_instances = config.runtime.kind == RuntimeKind::Local;
    let exe = std::env::current_exe().context("finding this program's path")?;
    for (name, yml) in demo_challenges(&exe.display().to_string(), with_instances) {
        let request = Request::post("/api/v1/challenges/import")
            .header(header::AUTHORIZATION, format!("Token {admin_token}"))
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(Body::from(yml))
            .context("building the import request")?;
        let response = contestant::router(state.clone())
            .oneshot(request)
            .await
            .context("importing a demo challenge")?;
        if response.status() != StatusCode::OK && response.status() != StatusCode::CREATED {
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            anyhow::bail!(
                "importing the demo challenge {name:?} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        challenges.push(name.to_owned());
    }
    Ok(Seeded {
        admin,
        admin_token,
        player,
        challenges,
    })
}

/// The demo challenges as ctfcli `challenge.yml` documents.
fn demo_challenges(exe: &str, with_instances: bool) -> Vec<(&'static str, String)> {
    let exe = serde_json::to_string(exe).unwrap_or_else(|_| "\"fctf\"".to_owned());
    let mut all = vec![(
        "Warm-up",
        "name: Warm-up\ncategory: intro\nvalue: 100\n\
         description: \"Every flag looks like `FCTF{...}`. This one is `FCTF{welcome_to_fctf}`: **submit it**.\"\n\
         flags:\n  - FCTF{welcome_to_fctf}\n"
            .to_owned(),
    )];
    if with_instances {
        all.push((
            "Demo web",
            format!(
                "name: Demo web\ncategory: web\nvalue: 200\nprotocol: http\n\
                 description: \"Start your instance, open it, and find the flag on its web site. \
                 Your team's flag is its own.\"\n\
                 extra:\n  command: [{exe}, \"demo-challenge\", \"http\"]\n  team_flag: true\n  lifetime_secs: 1800\n"
            ),
        ));
        all.push((
            "Demo shell",
            format!(
                "name: Demo shell\ncategory: pwn\nvalue: 300\nprotocol: tcp\n\
                 description: \"Start your instance, connect with nc, send the token line, then ask \
                 the service for the flag.\"\n\
                 extra:\n  command: [{exe}, \"demo-challenge\", \"tcp\"]\n  team_flag: true\n  lifetime_secs: 1800\n"
            ),
        ));
    }
    all
}

fn banner(config: &Config, seeded: &Seeded) -> String {
    let where_ = if config.is_embedded() {
        format!(
            "embedded default: {}, in-process store and queue, {} runtime",
            config.database.url.redacted(),
            config.runtime.kind
        )
    } else {
        format!(
            "store {}, queue {}, database {}, {} runtime",
            config.store.backend,
            config.queue.backend,
            config.database.url.redacted(),
            config.runtime.kind
        )
    };
    // With a certificate, both gateway ports take TLS and plain text alike.
    let tls = config.gateway.tls_cert_file.is_set();
    let password = |account: &bootstrap::Account| match &account.new_password {
        Some(password) => format!("{} / {password}  (shown once)", account.name),
        None => format!("{} (password as shown at first start)", account.name),
    };
    format!(
        "FCTF is up ({where_}).\n\
         \n  Players' portal   http://{api}/\
         \n  Players' API      http://{api}/api/v1/\
         \n  Gateway (HTTP)    http://{http}/{https}\
         \n  Gateway (TCP)     nc {tcp_host} {tcp_port}{tcp_tls}\
         \n  Admin login       {admin}\
         \n  Admin API token   {token}\
         \n  Demo player       {player} (team {team})\
         \n  Challenges        {challenges}\
         \n\nStop with Ctrl-C.",
        api = config.contestant.listen,
        http = config.gateway.http_listen,
        https = if tls {
            format!(" and https://{}/", config.gateway.http_listen)
        } else {
            String::new()
        },
        tcp_tls = if tls { " (or over TLS)" } else { "" },
        tcp_host = config.deployment.public_tcp_host,
        tcp_port = config.deployment.public_tcp_port,
        admin = password(&seeded.admin),
        token = seeded.admin_token,
        player = password(&seeded.player),
        team = DEMO_TEAM,
        challenges = seeded.challenges.join(", "),
    )
}
