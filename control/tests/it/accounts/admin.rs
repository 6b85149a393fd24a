//! Admin REST: players get 403 on every admin route and anonymous callers 401; admins manage
//! users, teams, brackets and the contest settings (changes apply at once).

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::support::{Auth, Backend, Env, on_both};

on_both!(
    admin_routes_refuse_players,
    admins_manage_users_teams_and_brackets,
    contest_settings_change_at_runtime,
);

/// Every admin-only route, with a body where it takes one.
fn admin_routes() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/api/v1/configs", None),
        (
            Method::PATCH,
            "/api/v1/configs",
            Some(json!({"paused": true})),
        ),
        (Method::GET, "/api/v1/configs/paused", None),
        (
            Method::PATCH,
            "/api/v1/configs/paused",
            Some(json!({"value": true})),
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"name": "x", "password": "password-1"})),
        ),
        (
            Method::PATCH,
            "/api/v1/users/1",
            Some(json!({"banned": true})),
        ),
        (Method::DELETE, "/api/v1/users/1", None),
        (
            Method::PATCH,
            "/api/v1/teams/1",
            Some(json!({"hidden": true})),
        ),
        (Method::DELETE, "/api/v1/teams/1", None),
        (
            Method::POST,
            "/api/v1/teams/1/members",
            Some(json!({"user_id": 1})),
        ),
        (
            Method::DELETE,
            "/api/v1/teams/1/members",
            Some(json!({"user_id": 1})),
        ),
        (
            Method::POST,
            "/api/v1/brackets",
            Some(json!({"name": "students"})),
        ),
        (
            Method::PATCH,
            "/api/v1/brackets/1",
            Some(json!({"name": "pros"})),
        ),
        (Method::DELETE, "/api/v1/brackets/1", None),
    ]
}

async fn admin_routes_refuse_players(backend: Backend) {
    let env = Env::new(backend).await;
    let player = env.player("mallory", Some("evil")).await;
    for (method, uri, body) in admin_routes() {
        let answer = env
            .call(
                method.clone(),
                uri,
                Auth::Token(&player.token),
                body.clone(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(answer.error(), "forbidden");
        let answer = env.call(method.clone(), uri, Auth::Anonymous, body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // Nothing changed.
    let settings = env.state.accounts.contest().await;
    assert!(!settings.paused);
    env.finish().await;
}

async fn admins_manage_users_teams_and_brackets(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let auth = Auth::Token(&admin.token);
    let created = env
        .call(
            Method::POST,
            "/api/v1/users",
            auth,
            Some(json!({"name": "olga", "password": "password-1", "hidden": true})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let olga = created.body["data"]["id"].as_i64().unwrap();
    assert_eq!(created.body["data"]["hidden"], true);
    // Hidden: not listed for players.
    let listed = env
        .call(
            Method::GET,
            "/api/v1/users?per_page=10",
            Auth::Anonymous,
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != olga)
    );
    assert_eq!(listed.body["meta"]["pagination"]["per_page"], 10);
    let olga_session = env.login("olga", "password-1").await.session().unwrap();

    let bracket = env
        .call(
            Method::POST,
            "/api/v1/brackets",
            auth,
            Some(json!({"name": "students", "type": "teams"})),
        )
        .await;
    assert_eq!(bracket.status, StatusCode::OK, "{:?}", bracket.body);
    let bracket = bracket.body["data"]["id"].as_i64().unwrap();
    let team = env
        .call(
            Method::POST,
            "/api/v1/teams",
            auth,
            Some(json!({"name": "Admins' pick", "bracket_id": bracket})),
        )
        .await;
    assert_eq!(team.status, StatusCode::OK, "{:?}", team.body);
    let team = team.body["data"]["id"].as_i64().unwrap();
    let added = env
        .call(
            Method::POST,
            &format!("/api/v1/teams/{team}/members"),
            auth,
            Some(json!({"user_id": olga})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{:?}", added.body);
    assert_eq!(added.body["data"], json!([olga]));
    let detail = env
        .call(Method::GET, &format!("/api/v1/teams/{team}"), auth, None)
        .await;
    assert_eq!(detail.body["data"]["captain_id"], olga);
    assert_eq!(detail.body["data"]["bracket_id"], bracket);
    let brackets = env
        .call(Method::GET, "/api/v1/brackets", Auth::Anonymous, None)
        .await;
    assert_eq!(brackets.body["data"][0]["name"], "students");

    let deleted = env
        .call(Method::DELETE, &format!("/api/v1/teams/{team}"), auth, None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let gone = env
        .call(Method::GET, &format!("/api/v1/teams/{team}"), auth, None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let user = env
        .call(Method::GET, &format!("/api/v1/users/{olga}"), auth, None)
        .await;
    assert_eq!(user.body["data"]["team_id"], serde_json::Value::Null);

    let removed = env
        .call(Method::DELETE, &format!("/api/v1/users/{olga}"), auth, None)
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let session = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Cookie(&olga_session),
            None,
        )
        .await;
    assert_eq!(session.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.login("olga", "password-1").await.status,
        StatusCode::UNAUTHORIZED
    );
    env.finish().await;
}

async fn contest_settings_change_at_runtime(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let auth = Auth::Token(&admin.token);
    let listed = env.call(Method::GET, "/api/v1/configs", auth, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let keys: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    for key in [
        "start_ms",
        "end_ms",
        "freeze_ms",
        "paused",
        "captain_only_start",
    ] {
        assert!(keys.contains(&key), "{key}");
    }
    let future = fctf_control::contestant::accounts::now_ms() + 3_600_000;
    env.set(&admin, json!({"start_ms": future})).await;
    let contest = env
        .call(Method::GET, "/api/v1/contest", Auth::Anonymous, None)
        .await;
    assert_eq!(contest.body["data"]["phase"], "not_started");
    let one = env
        .call(
            Method::PATCH,
            "/api/v1/configs/paused",
            auth,
            Some(json!({"value": true})),
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{:?}", one.body);
    assert_eq!(one.body["data"]["value"], true);
    assert!(env.state.accounts.contest().await.paused);

    // Refused as a whole: unknown key, wrong type, end before start.
    for bad in [
        json!({"nope": 1}),
        json!({"paused": "yes"}),
        json!({"score_visibility": "everyone"}),
        json!({"paused": false, "end_ms": 5}),
    ] {
        let answer = env
            .call(Method::PATCH, "/api/v1/configs", auth, Some(bad.clone()))
            .await;
        // Well-formed JSON the settings refuse: 422 (the document types each key).
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert!(env.state.accounts.contest().await.paused);
    let unknown = env
        .call(Method::GET, "/api/v1/configs/nope", auth, None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Another process sees the change within the cache TTL.
    let (other, _) = env.restart(|_| {}).await;
    let seen = other.accounts.contest().await;
    assert!(seen.paused);
    assert_eq!(seen.start_ms, Some(future));
    env.finish().await;
}
