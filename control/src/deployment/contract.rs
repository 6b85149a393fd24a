//! What the Contestant Service (and the admin API) ask of the Deployment Center, and what it
//! answers: one trait, [`DeploymentControl`], with two implementations: the Deployment Center
//! itself (in-process, for `fctf up` and tests) and an HTTP client that signs each call with
//! `[signing]` keys (production, where the Deployment Center is its own process).
//!
//! The wire form of every type here is the JSON body of the Deployment Center's routes, so both
//! implementations behave the same and the HTTP one adds only transport errors.

use async_trait::async_trait;
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::DeploySpec;
use fctf_core::store::DeploymentState;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One team's instance slot for one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    pub team: TeamId,
    pub challenge: ChallengeId,
}

/// Start an instance of `key.challenge` for `key.team`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub key: InstanceKey,
    /// The team's instance quota in force (the contest config can change it at runtime).
    pub quota: u32,
    /// What to deploy, from the challenge's metadata; `env` carries the team's dynamic flag
    /// (`FLAG`) for challenges that have one.
    pub spec: DeploySpec,
    /// The contest end (Unix milliseconds), if set: no instance lives past it.
    pub contest_ends_at_ms: Option<u64>,
}

/// Stop, status and logs name the slot, and optionally the exact instance: a stop naming an
/// instance that is no longer the live one does nothing (`Conflict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceTarget {
    pub key: InstanceKey,
    #[serde(default)]
    pub instance: Option<InstanceId>,
}

/// Extend the live instance of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendRequest {
    pub target: InstanceTarget,
    /// The contest end (Unix milliseconds), if set: an extension never passes it.
    pub contest_ends_at_ms: Option<u64>,
}

/// How a player reaches a Running instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The challenge token (also in `http_url` and `nc`).
    pub token: String,
    /// Opens an HTTP instance in a browser: the gateway URL with `?fctftoken=`.
    pub http_url: String,
    /// Host and port of the gateway's TCP listener.
    pub tcp_host: String,
    pub tcp_port: u16,
    /// A ready-to-paste line for a TCP instance: `nc HOST PORT`, then the token as first line.
    pub nc: String,
}

/// What a slot holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub key: InstanceKey,
    /// `None`: no instance (never started, or stopped and forgotten).
    pub instance: Option<InstanceId>,
    pub state: Option<DeploymentState>,
    /// While Queued: jobs ahead of this one (0 = next).
    pub queue_position: Option<u32>,
    /// End of the lifetime (Unix milliseconds), once Running.
    pub expires_at_ms: Option<u64>,
    /// Seconds left, once Running.
    pub time_left_secs: Option<u64>,
    /// Extensions still allowed.
    pub extensions_left: Option<u32>,
    /// Why it failed or was stopped, for the player.
    pub reason: Option<String>,
    /// Only when Running.
    pub access: Option<Access>,
}

/// The control API for instances. Errors are [`ApiError`]s with the kinds the Deployment Center
/// answers: `QuotaExceeded`, `QueueFull` (with `retry_after`), `Unavailable`, `Conflict`,
/// `NotFound`, `BadRequest`.
#[async_trait]
pub trait DeploymentControl: Send + Sync + std::fmt::Debug {
    /// Reserve a quota slot, write the provisional state and publish the start job. Starting a
    /// slot that already has an active instance answers its status (no second instance).
    async fn start(&self, request: &StartRequest) -> Result<InstanceStatus, ApiError>;

    /// Ask for the live instance of the slot to be stopped.
    async fn stop(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError>;

    /// The slot's state; with [`Access`] when Running.
    async fn status(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError>;

    /// Add time to the live instance within the extension rules.
    async fn extend(&self, request: &ExtendRequest) -> Result<InstanceStatus, ApiError>;

    /// Every instance (admin), optionally of one team, `limit` from `offset`, oldest first.
    async fn list(
        &self,
        team: Option<TeamId>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<InstanceStatus>, ApiError>;

    /// Stop every instance (admin, contest end). Returns how many stops were requested.
    async fn stop_all(&self) -> Result<u32, ApiError>;

    /// The last `tail` lines of the instance's output (admin).
    async fn logs(&self, target: &InstanceTarget, tail: u32) -> Result<String, ApiError>;
}
