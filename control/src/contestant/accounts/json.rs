//! Extractors that answer bad input in the one error shape (never axum's plain-text rejections,
//! never a 500), and CTFd's success envelopes. Every Contestant Service route uses these:
//! [`Json`], [`Query`] and [`Path`] instead of axum's.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorKind};

/// A JSON body (or response). The body must be a JSON object (as every CTFd body is: serde
/// would otherwise read `[]` as a struct whose fields are all optional). A malformed or mistyped
/// body is a 400, a body over the limit a 413, in the one error shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value = match axum::Json::<Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(&rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::bad_request("The body must be a JSON object."));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("The JSON body has a wrong field: {e}")))
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("Send a JSON body with Content-Type: application/json.")
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("The body is not valid JSON."),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorKind::PayloadTooLarge, "The body is too large.")
        }
        _ => ApiError::bad_request("The body could not be read."),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters; a mistyped one is a 400 in the one error shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::bad_request(
                format!("Invalid query parameters: {}", e.body_text()),
            )),
            Err(_) => Err(ApiError::bad_request("Invalid query parameters.")),
        }
    }
}

/// Path parameters; one that does not parse (`/users/abc`) is a 404: no such resource.
#[derive(Clone, Copy, Debug, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::not_found("No such resource."))
            }
            Err(error) => Err(ApiError::internal(&error)),
        }
    }
}

/// CTFd's success envelope: `{"success": true, "data": ...}`.
pub fn ok<T: Serialize>(data: T) -> Response {
    axum::Json(json!({"success": true, "data": data})).into_response()
}

/// CTFd's success envelope without data (deletes): `{"success": true}`.
pub fn done() -> Response {
    axum::Json(json!({"success": true})).into_response()
}

/// `?page=&per_page=` of list routes (CTFd's names). Pages start at 1.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub page: Option<u32>,
    #[serde(default)]
    pub per_page: Option<u32>,
}

/// Default page size of list routes.
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Largest page size of list routes.
pub const MAX_PER_PAGE: u32 = 100;

/// A resolved page: which rows to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    /// The page asked for, clamped to what the API serves.
    pub fn of(query: PageQuery) -> Self {
        Self {
            page: query.page.unwrap_or(1).max(1),
            per_page: query
                .per_page
                .unwrap_or(DEFAULT_PER_PAGE)
                .clamp(1, MAX_PER_PAGE),
        }
    }

    /// SQL `LIMIT`.
    pub fn limit(self) -> i64 {
        i64::from(self.per_page)
    }

    /// SQL `OFFSET`.
    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }

    /// CTFd's `meta.pagination` for `total` rows.
    pub fn meta(self, total: i64) -> Value {
        let per_page = i64::from(self.per_page);
        let pages = ((total + per_page - 1) / per_page).max(1);
        let page = i64::from(self.page);
        json!({
            "page": page,
            "next": if page < pages { Some(page + 1) } else { None },
            "prev": if page > 1 { Some(page - 1) } else { None },
            "pages": pages,
            "per_page": per_page,
            "total": total,
        })
    }
}

/// A page of a list with CTFd's `meta.pagination`.
pub fn ok_page<T: Serialize>(data: T, page: Page, total: i64) -> Response {
    axum::Json(json!({
        "success": true,
        "data": data,
        "meta": {"pagination": page.meta(total)},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_clamped_and_described() {
        let page = Page::of(PageQuery {
            page: Some(0),
            per_page: Some(1000),
        });
        assert_eq!(
            page,
            Page {
                page: 1,
                per_page: MAX_PER_PAGE
            }
        );
        let page = Page::of(PageQuery {
            page: Some(3),
            per_page: Some(10),
        });
        assert_eq!((page.limit(), page.offset()), (10, 20));
        let meta = page.meta(25);
        assert_eq!(meta["pages"], 3);
        assert_eq!(meta["next"], Value::Null);
        assert_eq!(meta["prev"], 2);
        assert_eq!(
            Page::of(PageQuery {
                page: None,
                per_page: None
            })
            .meta(0)["pages"],
            1
        );
    }
}
