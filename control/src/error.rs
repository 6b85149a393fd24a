//! The one error shape of every control-plane API (Contestant Service, admin API, Deployment
//! Center), so clients branch on a stable `error` kind and show `message`:
//!
//! ```json
//! {"success": false, "error": "quota_exceeded", "message": "Your team already runs 3 instances; stop one first."}
//! ```
//!
//! `success: false` is CTFd's envelope, so CTFd clients read it as a failure. `retry_after`
//! (seconds) is added for 429 and 503 answers, with the `Retry-After` header. The message is for
//! players: internal causes (SQL, Redis, broker errors) are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The fixed set of error kinds (also the `kind` label of the error metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: the request is malformed or a field is invalid.
    BadRequest,
    /// 401: no valid session, API token or service signature.
    Unauthorized,
    /// 403: authenticated, but not allowed (not the captain, banned, contest not started).
    Forbidden,
    /// 404: no such resource (or not visible to the caller).
    NotFound,
    /// 405: the route exists but does not take this method (the `Allow` header lists those
    /// it takes).
    MethodNotAllowed,
    /// 409: the request conflicts with the current state (already solved, already running).
    Conflict,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 422: well-formed but refused by a rule (password too short, name taken).
    Unprocessable,
    /// 429: the team's instance quota is used up.
    QuotaExceeded,
    /// 429: the deploy queue is full.
    QueueFull,
    /// 429: too many requests (rate limit, cooldown, wrong-flag limit).
    RateLimited,
    /// 503: a backend (database, state store, queue, runtime) is unavailable.
    Unavailable,
    /// 500: a bug; the message never says more.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QuotaExceeded | Self::QueueFull | Self::RateLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The word on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unprocessable => "unprocessable",
            Self::QuotaExceeded => "quota_exceeded",
            Self::QueueFull => "queue_full",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// An API error: a kind, a message for the player, and for 429/503 when to retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error of `kind` with a message for the player.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a retry hint (seconds, at least 1).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 405 (the router adds the `Allow` header).
    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrorKind::MethodNotAllowed,
            "This route does not take that method.",
        )
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// 503, after logging `cause` (which the client never sees).
    pub fn unavailable(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, "{what} unavailable");
        Self::new(
            ErrorKind::Unavailable,
            format!("The {what} is unavailable right now; please try again in a moment."),
        )
        .retry_after(2)
    }

    /// 500, after logging `cause` (which the client never sees).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorKind::Internal, "Something went wrong on our side.")
    }
}

/// The JSON body of an error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub success: bool,
    pub error: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: self.kind,
            message: self.message,
            retry_after: self.retry_after,
        };
        let mut response = (self.kind.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status_and_wire_word() {
        for (kind, status, word) in [
            (ErrorKind::BadRequest, 400, "bad_request"),
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::MethodNotAllowed, 405, "method_not_allowed"),
            (ErrorKind::PayloadTooLarge, 413, "payload_too_large"),
            (ErrorKind::RateLimited, 429, "rate_limited"),
            (ErrorKind::Unavailable, 503, "unavailable"),
        ] {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.as_str(), word);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(word),
                "the serde name is the wire word"
            );
        }
        let response = ApiError::method_not_allowed().into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
