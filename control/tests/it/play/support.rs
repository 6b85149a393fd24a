//! The harness of the play tests: an app over SQLite + the in-process store, or over a scratch
//! MariaDB database + Redis, with a recording Deployment Center and helpers to call it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fctf_control::contestant::AppState;
use fctf_control::contestant::accounts::testkit::{self, Player, RecordingDeployment};
use fctf_core::config::Config;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::store::{MemoryStore, RedisStore, StateStore};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const MARIADB: &str = "mysql://root@127.0.0.1:3306/test";
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Which backends a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a temporary file and the in-process store.
    Sqlite,
    /// A scratch database on the MariaDB server and Redis with a unique prefix.
    Real,
}

/// Runs an `async fn(Backend)` test on both backends, as `NAME::sqlite` and
/// `NAME::mariadb_redis`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(crate::play::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mariadb_redis() {
                super::$name(crate::play::support::Backend::Real).await;
            }
        }
    )*};
}
pub(crate) use on_both;

/// One app under test.
pub struct Env {
    pub state: AppState,
    pub app: Router,
    pub admin: Player,
    pub deployment: Arc<RecordingDeployment>,
    pub files_dir: std::path::PathBuf,
    scratch: Option<ScratchDatabase>,
}

/// The config of the tests: API rate limits out of the way (the races send 1,000 requests from
/// one address), files in a fresh directory.
pub fn config(files_dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.contestant.api_ip_per_sec = 1_000_000;
    config.contestant.api_ip_burst = 10_000_000;
    config.contestant.api_user_per_sec = 1_000_000;
    config.contestant.api_user_burst = 10_000_000;
    config.contestant.files_dir = files_dir.display().to_string();
    config
}

/// Writes contest settings (`contest_config` rows, JSON values) straight into the database.
pub async fn write_settings(db: &Database, settings: &[(&str, Value)]) {
    for (name, value) in settings {
        sqlx::query("DELETE FROM contest_config WHERE name = ?")
            .bind(name.to_string())
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO contest_config (name, value) VALUES (?, ?)")
            .bind(name.to_string())
            .bind(value.to_string())
            .execute(db.pool())
            .await
            .unwrap();
    }
}

impl Env {
    /// A fresh app on `backend` with `settings` in force from the start.
    pub async fn new(backend: Backend, settings: &[(&str, Value)]) -> Self {
        Self::with(backend, settings, |_| {}).await
    }

    /// Like [`Env::new`], with a config change.
    pub async fn with(
        backend: Backend,
        settings: &[(&str, Value)],
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let files_dir =
            std::env::temp_dir().join(format!("fctf-play-files-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&files_dir).unwrap();
        let (db, scratch, store): (Database, Option<ScratchDatabase>, Arc<dyn StateStore>) =
            match backend {
                Backend::Sqlite => (
                    testkit::database(None).await,
                    None,
                    Arc::new(MemoryStore::new()),
                ),
                Backend::Real => {
                    let scratch = ScratchDatabase::create(MARIADB, 32)
                        .await
                        .expect("MariaDB on 127.0.0.1:3306 answers");
                    scratch.db.migrate().await.unwrap();
                    let prefix = format!("fctf-test:play:{}:", uuid::Uuid::new_v4().simple());
                    let redis = RedisStore::connect(REDIS, &prefix, Duration::from_secs(2))
                        .await
                        .expect("Redis on 127.0.0.1:6379 answers");
                    (scratch.db.clone(), Some(scratch), Arc::new(redis))
                }
            };
        write_settings(&db, settings).await;
        let mut config = config(&files_dir);
        tweak(&mut config);
        let deployment = Arc::new(RecordingDeployment::default());
        let (state, app) = testkit::app_with(db, store, config, deployment.clone()).await;
        let admin = testkit::admin(&state).await;
        Self {
            state,
            app,
            admin,
            deployment,
            files_dir,
            scratch,
        }
    }

    /// A second Contestant Service over the same database and state store, as a second process
    /// would be (its own caches, snapshots and settings).
    pub async fn twin(&self) -> Router {
        let (_, app) = testkit::app_with(
            self.state.db.clone(),
            self.state.store.clone(),
            config(&self.files_dir),
            self.deployment.clone(),
        )
        .await;
        app
    }

    /// Changes contest settings at runtime and waits until this process serves them.
    pub async fn change_settings(&self, settings: &[(&str, Value)]) {
        write_settings(&self.state.db, settings).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    /// A player of `team` (the first one named becomes its captain).
    pub async fn player(&self, name: &str, team: &str) -> Player {
        testkit::player(&self.state, name, Some(team)).await
    }

    /// One request; the status and the JSON body (`Value::Null` when not JSON).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        who: Option<&Player>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(&self.app, method, uri, who, body).await
    }

    /// An admin request that must succeed; its `data`.
    pub async fn admin_ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, uri, Some(&self.admin), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
        assert_eq!(answer["success"], true, "{answer}");
        answer["data"].clone()
    }

    /// Creates a challenge; returns its id.
    pub async fn challenge(&self, body: Value) -> i64 {
        let data = self
            .admin_ok(Method::POST, "/api/v1/challenges", body)
            .await;
        data["id"].as_i64().unwrap()
    }

    /// Adds a flag to a challenge.
    pub async fn flag(&self, challenge: i64, kind: &str, content: &str, data: &str) {
        self.admin_ok(
            Method::POST,
            "/api/v1/flags",
            json!({"challenge": challenge, "type": kind, "content": content, "data": data}),
        )
        .await;
    }

    /// Submits `flag` as `who`; the status and the answer.
    pub async fn submit(&self, who: &Player, challenge: i64, flag: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/challenges/attempt",
            Some(who),
            Some(json!({"challenge_id": challenge, "submission": flag})),
        )
        .await
    }

    /// A number from one SQL `COUNT(*)`-style query (`AS n`).
    pub async fn count(&self, sql: &'static str, binds: &[i64]) -> i64 {
        let mut query = sqlx::query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        let row = query.fetch_one(self.state.db.pool()).await.unwrap();
        sqlx::Row::try_get::<i64, _>(&row, "n").unwrap()
    }

    /// Drops the scratch database (MariaDB) and the files directory.
    pub async fn finish(self) {
        if let Some(scratch) = self.scratch {
            scratch.drop_database().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.files_dir);
    }
}

/// One request against `app`.
pub async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    who: Option<&Player>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(who) = who {
        request = request.header("authorization", who.authorization());
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
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// The `status` word of an attempt answer (or the error kind).
pub fn outcome(answer: &Value) -> String {
    answer["data"]["status"]
        .as_str()
        .or_else(|| answer["error"].as_str())
        .unwrap_or("?")
        .to_owned()
}
