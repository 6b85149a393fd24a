//! `gw_seed`: writes a Running deployment record into a Redis state store, so a gateway
//! benchmark (`benches/gateway/run.sh`) can admit a token minted for that instance without a
//! Deployment Center or a cluster.
//!
//! ```text
//! gw_seed --redis-url redis://127.0.0.1:16379 --key-prefix fctfbench: \
//!         --team 7 --challenge 3 --instance <32 hex> --route 127.0.0.1:18081 [--ttl-secs 3600]
//! ```
//!
//! It goes through the same `StateStore` calls as the real services (reserve, then update to
//! Running), so the record has exactly the layout the gateway reads. An existing record of
//! (team, challenge) is released first: the command can be run again with a new instance id.

use std::process::ExitCode;
use std::time::Duration;

use fctf_core::clock::unix_now_millis;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::store::{
    DeploymentRecord, DeploymentState, RedisStore, Reservation, StateStore, UpdateOutcome,
};

/// What the command line asks for.
#[derive(Debug)]
struct SeedArgs {
    redis_url: String,
    key_prefix: String,
    team: TeamId,
    challenge: ChallengeId,
    instance: InstanceId,
    route: String,
    ttl: Duration,
}

const USAGE: &str = "usage: gw_seed --redis-url URL --key-prefix PREFIX --team N --challenge N \
                     --instance HEX32 --route HOST:PORT [--ttl-secs N]";

/// Parses `--name value` pairs; every flag but `--ttl-secs` is required.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<SeedArgs, String> {
    let (mut redis_url, mut key_prefix, mut team, mut challenge, mut instance, mut route) =
        (None, None, None, None, None, None);
    let mut ttl_secs: u64 = 3600;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value:?}: {what}");
        match flag.as_str() {
            "--redis-url" => redis_url = Some(value),
            "--key-prefix" => key_prefix = Some(value),
            "--team" => team = Some(TeamId(value.parse().map_err(|_| bad("not an integer"))?)),
            "--challenge" => {
                challenge = Some(ChallengeId(
                    value.parse().map_err(|_| bad("not an integer"))?,
                ));
            }
            "--instance" => instance = Some(value.parse().map_err(|e| bad(&format!("{e}")))?),
            "--route" => route = Some(value),
            "--ttl-secs" => ttl_secs = value.parse().map_err(|_| bad("not an integer"))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let missing = |name: &str| format!("missing --{name}");
    Ok(SeedArgs {
        redis_url: redis_url.ok_or_else(|| missing("redis-url"))?,
        key_prefix: key_prefix.ok_or_else(|| missing("key-prefix"))?,
        team: team.ok_or_else(|| missing("team"))?,
        challenge: challenge.ok_or_else(|| missing("challenge"))?,
        instance: instance.ok_or_else(|| missing("instance"))?,
        route: route.ok_or_else(|| missing("route"))?,
        ttl: Duration::from_secs(ttl_secs),
    })
}

/// Reserves the instance and moves it to Running; returns the stored record.
async fn seed(args: &SeedArgs) -> Result<DeploymentRecord, String> {
    let store = RedisStore::connect(&args.redis_url, &args.key_prefix, Duration::from_secs(5))
        .await
        .map_err(|e| format!("connecting to {}: {e}", args.redis_url))?;
    // A record left by an earlier run would block the reservation: release whatever it names.
    if let Some(old) = store
        .get_deployment(args.team, args.challenge)
        .await
        .map_err(|e| format!("reading the old record: {e}"))?
    {
        store
            .release_instance(args.team, args.challenge, old.instance)
            .await
            .map_err(|e| format!("releasing the old record: {e}"))?;
    }
    let now = unix_now_millis();
    let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut record = DeploymentRecord {
        team: args.team,
        challenge: args.challenge,
        instance: args.instance,
        state: DeploymentState::Queued,
        version: 0,
        route: None,
        reason: None,
        created_at_ms: now,
        updated_at_ms: now,
        expires_at_ms: None,
    };
    let reserved = match store
        .reserve_instance(&record, u32::MAX, args.ttl)
        .await
        .map_err(|e| format!("reserving: {e}"))?
    {
        Reservation::Reserved(stored) => stored,
        other => return Err(format!("reserving: unexpected outcome {other:?}")),
    };
    record = DeploymentRecord {
        state: DeploymentState::Running,
        route: Some(args.route.clone()),
        expires_at_ms: Some(now.saturating_add(ttl_ms)),
        ..reserved
    };
    match store
        .update_deployment(&record, args.ttl)
        .await
        .map_err(|e| format!("marking Running: {e}"))?
    {
        UpdateOutcome::Updated(stored) => Ok(stored),
        UpdateOutcome::Conflict(stored) => {
            Err(format!("marking Running: conflict with {stored:?}"))
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("gw_seed: {error}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gw_seed: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(seed(&args)) {
        Ok(stored) => {
            println!(
                "seeded deploy:{}:{} instance {} state {:?} route {:?} version {}",
                stored.team,
                stored.challenge,
                stored.instance,
                stored.state,
                stored.route,
                stored.version
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gw_seed: {error}");
            ExitCode::FAILURE
        }
    }
}
