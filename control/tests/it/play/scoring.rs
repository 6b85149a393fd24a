//! Scoring and visibility through the API: the freeze (players frozen, admins live), the
//! prerequisites, regex and case-insensitive flags, the contest window, the wrong-answer limit
//! and the cooldown.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{Backend, Env, on_both, outcome};

fn score_of(board: &Value, team: &str) -> Option<i64> {
    board["data"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == team)
        .and_then(|e| e["score"].as_i64())
}

/// T55: after the freeze, players see the board, solve counts and dynamic values as they were;
/// admins see the live board.
async fn the_freeze_holds_for_players_and_not_for_admins(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(
            json!({"name": "frozen", "description": "d", "type": "dynamic",
                          "initial": 300, "minimum": 100, "decay": 100}),
        )
        .await;
    env.flag(id, "static", "flag{ice}", "").await;
    let a = env.player("fa", "before").await;
    let b = env.player("fb", "after").await;
    assert_eq!(outcome(&env.submit(&a, id, "flag{ice}").await.1), "correct");
    let freeze = fctf_control::contestant::accounts::now_ms();
    env.change_settings(&[("freeze_ms", json!(freeze))]).await;
    assert_eq!(outcome(&env.submit(&b, id, "flag{ice}").await.1), "correct");

    let (_, player_board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&a), None)
        .await;
    assert_eq!(score_of(&player_board, "before"), Some(300));
    assert_eq!(score_of(&player_board, "after"), Some(0));
    let (_, admin_board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&env.admin), None)
        .await;
    assert_eq!(score_of(&admin_board, "before"), Some(200));
    assert_eq!(score_of(&admin_board, "after"), Some(200));
    // The challenge list: frozen count and value for players, live for admins; a team still
    // sees its own solve.
    let (_, list) = env
        .call(Method::GET, "/api/v1/challenges", Some(&b), None)
        .await;
    assert_eq!(list["data"][0]["solves"], 1);
    assert_eq!(list["data"][0]["value"], 300);
    assert_eq!(list["data"][0]["solved_by_me"], true);
    let (_, list) = env
        .call(Method::GET, "/api/v1/challenges", Some(&env.admin), None)
        .await;
    assert_eq!(list["data"][0]["solves"], 2);
    assert_eq!(list["data"][0]["value"], 200);
    let (_, solves) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}/solves"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(solves["data"].as_array().unwrap().len(), 1);
    // The frozen board does not change while the freeze holds.
    let c = env.player("fc", "later").await;
    assert_eq!(outcome(&env.submit(&c, id, "flag{ice}").await.1), "correct");
    let (_, again) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&a), None)
        .await;
    assert_eq!(score_of(&again, "before"), Some(300));
    assert_eq!(score_of(&again, "later"), Some(0));
    let (_, top) = env
        .call(Method::GET, "/api/v1/scoreboard/top/1", Some(&a), None)
        .await;
    assert_eq!(top["data"]["1"]["name"], "before");
    assert_eq!(top["data"]["1"]["solves"][0]["value"], 300);
    env.finish().await;
}

on_both!(the_freeze_holds_for_players_and_not_for_admins);

#[tokio::test]
async fn locked_challenges_are_hidden_or_anonymised_until_their_prerequisites_are_solved() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let first = env
        .challenge(json!({"name": "first", "description": "d", "value": 10}))
        .await;
    env.flag(first, "static", "flag{1}", "").await;
    let hidden = env
        .challenge(
            json!({"name": "secret-next", "description": "d", "value": 10,
                          "requirements": {"prerequisites": [first]}}),
        )
        .await;
    let anon = env
        .challenge(
            json!({"name": "shadow-next", "description": "d", "value": 10,
                          "requirements": {"prerequisites": [first], "anonymize": true}}),
        )
        .await;
    let invisible = env
        .challenge(json!({"name": "draft", "description": "d", "value": 10, "state": "hidden"}))
        .await;
    let p = env.player("pre", "pre-team").await;
    let (_, list) = env
        .call(Method::GET, "/api/v1/challenges", Some(&p), None)
        .await;
    let list = list["data"].as_array().unwrap().clone();
    let ids: Vec<i64> = list.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![first, anon]);
    assert_eq!(list[1]["name"], "???");
    assert_eq!(list[1]["type"], "hidden");
    assert!(!list.iter().any(|c| c["name"] == "secret-next"));
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{hidden}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{anon}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{invisible}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env.submit(&p, hidden, "x").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        outcome(&env.submit(&p, first, "flag{1}").await.1),
        "correct"
    );
    let (_, list) = env
        .call(Method::GET, "/api/v1/challenges", Some(&p), None)
        .await;
    let names: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["first", "secret-next", "shadow-next"]);
    let (s, detail) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{hidden}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(detail["data"]["name"], "secret-next");
    // Admins see everything.
    let (_, all) = env
        .call(Method::GET, "/api/v1/challenges", Some(&env.admin), None)
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    env.finish().await;
}

#[tokio::test]
async fn regex_and_case_insensitive_flags_match_as_documented() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let re = env
        .challenge(json!({"name": "re", "description": "d", "value": 10}))
        .await;
    env.flag(re, "regex", r"flag\{[0-9]{3}\}", "").await;
    let ci = env
        .challenge(json!({"name": "ci", "description": "d", "value": 10}))
        .await;
    env.flag(ci, "static", "flag{MiXeD}", "case_insensitive")
        .await;
    let p = env.player("rx", "rx-team").await;
    assert_eq!(
        outcome(&env.submit(&p, re, "flag{12}").await.1),
        "incorrect"
    );
    assert_eq!(
        outcome(&env.submit(&p, re, "xflag{123}").await.1),
        "incorrect"
    );
    assert_eq!(
        outcome(&env.submit(&p, re, "  flag{123}\n").await.1),
        "correct"
    );
    assert_eq!(
        outcome(&env.submit(&p, ci, "FLAG{mixed}").await.1),
        "correct"
    );
    assert_eq!(
        outcome(&env.submit(&p, ci, "FLAG{mixed}").await.1),
        "already_solved"
    );
    // A pattern over the size bound or one that does not compile is refused at authoring.
    for bad in [
        "(".to_owned(),
        "a".repeat(600),
        "(a{1000}){1000}".to_owned(),
    ] {
        let (s, answer) = env
            .call(
                Method::POST,
                "/api/v1/flags",
                Some(&env.admin),
                Some(json!({"challenge": re, "type": "regex", "content": bad})),
            )
            .await;
        // A well-formed body whose content breaks the regex rules: 422, not 400.
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["error"], "unprocessable", "{answer}");
    }
    // Each field valid, together not (minimum above initial): 422 as well; a field invalid by
    // itself stays 400.
    for (body, status) in [
        (
            json!({"name": "dyn", "type": "dynamic", "initial": 100, "minimum": 200}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "dyn", "type": "dynamic", "initial": 100, "minimum": -1}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, answer) = env
            .call(
                Method::POST,
                "/api/v1/challenges",
                Some(&env.admin),
                Some(body),
            )
            .await;
        assert_eq!(s, status, "{answer}");
    }
    env.finish().await;
}

#[tokio::test]
async fn the_contest_window_and_pause_gate_submissions() {
    let future = fctf_control::contestant::accounts::now_ms() + 3_600_000;
    let env = Env::new(Backend::Sqlite, &[("start_ms", json!(future))]).await;
    let id = env
        .challenge(json!({"name": "w", "description": "d", "value": 10}))
        .await;
    env.flag(id, "static", "flag{w}", "").await;
    let p = env.player("early-bird", "w-team").await;
    let (s, answer) = env.submit(&p, id, "flag{w}").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{answer}");
    let (s, _) = env
        .call(Method::GET, "/api/v1/challenges", Some(&p), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    env.change_settings(&[("start_ms", Value::Null), ("paused", json!(true))])
        .await;
    let (s, _) = env.submit(&p, id, "flag{w}").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    env.change_settings(&[
        ("paused", json!(false)),
        ("captain_only_submit", json!(true)),
    ])
    .await;
    let member = env.player("w-member", "w-team").await;
    let (s, _) = env.submit(&member, id, "flag{w}").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(outcome(&env.submit(&p, id, "flag{w}").await.1), "correct");
    assert_eq!(
        env.count("SELECT COUNT(*) AS n FROM submissions", &[])
            .await,
        1
    );
    env.finish().await;
}

#[tokio::test]
async fn wrong_answers_per_minute_and_the_cooldown_are_enforced() {
    let env = Env::with(Backend::Sqlite, &[], |c| {
        c.contestant.wrong_flags_per_min = 3
    })
    .await;
    let id = env
        .challenge(json!({"name": "slow", "description": "d", "value": 10}))
        .await;
    env.flag(id, "static", "flag{s}", "").await;
    let p = env.player("fast", "fast-team").await;
    for _ in 0..3 {
        assert_eq!(outcome(&env.submit(&p, id, "nope").await.1), "incorrect");
    }
    let (s, answer) = env.submit(&p, id, "flag{s}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(answer["retry_after"].as_u64().unwrap() >= 1);

    let cool = env
        .challenge(json!({"name": "cool", "description": "d", "value": 10, "cooldown_secs": 60}))
        .await;
    env.flag(cool, "static", "flag{c}", "").await;
    let q = env.player("cooler", "cool-team").await;
    assert_eq!(outcome(&env.submit(&q, cool, "nope").await.1), "incorrect");
    let (s, _) = env.submit(&q, cool, "flag{c}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(env.count("SELECT COUNT(*) AS n FROM solves", &[]).await, 0);
    env.finish().await;
}

#[tokio::test]
async fn score_visibility_and_brackets_shape_the_board() {
    let env = Env::new(Backend::Sqlite, &[("score_visibility", json!("private"))]).await;
    let id = env
        .challenge(json!({"name": "b", "description": "d", "value": 10}))
        .await;
    env.flag(id, "static", "flag{b}", "").await;
    let students = env.player("s1", "students").await;
    let pros = env.player("p1", "pros").await;
    sqlx::query(
        "INSERT INTO brackets (name, description, type) VALUES ('Students', NULL, 'teams')",
    )
    .execute(env.state.db.pool())
    .await
    .unwrap();
    let bracket = env.count("SELECT MAX(id) AS n FROM brackets", &[]).await;
    sqlx::query("UPDATE teams SET bracket_id = ? WHERE id = ?")
        .bind(bracket)
        .bind(students.team_id.unwrap())
        .execute(env.state.db.pool())
        .await
        .unwrap();
    assert_eq!(
        outcome(&env.submit(&pros, id, "flag{b}").await.1),
        "correct"
    );
    assert_eq!(
        outcome(&env.submit(&students, id, "flag{b}").await.1),
        "correct"
    );
    let (s, _) = env
        .call(Method::GET, "/api/v1/scoreboard", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, board) = env
        .call(
            Method::GET,
            &format!("/api/v1/scoreboard?bracket_id={bracket}"),
            Some(&pros),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let board = board["data"].as_array().unwrap().clone();
    assert_eq!(board.len(), 1);
    assert_eq!(board[0]["name"], "students");
    assert_eq!(board[0]["pos"], 1);
    assert_eq!(board[0]["bracket_name"], "Students");
    env.change_settings(&[("score_visibility", json!("hidden"))])
        .await;
    let (s, _) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&pros), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = env
        .call(Method::GET, "/api/v1/scoreboard/top/10", Some(&pros), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&env.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(board["data"][0]["name"], "pros");
    env.finish().await;
}
