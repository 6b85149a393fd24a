//! The submission path's copies and writers (control/src/contestant/play/{cache,journal}.rs):
//! an admin's edit applies at once in its process and never lets an old flag score in another;
//! a wrong flag is durable before its answer; a writer killed mid-batch loses nothing it
//! acknowledged; the per-user limit charged with the per-IP one counts each request once.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fctf_control::contestant::accounts::testkit;
use fctf_control::contestant::play::journal::Journal;
use fctf_control::contestant::play::records::SubmissionRow;
use fctf_core::db::{Database, ScratchDatabase};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::support::{Backend, Env, MARIADB, call, on_both, outcome};

/// The id of the only flag of challenge `id`.
async fn flag_id(env: &Env, id: i64) -> i64 {
    let flags = env
        .admin_ok(
            Method::GET,
            &format!("/api/v1/challenges/{id}/flags"),
            json!(null),
        )
        .await;
    flags[0]["id"].as_i64().unwrap()
}

/// A flag edited, added or deleted by an admin applies from the next submission in the same
/// process, though the process had just judged flags on its copy.
async fn flag_edits_apply_at_once_in_this_process(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(json!({"name": "edited", "description": "d", "value": 100}))
        .await;
    env.flag(id, "static", "flag{old}", "").await;
    let a = env.player("edit-a", "edit-team-a").await;
    let b = env.player("edit-b", "edit-team-b").await;
    let c = env.player("edit-c", "edit-team-c").await;
    // The copies are warm: this process just judged a flag of this challenge.
    assert_eq!(
        outcome(&env.submit(&a, id, "flag{nope}").await.1),
        "incorrect"
    );
    let flag = flag_id(&env, id).await;
    env.admin_ok(
        Method::PATCH,
        &format!("/api/v1/flags/{flag}"),
        json!({"content": "flag{new}"}),
    )
    .await;
    // The new flag first: on a stale copy it would be judged wrong (the old flag would not
    // tell, since a correct verdict is confirmed on fresh rows anyway).
    assert_eq!(outcome(&env.submit(&a, id, "flag{new}").await.1), "correct");
    assert_eq!(
        outcome(&env.submit(&b, id, "flag{old}").await.1),
        "incorrect"
    );
    // A flag added is accepted at once; a flag deleted is refused at once.
    env.flag(id, "static", "flag{added}", "").await;
    assert_eq!(
        outcome(&env.submit(&b, id, "flag{added}").await.1),
        "correct"
    );
    env.admin_ok(
        Method::DELETE,
        &format!("/api/v1/flags/{flag}"),
        json!(null),
    )
    .await;
    assert_eq!(
        outcome(&env.submit(&c, id, "flag{new}").await.1),
        "incorrect"
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM solves WHERE challenge_id = ?",
            &[id]
        )
        .await,
        2
    );
    env.finish().await;
}

on_both!(flag_edits_apply_at_once_in_this_process);

/// A challenge hidden (or deleted) by an admin is refused from the next submission in the same
/// process, right or wrong flag; shown again, it opens at once.
async fn a_hidden_challenge_is_refused_at_once(backend: Backend) {
    let env = Env::new(backend, &[]).await;
    let id = env
        .challenge(json!({"name": "hideable", "description": "d", "value": 100}))
        .await;
    env.flag(id, "static", "flag{hide}", "").await;
    let p = env.player("hider", "hide-team").await;
    assert_eq!(
        outcome(&env.submit(&p, id, "flag{warm}").await.1),
        "incorrect"
    );
    env.admin_ok(
        Method::PATCH,
        &format!("/api/v1/challenges/{id}"),
        json!({"state": "hidden"}),
    )
    .await;
    for flag in ["flag{wrong}", "flag{hide}"] {
        let (status, answer) = env.submit(&p, id, flag).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{flag}: {answer}");
    }
    env.admin_ok(
        Method::PATCH,
        &format!("/api/v1/challenges/{id}"),
        json!({"state": "visible"}),
    )
    .await;
    assert_eq!(
        outcome(&env.submit(&p, id, "flag{hide}").await.1),
        "correct"
    );
    // Deleted: gone at once (and its solve with it).
    env.admin_ok(
        Method::DELETE,
        &format!("/api/v1/challenges/{id}"),
        json!(null),
    )
    .await;
    let (status, answer) = env.submit(&p, id, "flag{hide}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM submissions WHERE challenge_id = ?",
            &[id]
        )
        .await,
        0
    );
    env.finish().await;
}

on_both!(a_hidden_challenge_is_refused_at_once);

/// Through another process (its own copies, still fresh): an old flag never scores and a hidden
/// challenge is never solved, because a correct verdict is confirmed on fresh rows in the solve's
/// transaction; the new flag scores there at once (the copy is dropped and the flag re-judged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_never_scores_an_old_flag_or_a_hidden_challenge() {
    let env = Env::new(Backend::Real, &[]).await;
    let twin = env.twin().await;
    let id = env
        .challenge(json!({"name": "far", "description": "d", "value": 100}))
        .await;
    env.flag(id, "static", "flag{before}", "").await;
    let hidden = env
        .challenge(json!({"name": "far-hidden", "description": "d", "value": 100}))
        .await;
    env.flag(hidden, "static", "flag{hidden}", "").await;
    let p = env.player("far-player", "far-team").await;
    let submit = |challenge: i64, flag: &'static str| {
        let twin = &twin;
        let p = &p;
        async move {
            call(
                twin,
                Method::POST,
                "/api/v1/challenges/attempt",
                Some(p),
                Some(json!({"challenge_id": challenge, "submission": flag})),
            )
            .await
        }
    };
    // The twin's copies are warm (a wrong flag to each challenge).
    assert_eq!(outcome(&submit(id, "flag{x}").await.1), "incorrect");
    assert_eq!(outcome(&submit(hidden, "flag{x}").await.1), "incorrect");
    // Edits through the first process; the twin's copies still say the old rows.
    let flag = flag_id(&env, id).await;
    env.admin_ok(
        Method::PATCH,
        &format!("/api/v1/flags/{flag}"),
        json!({"content": "flag{after}"}),
    )
    .await;
    env.admin_ok(
        Method::PATCH,
        &format!("/api/v1/challenges/{hidden}"),
        json!({"state": "hidden"}),
    )
    .await;
    let (status, answer) = submit(id, "flag{before}").await;
    assert_eq!(
        (status, outcome(&answer).as_str()),
        (StatusCode::OK, "incorrect")
    );
    let (status, answer) = submit(hidden, "flag{hidden}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(env.count("SELECT COUNT(*) AS n FROM solves", &[]).await, 0);
    // The new flag scores through the twin at once: its copy was dropped.
    assert_eq!(outcome(&submit(id, "flag{after}").await.1), "correct");
    assert_eq!(env.count("SELECT COUNT(*) AS n FROM solves", &[]).await, 1);
    env.finish().await;
}

/// Every "incorrect" answer stands for a committed submission row and its action-log line,
/// whether the submissions come one by one (each visible to another connection as soon as it
/// is answered) or 200 at once (grouped into shared transactions by the journal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_flag_is_durable_before_its_answer_mariadb_redis() {
    let env = Env::with(Backend::Real, &[], |c| {
        c.contestant.wrong_flags_per_min = 10_000;
    })
    .await;
    let id = env
        .challenge(json!({"name": "durable", "description": "d", "value": 100}))
        .await;
    env.flag(id, "static", "flag{durable}", "").await;
    let players = [
        env.player("dur-a", "dur-team").await,
        env.player("dur-b", "dur-team").await,
    ];
    let team = players[0].team_id.unwrap();
    // Read on a session of its own (not the writer's transaction): what it sees is committed.
    let committed = |sql: &'static str| {
        let db = &env.state.db;
        async move {
            let row = sqlx::query(sql)
                .bind(team)
                .fetch_one(db.pool())
                .await
                .unwrap();
            sqlx::Row::try_get::<i64, _>(&row, "n").unwrap()
        }
    };
    for i in 0..10 {
        let (status, answer) = env
            .submit(&players[i % 2], id, &format!("flag{{w{i}}}"))
            .await;
        assert_eq!(
            (status, outcome(&answer).as_str()),
            (StatusCode::OK, "incorrect")
        );
        assert_eq!(
            committed("SELECT COUNT(*) AS n FROM submissions WHERE team_id = ?").await,
            i64::try_from(i + 1).unwrap()
        );
    }
    let answers = join_all((0..200).map(|i| {
        let env = &env;
        let who = &players[i % 2];
        async move { env.submit(who, id, &format!("flag{{many{i}}}")).await }
    }))
    .await;
    let incorrect = answers
        .iter()
        .filter(|(s, a)| *s == StatusCode::OK && outcome(a) == "incorrect")
        .count();
    assert_eq!(
        incorrect,
        200,
        "{:?}",
        answers.iter().find(|(s, _)| *s != StatusCode::OK)
    );
    assert_eq!(
        committed("SELECT COUNT(*) AS n FROM submissions WHERE team_id = ? AND type = 'incorrect'")
            .await,
        210
    );
    assert_eq!(
        committed(
            "SELECT COUNT(*) AS n FROM team_actions WHERE team_id = ? AND action = 'submit_incorrect'"
        )
        .await,
        210
    );
    env.finish().await;
}

fn wrong_row(team: i64, n: usize) -> SubmissionRow {
    SubmissionRow {
        challenge_id: 1,
        user_id: team,
        team_id: team,
        ip: "192.0.2.1".to_owned(),
        provided: format!("flag{{journal-{n}}}"),
        now_ms: 1,
    }
}

/// Submission rows whose text is `flag{journal-<n>}`, by `n`.
async fn journal_rows(db: &Database) -> Vec<usize> {
    let rows = sqlx::query("SELECT provided FROM submissions ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let text: String = sqlx::Row::try_get(r, "provided").unwrap();
            text.trim_start_matches("flag{journal-")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .collect()
}

/// The journal's writers killed while a batch is in its transaction (held up by a table lock
/// taken elsewhere): every submission acknowledged before is in the database, once; the
/// submitters of the killed batch and of everything queued behind it are answered with an
/// error, and none of their rows appears; later submissions are written directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_journal_loses_nothing_it_acknowledged_mariadb() {
    let scratch = ScratchDatabase::create(MARIADB, 8)
        .await
        .expect("MariaDB on 127.0.0.1:3306 answers");
    scratch.db.migrate().await.unwrap();
    let db = scratch.db.clone();
    let journal = Journal::start(db.clone());
    let acknowledged: Vec<usize> = (0..20).collect();
    join_all(
        acknowledged
            .iter()
            .map(|n| journal.record(wrong_row(1, *n))),
    )
    .await
    .into_iter()
    .for_each(|r| r.unwrap());
    assert_eq!(journal_rows(&db).await.len(), 20);

    // Another session locks the tables: the next batch blocks inside its transaction.
    let mut holder = db.pool().acquire().await.unwrap();
    sqlx::query("LOCK TABLES submissions WRITE, team_actions WRITE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let pending = tokio::spawn({
        let journal = journal.clone();
        async move {
            join_all((100..150).map(|n| {
                let journal = journal.clone();
                async move { (n, journal.record(wrong_row(2, n)).await) }
            }))
            .await
        }
    });
    // Wait (without a deadline on the assertion) until a writer waits on the lock.
    let probe = db.clone();
    loop {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE 'Waiting for table%' AND DB = DATABASE()",
        )
        .fetch_one(probe.pool())
        .await
        .unwrap();
        if sqlx::Row::try_get::<i64, _>(&row, "n").unwrap() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    journal.kill_writers();
    let outcomes = pending.await.unwrap();
    sqlx::query("UNLOCK TABLES")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    for (n, outcome) in &outcomes {
        assert!(
            outcome.is_err(),
            "submission {n} was acknowledged by a killed writer"
        );
    }
    // Writes go on without the writers, each in its own transaction.
    journal.record(wrong_row(1, 20)).await.unwrap();
    // The killed batch's transaction never committed: let its session end, then look.
    loop {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE 'Waiting for table%' AND DB = DATABASE()",
        )
        .fetch_one(probe.pool())
        .await
        .unwrap();
        if sqlx::Row::try_get::<i64, _>(&row, "n").unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = journal_rows(&db).await;
    let expected: Vec<usize> = (0..=20).collect();
    let mut sorted = written.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, expected,
        "acknowledged rows, each once, and nothing else"
    );
    scratch.drop_database().await.unwrap();
}

/// A session cookie names its user without I/O: the per-user bucket is charged with the per-IP
/// one, once per request (a burst of 2 lets exactly 2 requests through), and another user keeps
/// a bucket of their own.
#[tokio::test]
async fn a_session_cookie_is_charged_once_per_request() {
    let env = Env::with(Backend::Sqlite, &[], |c| {
        c.contestant.api_user_per_sec = 1;
        c.contestant.api_user_burst = 2;
    })
    .await;
    let p = env.player("cookie-user", "cookie-team").await;
    let other = env.player("cookie-other", "cookie-team-2").await;
    let login = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"name": p.name, "password": testkit::PASSWORD}).to_string(),
        ))
        .unwrap();
    let answer = env.app.clone().oneshot(login).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let cookie = answer.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = |cookie: String| {
        let app = env.app.clone();
        async move {
            let request = Request::builder()
                .uri("/api/v1/users/me")
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    assert_eq!(me(cookie.clone()).await, StatusCode::OK);
    assert_eq!(me(cookie.clone()).await, StatusCode::OK);
    assert_eq!(me(cookie.clone()).await, StatusCode::TOO_MANY_REQUESTS);
    let (status, _): (StatusCode, Value) = call(
        &env.app,
        Method::GET,
        "/api/v1/users/me",
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    env.finish().await;
}
