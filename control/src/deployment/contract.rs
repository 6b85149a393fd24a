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

// ---- wire-only types: bodies of the routes that have no single contract type ----

/// Paths of the Deployment Center's routes. Every route is `POST` with a JSON body and a
/// `[signing]` signature over the exact bytes, so one signer serves them all.
pub mod paths {
    /// Body [`StartRequest`](super::StartRequest), answer [`InstanceStatus`](super::InstanceStatus).
    pub const START: &str = "/v1/instances/start";
    /// Body [`InstanceTarget`](super::InstanceTarget), answer `InstanceStatus`.
    pub const STOP: &str = "/v1/instances/stop";
    /// Body [`StopAllRequest`](super::StopAllRequest), answer [`StopAllResponse`](super::StopAllResponse).
    pub const STOP_ALL: &str = "/v1/instances/stop-all";
    /// Body [`InstanceTarget`](super::InstanceTarget), answer `InstanceStatus`.
    pub const STATUS: &str = "/v1/instances/status";
    /// Body [`ExtendRequest`](super::ExtendRequest), answer `InstanceStatus`.
    pub const EXTEND: &str = "/v1/instances/extend";
    /// Body [`ListRequest`](super::ListRequest), answer a JSON array of `InstanceStatus`.
    pub const LIST: &str = "/v1/instances/list";
    /// Body [`LogsRequest`](super::LogsRequest), answer [`LogsResponse`](super::LogsResponse).
    pub const LOGS: &str = "/v1/instances/logs";
    /// Body [`WorkflowCallback`](super::WorkflowCallback), answer `InstanceStatus`.
    pub const WORKFLOW_CALLBACK: &str = "/v1/workflows/callback";
    /// Body [`BuildRequest`](super::BuildRequest), answer [`BuildRef`](super::BuildRef): submits
    /// an image build (`up-challenge-template`).
    pub const BUILD: &str = "/v1/builds";
    /// Body [`WorkflowRequest`](super::WorkflowRequest), answer
    /// [`WorkflowStatus`](super::WorkflowStatus).
    pub const WORKFLOW_STATUS: &str = "/v1/workflows/status";
    /// Body [`BuildLogsRequest`](super::BuildLogsRequest), answer
    /// [`LogsResponse`](super::LogsResponse): the build step's output.
    pub const BUILD_LOGS: &str = "/v1/builds/logs";
}

/// Body of [`paths::LIST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    #[serde(default)]
    pub team: Option<TeamId>,
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
}

/// Body of [`paths::STOP_ALL`] (empty today; an object so fields can be added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAllRequest {}

/// Answer of [`paths::STOP_ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAllResponse {
    /// How many instances were moved to Stopping.
    pub requested: u32,
}

/// Body of [`paths::LOGS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub target: InstanceTarget,
    pub tail: u32,
}

/// Answer of [`paths::LOGS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    pub logs: String,
}

/// How a workflow ended, in Argo's words (`{{workflow.status}}` of an exit hook).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowPhase {
    Succeeded,
    Failed,
    Error,
}

/// Body of [`paths::WORKFLOW_CALLBACK`]: what a deployment workflow's exit hook posts (signed
/// like every other call). Flat, so a shell step can write it with `printf`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCallback {
    pub team: TeamId,
    pub challenge: ChallengeId,
    /// The instance the workflow deployed; a callback for an older instance changes nothing.
    pub instance: InstanceId,
    /// The workflow's name (for logs).
    pub workflow: String,
    pub status: WorkflowPhase,
    /// Argo's message for a failed workflow, if any.
    #[serde(default)]
    pub message: Option<String>,
}

// ---- image builds (admin; answered only when the Deployment Center has an image builder) ----

pub use fctf_core::builds::{BuildRef, BuildRequest, WorkflowNode, WorkflowStatus};

/// Body of [`paths::WORKFLOW_STATUS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRequest {
    /// The workflow's name (a [`BuildRef::workflow`], or a deployment workflow's).
    pub workflow: String,
}

/// Body of [`paths::BUILD_LOGS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLogsRequest {
    pub workflow: String,
    pub tail: u32,
}
