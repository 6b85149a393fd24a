//! The Deployment Center: the one control API for instance start, stop, status, extension and
//! logs, and the receiver of deployment workflows' exit callbacks.
//!
//! - [`contract`]: what callers ask and get ([`contract::DeploymentControl`]), and the wire
//!   bodies of the HTTP routes.
//! - [`center`]: [`DeploymentCenter`], the implementation over the state store and the deploy
//!   queue, used in-process by `fctf up` and tests; [`run`] serves it as `fctf
//!   deployment-center`.
//! - [`policy`]: its decisions as pure functions (lifetimes, extension rules, queue position,
//!   tokens and connection info).
//! - [`routes`]: the HTTP API ([`router`], [`serve`]); every instance route checks the caller's
//!   `[signing]` signature over the exact request bytes and its nonce.
//! - [`client`]: [`DeploymentClient`], the same trait over signed HTTP, for the Contestant
//!   Service when the Deployment Center is its own process.
//! - [`metrics`]: the counters of `/metrics`.
//! - [`builds`]: the image-build and workflow-status routes, served through an optional
//!   [`ImageBuilder`] (Argo's `up-challenge-template`); 503 without one.
//!
//! Start: quota reservation and provisional record (one atomic store call, with the provisional
//! TTL) → start job published (persistent, confirmed, expiring with the same TTL). A refused
//! publish rolls the reservation back (`queue_full` 429 with `Retry-After`, or 503). Stop: the
//! record moves to Stopping (versioned compare-and-set), then a stop job is published; Stopping
//! is durable, so a stop whose job could not be published is still carried out by the
//! Deployment Listener.

pub mod builds;
pub mod center;
pub mod client;
pub mod contract;
pub mod metrics;
pub mod policy;
pub mod routes;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fctf_core::builds::ImageBuilder;
use fctf_core::clock;
use fctf_core::config::Config;
use fctf_core::queue::JobQueue;
use fctf_core::runtime::InstanceRuntime;
use fctf_core::signing::{self, KeyRing};
use fctf_core::store::StateStore;
use fctf_core::token::TokenKey;

pub use self::center::{
    DeploymentCenter, MAX_LIST_LIMIT, MAX_LOG_TAIL, QUEUE_FULL_RETRY_SECS, QUEUE_ORDER_CACHE,
    extension_counter,
};
pub use self::client::{ClientError, DeploymentClient};
pub use self::routes::{router, router_with_builder, serve, serve_with_builder};

/// The Deployment Center's clock: signature windows, lifetimes, extensions and token times are
/// taken from it (the store keeps its own clock for TTLs).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        clock::unix_now_millis()
    }
}

/// The Deployment Center's keys: the `[signing]` ring its callers' signatures are checked with,
/// and the `[tokens]` key that signs players' access tokens.
#[derive(Clone, Debug)]
pub struct CenterKeys {
    /// Every accepted request-signing key.
    pub signing: KeyRing,
    /// How far a request's timestamp may be from now.
    pub signing_window: Duration,
    /// The active token key.
    pub token: TokenKey,
}

impl CenterKeys {
    /// The keys of `[signing]` and `[tokens]`.
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        Ok(Self {
            signing: config.signing.key_ring()?,
            signing_window: config.signing.window(),
            token: config
                .tokens
                .active_key()
                .cloned()
                .ok_or(SetupError::NoTokenKey)?,
        })
    }
}

impl CenterKeys {
    /// Fresh random keys (`s1`, `k1`) with the default window: for tests, where caller and
    /// center share this value. A real deployment takes [`Self::from_config`], so the gateway
    /// verifies the tokens this center signs.
    pub fn ephemeral() -> Self {
        let secret = || {
            let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes
        };
        let signing =
            signing::SigningKey::new("s1", &secret()).expect("a valid key id and a 32-byte secret");
        let token = TokenKey::new("k1", secret()).expect("a valid key id and a 32-byte secret");
        Self {
            signing: KeyRing::from(signing),
            signing_window: signing::DEFAULT_WINDOW,
            token,
        }
    }
}

/// Runs `fctf deployment-center`: a [`DeploymentCenter`] on `store` and `queue` with the keys
/// and `[deployment]` settings of `config`, served on `[deployment].listen` until `shutdown`
/// completes (then the requests in flight finish).
pub async fn run(
    config: &Config,
    store: Arc<dyn StateStore>,
    queue: Arc<dyn JobQueue>,
    runtime: Option<Arc<dyn InstanceRuntime>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_with_builder(config, store, queue, runtime, None, shutdown).await
}

/// [`run`] with the image-build routes served by `builder` (the `fctf` binary passes the Argo
/// builder when `[runtime].kind = "argo"`; without one those routes answer 503).
pub async fn run_with_builder(
    config: &Config,
    store: Arc<dyn StateStore>,
    queue: Arc<dyn JobQueue>,
    runtime: Option<Arc<dyn InstanceRuntime>>,
    builder: Option<Arc<dyn ImageBuilder>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let center = DeploymentCenter::from_config(config, store, queue, runtime)?;
    let address = config.deployment.listen.clone();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| RunError::Bind {
            address: address.clone(),
            source,
        })?;
    tracing::info!(%address, "deployment center listening");
    serve_with_builder(listener, Arc::new(center), builder, shutdown)
        .await
        .map_err(RunError::Serve)
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The keys in the config are not usable.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("deployment center server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Why a Deployment Center (or its client) could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `[signing]` has no usable keys.
    #[error("[signing]: {0}")]
    Signing(#[from] signing::KeyError),
    /// `[signing].active_kid` names no key.
    #[error("[signing]: active_kid names no key")]
    NoSigningKey,
    /// `[tokens].active_kid` names no key.
    #[error("[tokens]: active_kid names no key")]
    NoTokenKey,
}
