//! Bad input never gets a 500 (malformed JSON, wrong types, unknown fields, wrong content type,
//! bad path parameters, oversized fields), and the per-IP and per-user API rate limits answer
//! 429 with `Retry-After`, keyed by the client behind trusted proxies only.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::support::{Auth, Backend, Env, on_both};

on_both!(
    malformed_bodies_are_400_never_500,
    per_ip_limit_answers_429_with_retry_after,
    forwarded_for_counts_only_from_trusted_proxies,
    per_user_limit_answers_429,
    the_middleware_and_the_extractors_charge_once_per_request,
);

async fn malformed_bodies_are_400_never_500(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let player = env.player("pat", Some("pats")).await;
    let routes: Vec<(Method, &str, &str)> = vec![
        (Method::POST, "/api/v1/auth/register", &player.token),
        (Method::POST, "/api/v1/auth/login", &player.token),
        (Method::POST, "/api/v1/auth/password", &player.token),
        (Method::PATCH, "/api/v1/users/me", &player.token),
        (Method::POST, "/api/v1/teams/join", &player.token),
        (Method::PATCH, "/api/v1/teams/me", &player.token),
        (Method::POST, "/api/v1/tokens", &player.token),
        (Method::POST, "/api/v1/users", &admin.token),
        (Method::PATCH, "/api/v1/configs", &admin.token),
        (Method::PATCH, "/api/v1/configs/paused", &admin.token),
        (Method::POST, "/api/v1/brackets", &admin.token),
        (Method::POST, "/api/v1/teams", &admin.token),
    ];
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let bodies = [
        "{",
        "not json",
        "[]",
        "null",
        r#"{"name": 5, "password": []}"#,
        r#"{"unknown_field": true}"#,
        deep.as_str(),
    ];
    for (method, uri, token) in &routes {
        for body in bodies {
            let answer = env
                .raw(
                    &env.app,
                    method.clone(),
                    uri,
                    Auth::Token(token),
                    Some(body),
                    &[],
                )
                .await;
            assert!(
                answer.status == StatusCode::BAD_REQUEST
                    || answer.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {uri} {body:.20}: {} {:?}",
                answer.status,
                answer.body
            );
            assert_eq!(answer.body["success"], false);
        }
        let plain = env
            .raw(
                &env.app,
                method.clone(),
                uri,
                Auth::Token(token),
                Some("{}"),
                &[("content-type", "text/plain")],
            )
            .await;
        assert_eq!(plain.status, StatusCode::BAD_REQUEST, "{method} {uri}");
        assert_eq!(plain.error(), "bad_request");
    }
    for uri in [
        "/api/v1/users/abc",
        "/api/v1/teams/99999999999999999999999",
        "/api/v1/tokens/-x",
    ] {
        let answer = env
            .call(Method::GET, uri, Auth::Token(&admin.token), None)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
    }
    let bad_page = env
        .call(Method::GET, "/api/v1/users?page=-1", Auth::Anonymous, None)
        .await;
    assert_eq!(bad_page.status, StatusCode::BAD_REQUEST);
    let long_name = env
        .call(
            Method::POST,
            "/api/v1/auth/register",
            Auth::Anonymous,
            Some(json!({"name": "n".repeat(10_000), "password": "password-1"})),
        )
        .await;
    assert_eq!(long_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = format!(r#"{{"name": "{}", "password": "x"}}"#, "n".repeat(3 << 20));
    let too_large = env
        .raw(
            &env.app,
            Method::POST,
            "/api/v1/auth/login",
            Auth::Anonymous,
            Some(&huge),
            &[],
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.error(), "payload_too_large");
    let long_password = env.login("pat", &"p".repeat(100_000)).await;
    assert_eq!(long_password.status, StatusCode::UNAUTHORIZED);
    env.finish().await;
}

async fn per_ip_limit_answers_429_with_retry_after(backend: Backend) {
    let env = Env::with(backend, |c| {
        c.contestant.api_ip_per_sec = 1;
        c.contestant.api_ip_burst = 3;
    })
    .await;
    let peer = [("x-test-peer", "203.0.113.9:5000")];
    for _ in 0..3 {
        let answer = env
            .raw(
                &env.app,
                Method::GET,
                "/api/v1/contest",
                Auth::Anonymous,
                None,
                &peer,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = env
        .raw(
            &env.app,
            Method::GET,
            "/api/v1/contest",
            Auth::Anonymous,
            None,
            &peer,
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(limited.body["retry_after"], retry);
    // Authenticated routes and logins count against the same address.
    let login = env
        .raw(
            &env.app,
            Method::POST,
            "/api/v1/auth/login",
            Auth::Anonymous,
            Some(r#"{"name":"a","password":"b"}"#),
            &peer,
        )
        .await;
    assert_eq!(login.status, StatusCode::TOO_MANY_REQUESTS);
    // Another address has its own bucket.
    let other = env
        .raw(
            &env.app,
            Method::GET,
            "/api/v1/contest",
            Auth::Anonymous,
            None,
            &[("x-test-peer", "203.0.113.10:5000")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    env.finish().await;
}

async fn forwarded_for_counts_only_from_trusted_proxies(backend: Backend) {
    let env = Env::with(backend, |c| {
        c.contestant.api_ip_per_sec = 1;
        c.contestant.api_ip_burst = 2;
        c.contestant.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let call = |peer: &'static str, xff: &'static str| {
        let env = &env;
        async move {
            env.raw(
                &env.app,
                Method::GET,
                "/api/v1/contest",
                Auth::Anonymous,
                None,
                &[("x-test-peer", peer), ("x-forwarded-for", xff)],
            )
            .await
            .status
        }
    };
    // Behind the trusted proxy, each client has its own bucket.
    for _ in 0..2 {
        assert_eq!(call("10.1.1.1:1", "192.0.2.1").await, StatusCode::OK);
    }
    assert_eq!(
        call("10.1.1.1:1", "192.0.2.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call("10.1.1.1:1", "192.0.2.2").await, StatusCode::OK);
    // An untrusted peer cannot escape its bucket by naming other clients.
    assert_eq!(call("192.0.2.50:1", "192.0.2.3").await, StatusCode::OK);
    assert_eq!(call("192.0.2.50:1", "192.0.2.4").await, StatusCode::OK);
    assert_eq!(
        call("192.0.2.50:1", "192.0.2.5").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    env.finish().await;
}

async fn per_user_limit_answers_429(backend: Backend) {
    let env = Env::with(backend, |c| {
        c.contestant.api_user_per_sec = 1;
        c.contestant.api_user_burst = 2;
    })
    .await;
    let player = env.player("quinn", None).await;
    let other = env.player("rita", None).await;
    for _ in 0..2 {
        let answer = env
            .call(
                Method::GET,
                "/api/v1/users/me",
                Auth::Token(&player.token),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&player.token),
            None,
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    let fine = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&other.token),
            None,
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK);
    env.finish().await;
}

async fn the_middleware_and_the_extractors_charge_once_per_request(backend: Backend) {
    let env = Env::with(backend, |c| {
        c.contestant.api_ip_per_sec = 1;
        c.contestant.api_ip_burst = 3;
    })
    .await;
    let player = env.player("sam", None).await;
    let app = env.app.clone().layer(axum::middleware::from_fn_with_state(
        env.state.clone(),
        fctf_control::contestant::accounts::limits::per_ip,
    ));
    let peer = [("x-test-peer", "203.0.113.77:1")];
    for _ in 0..3 {
        let answer = env
            .raw(
                &app,
                Method::GET,
                "/api/v1/users/me",
                Auth::Token(&player.token),
                None,
                &peer,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // Routes without an accounts extractor are limited by the middleware alone.
    let limited = env
        .raw(
            &app,
            Method::GET,
            "/no/such/route",
            Auth::Anonymous,
            None,
            &peer,
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error(), "rate_limited");
    env.finish().await;
}
