//! A wrong method on an existing route: 405 in the one error shape (`method_not_allowed`),
//! with the `Allow` header naming the methods the route takes, never axum's plain-text default.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fctf_control::error::{ErrorBody, ErrorKind};
use tower::ServiceExt;

use super::support::{Backend, Env};

#[tokio::test]
async fn wrong_methods_answer_405_in_the_error_shape_with_allow() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    for (method, path, allowed) in [
        (Method::GET, "/api/v1/challenges/attempt", &["POST"][..]),
        (Method::PUT, "/api/v1/challenges/attempt", &["POST"]),
        (Method::DELETE, "/api/v1/scoreboard", &["GET", "HEAD"]),
        (Method::PATCH, "/api/v1/files", &["GET", "HEAD", "POST"]),
        (Method::POST, "/api/v1/files/3", &["DELETE"]),
        (Method::POST, "/api/v1/scoreboard/top/10", &["GET", "HEAD"]),
    ] {
        // With credentials and a body, as a client that picked the wrong verb would send.
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("authorization", env.admin.authorization())
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = env.app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow: Vec<String> = response.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        for expected in allowed {
            assert!(
                allow.iter().any(|m| m == expected),
                "{method} {path}: {allow:?}"
            );
        }
        assert_eq!(allow.len(), allowed.len(), "{method} {path}: {allow:?}");
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {bytes:?}"));
        assert!(!body.success);
        assert_eq!(body.error, ErrorKind::MethodNotAllowed);
        assert!(!body.message.is_empty());
    }
    // An unknown route stays a 404 (not a 405) whatever the method.
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/no-such-route")
        .body(Body::empty())
        .unwrap();
    let response = env.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    env.finish().await;
}
