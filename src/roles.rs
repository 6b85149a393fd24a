//! The roles: each loads its config (every mistake listed, exit 64) and runs until a signal.
//! The roles that are not built yet say so and exit 69, never pretending to run.

use anyhow::anyhow;
use fctf_core::config::{self, Config, ProcessSource};
use fctf_core::db::Database;

use crate::check_config;
use crate::cli::RoleArgs;
use crate::outcome::{Exit, Failure, OrExit as _};

/// `fctf gateway -c FILE`: the Challenge Gateway until a signal stops it.
pub fn gateway(args: &RoleArgs) -> Result<Exit, Failure> {
    let config = load(args, "gateway")?;
    fctf_gateway::server::run_from_config(&config)
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("running the gateway"))
        .or_exit(Exit::Software)?;
    Ok(Exit::Ok)
}

/// The role's config file with the process's `FCTF_*` overrides, or exit 64 with every mistake.
fn load(args: &RoleArgs, role: &str) -> Result<Config, Failure> {
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

/// Tells the user that `fctf <role>` does not exist yet and which issue builds it.
pub fn not_built(role: &str, issue: u32, args: &RoleArgs) -> Exit {
    let config = match &args.config {
        Some(path) => format!(" ({} was not read)", path.display()),
        None => String::new(),
    };
    eprintln!("`fctf {role}` is not built yet (see issue {issue}); nothing was started{config}");
    Exit::Unavailable
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
