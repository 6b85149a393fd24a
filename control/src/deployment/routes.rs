//! The Deployment Center over HTTP: every instance route is `POST` with a JSON body (the
//! [`contract`](super::contract) types) and a `[signing]` signature over the exact request bytes
//! (timestamp window and single-use nonce), the workflow callback and the image-build routes
//! included. `/healthz`,
//! `/readyz` and `/metrics` are unsigned (keep the listener on a private network).

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fctf_core::builds::ImageBuilder;
use fctf_core::signing::{self, SignatureError, SignedHeaders};
use serde::de::DeserializeOwned;

use super::DeploymentCenter;
use super::contract::{
    DeploymentControl, ExtendRequest, InstanceStatus, InstanceTarget, ListRequest, LogsRequest,
    LogsResponse, StartRequest, StopAllRequest, StopAllResponse, WorkflowCallback, paths,
};
use crate::error::{ApiError, ErrorKind};

/// Largest request body accepted (a start carries the deploy spec, whose job is bounded at
/// 64 KiB).
pub const MAX_BODY_BYTES: usize = 128 * 1024;

type Center = Arc<DeploymentCenter>;

/// The whole HTTP API of `center`, without an image builder (the build routes answer 503).
pub fn router(center: Center) -> Router {
    router_with_builder(center, None)
}

/// The whole HTTP API of `center`, the build routes served by `builder`
/// ([`builds`](super::builds)).
pub fn router_with_builder(center: Center, builder: Option<Arc<dyn ImageBuilder>>) -> Router {
    let signed = Router::new()
        .route(paths::START, post(start))
        .route(paths::STOP, post(stop))
        .route(paths::STOP_ALL, post(stop_all))
        .route(paths::STATUS, post(status))
        .route(paths::EXTEND, post(extend))
        .route(paths::LIST, post(list))
        .route(paths::LOGS, post(logs))
        .route(paths::WORKFLOW_CALLBACK, post(workflow_callback))
        .merge(super::builds::routes(builder))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&center),
            authenticate,
        ));
    Router::new()
        .merge(signed)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&center),
            count_requests,
        ))
        .with_state(center)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then finishes the requests in
/// flight and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    center: Center,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_builder(listener, center, None, shutdown).await
}

/// [`serve`] with the build routes served by `builder`.
pub async fn serve_with_builder(
    listener: tokio::net::TcpListener,
    center: Center,
    builder: Option<Arc<dyn ImageBuilder>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router_with_builder(center, builder))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Checks the signature of the request over its exact bytes, and its nonce, before the handler
/// sees it. Refusals are 401 (503 when the nonce store cannot answer: fail closed).
async fn authenticate(State(center): State<Center>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body is over {MAX_BODY_BYTES} bytes."),
        )
        .into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let keys = center.keys();
    let checked =
        match SignedHeaders::from_lookup(|name| parts.headers.get(name).map(HeaderValue::as_bytes))
        {
            Ok(headers) => {
                signing::authenticate(
                    &keys.signing,
                    center.store().as_ref(),
                    parts.method.as_str(),
                    path,
                    &bytes,
                    &headers,
                    center.now_ms() / 1000,
                    keys.signing_window,
                )
                .await
            }
            Err(e) => Err(e),
        };
    match checked {
        Ok(verified) => {
            tracing::debug!(kid = verified.kid(), path, "signed request");
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            center.metrics().refusal(&format!("signature_{}", e.kind()));
            match e {
                SignatureError::StoreUnavailable(_) => {
                    ApiError::unavailable("signature check", &e).into_response()
                }
                _ => {
                    tracing::info!(error = %e, path, "refused an unsigned or badly signed request");
                    ApiError::unauthorized(e.reason()).into_response()
                }
            }
        }
    }
}

/// Counts every answer by route template and status.
async fn count_requests(State(center): State<Center>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    center.metrics().request(&route, response.status().as_u16());
    response
}

/// Parses a JSON body into the error shape's `bad_request` on failure.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}")))
}

async fn start(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<InstanceStatus>, ApiError> {
    let request: StartRequest = decode(&body)?;
    Ok(Json(center.start(&request).await?))
}

async fn stop(State(center): State<Center>, body: Bytes) -> Result<Json<InstanceStatus>, ApiError> {
    let target: InstanceTarget = decode(&body)?;
    Ok(Json(center.stop(&target).await?))
}

async fn stop_all(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<StopAllResponse>, ApiError> {
    let _: StopAllRequest = decode(&body)?;
    let requested = center.stop_all().await?;
    Ok(Json(StopAllResponse { requested }))
}

async fn status(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<InstanceStatus>, ApiError> {
    let target: InstanceTarget = decode(&body)?;
    Ok(Json(center.status(&target).await?))
}

async fn extend(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<InstanceStatus>, ApiError> {
    let request: ExtendRequest = decode(&body)?;
    Ok(Json(center.extend(&request).await?))
}

async fn list(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<Vec<InstanceStatus>>, ApiError> {
    let request: ListRequest = decode(&body)?;
    Ok(Json(
        center
            .list(request.team, request.limit, request.offset)
            .await?,
    ))
}

async fn logs(State(center): State<Center>, body: Bytes) -> Result<Json<LogsResponse>, ApiError> {
    let request: LogsRequest = decode(&body)?;
    let logs = center.logs(&request.target, request.tail).await?;
    Ok(Json(LogsResponse { logs }))
}

async fn workflow_callback(
    State(center): State<Center>,
    body: Bytes,
) -> Result<Json<InstanceStatus>, ApiError> {
    let callback: WorkflowCallback = decode(&body)?;
    Ok(Json(center.workflow_callback(&callback).await?))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(center): State<Center>) -> Result<&'static str, ApiError> {
    center
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::unavailable("state store", &e))?;
    Ok("ready\n")
}

async fn metrics(State(center): State<Center>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        center.metrics().render(),
    )
        .into_response()
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("No such route.")
}
