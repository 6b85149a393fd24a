//! The image-build routes of the Deployment Center: submit a build, read a workflow's status,
//! read a build's logs, each through the [`ImageBuilder`] the process was given (Argo's, when
//! `[runtime].kind = "argo"`). Without one they answer 503, so the routes exist on every
//! Deployment Center and say why they cannot work.
//!
//! The builder lives in this router's own state, next to the center rather than inside it, so
//! a center without builds is unchanged. The routes are signed like every other one
//! ([`super::routes::router_with_builder`] puts them behind the same check).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use fctf_core::builds::{BuildError, ImageBuilder, check_workflow_name};

use super::MAX_LOG_TAIL;
use super::contract::{
    BuildLogsRequest, BuildRef, BuildRequest, LogsResponse, WorkflowRequest, WorkflowStatus, paths,
};
use crate::error::{ApiError, ErrorKind};

/// The state of the build routes: the builder, if this process has one.
#[derive(Clone, Debug)]
struct Builds {
    builder: Option<Arc<dyn ImageBuilder>>,
}

impl Builds {
    fn builder(&self) -> Result<&Arc<dyn ImageBuilder>, ApiError> {
        self.builder.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unavailable,
                "Image builds and workflow status are not available: this Deployment Center \
                 runs without an image builder (it needs [runtime].kind = \"argo\").",
            )
        })
    }
}

/// The three build routes on `builder` (unsigned here: the caller adds the signature check).
pub fn routes<S>(builder: Option<Arc<dyn ImageBuilder>>) -> Router<S> {
    Router::new()
        .route(paths::BUILD, post(submit))
        .route(paths::WORKFLOW_STATUS, post(workflow_status))
        .route(paths::BUILD_LOGS, post(build_logs))
        .with_state(Builds { builder })
}

/// The answer for a builder's error, in the one error shape.
pub fn build_error(e: BuildError) -> ApiError {
    match e {
        BuildError::Invalid(message) => ApiError::bad_request(message),
        BuildError::NotFound(message) => ApiError::not_found(capitalized(&message)),
        BuildError::Conflict(message) => ApiError::conflict(capitalized(&message)),
        BuildError::Rejected(message) => ApiError::new(
            ErrorKind::Unprocessable,
            format!("The cluster refused the build: {message}"),
        ),
        e @ BuildError::Unavailable(_) => ApiError::unavailable("image builder", &e),
    }
}

fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(chars.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}")))
}

async fn submit(State(builds): State<Builds>, body: Bytes) -> Result<Json<BuildRef>, ApiError> {
    let builder = builds.builder()?;
    let request: BuildRequest = decode(&body)?;
    request.validate().map_err(build_error)?;
    let submitted = builder.submit_build(&request).await.map_err(build_error)?;
    tracing::info!(
        challenge = %request.challenge, preview = %request.preview,
        workflow = %submitted.workflow, created = submitted.created, "image build submitted"
    );
    Ok(Json(submitted))
}

async fn workflow_status(
    State(builds): State<Builds>,
    body: Bytes,
) -> Result<Json<WorkflowStatus>, ApiError> {
    let builder = builds.builder()?;
    let request: WorkflowRequest = decode(&body)?;
    check_workflow_name(&request.workflow).map_err(build_error)?;
    Ok(Json(
        builder
            .workflow_status(&request.workflow)
            .await
            .map_err(build_error)?,
    ))
}

async fn build_logs(
    State(builds): State<Builds>,
    body: Bytes,
) -> Result<Json<LogsResponse>, ApiError> {
    let builder = builds.builder()?;
    let request: BuildLogsRequest = decode(&body)?;
    check_workflow_name(&request.workflow).map_err(build_error)?;
    let logs = builder
        .build_logs(&request.workflow, request.tail.min(MAX_LOG_TAIL))
        .await
        .map_err(build_error)?;
    Ok(Json(LogsResponse { logs }))
}
