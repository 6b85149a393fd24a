//! [`RedisStore`]: the state store on Redis, for production.
//!
//! Every operation of more than one command is one Lua script from `lua/` (atomic on the server,
//! timed by Redis's own `TIME`, never by this host's clock); the scripts are sent by SHA
//! (`EVALSHA`) and re-loaded by the `redis` crate when the server answers `NOSCRIPT` (after a
//! restart or `SCRIPT FLUSH`). One multiplexed connection, re-established on its own, carries all
//! calls; each call is bounded by the store's timeout so a dead or frozen Redis costs at most that
//! long and answers [`StoreError::Unavailable`].
//!
//! Every key the store writes carries an expiry: nothing it writes outlives its use.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::gcra::Gcra;
use super::{
    DeploymentRecord, HeldLeases, LeaseOutcome, LeaseRequest, LeaseScope, LockToken, RateDecision,
    RateLimit, Reservation, StateStore, StoreError, StoreResult, UpdateOutcome, keys, ttl,
};
use crate::ids::{ChallengeId, InstanceId, TeamId};

/// Fields of a [`DeploymentRecord`] that the scripts set (version and timestamps on Redis's
/// clock): the JSON sent to them leaves these out.
const STORE_MANAGED_FIELDS: [&str; 3] = ["version", "created_at_ms", "updated_at_ms"];

/// Keys fetched per `SCAN` step and `MGET` when listing deployments.
const SCAN_BATCH: usize = 500;

/// The Lua scripts, hashed once per store.
struct Scripts {
    reserve_instance: Script,
    update_deployment: Script,
    release_instance: Script,
    quota_usage: Script,
    rate_limit: Script,
    rate_take: Script,
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
    lease_acquire_many: Script,
    lease_renew_many: Script,
    lease_release_many: Script,
    lease_count: Script,
    lock_release: Script,
    counter_incr: Script,
    cooldown_begin: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            reserve_instance: Script::new(include_str!("../../../lua/reserve_instance.lua")),
            update_deployment: Script::new(include_str!("../../../lua/update_deployment.lua")),
            release_instance: Script::new(include_str!("../../../lua/release_instance.lua")),
            quota_usage: Script::new(include_str!("../../../lua/quota_usage.lua")),
            rate_limit: Script::new(include_str!("../../../lua/rate_limit.lua")),
            rate_take: Script::new(include_str!("../../../lua/rate_take.lua")),
            lease_acquire: Script::new(include_str!("../../../lua/lease_acquire.lua")),
            lease_renew: Script::new(include_str!("../../../lua/lease_renew.lua")),
            lease_release: Script::new(include_str!("../../../lua/lease_release.lua")),
            lease_acquire_many: Script::new(include_str!("../../../lua/lease_acquire_many.lua")),
            lease_renew_many: Script::new(include_str!("../../../lua/lease_renew_many.lua")),
            lease_release_many: Script::new(include_str!("../../../lua/lease_release_many.lua")),
            lease_count: Script::new(include_str!("../../../lua/lease_count.lua")),
            lock_release: Script::new(include_str!("../../../lua/lock_release.lua")),
            counter_incr: Script::new(include_str!("../../../lua/counter_incr.lua")),
            cooldown_begin: Script::new(include_str!("../../../lua/cooldown_begin.lua")),
        }
    }
}

/// The Redis state store. Share it behind an `Arc`: every call goes through one multiplexed
/// connection.
pub struct RedisStore {
    con: ConnectionManager,
    /// Prepended to every logical key (for example `fctf:`), so several deployments or test
    /// runs can share one Redis.
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    // The connection (and its URL, which may hold a password) stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`) and check that Redis answers.
    /// Every call, this one included, gives up after `timeout` with
    /// [`StoreError::Unavailable`].
    pub async fn connect(url: &str, key_prefix: &str, timeout: Duration) -> StoreResult<Self> {
        let store = Self::connect_lazy(url, key_prefix, timeout)?;
        store.ping().await?;
        Ok(store)
    }

    /// Like [`connect`](Self::connect) but without waiting for Redis: the connection is made
    /// (and re-made) by the calls themselves. For a process that must start, and fall back,
    /// while Redis is down. Must be called within a Tokio runtime.
    pub fn connect_lazy(url: &str, key_prefix: &str, timeout: Duration) -> StoreResult<Self> {
        // The URL is left out of the error: it may hold a password.
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Protocol(format!("invalid Redis URL: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Each call is bounded anyway; a short retry schedule just makes the next call after
            // an outage find a fresh attempt rather than a long backoff.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let con = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| classify("connect", &e))?;
        Ok(Self {
            con,
            prefix: key_prefix.to_owned(),
            timeout,
            scripts: Scripts::new(),
        })
    }

    /// The Redis key of a logical key.
    fn key(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// Await one round trip, bounded by the store's timeout.
    async fn run<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| classify(op, &e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{op}: no answer from Redis within {:?}",
                self.timeout
            ))),
        }
    }
}

/// `Unavailable` for what a caller should treat as "Redis is not there" (I/O, refused, timed
/// out, and the server's own "cannot serve now" answers: loading, busy, out of memory, read-only
/// replica), `Protocol` for everything else.
fn classify(op: &str, err: &RedisError) -> StoreError {
    let server_cannot_serve = matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    ) || matches!(err.code(), Some("OOM" | "BUSY" | "LOADING"));
    if err.is_io_error() || server_cannot_serve {
        StoreError::Unavailable(format!("{op}: {err}"))
    } else {
        StoreError::Protocol(format!("{op}: {err}"))
    }
}

/// The record as the scripts take it: its JSON without the fields they set.
fn record_body(record: &DeploymentRecord) -> StoreResult<String> {
    let mut value = serde_json::to_value(record)
        .map_err(|e| StoreError::Protocol(format!("cannot encode deployment record: {e}")))?;
    let fields = value.as_object_mut().ok_or_else(|| {
        StoreError::Protocol("deployment record does not encode as an object".to_owned())
    })?;
    for field in STORE_MANAGED_FIELDS {
        fields.remove(field);
    }
    // The scripts splice their fields in after the opening brace; other fields always remain.
    debug_assert!(!fields.is_empty());
    Ok(value.to_string())
}

fn decode_record(key: &str, json: &str) -> StoreResult<DeploymentRecord> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("deployment record at {key}: {e}")))
}

fn unexpected(op: &str, reply: &str) -> StoreError {
    StoreError::Protocol(format!("{op}: unexpected script reply {reply:?}"))
}

fn reply_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Escape glob characters so a prefix matches only itself in `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl StateStore for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let mut con = self.con.clone();
        let pong: String = self
            .run("ping", redis::cmd("PING").query_async(&mut con))
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unexpected("ping", &pong))
        }
    }

    async fn reserve_instance(
        &self,
        record: &DeploymentRecord,
        quota: u32,
        ttl: Duration,
    ) -> StoreResult<Reservation> {
        let record_key = self.key(&keys::deployment(record.team, record.challenge));
        let mut call = self.scripts.reserve_instance.prepare_invoke();
        call.key(&record_key)
            .key(self.key(&keys::quota(record.team)))
            .arg(record_body(record)?)
            .arg(record.instance.to_string())
            .arg(quota)
            .arg(ttl::millis(ttl));
        let mut con = self.con.clone();
        let (kind, json, live): (String, Option<String>, i64) = self
            .run("reserve_instance", call.invoke_async(&mut con))
            .await?;
        match (kind.as_str(), json) {
            ("reserved", Some(json)) => {
                Ok(Reservation::Reserved(decode_record(&record_key, &json)?))
            }
            ("active", Some(json)) => Ok(Reservation::AlreadyActive(decode_record(
                &record_key,
                &json,
            )?)),
            ("quota", None) => Ok(Reservation::QuotaExceeded {
                active: reply_u32(live),
            }),
            _ => Err(unexpected("reserve_instance", &kind)),
        }
    }

    async fn update_deployment(
        &self,
        record: &DeploymentRecord,
        ttl: Duration,
    ) -> StoreResult<UpdateOutcome> {
        let record_key = self.key(&keys::deployment(record.team, record.challenge));
        let mut call = self.scripts.update_deployment.prepare_invoke();
        call.key(&record_key)
            .key(self.key(&keys::quota(record.team)))
            .arg(record_body(record)?)
            .arg(record.instance.to_string())
            .arg(record.version)
            .arg(ttl::millis(ttl))
            .arg(if record.state.is_active() { "1" } else { "0" });
        let mut con = self.con.clone();
        let (kind, json): (String, Option<String>) = self
            .run("update_deployment", call.invoke_async(&mut con))
            .await?;
        match (kind.as_str(), json) {
            ("updated", Some(json)) => {
                Ok(UpdateOutcome::Updated(decode_record(&record_key, &json)?))
            }
            ("conflict", None) => Ok(UpdateOutcome::Conflict(None)),
            ("conflict", Some(json)) => Ok(UpdateOutcome::Conflict(Some(decode_record(
                &record_key,
                &json,
            )?))),
            ("corrupt", _) => Err(StoreError::Corrupt(format!(
                "deployment record at {record_key} is not a record"
            ))),
            _ => Err(unexpected("update_deployment", &kind)),
        }
    }

    async fn release_instance(
        &self,
        team: TeamId,
        challenge: ChallengeId,
        instance: InstanceId,
    ) -> StoreResult<bool> {
        let record_key = self.key(&keys::deployment(team, challenge));
        let mut call = self.scripts.release_instance.prepare_invoke();
        call.key(&record_key)
            .key(self.key(&keys::quota(team)))
            .arg(instance.to_string());
        let mut con = self.con.clone();
        let deleted: i64 = self
            .run("release_instance", call.invoke_async(&mut con))
            .await?;
        match deleted {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::Corrupt(format!(
                "deployment record at {record_key} is not a record"
            ))),
        }
    }

    async fn get_deployment(
        &self,
        team: TeamId,
        challenge: ChallengeId,
    ) -> StoreResult<Option<DeploymentRecord>> {
        let record_key = self.key(&keys::deployment(team, challenge));
        let mut con = self.con.clone();
        let json: Option<String> = self
            .run(
                "get_deployment",
                redis::cmd("GET").arg(&record_key).query_async(&mut con),
            )
            .await?;
        json.map(|json| decode_record(&record_key, &json))
            .transpose()
    }

    /// Walks the prefix's records with `SCAN` (never `KEYS`, which blocks the server); each round
    /// trip, not the whole walk, is bounded by the timeout. A record that cannot be decoded is
    /// skipped with a warning: the reconciler could not act on it anyway.
    async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
        let pattern = format!("{}{}*", glob_escape(&self.prefix), keys::DEPLOYMENT_PREFIX);
        let mut con = self.con.clone();
        // SCAN may return a key more than once.
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.cursor_arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, found): (u64, Vec<String>) = self
                .run("list_deployments", scan.query_async(&mut con))
                .await?;
            let fresh: Vec<String> = found
                .into_iter()
                .filter(|key| seen.insert(key.clone()))
                .collect();
            if !fresh.is_empty() {
                let values: Vec<Option<String>> = self
                    .run(
                        "list_deployments",
                        redis::cmd("MGET").arg(&fresh).query_async(&mut con),
                    )
                    .await?;
                for (key, json) in fresh.iter().zip(values) {
                    // Gone between SCAN and MGET: expired or released meanwhile.
                    let Some(json) = json else { continue };
                    match decode_record(key, &json) {
                        Ok(record) => records.push(record),
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping unreadable deployment record")
                        }
                    }
                }
            }
            if next == 0 {
                return Ok(records);
            }
            cursor = next;
        }
    }

    async fn quota_usage(&self, team: TeamId) -> StoreResult<u32> {
        let mut call = self.scripts.quota_usage.prepare_invoke();
        call.key(self.key(&keys::quota(team)));
        let mut con = self.con.clone();
        let live: i64 = self.run("quota_usage", call.invoke_async(&mut con)).await?;
        Ok(reply_u32(live))
    }

    async fn rate_limit(
        &self,
        key: &str,
        limit: RateLimit,
        cost: u32,
    ) -> StoreResult<RateDecision> {
        let gcra = Gcra::new(limit);
        let mut call = self.scripts.rate_limit.prepare_invoke();
        call.key(self.key(&keys::rate_limit(key)))
            .arg(gcra.interval_us())
            .arg(gcra.tolerance_us())
            .arg(cost);
        let mut con = self.con.clone();
        let (allowed, remaining, retry_us): (i64, i64, i64) =
            self.run("rate_limit", call.invoke_async(&mut con)).await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: reply_u32(remaining),
            retry_after: match u64::try_from(retry_us) {
                Ok(us) => Duration::from_micros(us),
                Err(_) => Duration::MAX,
            },
        })
    }

    async fn rate_take(&self, key: &str, limit: RateLimit, max: u32) -> StoreResult<u32> {
        let gcra = Gcra::new(limit);
        let mut call = self.scripts.rate_take.prepare_invoke();
        call.key(self.key(&keys::rate_limit(key)))
            .arg(gcra.interval_us())
            .arg(gcra.tolerance_us())
            .arg(max);
        let mut con = self.con.clone();
        let taken: i64 = self.run("rate_take", call.invoke_async(&mut con)).await?;
        Ok(reply_u32(taken))
    }

    async fn lease_acquire(
        &self,
        scopes: &[LeaseScope<'_>],
        holder: &str,
        ttl: Duration,
    ) -> StoreResult<LeaseOutcome> {
        if scopes.is_empty() {
            return Ok(LeaseOutcome::Acquired);
        }
        let mut call = self.scripts.lease_acquire.prepare_invoke();
        call.arg(holder).arg(ttl::millis(ttl));
        for scope in scopes {
            call.key(self.key(&keys::lease(scope.key))).arg(scope.cap);
        }
        let mut con = self.con.clone();
        let (kind, scope, held): (String, i64, i64) = self
            .run("lease_acquire", call.invoke_async(&mut con))
            .await?;
        match kind.as_str() {
            "acquired" => Ok(LeaseOutcome::Acquired),
            "full" => Ok(LeaseOutcome::Full {
                scope: usize::try_from(scope).map_err(|_| unexpected("lease_acquire", &kind))?,
                held: reply_u32(held),
            }),
            _ => Err(unexpected("lease_acquire", &kind)),
        }
    }

    async fn lease_renew(&self, keys: &[&str], holder: &str, ttl: Duration) -> StoreResult<bool> {
        if keys.is_empty() {
            return Ok(true);
        }
        let mut call = self.scripts.lease_renew.prepare_invoke();
        call.arg(holder).arg(ttl::millis(ttl));
        for key in keys {
            call.key(self.key(&keys::lease(key)));
        }
        let mut con = self.con.clone();
        let renewed: i64 = self.run("lease_renew", call.invoke_async(&mut con)).await?;
        Ok(renewed == 1)
    }

    async fn lease_release(&self, keys: &[&str], holder: &str) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.lease_release.prepare_invoke();
        call.arg(holder);
        for key in keys {
            call.key(self.key(&keys::lease(key)));
        }
        let mut con = self.con.clone();
        let _dropped: i64 = self
            .run("lease_release", call.invoke_async(&mut con))
            .await?;
        Ok(())
    }

    async fn lease_acquire_many(
        &self,
        requests: &[LeaseRequest<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<LeaseOutcome>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.scripts.lease_acquire_many.prepare_invoke();
        call.arg(ttl::millis(ttl));
        for request in requests {
            call.arg(request.holder).arg(request.scopes.len());
            for scope in request.scopes {
                call.key(self.key(&keys::lease(scope.key))).arg(scope.cap);
            }
        }
        let mut con = self.con.clone();
        let reply: Vec<i64> = self
            .run("lease_acquire_many", call.invoke_async(&mut con))
            .await?;
        if reply.len() != 2 * requests.len() {
            return Err(unexpected(
                "lease_acquire_many",
                &format!("{} numbers for {} requests", reply.len(), requests.len()),
            ));
        }
        reply
            .chunks_exact(2)
            .map(|pair| match (pair[0], pair[1]) {
                (-1, _) => Ok(LeaseOutcome::Acquired),
                (scope, held) => Ok(LeaseOutcome::Full {
                    scope: usize::try_from(scope)
                        .map_err(|_| unexpected("lease_acquire_many", &scope.to_string()))?,
                    held: reply_u32(held),
                }),
            })
            .collect()
    }

    async fn lease_renew_many(
        &self,
        held: &[HeldLeases<'_>],
        ttl: Duration,
    ) -> StoreResult<Vec<bool>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.scripts.lease_renew_many.prepare_invoke();
        call.arg(ttl::millis(ttl));
        for h in held {
            call.arg(h.holder).arg(h.keys.len());
            for key in h.keys {
                call.key(self.key(&keys::lease(key)));
            }
        }
        let mut con = self.con.clone();
        let renewed: Vec<i64> = self
            .run("lease_renew_many", call.invoke_async(&mut con))
            .await?;
        if renewed.len() != held.len() {
            return Err(unexpected(
                "lease_renew_many",
                &format!("{} answers for {} holders", renewed.len(), held.len()),
            ));
        }
        Ok(renewed.into_iter().map(|r| r == 1).collect())
    }

    async fn lease_release_many(&self, held: &[HeldLeases<'_>]) -> StoreResult<()> {
        if held.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.lease_release_many.prepare_invoke();
        for h in held {
            call.arg(h.holder).arg(h.keys.len());
            for key in h.keys {
                call.key(self.key(&keys::lease(key)));
            }
        }
        let mut con = self.con.clone();
        let _dropped: i64 = self
            .run("lease_release_many", call.invoke_async(&mut con))
            .await?;
        Ok(())
    }

    async fn lease_count(&self, key: &str) -> StoreResult<u32> {
        let mut call = self.scripts.lease_count.prepare_invoke();
        call.key(self.key(&keys::lease(key)));
        let mut con = self.con.clone();
        let live: i64 = self.run("lease_count", call.invoke_async(&mut con)).await?;
        Ok(reply_u32(live))
    }

    async fn lock_acquire(&self, name: &str, ttl: Duration) -> StoreResult<Option<LockToken>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut set = redis::cmd("SET");
        set.arg(self.key(&keys::lock(name)))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl::millis(ttl));
        let mut con = self.con.clone();
        let reply: Value = self.run("lock_acquire", set.query_async(&mut con)).await?;
        Ok((reply != Value::Nil).then_some(LockToken(token)))
    }

    async fn lock_release(&self, name: &str, token: &LockToken) -> StoreResult<bool> {
        let mut call = self.scripts.lock_release.prepare_invoke();
        call.key(self.key(&keys::lock(name))).arg(&token.0);
        let mut con = self.con.clone();
        let released: i64 = self
            .run("lock_release", call.invoke_async(&mut con))
            .await?;
        Ok(released == 1)
    }

    async fn counter_incr(
        &self,
        key: &str,
        cap: u64,
        window: Duration,
    ) -> StoreResult<Option<u64>> {
        let mut call = self.scripts.counter_incr.prepare_invoke();
        call.key(self.key(&keys::counter(key)))
            .arg(cap)
            .arg(ttl::millis(window));
        let mut con = self.con.clone();
        let value: i64 = self
            .run("counter_incr", call.invoke_async(&mut con))
            .await?;
        // -1 (at the cap) is the only negative reply.
        Ok(u64::try_from(value).ok())
    }

    async fn counter_get(&self, key: &str) -> StoreResult<u64> {
        let mut con = self.con.clone();
        let value: Option<u64> = self
            .run(
                "counter_get",
                redis::cmd("GET")
                    .arg(self.key(&keys::counter(key)))
                    .query_async(&mut con),
            )
            .await?;
        Ok(value.unwrap_or(0))
    }

    async fn counter_reset(&self, key: &str) -> StoreResult<()> {
        let mut con = self.con.clone();
        let _deleted: i64 = self
            .run(
                "counter_reset",
                redis::cmd("DEL")
                    .arg(self.key(&keys::counter(key)))
                    .query_async(&mut con),
            )
            .await?;
        Ok(())
    }

    async fn cooldown_begin(&self, key: &str, period: Duration) -> StoreResult<Option<Duration>> {
        let mut call = self.scripts.cooldown_begin.prepare_invoke();
        call.key(self.key(&keys::cooldown(key)))
            .arg(ttl::millis(period));
        let mut con = self.con.clone();
        let left_ms: i64 = self
            .run("cooldown_begin", call.invoke_async(&mut con))
            .await?;
        // -1 (started) is the only negative reply.
        Ok(u64::try_from(left_ms).ok().map(Duration::from_millis))
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let mut set = redis::cmd("SET");
        set.arg(self.key(&keys::once(key)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl::millis(ttl));
        let mut con = self.con.clone();
        let reply: Value = self.run("remember_once", set.query_async(&mut con)).await?;
        Ok(reply != Value::Nil)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeploymentState;

    #[test]
    fn record_body_leaves_out_exactly_the_store_managed_fields() {
        let record = DeploymentRecord {
            team: TeamId(3),
            challenge: ChallengeId(9),
            instance: InstanceId::new(),
            state: DeploymentState::Queued,
            version: 4,
            route: Some("ns".to_owned()),
            reason: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: None,
        };
        let body = record_body(&record).unwrap();
        assert!(body.starts_with('{') && body.len() > 2);
        for field in STORE_MANAGED_FIELDS {
            assert!(!body.contains(field), "{body}");
        }
        // What the scripts write back is a complete record again.
        let spliced = format!(
            "{{\"version\":5,\"created_at_ms\":7,\"updated_at_ms\":8,{}",
            &body[1..]
        );
        let back = decode_record("k", &spliced).unwrap();
        assert_eq!(
            back,
            DeploymentRecord {
                version: 5,
                created_at_ms: 7,
                updated_at_ms: 8,
                ..record
            }
        );
    }

    #[test]
    fn glob_characters_in_a_prefix_match_only_themselves() {
        assert_eq!(glob_escape("fctf:"), "fctf:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
