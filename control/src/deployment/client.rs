//! [`DeploymentClient`]: [`DeploymentControl`] over signed HTTP, for callers in another process
//! than the Deployment Center (the Contestant Service in production). Each call is one `POST`
//! signed with the active `[signing]` key over the exact bytes sent. Answers decode into the
//! same contract types; error answers decode back into the same [`ApiError`]; a transport
//! failure (refused, reset, timed out, garbled) is `Unavailable`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fctf_core::clock;
use fctf_core::config::Config;
use fctf_core::ids::TeamId;
use fctf_core::signing::{self, SigningKey};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SetupError;
use super::contract::{
    DeploymentControl, ExtendRequest, InstanceStatus, InstanceTarget, ListRequest, LogsRequest,
    LogsResponse, StartRequest, StopAllRequest, StopAllResponse, paths,
};
use crate::error::{ApiError, ErrorBody};

/// How long one call may take, end to end, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read (logs are the largest).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://HOST:PORT` (TLS and path prefixes are not supported: the
    /// Deployment Center is reached on a private network).
    #[error("the Deployment Center URL must be http://HOST:PORT, got {0:?}")]
    InvalidUrl(String),
    /// The config has no signing key.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// The Deployment Center's API over HTTP, every call signed. Cheap to clone (one shared
/// connection pool).
#[derive(Clone)]
pub struct DeploymentClient {
    base: String,
    key: SigningKey,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for DeploymentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentClient")
            .field("base", &self.base)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DeploymentClient {
    /// A client of the Deployment Center at `base_url` (`http://HOST:PORT`), signing with `key`.
    pub fn new(base_url: &str, key: SigningKey) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/');
        let valid = base.strip_prefix("http://").is_some_and(|authority| {
            !authority.is_empty() && !authority.contains(['/', '?', '#', '@'])
        }) && base.parse::<Uri>().is_ok();
        if !valid {
            return Err(ClientError::InvalidUrl(base_url.to_owned()));
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base: base.to_owned(),
            key,
            timeout: DEFAULT_TIMEOUT,
            http,
        })
    }

    /// A client of `[contestant].deployment_center_url` signing with the active `[signing]` key.
    pub fn from_config(config: &Config) -> Result<Self, ClientError> {
        let key = config
            .signing
            .active_key()
            .cloned()
            .ok_or(SetupError::NoSigningKey)?;
        Self::new(config.contestant.deployment_center_url.as_str(), key)
    }

    /// Bounds every call by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One signed `POST` of `body` to `path`, decoded as `T`.
    async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<T, ApiError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::internal(&e))?;
        let signed = signing::sign(
            &self.key,
            Method::POST.as_str(),
            path,
            &bytes,
            clock::unix_now_secs(),
            &signing::new_nonce(),
        )
        .map_err(|e| ApiError::internal(&e))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ApiError::internal(&e))?;

        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, retry_after, body))
        };
        let (status, retry_after, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(cause)) => return Err(ApiError::unavailable("Deployment Center", &cause)),
            Err(_) => {
                return Err(ApiError::unavailable(
                    "Deployment Center",
                    &format!("no answer within {:?}", self.timeout),
                ));
            }
        };
        decode_answer(status, retry_after, &body)
    }
}

/// The answer of a call: the contract type on success, the [`ApiError`] of the error shape
/// otherwise (`Unavailable` when the body is not the shape, e.g. a proxy's error page).
fn decode_answer<T: DeserializeOwned>(
    status: StatusCode,
    retry_after: Option<u64>,
    body: &[u8],
) -> Result<T, ApiError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| {
            ApiError::unavailable("Deployment Center", &format!("undecodable answer: {e}"))
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => Err(ApiError {
            kind: error.error,
            message: error.message,
            retry_after: error.retry_after.or(retry_after),
        }),
        Err(_) => Err(ApiError::unavailable(
            "Deployment Center",
            &format!("HTTP {status} without the error shape"),
        )),
    }
}

#[async_trait]
impl DeploymentControl for DeploymentClient {
    async fn start(&self, request: &StartRequest) -> Result<InstanceStatus, ApiError> {
        self.call(paths::START, request).await
    }

    async fn stop(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.call(paths::STOP, target).await
    }

    async fn status(&self, target: &InstanceTarget) -> Result<InstanceStatus, ApiError> {
        self.call(paths::STATUS, target).await
    }

    async fn extend(&self, request: &ExtendRequest) -> Result<InstanceStatus, ApiError> {
        self.call(paths::EXTEND, request).await
    }

    async fn list(
        &self,
        team: Option<TeamId>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<InstanceStatus>, ApiError> {
        self.call(
            paths::LIST,
            &ListRequest {
                team,
                limit,
                offset,
            },
        )
        .await
    }

    async fn stop_all(&self) -> Result<u32, ApiError> {
        let answer: StopAllResponse = self.call(paths::STOP_ALL, &StopAllRequest {}).await?;
        Ok(answer.requested)
    }

    async fn logs(&self, target: &InstanceTarget, tail: u32) -> Result<String, ApiError> {
        let answer: LogsResponse = self
            .call(
                paths::LOGS,
                &LogsRequest {
                    target: *target,
                    tail,
                },
            )
            .await?;
        Ok(answer.logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn key() -> SigningKey {
        SigningKey::new("s1", &[7u8; 32]).expect("key")
    }

    #[test]
    fn only_plain_http_base_urls() {
        for ok in [
            "http://127.0.0.1:8081",
            "http://dc.internal:8081/",
            "http://h",
        ] {
            assert!(DeploymentClient::new(ok, key()).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:8081",
            "http://127.0.0.1:8081/prefix",
            "http://",
            "127.0.0.1:8081",
            "http://u:p@h:1",
        ] {
            assert!(
                matches!(
                    DeploymentClient::new(bad, key()),
                    Err(ClientError::InvalidUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_answers_decode_back_into_api_errors() {
        let body = br#"{"success":false,"error":"queue_full","message":"full","retry_after":10}"#;
        let err = decode_answer::<InstanceStatus>(StatusCode::TOO_MANY_REQUESTS, None, body)
            .expect_err("an error");
        assert_eq!(err.kind, ErrorKind::QueueFull);
        assert_eq!(err.message, "full");
        assert_eq!(err.retry_after, Some(10));
        let err = decode_answer::<InstanceStatus>(StatusCode::BAD_GATEWAY, None, b"<html>")
            .expect_err("an error");
        assert_eq!(err.kind, ErrorKind::Unavailable);
    }
}
