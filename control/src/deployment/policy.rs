//! The Deployment Center's decisions as pure functions of a record, the rules and `now`: how long
//! an instance may live, whether an extension is allowed, where a job stands in the queue, what a
//! player is told and which token they get. The async adapters in `center` only read, call these
//! and write.

use std::time::Duration;

use fctf_core::config::DeploymentConfig;
use fctf_core::ids::InstanceId;
use fctf_core::store::{DeploymentRecord, DeploymentState};
use fctf_core::token::Claims;

use super::contract::{Access, InstanceKey, InstanceStatus};

/// The extension rules of `[deployment]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionRules {
    /// Time one extension adds, ms.
    pub add_ms: u64,
    /// Extensions open this long before the instance expires, ms.
    pub window_ms: u64,
    /// Extensions allowed per instance.
    pub max: u32,
}

impl ExtensionRules {
    /// The rules configured in `[deployment]`.
    pub fn from_config(config: &DeploymentConfig) -> Self {
        Self {
            add_ms: config.extend_secs.saturating_mul(1000),
            window_ms: config.extend_window_secs.saturating_mul(1000),
            max: config.extend_max,
        }
    }
}

/// Why an extension is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtendRefusal {
    /// Only a Running instance with a known expiry can be extended.
    #[error("Only a running instance can be extended.")]
    NotRunning,
    /// Its lifetime is already over.
    #[error("This instance has already expired.")]
    Expired,
    /// Outside the window at the end of the lifetime.
    #[error(
        "Extensions open in the last {window_mins} minutes of an instance; try again in {opens_in_secs} s."
    )]
    TooEarly {
        window_mins: u64,
        opens_in_secs: u64,
    },
    /// Every allowed extension was used.
    #[error("This instance was already extended {max} times, the most allowed.")]
    LimitReached { max: u32 },
    /// The contest ends before (or when) the instance does: nothing to add.
    #[error("The contest ends before this instance could get more time.")]
    ContestEnds,
}

/// The new expiry (Unix ms) of `record` extended at `now_ms` after `used` extensions, or why
/// not. Never past `contest_ends_at_ms`.
pub fn extension(
    rules: ExtensionRules,
    record: &DeploymentRecord,
    used: u64,
    now_ms: u64,
    contest_ends_at_ms: Option<u64>,
) -> Result<u64, ExtendRefusal> {
    let expires = match (record.state, record.expires_at_ms) {
        (DeploymentState::Running, Some(expires)) => expires,
        _ => return Err(ExtendRefusal::NotRunning),
    };
    if expires <= now_ms {
        return Err(ExtendRefusal::Expired);
    }
    let left = expires - now_ms;
    if left > rules.window_ms {
        return Err(ExtendRefusal::TooEarly {
            window_mins: rules.window_ms / 60_000,
            opens_in_secs: (left - rules.window_ms).div_ceil(1000),
        });
    }
    if used >= u64::from(rules.max) {
        return Err(ExtendRefusal::LimitReached { max: rules.max });
    }
    let wanted = expires.saturating_add(rules.add_ms);
    let new_expiry = contest_ends_at_ms.map_or(wanted, |end| wanted.min(end));
    if new_expiry <= expires {
        return Err(ExtendRefusal::ContestEnds);
    }
    Ok(new_expiry)
}

/// The record that undoes an extension of `current`'s instance to `extended_to` (back to
/// `previous`) after the runtime could not move its own deadline, or `None` when there is nothing
/// to undo: the record is no longer Running at that expiry (stopped meanwhile, or extended again
/// by a later request, whose runtime call then carries the newer end).
pub fn extension_rollback(
    current: &DeploymentRecord,
    extended_to: u64,
    previous: Option<u64>,
) -> Option<DeploymentRecord> {
    (current.state == DeploymentState::Running && current.expires_at_ms == Some(extended_to)).then(
        || DeploymentRecord {
            expires_at_ms: previous,
            ..current.clone()
        },
    )
}

/// How long the extension counter of an instance must live after its first increment: the rest
/// of the instance's life after that extension, plus every later extension, plus an hour.
pub fn extension_counter_window(rules: ExtensionRules, now_ms: u64, new_expiry: u64) -> Duration {
    let rest = new_expiry.saturating_sub(now_ms);
    let later = rules.add_ms.saturating_mul(u64::from(rules.max));
    Duration::from_millis(rest.saturating_add(later).saturating_add(3_600_000))
}

/// The contest is over: nothing may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("The contest has ended; instances can no longer be started.")]
pub struct ContestOver;

/// The lifetime (seconds) an instance started at `now_ms` gets: what its challenge asks for,
/// cut so that it ends by the contest end. (It starts running only after its deploy, so it can
/// outlive the end by that delay; stopping all at the end covers the rest.)
pub fn lifetime_secs(
    requested_secs: u64,
    now_ms: u64,
    contest_ends_at_ms: Option<u64>,
) -> Result<u64, ContestOver> {
    match contest_ends_at_ms {
        None => Ok(requested_secs),
        Some(end) => {
            let left_secs = end.saturating_sub(now_ms) / 1000;
            if left_secs == 0 {
                return Err(ContestOver);
            }
            Ok(requested_secs.min(left_secs))
        }
    }
}

/// The order of the queue: by creation time, then by instance id (a total order, so two
/// records created in the same millisecond still get distinct positions).
pub type QueueOrder = (u64, InstanceId);

/// The queue order of every Queued record, sorted: what [`queue_position`] searches.
pub fn queue_order<'a>(records: impl IntoIterator<Item = &'a DeploymentRecord>) -> Vec<QueueOrder> {
    let mut order: Vec<QueueOrder> = records
        .into_iter()
        .filter(|r| r.state == DeploymentState::Queued)
        .map(|r| (r.created_at_ms, r.instance))
        .collect();
    order.sort_unstable();
    order
}

/// How many Queued records come before `record` in `order` (0 = next).
pub fn queue_position(order: &[QueueOrder], record: &DeploymentRecord) -> u32 {
    let ahead = order.partition_point(|entry| *entry < (record.created_at_ms, record.instance));
    u32::try_from(ahead).unwrap_or(u32::MAX)
}

/// The claims of the access token of `record` at `now_ms`: only for a Running instance with a
/// route and time left; the token expires with the instance (rounded down to the second, so
/// never after it).
pub fn token_claims(kid: &str, record: &DeploymentRecord, now_ms: u64) -> Option<Claims> {
    if record.state != DeploymentState::Running {
        return None;
    }
    let route = record.route.clone()?;
    let iat = now_ms / 1000;
    let exp = record.expires_at_ms? / 1000;
    (exp > iat).then(|| Claims {
        kid: kid.to_owned(),
        team: record.team,
        challenge: record.challenge,
        instance: record.instance,
        route,
        iat,
        exp,
    })
}

/// Where players reach the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicEndpoints {
    /// The gateway's HTTP base URL, without a trailing `/`.
    pub http_url: String,
    pub tcp_host: String,
    pub tcp_port: u16,
}

impl PublicEndpoints {
    /// The endpoints configured in `[deployment]`.
    pub fn from_config(config: &DeploymentConfig) -> Self {
        Self {
            http_url: config
                .public_http_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            tcp_host: config.public_tcp_host.clone(),
            tcp_port: config.public_tcp_port,
        }
    }

    /// Ready-to-use connection info for `token` (base64url and `.`: safe in a query as is).
    pub fn access(&self, token: String) -> Access {
        Access {
            http_url: format!("{}/?fctftoken={token}", self.http_url),
            tcp_host: self.tcp_host.clone(),
            tcp_port: self.tcp_port,
            nc: format!("nc {} {}", self.tcp_host, self.tcp_port),
            token,
        }
    }
}

/// What the player is told about `record` at `now_ms`. `queue_position` is given for a Queued
/// record, `extensions_used` for a Running one, `access` once minted.
pub fn describe(
    key: InstanceKey,
    record: Option<&DeploymentRecord>,
    now_ms: u64,
    queue_position: Option<u32>,
    extensions: Option<(u64, u32)>,
    access: Option<Access>,
) -> InstanceStatus {
    let Some(record) = record else {
        return InstanceStatus {
            key,
            instance: None,
            state: None,
            queue_position: None,
            expires_at_ms: None,
            time_left_secs: None,
            extensions_left: None,
            reason: None,
            access: None,
        };
    };
    let running = record.state == DeploymentState::Running;
    let expires_at_ms = record.expires_at_ms.filter(|_| running);
    InstanceStatus {
        key,
        instance: Some(record.instance),
        state: Some(record.state),
        queue_position: queue_position.filter(|_| record.state == DeploymentState::Queued),
        expires_at_ms,
        time_left_secs: expires_at_ms.map(|end| end.saturating_sub(now_ms) / 1000),
        extensions_left: extensions
            .filter(|_| running)
            .map(|(used, max)| u32::try_from(u64::from(max).saturating_sub(used)).unwrap_or(0)),
        reason: record.reason.clone(),
        access: access.filter(|_| running),
    }
}

/// The longest failure reason kept from a workflow callback, in characters.
pub const MAX_REASON_CHARS: usize = 300;

/// A player-readable reason from a failed workflow's message: control characters dropped,
/// bounded length.
pub fn workflow_failure_reason(message: Option<&str>) -> String {
    let detail: String = message
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    let detail = detail.trim();
    if detail.is_empty() {
        "The deployment failed.".to_owned()
    } else {
        format!("The deployment failed: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fctf_core::ids::{ChallengeId, TeamId};

    const RULES: ExtensionRules = ExtensionRules {
        add_ms: 1_800_000,
        window_ms: 900_000,
        max: 2,
    };

    #[test]
    fn a_rollback_undoes_only_the_extension_it_made() {
        let extended = running(2_000);
        assert_eq!(
            extension_rollback(&extended, 2_000, Some(1_000)).map(|r| r.expires_at_ms),
            Some(Some(1_000))
        );
        // Extended again meanwhile: the newer extension stands.
        assert_eq!(
            extension_rollback(&running(3_000), 2_000, Some(1_000)),
            None
        );
        // Stopping meanwhile: nothing to undo.
        let stopping = DeploymentRecord {
            state: DeploymentState::Stopping,
            ..running(2_000)
        };
        assert_eq!(extension_rollback(&stopping, 2_000, Some(1_000)), None);
    }

    fn running(expires: u64) -> DeploymentRecord {
        DeploymentRecord {
            team: TeamId(1),
            challenge: ChallengeId(2),
            instance: InstanceId::new(),
            state: DeploymentState::Running,
            version: 3,
            route: Some("127.0.0.1:4000".to_owned()),
            reason: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: Some(expires),
        }
    }

    #[test]
    fn extension_rules() {
        let now = 10_000_000;
        let rec = running(now + 600_000);
        assert_eq!(extension(RULES, &rec, 0, now, None), Ok(now + 2_400_000));
        assert_eq!(
            extension(RULES, &rec, 0, now, Some(now + 1_000_000)),
            Ok(now + 1_000_000)
        );
        assert_eq!(
            extension(RULES, &rec, 0, now, Some(now + 600_000)),
            Err(ExtendRefusal::ContestEnds)
        );
        assert_eq!(
            extension(RULES, &rec, 2, now, None),
            Err(ExtendRefusal::LimitReached { max: 2 })
        );
        let early = running(now + 1_000_000);
        assert_eq!(
            extension(RULES, &early, 0, now, None),
            Err(ExtendRefusal::TooEarly {
                window_mins: 15,
                opens_in_secs: 100
            })
        );
        assert_eq!(
            extension(RULES, &running(now), 0, now, None),
            Err(ExtendRefusal::Expired)
        );
        let mut queued = running(now + 1);
        queued.state = DeploymentState::Queued;
        assert_eq!(
            extension(RULES, &queued, 0, now, None),
            Err(ExtendRefusal::NotRunning)
        );
    }

    #[test]
    fn lifetime_never_passes_contest_end() {
        assert_eq!(lifetime_secs(3600, 0, None), Ok(3600));
        assert_eq!(lifetime_secs(3600, 0, Some(60_500)), Ok(60));
        assert_eq!(lifetime_secs(3600, 1000, Some(1999)), Err(ContestOver));
        assert_eq!(lifetime_secs(3600, 5000, Some(10)), Err(ContestOver));
    }

    #[test]
    fn queue_position_counts_earlier_queued_records() {
        let mut records: Vec<DeploymentRecord> = (0..4).map(|_| running(1)).collect();
        for (i, r) in records.iter_mut().enumerate() {
            r.state = DeploymentState::Queued;
            r.created_at_ms = 100 * i as u64;
        }
        records[1].state = DeploymentState::Deploying;
        let order = queue_order(&records);
        assert_eq!(order.len(), 3);
        assert_eq!(queue_position(&order, &records[0]), 0);
        assert_eq!(queue_position(&order, &records[2]), 1);
        assert_eq!(queue_position(&order, &records[3]), 2);
    }

    #[test]
    fn token_expires_with_the_instance() {
        let rec = running(5_000_999);
        let claims = token_claims("k1", &rec, 1_000_000).expect("claims");
        assert_eq!((claims.iat, claims.exp), (1000, 5000));
        assert_eq!(token_claims("k1", &rec, 5_000_000), None);
        let mut no_route = rec.clone();
        no_route.route = None;
        assert_eq!(token_claims("k1", &no_route, 0), None);
    }

    #[test]
    fn failure_reason_is_bounded_and_clean() {
        assert_eq!(workflow_failure_reason(None), "The deployment failed.");
        let long = "x\n".repeat(1000);
        let reason = workflow_failure_reason(Some(&long));
        assert!(reason.len() < MAX_REASON_CHARS + 40);
        assert!(!reason.contains('\n'));
    }
}
