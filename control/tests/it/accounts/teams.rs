//! Teams: create, join by invite code, the size cap (also under concurrent joins), captaincy,
//! leave, names unique after normalisation, rosters frozen after the end.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::support::{Auth, Backend, Env, on_both};

on_both!(
    create_join_leave_and_captaincy,
    the_size_cap_holds_under_concurrent_joins,
    rosters_are_frozen_after_the_end,
);

async fn create_join_leave_and_captaincy(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    env.set(&admin, json!({"team_size": 2})).await;
    let cap = env.player("cap", None).await;
    let created = env
        .call(
            Method::POST,
            "/api/v1/teams",
            Auth::Token(&cap.token),
            Some(json!({"name": "Rustaceans"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let team = created.body["data"]["id"].as_i64().unwrap();
    assert_eq!(created.body["data"]["captain_id"], cap.user_id);
    let code = created.body["data"]["invite_code"]
        .as_str()
        .unwrap()
        .to_owned();

    // A second team for a member of one: refused. A name equal after normalisation: refused.
    let again = env
        .call(
            Method::POST,
            "/api/v1/teams",
            Auth::Token(&cap.token),
            Some(json!({"name": "Other"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let lone = env.player("lone", None).await;
    let clash = env
        .call(
            Method::POST,
            "/api/v1/teams",
            Auth::Token(&lone.token),
            Some(json!({"name": " ＲＵＳＴＡＣＥＡＮＳ "})),
        )
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT, "{:?}", clash.body);

    // Join by code; the public view hides the code.
    let mate = env.player("mate", None).await;
    let bad_code = env
        .call(
            Method::POST,
            "/api/v1/teams/join",
            Auth::Token(&mate.token),
            Some(json!({"invite_code": "nope"})),
        )
        .await;
    assert_eq!(bad_code.status, StatusCode::NOT_FOUND);
    let joined = env
        .call(
            Method::POST,
            "/api/v1/teams/join",
            Auth::Token(&mate.token),
            Some(json!({"invite_code": code})),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);
    let public = env
        .call(
            Method::GET,
            &format!("/api/v1/teams/{team}"),
            Auth::Anonymous,
            None,
        )
        .await;
    assert_eq!(public.status, StatusCode::OK);
    assert!(public.body["data"].get("invite_code").is_none());
    assert_eq!(
        public.body["data"]["members"],
        json!([cap.user_id, mate.user_id])
    );

    // Full at two.
    let late = env.player("late", None).await;
    let full = env
        .call(
            Method::POST,
            "/api/v1/teams/join",
            Auth::Token(&late.token),
            Some(json!({"invite_code": code})),
        )
        .await;
    assert_eq!(full.status, StatusCode::CONFLICT);
    assert!(full.body["message"].as_str().unwrap().contains("full"));

    // Only the captain edits; the captain cannot leave members behind without a captain.
    let not_captain = env
        .call(
            Method::PATCH,
            "/api/v1/teams/me",
            Auth::Token(&mate.token),
            Some(json!({"name": "Mutiny"})),
        )
        .await;
    assert_eq!(not_captain.status, StatusCode::FORBIDDEN);
    let captain_leaves = env
        .call(
            Method::POST,
            "/api/v1/teams/me/leave",
            Auth::Token(&cap.token),
            None,
        )
        .await;
    assert_eq!(captain_leaves.status, StatusCode::CONFLICT);
    let outsider = env
        .call(
            Method::PATCH,
            "/api/v1/teams/me",
            Auth::Token(&cap.token),
            Some(json!({"captain_id": late.user_id})),
        )
        .await;
    assert_eq!(outsider.status, StatusCode::UNPROCESSABLE_ENTITY);
    let handed = env
        .call(
            Method::PATCH,
            "/api/v1/teams/me",
            Auth::Token(&cap.token),
            Some(json!({"captain_id": mate.user_id})),
        )
        .await;
    assert_eq!(handed.status, StatusCode::OK, "{:?}", handed.body);
    assert_eq!(handed.body["data"]["captain_id"], mate.user_id);
    let left = env
        .call(
            Method::POST,
            "/api/v1/teams/me/leave",
            Auth::Token(&cap.token),
            None,
        )
        .await;
    assert_eq!(left.status, StatusCode::OK, "{:?}", left.body);
    let me = env
        .call(
            Method::GET,
            "/api/v1/teams/me",
            Auth::Token(&cap.token),
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::NOT_FOUND);
    let mine = env
        .call(
            Method::GET,
            "/api/v1/teams/me",
            Auth::Token(&mate.token),
            None,
        )
        .await;
    assert_eq!(mine.body["data"]["members"], json!([mate.user_id]));

    // A freed place can be taken.
    let rejoin = env
        .call(
            Method::POST,
            "/api/v1/teams/join",
            Auth::Token(&late.token),
            Some(json!({"invite_code": code})),
        )
        .await;
    assert_eq!(rejoin.status, StatusCode::OK, "{:?}", rejoin.body);
    env.finish().await;
}

async fn the_size_cap_holds_under_concurrent_joins(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    env.set(&admin, json!({"team_size": 3})).await;
    let captain = env.player("captain", Some("crowded")).await;
    let team = captain.team_id.unwrap();
    let me = env
        .call(
            Method::GET,
            "/api/v1/teams/me",
            Auth::Token(&captain.token),
            None,
        )
        .await;
    let code = me.body["data"]["invite_code"].as_str().unwrap().to_owned();
    let mut joiners = Vec::new();
    for i in 0..12 {
        joiners.push(env.player(&format!("joiner{i}"), None).await);
    }
    let env = Arc::new(env);
    let mut tasks = Vec::new();
    for joiner in joiners {
        let env = env.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            env.call(
                Method::POST,
                "/api/v1/teams/join",
                Auth::Token(&joiner.token),
                Some(json!({"invite_code": code})),
            )
            .await
            .status
        }));
    }
    let mut joined = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => joined += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(joined, 2);
    let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE team_id = ?")
        .bind(team)
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(members, 3);
    let counted: i64 = sqlx::query_scalar("SELECT member_count FROM teams WHERE id = ?")
        .bind(team)
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(counted, 3);
    Arc::try_unwrap(env).ok().unwrap().finish().await;
}

async fn rosters_are_frozen_after_the_end(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let player = env.player("nina", None).await;
    env.set(&admin, json!({"start_ms": 1000, "end_ms": 2000}))
        .await;
    let contest = env
        .call(Method::GET, "/api/v1/contest", Auth::Anonymous, None)
        .await;
    assert_eq!(contest.body["data"]["phase"], "ended");
    let create = env
        .call(
            Method::POST,
            "/api/v1/teams",
            Auth::Token(&player.token),
            Some(json!({"name": "Too Late"})),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
    env.finish().await;
}
