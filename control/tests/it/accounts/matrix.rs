//! The authorisation matrix of the accounts routes (TEST-PLAN T48, the accounts part): every
//! route as anonymous, a captain, a plain member, another team's captain, an admin, a revoked
//! session and a banned user, compared with a table kept here.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{Auth, Backend, Env, on_both};

on_both!(accounts_routes_follow_the_authorisation_table);

/// The callers, in the order of the table's columns.
const CALLERS: [&str; 7] = [
    "anonymous",
    "captain A",
    "member A",
    "captain B",
    "admin",
    "revoked session",
    "banned",
];

async fn accounts_routes_follow_the_authorisation_table(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let captain_a = env.player("cap-a", Some("team a")).await;
    let member_a = env.player("mem-a", Some("team a")).await;
    let captain_b = env.player("cap-b", Some("team b")).await;
    let banned = env.player("banned", Some("team c")).await;
    let ban = env
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", banned.user_id),
            Auth::Token(&admin.token),
            Some(json!({"banned": true})),
        )
        .await;
    assert_eq!(ban.status, StatusCode::OK);
    assert_eq!(
        env.register("revoked", "password-1").await.status,
        StatusCode::OK
    );
    let old_session = env.login("revoked", "password-1").await.session().unwrap();
    env.login("revoked", "password-1").await.session().unwrap();
    let team_a = captain_a.team_id.unwrap();
    let token_a: i64 = sqlx::query_scalar("SELECT id FROM tokens WHERE user_id = ?")
        .bind(captain_a.user_id)
        .fetch_one(env.db.pool())
        .await
        .unwrap();

    let auths = [
        Auth::Anonymous,
        Auth::Token(&captain_a.token),
        Auth::Token(&member_a.token),
        Auth::Token(&captain_b.token),
        Auth::Token(&admin.token),
        Auth::Cookie(&old_session),
        Auth::Token(&banned.token),
    ];
    let table: Vec<(Method, String, Option<Value>, [u16; 7])> = vec![
        (
            Method::GET,
            "/api/v1/contest".into(),
            None,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            Method::GET,
            "/api/v1/users/me".into(),
            None,
            [401, 200, 200, 200, 200, 401, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/users/{}", banned.user_id),
            None,
            [404, 404, 404, 404, 200, 404, 403],
        ),
        (
            Method::GET,
            "/api/v1/teams/me".into(),
            None,
            [401, 200, 200, 200, 404, 401, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/teams/{team_a}"),
            None,
            [200, 200, 200, 200, 200, 200, 403],
        ),
        (
            Method::PATCH,
            "/api/v1/teams/me".into(),
            Some(json!({"website": "https://example.org"})),
            [401, 200, 403, 200, 404, 401, 403],
        ),
        (
            Method::PATCH,
            format!("/api/v1/teams/{team_a}"),
            Some(json!({"affiliation": "uni"})),
            [401, 403, 403, 403, 200, 401, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/tokens/{token_a}"),
            None,
            [401, 200, 404, 404, 200, 401, 403],
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({})),
            [401, 200, 200, 200, 200, 401, 403],
        ),
        (
            Method::GET,
            "/api/v1/configs".into(),
            None,
            [401, 403, 403, 403, 200, 401, 403],
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"name": "made-by-admin", "password": "password-1"})),
            [401, 403, 403, 403, 200, 401, 403],
        ),
        (
            Method::POST,
            "/api/v1/brackets".into(),
            Some(json!({"name": "juniors"})),
            [401, 403, 403, 403, 200, 401, 403],
        ),
    ];
    let mut mismatches = Vec::new();
    for (method, uri, body, expected) in &table {
        for (column, auth) in auths.iter().enumerate() {
            let answer = env.call(method.clone(), uri, *auth, body.clone()).await;
            if answer.status.as_u16() != expected[column] {
                mismatches.push(format!(
                    "{method} {uri} as {}: {} (expected {}) {}",
                    CALLERS[column], answer.status, expected[column], answer.body
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    env.finish().await;
}
