//! Challenge image builds, as the control plane sees them: one trait, [`ImageBuilder`], with the
//! Argo implementation in fctf-workers (`up-challenge-template`, Kaniko) and test doubles.
//!
//! The trait is here, not in fctf-workers, for the same reason as
//! [`InstanceRuntime`](crate::runtime::InstanceRuntime): the Deployment Center (fctf-control)
//! serves the build routes, and fctf-control depends only on fctf-core.
//!
//! A build is for an admin preview instance: the build workflow's exit hook posts its status to
//! the Deployment Center's callback naming that instance, so a failed build shows as the preview
//! instance's failure reason.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{ChallengeId, InstanceId, TeamId};

/// Longest context path, Dockerfile path or image reference accepted.
pub const MAX_PATH_LEN: usize = 255;
/// Longest challenge name accepted (it is only shown, never used as a name).
pub const MAX_NAME_LEN: usize = 200;

/// Build a challenge's image from its package and push it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequest {
    pub challenge: ChallengeId,
    /// The challenge's display name (annotated on the workflow for people reading it).
    pub challenge_name: String,
    /// Directory of the challenge package on the challenge-packages NFS share, relative to its
    /// root, holding the Dockerfile.
    pub context: String,
    /// The Dockerfile, relative to `context`; `Dockerfile` when absent.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Where to push, e.g. `registry.example/challenges/web-login:3`.
    pub image: String,
    /// The preview instance the build is for: the exit hook's callback names it.
    pub preview: InstanceId,
    /// The preview instance's team: [`TeamId::PREVIEW`] unless said otherwise.
    #[serde(default = "preview_team")]
    pub team: TeamId,
}

fn preview_team() -> TeamId {
    TeamId::PREVIEW
}

/// The Dockerfile name when a request gives none.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";

impl BuildRequest {
    /// The Dockerfile path, defaulted.
    pub fn dockerfile(&self) -> &str {
        self.dockerfile.as_deref().unwrap_or(DEFAULT_DOCKERFILE)
    }

    /// Checks every field before anything is submitted. The values end up inside a workflow
    /// (a volume `subPath`, Kaniko arguments), so they are held to plain path and image-reference
    /// characters: no `..`, no absolute paths, no whitespace, no template braces.
    pub fn validate(&self) -> Result<(), BuildError> {
        check_relative_path("context", &self.context)?;
        check_relative_path("dockerfile", self.dockerfile())?;
        check_image(&self.image)?;
        if self.challenge_name.trim().is_empty()
            || self.challenge_name.chars().count() > MAX_NAME_LEN
            || self.challenge_name.chars().any(char::is_control)
        {
            return Err(BuildError::Invalid(format!(
                "challenge_name must be 1 to {MAX_NAME_LEN} printable characters"
            )));
        }
        Ok(())
    }
}

fn check_relative_path(field: &str, path: &str) -> Result<(), BuildError> {
    let invalid = |why: &str| Err(BuildError::Invalid(format!("{field} {why}")));
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return invalid(&format!("must be 1 to {MAX_PATH_LEN} bytes"));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return invalid("may hold only letters, digits, '.', '_', '-' and '/'");
    }
    if path.starts_with('/') {
        return invalid("must be relative to the challenge-packages share");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return invalid("must not have empty, '.' or '..' parts");
    }
    Ok(())
}

fn check_image(image: &str) -> Result<(), BuildError> {
    let invalid = |why: &str| Err(BuildError::Invalid(format!("image {why}")));
    if image.is_empty() || image.len() > MAX_PATH_LEN {
        return invalid(&format!("must be 1 to {MAX_PATH_LEN} bytes"));
    }
    if !image
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@'))
    {
        return invalid("may hold only letters, digits and '.', '_', '-', '/', ':', '@'");
    }
    if !image.as_bytes()[0].is_ascii_alphanumeric() {
        return invalid("must start with a letter or digit");
    }
    Ok(())
}

/// Checks a workflow name given by a caller before it goes into an API path or a label
/// selector: a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253).
pub fn check_workflow_name(name: &str) -> Result<(), BuildError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(BuildError::Invalid(
            "workflow must be a Kubernetes object name (lowercase letters, digits, '-', '.')"
                .to_owned(),
        ))
    }
}

/// A submitted build: the workflow that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// The workflow's name (ask [`ImageBuilder::workflow_status`] and
    /// [`ImageBuilder::build_logs`] with it).
    pub workflow: String,
    /// False when the same build had been submitted before (one workflow per preview
    /// instance): nothing new was started.
    pub created: bool,
}

/// A workflow's phase, in Argo's words (a workflow the controller has not picked up yet has no
/// phase: `Pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkflowPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
}

impl WorkflowPhase {
    /// Argo's `status.phase` (empty or absent: not started).
    pub fn parse(phase: Option<&str>) -> Option<Self> {
        Some(match phase.unwrap_or("") {
            "" | "Pending" => Self::Pending,
            "Running" => Self::Running,
            "Succeeded" => Self::Succeeded,
            "Failed" => Self::Failed,
            "Error" => Self::Error,
            _ => return None,
        })
    }

    /// Finished, for good or bad.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Error)
    }
}

/// One step (node) of a workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowNode {
    /// The node's full name (`<workflow>` for the entrypoint, `<workflow>.onExit` for the exit
    /// hook).
    pub name: String,
    pub display_name: String,
    /// Argo's node type (`Pod`, `Steps`, ...).
    pub kind: String,
    /// The template it ran, if any.
    pub template: Option<String>,
    /// Argo's node phase (`Pending`, `Running`, `Succeeded`, `Skipped`, `Failed`, `Error`,
    /// `Omitted`).
    pub phase: String,
    pub message: Option<String>,
    /// Unix milliseconds.
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

/// A workflow's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowStatus {
    pub workflow: String,
    pub phase: WorkflowPhase,
    /// Argo's message (why it failed), if any.
    pub message: Option<String>,
    /// Unix milliseconds.
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// Its steps, by start time.
    pub nodes: Vec<WorkflowNode>,
}

/// Why a builder call failed; callers branch on the variant (HTTP status).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The request is malformed (a field fails [`BuildRequest::validate`]).
    #[error("invalid build request: {0}")]
    Invalid(String),
    /// No such workflow, or it has no build pod (yet, or any more).
    #[error("{0}")]
    NotFound(String),
    /// A different build was already submitted for the same preview instance.
    #[error("{0}")]
    Conflict(String),
    /// The cluster refused the workflow for good.
    #[error("the cluster refused the build: {0}")]
    Rejected(String),
    /// The cluster could not be reached or did not answer (down, 429, 5xx).
    #[error("image builder unavailable: {0}")]
    Unavailable(String),
}

/// Builds challenge images and reports on their workflows.
#[async_trait]
pub trait ImageBuilder: Send + Sync + fmt::Debug {
    /// Validates `request` and submits its build; submitting the same build again answers the
    /// existing workflow (`created: false`).
    async fn submit_build(&self, request: &BuildRequest) -> Result<BuildRef, BuildError>;

    /// The status of the workflow `name` (a build or a deployment workflow).
    async fn workflow_status(&self, name: &str) -> Result<WorkflowStatus, BuildError>;

    /// The last `tail` lines of the build step's output of workflow `name`.
    async fn build_logs(&self, name: &str, tail: u32) -> Result<String, BuildError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BuildRequest {
        BuildRequest {
            challenge: ChallengeId(4),
            challenge_name: "Web Login".to_owned(),
            context: "web/login".to_owned(),
            dockerfile: None,
            image: "registry.example/challenges/web-login:3".to_owned(),
            preview: InstanceId::new(),
            team: TeamId::PREVIEW,
        }
    }

    #[test]
    fn a_plain_request_is_valid() {
        assert_eq!(request().validate(), Ok(()));
        assert_eq!(request().dockerfile(), "Dockerfile");
    }

    #[test]
    fn paths_that_leave_the_share_or_inject_are_refused() {
        for context in [
            "",
            "/etc",
            "../other",
            "web/../../x",
            "web//x",
            "./web",
            "web/{{workflow.name}}",
            "web x",
            "web\n",
        ] {
            let r = BuildRequest {
                context: context.to_owned(),
                ..request()
            };
            assert!(
                matches!(r.validate(), Err(BuildError::Invalid(_))),
                "{context:?}"
            );
        }
        let r = BuildRequest {
            dockerfile: Some("../Dockerfile".to_owned()),
            ..request()
        };
        assert!(matches!(r.validate(), Err(BuildError::Invalid(_))));
    }

    #[test]
    fn image_references_are_plain() {
        for image in ["", "-x", "reg/x:1 --insecure", "reg/{{x}}", ":tag"] {
            let r = BuildRequest {
                image: image.to_owned(),
                ..request()
            };
            assert!(
                matches!(r.validate(), Err(BuildError::Invalid(_))),
                "{image:?}"
            );
        }
        let r = BuildRequest {
            image: "reg.example:5000/c/x@sha256:abc".to_owned(),
            ..request()
        };
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn workflow_names_are_object_names() {
        assert_eq!(check_workflow_name("build-0a1b"), Ok(()));
        for name in [
            "",
            "Build",
            "a/b",
            "a b",
            "-a",
            "a-",
            "a?x=1",
            &"a".repeat(254),
        ] {
            assert!(check_workflow_name(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn the_team_defaults_to_preview_on_the_wire() {
        let mut json = serde_json::to_value(request()).unwrap();
        json.as_object_mut().unwrap().remove("team");
        let back: BuildRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.team, TeamId::PREVIEW);
    }

    #[test]
    fn phases_parse_as_argo_writes_them() {
        assert_eq!(WorkflowPhase::parse(None), Some(WorkflowPhase::Pending));
        assert_eq!(WorkflowPhase::parse(Some("")), Some(WorkflowPhase::Pending));
        assert_eq!(
            WorkflowPhase::parse(Some("Running")),
            Some(WorkflowPhase::Running)
        );
        assert_eq!(
            WorkflowPhase::parse(Some("Error")),
            Some(WorkflowPhase::Error)
        );
        assert_eq!(WorkflowPhase::parse(Some("Skipped")), None);
        assert!(WorkflowPhase::Failed.is_done());
        assert!(!WorkflowPhase::Running.is_done());
    }
}
