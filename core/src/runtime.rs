//! Where instances run, as the control plane sees it: one trait, [`InstanceRuntime`], with
//! three implementations in fctf-workers (`local`, `kubernetes`, `argo`).
//!
//! The trait is here, not in fctf-workers, because three services use it: the Deployment
//! Consumer deploys and removes through it, the Deployment Listener reconciles what it observes,
//! and the Deployment Center reads logs through it. The `fctf` binary builds the runtime named in
//! `[runtime]` and hands the same `Arc<dyn InstanceRuntime>` to each role it runs.
//!
//! Contract (every implementation, checked by the runtime conformance tests in fctf-workers):
//! - **Keyed by instance.** Every object a runtime creates carries the [`InstanceId`]; an
//!   operation on instance *a* never touches instance *b* of the same team and challenge.
//! - **Idempotent.** [`InstanceRuntime::deploy`] of an instance that already exists returns its
//!   placement and creates nothing; [`InstanceRuntime::remove`] of an absent instance is `Ok`.
//! - **Complete snapshots or none.** [`InstanceRuntime::snapshot`] returns everything that runs,
//!   or an error; never a partial list (the reconciler deletes what a snapshot lacks).
//! - **The record's expiry governs, the runtime's deadline is a backstop.** The Deployment
//!   Listener ends an instance once its store record's `expires_at_ms` (set when it turned
//!   Running, moved by extensions) is past. A runtime's own deadline (a Job's
//!   `activeDeadlineSeconds`, the local runtime's kill timer) only ends what the control plane
//!   failed to end, so it must never come before the record's expiry: the Deployment Center moves
//!   it with [`InstanceRuntime::set_deadline`] when it extends an instance, and a runtime may keep
//!   it up to [`DEADLINE_MARGIN`] after the end it was given.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{ChallengeId, InstanceId, TeamId};
use crate::queue::{DeployJob, DeploySpec};

/// How long after the end it was given ([`InstanceRuntime::set_deadline`]) a runtime may still let
/// an instance run: the listener ends it at its record's expiry, so the runtime's own kill is a
/// backstop for when the control plane is down, and must not race the listener.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The identity of one instance lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceRef {
    pub team: TeamId,
    pub challenge: ChallengeId,
    pub instance: InstanceId,
}

impl InstanceRef {
    /// The instance a deploy job is about.
    pub fn of_job(job: &DeployJob) -> Self {
        Self {
            team: job.team,
            challenge: job.challenge,
            instance: job.instance,
        }
    }
}

/// Where the gateway sends an instance's traffic: what goes into
/// [`crate::store::DeploymentRecord::route`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// A namespace name (Kubernetes, Argo) or `host:port` (local).
    pub route: String,
}

/// What an instance is doing, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted by the runtime; not started yet (pod pending, image pulling, process spawning).
    Creating,
    /// Started; `ready` when it accepts connections (readiness probe passed, port open).
    Started { ready: bool },
    /// Ended on its own or was ended (`succeeded`: exit 0 / Job complete).
    Ended { succeeded: bool },
    /// The runtime says it cannot run (for example the pod failed).
    Failed,
}

/// One instance as the runtime sees it, for the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: InstanceRef,
    /// Where it is reachable, once known.
    pub route: Option<String>,
    pub phase: Phase,
    /// Container (or process) restarts so far.
    pub restarts: u32,
    /// Why it is waiting, in the runtime's words (`ImagePullBackOff`, `ErrImagePull`,
    /// `CrashLoopBackOff`, `ContainerCreating`, ...).
    pub waiting_reason: Option<String>,
    /// When the runtime created it (Unix milliseconds).
    pub created_at_ms: u64,
    /// Since when it is in its current phase and readiness (Unix milliseconds).
    pub phase_since_ms: u64,
    /// Lifetime asked for at deploy, so whoever marks it Running can set its expiry.
    pub lifetime: Duration,
    /// A runtime-level deletion is under way (namespace terminating, process killed).
    pub terminating: bool,
}

/// Why a runtime call failed. The consumer retries `Unavailable` with backoff and fails the
/// instance at once on `Rejected`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime could not be reached or did not answer in time (API server down, 429, 5xx).
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The runtime refused this instance for good (a bad spec, a missing image or command); the
    /// message is shown to the player.
    #[error("{0}")]
    Rejected(String),
    /// The instance does not exist (logs of a stopped instance).
    #[error("no such instance")]
    NotFound,
}

/// Result of a runtime call.
pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// A runtime: deploys, removes and observes instances.
#[async_trait]
pub trait InstanceRuntime: Send + Sync + fmt::Debug {
    /// The runtime's name in the config (`local`, `kubernetes`, `argo`).
    fn kind(&self) -> &'static str;

    /// Creates `id`'s objects from `spec`, or finds them already there; returns where it will
    /// be reachable. Returns once the runtime accepted the work, not when it is ready (the
    /// listener sees readiness).
    async fn deploy(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement>;

    /// Deletes `id`'s objects. `Ok` when already gone.
    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()>;

    /// Deployments in progress that count against the consumer's budget (Argo: running
    /// workflows; others: instances still [`Phase::Creating`] or not ready).
    async fn in_progress(&self) -> RuntimeResult<u32>;

    /// Every instance the runtime has, complete, or an error.
    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>>;

    /// The last `tail` lines of the instance's output.
    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String>;

    /// Moves `id`'s own deadline so the runtime does not end it before `ends_at_ms` (Unix
    /// milliseconds; an extension's new expiry). The runtime may end it up to
    /// [`DEADLINE_MARGIN`] later (its backstop), never earlier. Returns once the new deadline is
    /// in force (persisted: a restarted runtime keeps it). [`RuntimeError::NotFound`] when the
    /// instance does not exist (nothing runs that could be ended early; unlike
    /// [`InstanceRuntime::remove`], nothing was achieved either, so the caller is told).
    ///
    /// The default is for runtimes that never end an instance on a timer of their own (test
    /// doubles): there is no deadline to move. Every runtime with a deadline overrides it.
    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        let _ = (id, ends_at_ms);
        Ok(())
    }
}
