//! What the consumer does with one job: a pure function of the job, the state record of its
//! (team, challenge), the time and the number of deliveries so far. The loop around it only
//! reads, acts and settles.

use std::time::Duration;

use fctf_core::queue::{DeployJob, JobKind};
use fctf_core::store::{DeploymentRecord, DeploymentState};

/// The consumer's verdict on one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create the instance (or find it there) and persist the intent (state Deploying with its
    /// route); ack after.
    Deploy,
    /// Remove the instance, then mark it Stopped; ack after.
    Remove,
    /// The job is stale (its reservation's TTL is over) and was not carried out: ack it, remove
    /// whatever a crashed attempt may have created, release the reservation if it is still this
    /// instance's.
    DropExpired,
    /// The record no longer asks for this job (another instance holds the slot, the slot is
    /// empty, or the instance is already past deploying): ack and do nothing. This is what makes
    /// a redelivered or duplicated job harmless.
    DropStale,
    /// Delivered more times than allowed (attempts that crashed the consumer count too):
    /// dead-letter it and fail the instance with `reason`.
    GiveUp { reason: String },
}

/// Decides what to do with `job`, given the record of its (team, challenge), the wall clock
/// `now_ms`, the count of deliveries including this one (`attempts`) and the most deliveries
/// allowed (`limit`).
///
/// - A stop job always removes: removal is keyed by instance, so it can never touch a newer
///   instance, and an instance that was asked to stop must not keep running because the job
///   waited too long.
/// - A start job is carried out only while the record is still this job's instance in state
///   Queued (or Deploying: a consumer crashed after persisting the intent, before acking); the
///   runtime's idempotent deploy then finds the instance instead of creating a second one.
/// - An expired start job is dropped and its reservation released, unless the record shows the
///   job was already carried out (Deploying or later), which expiry does not undo.
pub fn decide(
    job: &DeployJob,
    record: Option<&DeploymentRecord>,
    now_ms: u64,
    attempts: u64,
    limit: u32,
) -> Decision {
    if attempts > u64::from(limit) {
        return Decision::GiveUp {
            reason: format!(
                "The instance could not be {} after {limit} attempts; please try again later.",
                match job.kind {
                    JobKind::Start(_) => "started",
                    JobKind::Stop => "stopped",
                }
            ),
        };
    }
    if matches!(job.kind, JobKind::Stop) {
        return Decision::Remove;
    }
    let expired = job.is_expired(now_ms);
    match record
        .filter(|r| r.instance == job.instance)
        .map(|r| r.state)
    {
        Some(DeploymentState::Queued) if expired => Decision::DropExpired,
        Some(DeploymentState::Queued | DeploymentState::Deploying) => Decision::Deploy,
        // Past deploying: the job was carried out (or the instance ended); never touch it.
        Some(_) => Decision::DropStale,
        None if expired => Decision::DropExpired,
        None => Decision::DropStale,
    }
}

/// The delay before retry number `attempt` (1-based): `base` doubled each attempt, at most
/// `max`.
pub fn backoff(attempt: u64, base: Duration, max: Duration) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(32);
    base.saturating_mul(2_u32.saturating_pow(doublings))
        .min(max)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
    use fctf_core::queue::DeploySpec;
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn spec() -> DeploySpec {
        DeploySpec {
            challenge_name: "web".to_owned(),
            image: None,
            command: Some(vec!["true".to_owned()]),
            container_port: 80,
            cpu_millicores: 100,
            memory_mib: 64,
            use_gvisor: false,
            harden: false,
            lifetime_secs: 60,
            env: BTreeMap::new(),
        }
    }

    fn start() -> DeployJob {
        DeployJob::start(
            TeamId(1),
            ChallengeId(2),
            InstanceId::new(),
            spec(),
            T0,
            Duration::from_secs(60),
        )
    }

    fn record(job: &DeployJob, state: DeploymentState) -> DeploymentRecord {
        DeploymentRecord {
            team: job.team,
            challenge: job.challenge,
            instance: job.instance,
            state,
            version: 1,
            route: None,
            reason: None,
            created_at_ms: T0,
            updated_at_ms: T0,
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_queued_or_deploying_record_of_this_instance_is_deployed() {
        let job = start();
        for state in [DeploymentState::Queued, DeploymentState::Deploying] {
            assert_eq!(
                decide(&job, Some(&record(&job, state)), T0 + 1, 1, 5),
                Decision::Deploy
            );
        }
    }

    #[test]
    fn a_record_past_deploying_or_of_another_instance_drops_the_job() {
        let job = start();
        for state in [
            DeploymentState::Running,
            DeploymentState::Stopping,
            DeploymentState::Stopped,
            DeploymentState::Failed,
        ] {
            assert_eq!(
                decide(&job, Some(&record(&job, state)), T0 + 1, 2, 5),
                Decision::DropStale
            );
        }
        let mut newer = record(&job, DeploymentState::Queued);
        newer.instance = InstanceId::new();
        assert_eq!(
            decide(&job, Some(&newer), T0 + 1, 1, 5),
            Decision::DropStale
        );
        assert_eq!(decide(&job, None, T0 + 1, 1, 5), Decision::DropStale);
    }

    #[test]
    fn an_expired_start_is_dropped_unless_it_was_carried_out() {
        let job = start();
        let queued = record(&job, DeploymentState::Queued);
        let late = job.expires_at_ms;
        assert_eq!(
            decide(&job, Some(&queued), late, 1, 5),
            Decision::DropExpired
        );
        assert_eq!(decide(&job, None, late + 1, 1, 5), Decision::DropExpired);
        let mut other = queued.clone();
        other.instance = InstanceId::new();
        assert_eq!(
            decide(&job, Some(&other), late, 1, 5),
            Decision::DropExpired
        );
        assert_eq!(
            decide(&job, Some(&queued), late - 1, 1, 5),
            Decision::Deploy
        );
        let deploying = record(&job, DeploymentState::Deploying);
        assert_eq!(decide(&job, Some(&deploying), late, 1, 5), Decision::Deploy);
        let running = record(&job, DeploymentState::Running);
        assert_eq!(
            decide(&job, Some(&running), late, 1, 5),
            Decision::DropStale
        );
    }

    #[test]
    fn a_stop_always_removes_even_when_stale() {
        let job = DeployJob::stop(
            TeamId(1),
            ChallengeId(2),
            InstanceId::new(),
            T0,
            Duration::from_secs(60),
        );
        assert_eq!(decide(&job, None, T0 + 1, 1, 5), Decision::Remove);
        assert_eq!(decide(&job, None, T0 + 120_000, 1, 5), Decision::Remove);
        assert!(matches!(
            decide(&job, None, T0, 6, 5),
            Decision::GiveUp { reason } if reason.contains("stopped after 5 attempts")
        ));
    }

    #[test]
    fn past_the_delivery_limit_the_job_is_given_up() {
        let job = start();
        let queued = record(&job, DeploymentState::Queued);
        assert_eq!(decide(&job, Some(&queued), T0, 5, 5), Decision::Deploy);
        assert!(matches!(
            decide(&job, Some(&queued), T0, 6, 5),
            Decision::GiveUp { reason } if reason.contains("started after 5 attempts")
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let delays: Vec<u128> = (1..=6).map(|a| backoff(a, base, max).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(0, base, max), base);
        assert_eq!(backoff(u64::MAX, base, max), max);
    }

    proptest! {
        /// Whatever the inputs, a start job deploys only for its own instance in Queued or
        /// Deploying, before expiry and within the limit.
        #[test]
        fn deploy_only_when_every_guard_holds(
            state_index in 0usize..6,
            same_instance in any::<bool>(),
            has_record in any::<bool>(),
            offset in 0u64..120_000,
            attempts in 0u64..10,
            limit in 1u32..8,
        ) {
            let states = [
                DeploymentState::Queued, DeploymentState::Deploying, DeploymentState::Running,
                DeploymentState::Stopping, DeploymentState::Stopped, DeploymentState::Failed,
            ];
            let job = start();
            let mut rec = record(&job, states[state_index]);
            if !same_instance {
                rec.instance = InstanceId::new();
            }
            let now = T0 + offset;
            let decision = decide(&job, has_record.then_some(&rec), now, attempts, limit);
            let expired = now >= job.expires_at_ms;
            let should_deploy = has_record
                && same_instance
                && (state_index == 0 && !expired || state_index == 1)
                && attempts <= u64::from(limit);
            prop_assert_eq!(decision == Decision::Deploy, should_deploy);
        }
    }
}
