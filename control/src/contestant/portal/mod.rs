//! The Contestant Portal: the players' web page, served by the Contestant Service itself.
//!
//! Hand-written HTML, CSS and one vanilla JavaScript module under `assets/`, embedded in the
//! binary (`include_str!`), so `cargo build` alone builds it: no Node.js, no build step, no
//! third-party request (no CDN, no web font). The page is a hash-routed single page that talks
//! only to the public API (`/api/v1/...`) with the session cookie; see `docs/portal.md`.
//!
//! - `GET /`: the page (`Cache-Control: no-cache` with an `ETag`, so a new binary's page is seen
//!   at once).
//! - `GET /portal/{name}`: the assets. The page names them with a content hash
//!   (`app.<hash>.js`): those answers are `immutable` for a year; the plain names answer too,
//!   revalidated by `ETag`.
//!
//! Every portal answer carries the page's headers ([`page_headers`]: a strict
//! Content-Security-Policy, no framing, no referrer, an isolated browsing context); API answers
//! get [`api_headers`]. [`csrf`] guards the unsafe requests of cookie sessions.
//!
//! The router is mounted as the API's fallback service (see `server::finish`), so API paths
//! always win and a path that is neither is the API's JSON 404.

pub mod csrf;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// The page's Content-Security-Policy: only this origin's own script, style and fetches; no
/// inline script or style, no plugins, no framing, no `<base>`, forms post only here.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'; object-src 'none'";

/// The API's Content-Security-Policy: JSON and file downloads render nothing active.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// Powerful features the page never uses, denied to it and anything it could embed.
pub const PERMISSIONS_POLICY: &str = "accelerometer=(), autoplay=(), camera=(), \
     display-capture=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), \
     midi=(), payment=(), usb=(), xr-spatial-tracking=()";

/// Marks an answer that is the same for everyone (the page and its assets): the service's
/// `Cache-Control: no-store` for credentialed requests leaves it alone.
#[derive(Clone, Copy, Debug)]
pub struct Shareable;

/// The portal route (`/` or `/portal/{name}`) an answer came from, for the request metrics.
#[derive(Clone, Debug)]
pub struct PortalRoute(pub std::sync::Arc<str>);

/// One embedded file.
struct Asset {
    /// Served at `/portal/{hashed}` (immutable) and `/portal/{name}` (revalidated).
    name: &'static str,
    hashed: String,
    content_type: &'static str,
    body: Vec<u8>,
    etag: String,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: Vec<u8>) -> Self {
        let digest = hex::encode(Sha256::digest(&body));
        let hashed = match name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{}.{ext}", &digest[..12]),
            None => format!("{name}.{}", &digest[..12]),
        };
        Self {
            name,
            hashed,
            content_type,
            body,
            etag: format!("\"{}\"", &digest[..32]),
        }
    }
}

/// The page and its assets, hashed once per process.
struct Assets {
    index: Asset,
    by_name: HashMap<String, (usize, bool)>,
    files: Vec<Asset>,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let files = vec![
        Asset::new(
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js").to_vec(),
        ),
        Asset::new(
            "style.css",
            "text/css; charset=utf-8",
            include_bytes!("assets/style.css").to_vec(),
        ),
        Asset::new(
            "icon.svg",
            "image/svg+xml",
            include_bytes!("assets/icon.svg").to_vec(),
        ),
    ];
    // The page names each asset by its hashed name, so a cached old asset is never used with a
    // new page.
    let mut page = include_str!("assets/index.html").to_owned();
    for file in &files {
        page = page.replace(
            &format!("/portal/{}\"", file.name),
            &format!("/portal/{}\"", file.hashed),
        );
    }
    let index = Asset::new("index.html", "text/html; charset=utf-8", page.into_bytes());
    let mut by_name = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        by_name.insert(file.hashed.clone(), (i, true));
        by_name.insert(file.name.to_owned(), (i, false));
    }
    Assets {
        index,
        by_name,
        files,
    }
});

/// The portal's routes (stateless): `GET /` and `GET /portal/{name}`, with the page headers.
pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/portal/{name}", get(asset))
        .layer(middleware::from_fn(with_page_headers))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&ASSETS.index, false, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.by_name.get(&name) {
        Some(&(i, hashed)) => serve(&ASSETS.files[i], hashed, &headers),
        None => ApiError::not_found("No such file.").into_response(),
    }
}

/// An asset's answer: 304 when the client holds this version.
fn serve(asset: &Asset, immutable: bool, request: &HeaderMap) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == asset.etag || tag == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, asset.content_type)],
            asset.body.clone(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    response.extensions_mut().insert(Shareable);
    response
}

async fn with_page_headers(request: Request, next: Next) -> Response {
    // The service counts answers by route template, but the portal is the API's fallback, so
    // the outer layer sees no matched route: the portal names its own on the answer.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| PortalRoute(path.as_str().into()));
    let mut response = next.run(request).await;
    page_headers(response.headers_mut());
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// The headers of the page and its assets.
pub fn page_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", PAGE_CSP);
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    set(headers, "permissions-policy", PERMISSIONS_POLICY);
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
}

/// The headers every other answer (JSON, file downloads) gets, unless it set its own.
pub fn api_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        ("content-security-policy", API_CSP),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

#[cfg(test)]
mod tests;
