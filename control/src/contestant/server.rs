//! Serving the Contestant Service: the API listener (every route of [`super::router`], behind the
//! per-IP limit, the security headers and the request counters, with JSON answers for unknown
//! routes and wrong methods) and the admin listener (`/healthz`, `/readyz`, `/metrics`; keep it
//! on a private network), both stopped gracefully by one shutdown future.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fctf_core::config::Config;
use fctf_core::db::Database;
use fctf_core::store::StateStore;
use tokio::net::TcpListener;

use super::accounts::limits;
use super::accounts::session::COOKIE;
use super::metrics::SubmissionOutcome;
use super::{AppState, openapi, portal};
use crate::deployment::contract::DeploymentControl;
use crate::error::{ApiError, ErrorBody};

/// Error bodies larger than this are not parsed for their kind (ours are a few hundred bytes).
const MAX_ERROR_BODY: u64 = 16 * 1024;

/// `routes` (every API route) made into the served API: the OpenAPI document route, JSON
/// fallbacks (the portal, then JSON), and the layers. From the outside in: security headers,
/// request counting (so 429s of the limit are counted), the CSRF guard ([`portal::csrf`]), the
/// per-IP limit (which marks the request charged, so the accounts extractors do not charge it
/// again).
pub(crate) fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route(openapi::PATH, get(openapi::serve))
        // The portal's page and assets where no API route matches; then the JSON 404/405.
        .fallback_service(
            portal::router()
                .fallback(unknown_route)
                .method_not_allowed_fallback(wrong_method),
        )
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::per_ip,
        ))
        .layer(middleware::from_fn(portal::csrf::protect))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The admin listener's routes.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// Serves the API on `listener` (with each connection's peer address, which the per-IP limit
/// keys on) and, when given, the admin routes on `admin_listener`, until `shutdown` completes;
/// then both stop accepting, finish the requests in flight, and this returns.
pub async fn serve(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which happens only after it sent.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let api = axum::serve(
        listener,
        super::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal(rx.clone()))
    .into_future();
    match admin_listener {
        None => api.await,
        Some(admin_listener) => {
            let admin = axum::serve(admin_listener, admin_router(state))
                .with_graceful_shutdown(signal(rx))
                .into_future();
            let (api, admin) = tokio::join!(api, admin);
            api.and(admin)
        }
    }
}

/// Binds `[contestant].listen` and `[contestant].admin_listen`, builds the state over a migrated
/// `db`, and [`serve`]s until `shutdown` completes.
pub async fn run(
    config: Arc<Config>,
    db: Database,
    store: Arc<dyn StateStore>,
    deployment: Arc<dyn DeploymentControl>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bind = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))
    };
    let listener = bind(config.contestant.listen.clone()).await?;
    let admin_listener = bind(config.contestant.admin_listen.clone()).await?;
    let state = AppState::new(db, store, config, deployment)
        .await
        .map_err(|e| std::io::Error::other(format!("starting the Contestant Service: {e}")))?;
    tracing::info!(
        api = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        "Contestant Service listening"
    );
    serve(listener, Some(admin_listener), state, shutdown).await
}

/// Does the request carry credentials (an API token or a session cookie)?
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(';')
                    .any(|pair| pair.trim_start().starts_with(&format!("{COOKIE}=")))
            })
}

/// The headers of a production web app on every answer (the portal's own, else
/// [`portal::api_headers`]); `Cache-Control: no-store` on answers to credentialed requests
/// (except the portal's page and assets, the same for everyone) and on answers that set a
/// cookie (a private answer must never be kept by a shared cache).
async fn security_headers(request: Request, next: Next) -> Response {
    let private = has_credentials(request.headers());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    portal::api_headers(headers);
    let shareable = response.extensions().get::<portal::Shareable>().is_some();
    let headers = response.headers_mut();
    if (private && !shareable) || headers.contains_key(header::SET_COOKIE) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Counts every answer by route template and status, error answers by kind, and submission
/// outcomes.
async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = matched
        .or_else(|| {
            let portal = response.extensions().get::<portal::PortalRoute>();
            portal.map(|route| route.0.to_string())
        })
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status();
    state.metrics.request(&route, status.as_u16());
    if let Some(SubmissionOutcome(outcome)) = response.extensions().get::<SubmissionOutcome>() {
        state.metrics.submission(outcome);
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // The kind is in the body (the one error shape); error bodies are small, read it back.
    if response
        .body()
        .size_hint()
        .exact()
        .is_none_or(|n| n > MAX_ERROR_BODY)
    {
        state.metrics.error("unknown");
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY as usize).await else {
        state.metrics.error("unknown");
        return Response::from_parts(parts, Body::empty());
    };
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(error) => state.metrics.error(error.error.as_str()),
        Err(_) => state.metrics.error("unknown"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("No such route.")
}

async fn wrong_method() -> ApiError {
    ApiError::method_not_allowed()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database and the state store both answer.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable("database", &e))?;
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::unavailable("state store", &e))?;
    Ok("ready\n")
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_a_token_or_the_session_cookie() {
        let mut headers = HeaderMap::new();
        assert!(!has_credentials(&headers));
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
        assert!(!has_credentials(&headers));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; fctf_session=abc"),
        );
        assert!(has_credentials(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Token x"));
        assert!(has_credentials(&headers));
    }
}
