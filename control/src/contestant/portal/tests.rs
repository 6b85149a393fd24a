//! The portal as served by the whole Contestant Service router (`oneshot`): the page and its
//! assets with their types, caching and headers; the CSRF rule both ways; the API unchanged for
//! curl-style cookie jars and token clients.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{API_CSP, PAGE_CSP, PERMISSIONS_POLICY};
use crate::contestant::accounts::testkit;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The session cookie this answer sets (`name=value`).
    fn session_cookie(&self) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("fctf_session="))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.headers))
            .to_owned()
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => request.body(Body::empty()).unwrap(),
    };
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 4 * 1024 * 1024)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn assert_page_headers(answer: &Answer) {
    assert_eq!(answer.header("content-security-policy"), PAGE_CSP);
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("referrer-policy"), "no-referrer");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert_eq!(answer.header("cross-origin-opener-policy"), "same-origin");
    assert_eq!(answer.header("permissions-policy"), PERMISSIONS_POLICY);
}

/// The hashed asset names the page links to.
fn linked_assets(page: &str) -> Vec<String> {
    page.split("\"/portal/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_types_caching_and_headers() {
    let (_state, app) = testkit::app(None).await;
    let page = send(&app, "GET", "/", &[], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("cache-control"), "no-cache");
    assert_page_headers(&page);
    let text = page.text();
    assert!(text.contains("<main id=\"main\""), "{text}");
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "no third-party URL"
    );

    // Revalidation: the same ETag is a 304 with no body.
    let etag = page.header("etag").to_owned();
    let again = send(&app, "GET", "/", &[("if-none-match", &etag)], None).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);

    let assets = linked_assets(&text);
    assert_eq!(assets.len(), 4, "icon twice, style, app: {assets:?}");
    for (plain, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let (stem, ext) = plain.split_once('.').unwrap();
        let hashed = assets
            .iter()
            .find(|a| a.starts_with(&format!("{stem}.")) && a.ends_with(&format!(".{ext}")))
            .unwrap_or_else(|| panic!("the page links no hashed {plain}: {assets:?}"));
        assert_ne!(hashed, plain);
        // A signed-in browser sends its cookie along: the asset stays cacheable.
        let answer = send(
            &app,
            "GET",
            &format!("/portal/{hashed}"),
            &[("cookie", "fctf_session=whatever")],
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{hashed}");
        assert_eq!(answer.header("content-type"), content_type);
        assert_eq!(
            answer.header("cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_page_headers(&answer);
        let unhashed = send(&app, "GET", &format!("/portal/{plain}"), &[], None).await;
        assert_eq!(unhashed.status, StatusCode::OK);
        assert_eq!(unhashed.header("cache-control"), "no-cache");
        assert_eq!(unhashed.body, answer.body);
        let head = send(&app, "HEAD", &format!("/portal/{hashed}"), &[], None).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
    }

    // Not a portal file, not an API route: the API's JSON 404; a wrong method the JSON 405.
    for uri in ["/portal/nope.js", "/portal/../Cargo.toml", "/nothing/here"] {
        let missing = send(&app, "GET", uri, &[], None).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(missing.json()["error"], "not_found", "{uri}");
    }
    let post = send(&app, "POST", "/", &[], None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.json()["success"], false);
}

#[tokio::test]
async fn api_answers_keep_their_headers_and_get_a_closed_csp() {
    let (_state, app) = testkit::app(None).await;
    let answer = send(&app, "GET", "/api/v1/contest", &[], None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-security-policy"), API_CSP);
    assert_eq!(answer.header("cross-origin-resource-policy"), "same-origin");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    let doc = send(&app, "GET", "/api/v1/openapi.json", &[], None).await;
    assert_eq!(doc.status, StatusCode::OK);
    // A credentialed API answer is still never stored.
    let me = send(
        &app,
        "GET",
        "/api/v1/users/me",
        &[("cookie", "fctf_session=bad")],
        None,
    )
    .await;
    assert_eq!(me.header("cache-control"), "no-store");
}

fn register(name: &str) -> Value {
    json!({"name": name, "password": "portal-password-1"})
}

#[tokio::test]
async fn cross_site_unsafe_requests_are_refused_in_the_one_error_shape() {
    let (_state, app) = testkit::app(None).await;
    let host = ("host", "ctf.example:8000");
    for headers in [
        vec![host, ("sec-fetch-site", "cross-site")],
        vec![host, ("sec-fetch-site", "same-site")],
        vec![host, ("origin", "http://evil.example")],
        vec![host, ("origin", "http://ctf.example:8001")],
        vec![host, ("origin", "null")],
    ] {
        let answer = send(
            &app,
            "POST",
            "/api/v1/auth/register",
            &headers,
            Some(register("mallory")),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}");
        let body = answer.json();
        assert_eq!(body["success"], false);
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["message"], super::csrf::REFUSED);
        assert_eq!(answer.header("cache-control"), "no-store");
    }
    // Nothing was registered by the refused requests.
    let login = send(
        &app,
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(json!({"name": "mallory", "password": "portal-password-1"})),
    )
    .await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{}", login.text());

    // Safe methods pass whatever the metadata says.
    let read = send(
        &app,
        "GET",
        "/api/v1/contest",
        &[host, ("sec-fetch-site", "cross-site")],
        None,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn same_origin_pages_curl_jars_and_token_clients_pass() {
    let (state, app) = testkit::app(None).await;
    let host = ("host", "ctf.example:8000");

    // The portal's own page: Fetch metadata says same-origin.
    let browser = send(
        &app,
        "POST",
        "/api/v1/auth/register",
        &[
            host,
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://ctf.example:8000"),
        ],
        Some(register("alice")),
    )
    .await;
    assert_eq!(browser.status, StatusCode::OK, "{}", browser.text());
    let alice = browser.session_cookie();
    let cross = send(
        &app,
        "POST",
        "/api/v1/teams",
        &[host, ("cookie", &alice), ("sec-fetch-site", "cross-site")],
        Some(json!({"name": "forged"})),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.text());
    let team = send(
        &app,
        "POST",
        "/api/v1/teams",
        &[host, ("cookie", &alice), ("sec-fetch-site", "same-origin")],
        Some(json!({"name": "team-alice"})),
    )
    .await;
    assert_eq!(team.status, StatusCode::OK, "{}", team.text());

    // An older browser: no Fetch metadata, a matching Origin.
    let old = send(
        &app,
        "POST",
        "/api/v1/auth/register",
        &[host, ("origin", "http://ctf.example:8000")],
        Some(register("olga")),
    )
    .await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text());

    // curl with a cookie jar: neither header.
    let curl = send(
        &app,
        "POST",
        "/api/v1/auth/register",
        &[host],
        Some(register("bob")),
    )
    .await;
    assert_eq!(curl.status, StatusCode::OK, "{}", curl.text());
    let bob = curl.session_cookie();
    let created = send(
        &app,
        "POST",
        "/api/v1/teams",
        &[host, ("cookie", &bob)],
        Some(json!({"name": "team-bob"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let logout = send(
        &app,
        "POST",
        "/api/v1/auth/logout",
        &[host, ("cookie", &bob)],
        None,
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text());

    // A token client is exempt, even with cross-site metadata (a page cannot send the header).
    let carol = testkit::player(&state, "carol", None).await;
    let token = send(
        &app,
        "POST",
        "/api/v1/teams",
        &[
            host,
            ("authorization", &carol.authorization()),
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://evil.example"),
        ],
        Some(json!({"name": "team-carol"})),
    )
    .await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.text());
}
