//! The race cases of `../shared/TEST-PLAN.md` group F (T51, T52, T53, hint unlocks), as exact
//! counts, on SQLite and on MariaDB + Redis.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use serde_json::json;

use super::support::{Backend, Env, on_both, outcome};

/// T51: 1,000 concurrent submissions of the correct flag by the ten members of one team, through
/// two service instances (as two processes: shared database and store, separate caches):
/// exactly one "correct", one solve row, one correct submission, the dynamic value decayed
/// exactly once.
async fn one_solve_from_a_thousand_correct_submissions(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(
            json!({"name": "race", "category": "misc", "description": "d", "type": "dynamic",
                          "initial": 500, "minimum": 100, "decay": 50, "function": "linear"}),
        )
        .await;
    env.flag(id, "static", "flag{race}", "").await;
    // Another team solved it first, so this team's solve decays the value once: 500 -> 450.
    let early = env.player("early", "early-team").await;
    assert_eq!(
        outcome(&env.submit(&early, id, "flag{race}").await.1),
        "correct"
    );
    let mut members = Vec::new();
    for i in 0..10 {
        members.push(env.player(&format!("racer{i}"), "racers").await);
    }
    let twin = env.twin().await;
    let answers = join_all((0..1000).map(|i| {
        let app = if i % 2 == 0 { &env.app } else { &twin };
        let who = &members[i % members.len()];
        async move {
            super::support::call(
                app,
                Method::POST,
                "/api/v1/challenges/attempt",
                Some(who),
                Some(json!({"challenge_id": id, "submission": "flag{race}"})),
            )
            .await
        }
    }))
    .await;
    let mut tally: HashMap<String, usize> = HashMap::new();
    for (status, answer) in &answers {
        assert!(!status.is_server_error(), "{status} {answer}");
        *tally.entry(outcome(answer)).or_default() += 1;
    }
    eprintln!("1,000 concurrent correct submissions ({backend:?}): {tally:?}");
    assert_eq!(tally.get("correct"), Some(&1), "{tally:?}");
    // Everything else is "already solved" (or, past the lock wait, "try again": never a second
    // solve and never an error).
    let others: usize = tally
        .iter()
        .filter(|(k, _)| k.as_str() == "already_solved" || k.as_str() == "rate_limited")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(others, 999, "{tally:?}");
    let team = members[0].team_id.unwrap();
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM solves WHERE challenge_id = ? AND team_id = ?",
            &[id, team]
        )
        .await,
        1
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM submissions WHERE challenge_id = ? AND team_id = ? AND type = 'correct'",
            &[id, team]
        )
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT value AS n FROM challenges WHERE id = ?", &[id])
            .await,
        450
    );
    let (_, board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&members[0]), None)
        .await;
    let racers = board["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "racers")
        .unwrap()
        .clone();
    assert_eq!(racers["score"], 450);
    env.finish().await;
}

on_both!(one_solve_from_a_thousand_correct_submissions);

/// T53: max attempts 5, 50 concurrent wrong answers: exactly 5 are evaluated and recorded.
async fn attempts_never_pass_the_maximum(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(json!({"name": "limited", "description": "d", "value": 100, "max_attempts": 5}))
        .await;
    env.flag(id, "static", "flag{right}", "").await;
    let mut members = Vec::new();
    for i in 0..5 {
        members.push(env.player(&format!("guesser{i}"), "guessers").await);
    }
    let answers = join_all((0..50).map(|i| {
        let env = &env;
        let who = &members[i % members.len()];
        async move { env.submit(who, id, &format!("flag{{wrong{i}}}")).await }
    }))
    .await;
    let mut incorrect = 0;
    for (status, answer) in &answers {
        match outcome(answer).as_str() {
            "incorrect" => incorrect += 1,
            "forbidden" | "rate_limited" => assert!(status.is_client_error()),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(incorrect, 5);
    let team = members[0].team_id.unwrap();
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM submissions WHERE challenge_id = ? AND team_id = ?",
            &[id, team]
        )
        .await,
        5
    );
    // The right flag after the last attempt is refused too.
    let (status, answer) = env.submit(&members[0], id, "flag{right}").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    env.finish().await;
}

on_both!(attempts_never_pass_the_maximum);

/// 50 concurrent unlocks of one hint by one team: one unlock row, one negative award.
async fn a_hint_is_charged_once(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(json!({"name": "hinted", "description": "d", "value": 100}))
        .await;
    let hint = env
        .admin_ok(
            Method::POST,
            "/api/v1/hints",
            json!({"challenge": id, "content": "look closer", "cost": 30}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let members = [
        env.player("h1", "hinters").await,
        env.player("h2", "hinters").await,
    ];
    let team = members[0].team_id.unwrap();
    // Too poor to unlock: refused, nothing charged.
    let (status, _) = env
        .call(
            Method::POST,
            "/api/v1/unlocks",
            Some(&members[0]),
            Some(json!({"target": hint, "type": "hints"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    env.admin_ok(
        Method::POST,
        "/api/v1/awards",
        json!({"team_id": team, "name": "bonus", "value": 100}),
    )
    .await;
    let answers = join_all((0..50).map(|i| {
        let env = &env;
        let who = &members[i % 2];
        async move {
            env.call(
                Method::POST,
                "/api/v1/unlocks",
                Some(who),
                Some(json!({"target": hint, "type": "hints"})),
            )
            .await
        }
    }))
    .await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let conflicts = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM unlocks WHERE team_id = ?",
            &[team]
        )
        .await,
        1
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM awards WHERE team_id = ? AND value < 0",
            &[team]
        )
        .await,
        1
    );
    let (_, hint_view) = env
        .call(
            Method::GET,
            &format!("/api/v1/hints/{hint}"),
            Some(&members[1]),
            None,
        )
        .await;
    assert_eq!(hint_view["data"]["content"], "look closer");
    let (_, board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&members[0]), None)
        .await;
    assert_eq!(board["data"][0]["score"], 70);
    env.finish().await;
}

on_both!(a_hint_is_charged_once);

/// T52: 20 teams submit at once; exactly one first blood (the bonus), and it is the team of the
/// lowest solve id; the solves list follows the same order.
async fn first_blood_follows_the_database_order(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(
            json!({"name": "blood", "description": "d", "value": 100, "first_blood_bonus": 50}),
        )
        .await;
    env.flag(id, "static", "flag{blood}", "").await;
    let mut players = Vec::new();
    for i in 0..20 {
        players.push(
            env.player(&format!("b{i}"), &format!("blood-team-{i}"))
                .await,
        );
    }
    let answers = join_all(players.iter().map(|p| env.submit(p, id, "flag{blood}"))).await;
    assert!(answers.iter().all(|(_, a)| outcome(a) == "correct"));
    let row =
        sqlx::query("SELECT team_id AS n FROM solves WHERE challenge_id = ? ORDER BY id LIMIT 1")
            .bind(id)
            .fetch_one(env.state.db.pool())
            .await
            .unwrap();
    let first: i64 = sqlx::Row::try_get(&row, "n").unwrap();
    let (_, board) = env
        .call(Method::GET, "/api/v1/scoreboard", Some(&players[0]), None)
        .await;
    let board = board["data"].as_array().unwrap().clone();
    let bonus: Vec<i64> = board
        .iter()
        .filter(|e| e["score"] == 150)
        .map(|e| e["account_id"].as_i64().unwrap())
        .collect();
    assert_eq!(bonus, vec![first]);
    assert_eq!(board.iter().filter(|e| e["score"] == 100).count(), 19);
    assert_eq!(board[0]["account_id"], first);
    // The solves list is in database order too.
    let (_, solves) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}/solves"),
            Some(&players[0]),
            None,
        )
        .await;
    let listed: Vec<i64> = solves["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["account_id"].as_i64().unwrap())
        .collect();
    let rows = sqlx::query("SELECT team_id FROM solves WHERE challenge_id = ? ORDER BY id")
        .bind(id)
        .fetch_all(env.state.db.pool())
        .await
        .unwrap();
    let ordered: Vec<i64> = rows
        .iter()
        .map(|r| sqlx::Row::try_get::<i64, _>(r, "team_id").unwrap())
        .collect();
    assert_eq!(listed, ordered);
    env.finish().await;
}

on_both!(first_blood_follows_the_database_order);

/// T54's state-store half: with the store down, a submission is refused with a retryable 503
/// (fail closed) and nothing is recorded.
#[tokio::test]
async fn a_dead_state_store_fails_submissions_closed() {
    use std::sync::Arc;
    use std::time::Duration;

    use fctf_control::contestant::accounts::testkit;
    use fctf_core::store::RedisStore;

    // A port nothing listens on: every store call fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dead = RedisStore::connect_lazy(
        &format!("redis://127.0.0.1:{port}"),
        "fctf-test:play-dead:",
        Duration::from_millis(200),
    )
    .unwrap();
    let files =
        std::env::temp_dir().join(format!("fctf-play-dead-{}", uuid::Uuid::new_v4().simple()));
    let db = testkit::database(None).await;
    let (state, app) = testkit::app_with(
        db,
        Arc::new(dead),
        super::support::config(&files),
        Arc::new(testkit::RecordingDeployment::default()),
    )
    .await;
    let admin = testkit::admin(&state).await;
    let player = testkit::player(&state, "stranded", Some("stranded-team")).await;
    let (status, created) = super::support::call(
        &app,
        Method::POST,
        "/api/v1/challenges",
        Some(&admin),
        Some(json!({"name": "dead", "description": "d", "value": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["data"]["id"].as_i64().unwrap();
    let (status, answer) = super::support::call(
        &app,
        Method::POST,
        "/api/v1/challenges/attempt",
        Some(&player),
        Some(json!({"challenge_id": id, "submission": "anything"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "unavailable");
    assert!(answer["retry_after"].as_u64().unwrap() >= 1);
    let row = sqlx::query("SELECT COUNT(*) AS n FROM submissions")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    assert_eq!(sqlx::Row::try_get::<i64, _>(&row, "n").unwrap(), 0);
}

/// T54's row-lock case on MariaDB: another session holds the challenge row's lock while a
/// correct submission arrives; the submission waits, then succeeds, and exactly one solve exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_elsewhere_delays_a_solve_without_breaking_it_mariadb() {
    let env = Env::new(Backend::Real, &[]).await;
    let id = env
        .challenge(
            json!({"name": "locked-row", "description": "d", "type": "dynamic",
                          "initial": 100, "minimum": 10, "decay": 10}),
        )
        .await;
    env.flag(id, "static", "flag{row}", "").await;
    let p = env.player("waiter", "wait-team").await;
    let mut holder = env.state.db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM challenges WHERE id = ? FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    let submit = env.submit(&p, id, "flag{row}");
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        holder.commit().await.unwrap();
    };
    let ((status, answer), ()) = tokio::join!(submit, release);
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(outcome(&answer), "correct");
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM solves WHERE challenge_id = ?",
            &[id]
        )
        .await,
        1
    );
    env.finish().await;
}
