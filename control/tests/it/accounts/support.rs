//! The harness of the accounts tests: an app over SQLite + the in-process store, or over a
//! scratch MariaDB database + Redis, and helpers to call it as anyone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use fctf_control::contestant::AppState;
use fctf_control::contestant::accounts::testkit::{self, Player, RecordingDeployment};
use fctf_core::config::Config;
use fctf_core::db::{Database, ScratchDatabase};
use fctf_core::store::{MemoryStore, RedisStore, StateStore};
use serde_json::Value;
use tower::ServiceExt;

const MARIADB: &str = "mysql://root@127.0.0.1:3306/test";
const REDIS: &str = "redis://127.0.0.1:6379";

/// Which backends a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a temporary file and the in-process store.
    Sqlite,
    /// A scratch database on the MariaDB server and Redis with a unique key prefix.
    Real,
}

/// Runs an `async fn(Backend)` test on both backends, as `NAME::sqlite` and `NAME::mariadb`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(crate::accounts::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mariadb() {
                super::$name(crate::accounts::support::Backend::Real).await;
            }
        }
    )*};
}
pub(crate) use on_both;

/// Credentials of one request.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    Anonymous,
    /// `Authorization: Token ...`.
    Token(&'a str),
    /// The session cookie's value (the JWT).
    Cookie(&'a str),
}

/// One answer, decoded.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The session JWT set by this answer, if any.
    pub fn session(&self) -> Option<String> {
        let cookie = self.headers.get(header::SET_COOKIE)?.to_str().ok()?;
        let value = cookie.strip_prefix("fctf_session=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// The error kind of an error answer.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// One app under test.
pub struct Env {
    pub state: AppState,
    pub app: Router,
    pub db: Database,
    pub store: Arc<dyn StateStore>,
    scratch: Option<ScratchDatabase>,
}

/// The test config: the API limits out of the way unless a test sets them.
pub fn config() -> Config {
    let mut config = Config::default();
    config.contestant.api_ip_per_sec = 1_000_000;
    config.contestant.api_ip_burst = 10_000_000;
    config.contestant.api_user_per_sec = 1_000_000;
    config.contestant.api_user_burst = 10_000_000;
    config
}

impl Env {
    /// A fresh app on `backend` with the test config.
    pub async fn new(backend: Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    /// A fresh app on `backend` with a config change.
    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = config();
        tweak(&mut config);
        let (db, store, scratch): (Database, Arc<dyn StateStore>, _) = match backend {
            Backend::Sqlite => (
                testkit::database(None).await,
                Arc::new(MemoryStore::new()),
                None,
            ),
            Backend::Real => {
                let scratch = ScratchDatabase::create(MARIADB, 16)
                    .await
                    .expect("MariaDB on 127.0.0.1:3306 (this test needs the real server)");
                scratch.db.migrate().await.unwrap();
                let prefix = format!("fctf-test:accounts-{}:", uuid::Uuid::new_v4().simple());
                let store = RedisStore::connect(REDIS, &prefix, Duration::from_secs(2))
                    .await
                    .expect("Redis on 127.0.0.1:6379 (this test needs the real server)");
                (scratch.db.clone(), Arc::new(store), Some(scratch))
            }
        };
        let (state, app) = testkit::app_with(
            db.clone(),
            store.clone(),
            config,
            Arc::new(RecordingDeployment::default()),
        )
        .await;
        Self {
            state,
            app,
            db,
            store,
            scratch,
        }
    }

    /// Another process of the same service: a new app state over the same database and store.
    pub async fn restart(&self, tweak: impl FnOnce(&mut Config)) -> (AppState, Router) {
        let mut config = config();
        tweak(&mut config);
        testkit::app_with(
            self.db.clone(),
            self.store.clone(),
            config,
            Arc::new(RecordingDeployment::default()),
        )
        .await
    }

    /// Drops the scratch database (MariaDB).
    pub async fn finish(self) {
        if let Some(scratch) = self.scratch {
            scratch.drop_database().await.unwrap();
        }
    }

    pub async fn player(&self, name: &str, team: Option<&str>) -> Player {
        testkit::player(&self.state, name, team).await
    }

    pub async fn admin(&self) -> Player {
        testkit::admin(&self.state).await
    }

    /// A JSON request (`body` serialised) from the default peer.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Answer {
        let bytes = body.map(|b| b.to_string());
        self.raw(&self.app, method, uri, auth, bytes.as_deref(), &[])
            .await
    }

    /// A request with a raw body (sent as JSON unless `headers` name another content type) and
    /// extra headers, through `app`.
    pub async fn raw(
        &self,
        app: &Router,
        method: Method,
        uri: &str,
        auth: Auth<'_>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        match auth {
            Auth::Anonymous => {}
            Auth::Token(token) => {
                request = request.header(header::AUTHORIZATION, format!("Token {token}"));
            }
            Auth::Cookie(jwt) => {
                request = request.header(header::COOKIE, format!("fctf_session={jwt}"));
            }
        }
        let has_type = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_type {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut peer: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        for (name, value) in headers {
            if *name == "x-test-peer" {
                peer = value.parse().unwrap();
            } else {
                request = request.header(*name, *value);
            }
        }
        let mut request = request
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "answer is not JSON ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Registers `name` with `password`; the answer.
    pub async fn register(&self, name: &str, password: &str) -> Answer {
        self.call(
            Method::POST,
            "/api/v1/auth/register",
            Auth::Anonymous,
            Some(serde_json::json!({"name": name, "password": password})),
        )
        .await
    }

    /// Logs in; the answer.
    pub async fn login(&self, name: &str, password: &str) -> Answer {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            Auth::Anonymous,
            Some(serde_json::json!({"name": name, "password": password})),
        )
        .await
    }

    /// Changes contest settings as `admin`; asserts success.
    pub async fn set(&self, admin: &Player, changes: Value) {
        let answer = self
            .call(
                Method::PATCH,
                "/api/v1/configs",
                Auth::Token(&admin.token),
                Some(changes),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
}
