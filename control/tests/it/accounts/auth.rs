//! Registration, login, sessions (only the latest login is valid), logout, password change, API
//! tokens and their expiry, uniform failures.

use axum::http::{Method, StatusCode};
use serde_json::json;

use super::support::{Auth, Backend, Env, on_both};

on_both!(
    register_login_logout_me,
    only_the_latest_login_is_valid,
    sessions_survive_a_restart,
    another_process_drops_an_old_session_within_the_cache_ttl,
    public_routes_treat_bad_credentials_as_anonymous,
    api_tokens_authenticate_until_they_expire_or_are_revoked,
    wrong_password_and_unknown_user_answer_identically,
    failed_logins_are_limited_per_account,
    registration_can_be_closed_and_capped,
    password_policy_and_change,
    banned_and_unverified_users_are_refused,
);

async fn register_login_logout_me(backend: Backend) {
    let env = Env::new(backend).await;
    let answer = env.register("alice", "correct horse").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["success"], true);
    assert_eq!(answer.body["data"]["name"], "alice");
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));
    let registered = answer.session().unwrap();

    let me = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Cookie(&registered),
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["data"]["name"], "alice");

    let login = env.login("ALICE", "correct horse").await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let session = login.session().unwrap();
    let logout = env
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Auth::Cookie(&session),
            None,
        )
        .await;
    assert_eq!(logout.status, StatusCode::OK);
    assert!(
        logout.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Cookie(&session),
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body["success"], false);
    assert_eq!(after.error(), "unauthorized");

    let anonymous = env
        .call(Method::GET, "/api/v1/users/me", Auth::Anonymous, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let garbage = env
        .call(Method::GET, "/api/v1/users/me", Auth::Cookie("a.b.c"), None)
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    env.finish().await;
}

async fn only_the_latest_login_is_valid(backend: Backend) {
    let env = Env::new(backend).await;
    assert_eq!(
        env.register("bob", "password-1").await.status,
        StatusCode::OK
    );
    let first = env.login("bob", "password-1").await.session().unwrap();
    let second = env.login("bob", "password-1").await.session().unwrap();
    let old = env
        .call(Method::GET, "/api/v1/users/me", Auth::Cookie(&first), None)
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = env
        .call(Method::GET, "/api/v1/users/me", Auth::Cookie(&second), None)
        .await;
    assert_eq!(new.status, StatusCode::OK);
    env.finish().await;
}

async fn sessions_survive_a_restart(backend: Backend) {
    let env = Env::new(backend).await;
    let session = env.register("carol", "password-1").await.session().unwrap();
    // A second process over the same database reads the same session key.
    let (_state, other) = env.restart(|_| {}).await;
    let me = env
        .raw(
            &other,
            Method::GET,
            "/api/v1/users/me",
            Auth::Cookie(&session),
            None,
            &[],
        )
        .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.body["data"]["name"], "carol");
    env.finish().await;
}

async fn another_process_drops_an_old_session_within_the_cache_ttl(backend: Backend) {
    let env = Env::new(backend).await;
    let first = env.register("olive", "password-1").await.session().unwrap();
    let (_state, other) = env.restart(|_| {}).await;
    let me = |app: &axum::Router, jwt: &str| {
        let app = app.clone();
        let jwt = jwt.to_owned();
        let env = &env;
        async move {
            env.raw(
                &app,
                Method::GET,
                "/api/v1/users/me",
                Auth::Cookie(&jwt),
                None,
                &[],
            )
            .await
            .status
        }
    };
    assert_eq!(me(&other, &first).await, StatusCode::OK);
    // A new login through the first process: there the old session ends at once; the other
    // process may serve it from its cache for at most PRINCIPAL_TTL, then refuses it too.
    let second = env.login("olive", "password-1").await.session().unwrap();
    assert_eq!(me(&env.app, &first).await, StatusCode::UNAUTHORIZED);
    let ttl = fctf_control::contestant::accounts::principal::PRINCIPAL_TTL;
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    assert_eq!(me(&other, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&other, &second).await, StatusCode::OK);
    env.finish().await;
}

async fn public_routes_treat_bad_credentials_as_anonymous(backend: Backend) {
    let env = Env::new(backend).await;
    let player = env.player("pia", None).await;
    for auth in [
        Auth::Cookie("x.y.z"),
        Auth::Token("fctf_unknown"),
        Auth::Anonymous,
    ] {
        let answer = env.call(Method::GET, "/api/v1/users", auth, None).await;
        assert_eq!(answer.status, StatusCode::OK);
        // The public view: no email, no admin fields.
        let me = answer.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == player.user_id)
            .unwrap()
            .clone();
        assert!(me.get("email").is_none() && me.get("banned").is_none());
    }
    env.finish().await;
}

async fn api_tokens_authenticate_until_they_expire_or_are_revoked(backend: Backend) {
    let env = Env::new(backend).await;
    let player = env.player("dave", None).await;
    let me = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&player.token),
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["data"]["id"], player.user_id);

    let created = env
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Token(&player.token),
            Some(json!({"description": "ci"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let value = created.body["data"]["value"].as_str().unwrap().to_owned();
    let id = created.body["data"]["id"].as_i64().unwrap();
    assert!(value.starts_with("fctf_"));
    // Stored hashed: the value itself is nowhere in the table.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE digest = ?")
        .bind(value.clone())
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let listed = env
        .call(Method::GET, "/api/v1/tokens", Auth::Token(&value), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
    assert!(listed.body["data"][1].get("value").is_none());

    // Expired: refused, on the clock of each request (a cached token expires on time too).
    let expires_at = fctf_control::contestant::accounts::now_ms() + 1000;
    let short = env
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Token(&player.token),
            Some(json!({"expiration_ms": expires_at})),
        )
        .await;
    assert_eq!(short.status, StatusCode::OK, "{:?}", short.body);
    let short = short.body["data"]["value"].as_str().unwrap().to_owned();
    let fresh = env
        .call(Method::GET, "/api/v1/users/me", Auth::Token(&short), None)
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    while fctf_control::contestant::accounts::now_ms() <= expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let expired = env
        .call(Method::GET, "/api/v1/users/me", Auth::Token(&short), None)
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired.body["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Revoked: refused.
    let revoke = env
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Auth::Token(&player.token),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK);
    let revoked = env
        .call(Method::GET, "/api/v1/users/me", Auth::Token(&value), None)
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    // A past expiry is refused; another player's token is invisible; a player cannot issue for
    // someone else.
    let past = env
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Token(&player.token),
            Some(json!({"expiration_ms": 1})),
        )
        .await;
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    let other = env.player("erin", None).await;
    let foreign = env
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Token(&player.token),
            Some(json!({"user_id": other.user_id})),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let admin = env.admin().await;
    let issued = env
        .call(
            Method::POST,
            "/api/v1/tokens",
            Auth::Token(&admin.token),
            Some(json!({"user_id": other.user_id})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::OK);
    let issued = issued.body["data"]["value"].as_str().unwrap().to_owned();
    let as_other = env
        .call(Method::GET, "/api/v1/users/me", Auth::Token(&issued), None)
        .await;
    assert_eq!(as_other.body["data"]["id"], other.user_id);

    for bad in ["", "fctf_nope", &"x".repeat(500)] {
        let answer = env
            .call(Method::GET, "/api/v1/users/me", Auth::Token(bad), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let wrong_scheme = env
        .raw(
            &env.app,
            Method::GET,
            "/api/v1/users/me",
            Auth::Anonymous,
            None,
            &[("authorization", "Bearer abc")],
        )
        .await;
    assert_eq!(wrong_scheme.status, StatusCode::UNAUTHORIZED);
    env.finish().await;
}

async fn wrong_password_and_unknown_user_answer_identically(backend: Backend) {
    let env = Env::new(backend).await;
    assert_eq!(
        env.register("frank", "password-1").await.status,
        StatusCode::OK
    );
    let wrong = env.login("frank", "password-2").await;
    let unknown = env.login("nobody", "password-2").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.session().is_none() && unknown.session().is_none());
    env.finish().await;
}

async fn failed_logins_are_limited_per_account(backend: Backend) {
    let env = Env::new(backend).await;
    assert_eq!(
        env.register("quentin", "password-1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.register("rachel", "password-1").await.status,
        StatusCode::OK
    );
    // Successful logins are not counted.
    for _ in 0..12 {
        assert_eq!(
            env.login("quentin", "password-1").await.status,
            StatusCode::OK
        );
    }
    for _ in 0..10 {
        assert_eq!(
            env.login("quentin", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // The burst is used up: even the right password waits now, with a retry hint.
    let limited = env.login("QUENTIN", "password-1").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    // Other accounts are not affected.
    assert_eq!(
        env.login("rachel", "password-1").await.status,
        StatusCode::OK
    );
    env.finish().await;
}

async fn registration_can_be_closed_and_capped(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    env.set(&admin, json!({"registration_open": false})).await;
    let closed = env.register("gina", "password-1").await;
    assert_eq!(closed.status, StatusCode::FORBIDDEN);
    assert_eq!(closed.error(), "forbidden");

    env.set(&admin, json!({"registration_open": true, "max_users": 3}))
        .await;
    // Eight concurrent registrations against a cap of three (admins do not count).
    let env = std::sync::Arc::new(env);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            env.register(&format!("racer{i}"), "password-1")
                .await
                .status
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 3);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE type = 'user'")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert_eq!(users, 3);
    std::sync::Arc::try_unwrap(env).ok().unwrap().finish().await;
}

async fn password_policy_and_change(backend: Backend) {
    let env = Env::new(backend).await;
    let short = env.register("hank", "short").await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        short.body["message"]
            .as_str()
            .unwrap()
            .contains("at least 8")
    );
    let session = env.register("hank", "long enough").await.session().unwrap();
    let duplicate = env.register(" HANK ", "long enough").await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);

    let wrong = env
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Auth::Cookie(&session),
            Some(json!({"current": "not it", "new": "a new password"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let too_short = env
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Auth::Cookie(&session),
            Some(json!({"current": "long enough", "new": "tiny"})),
        )
        .await;
    assert_eq!(too_short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let changed = env
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Auth::Cookie(&session),
            Some(json!({"current": "long enough", "new": "a new password"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let fresh = changed.session().unwrap();
    let old = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Cookie(&session),
            None,
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = env
        .call(Method::GET, "/api/v1/users/me", Auth::Cookie(&fresh), None)
        .await;
    assert_eq!(new.status, StatusCode::OK);
    assert_eq!(
        env.login("hank", "long enough").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.login("hank", "a new password").await.status,
        StatusCode::OK
    );
    // The stored hash is Argon2id, never the password.
    let stored: String = sqlx::query_scalar("SELECT password FROM users WHERE name = 'hank'")
        .fetch_one(env.db.pool())
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    env.finish().await;
}

async fn banned_and_unverified_users_are_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let admin = env.admin().await;
    let player = env.player("ivan", Some("ivans")).await;
    let ban = env
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", player.user_id),
            Auth::Token(&admin.token),
            Some(json!({"banned": true})),
        )
        .await;
    assert_eq!(ban.status, StatusCode::OK, "{:?}", ban.body);
    let me = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&player.token),
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::FORBIDDEN);
    assert_eq!(
        env.login(
            &player.name,
            fctf_control::contestant::accounts::testkit::PASSWORD
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Players no longer see the banned user; admins do.
    let listed = env
        .call(Method::GET, "/api/v1/users", Auth::Anonymous, None)
        .await;
    assert!(
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != player.user_id)
    );
    let single = env
        .call(
            Method::GET,
            &format!("/api/v1/users/{}", player.user_id),
            Auth::Anonymous,
            None,
        )
        .await;
    assert_eq!(single.status, StatusCode::NOT_FOUND);
    let as_admin = env
        .call(
            Method::GET,
            "/api/v1/users",
            Auth::Token(&admin.token),
            None,
        )
        .await;
    assert!(
        as_admin.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == player.user_id && u["banned"] == true)
    );

    // A banned team bans its members.
    let mate = env.player("judy", Some("ivans")).await;
    let team_ban = env
        .call(
            Method::PATCH,
            &format!("/api/v1/teams/{}", mate.team_id.unwrap()),
            Auth::Token(&admin.token),
            Some(json!({"banned": true})),
        )
        .await;
    assert_eq!(team_ban.status, StatusCode::OK, "{:?}", team_ban.body);
    let mate_me = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&mate.token),
            None,
        )
        .await;
    assert_eq!(mate_me.status, StatusCode::FORBIDDEN);

    // Unverified users are refused too.
    let other = env.player("ken", None).await;
    env.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", other.user_id),
        Auth::Token(&admin.token),
        Some(json!({"verified": false})),
    )
    .await;
    let unverified = env
        .call(
            Method::GET,
            "/api/v1/users/me",
            Auth::Token(&other.token),
            None,
        )
        .await;
    assert_eq!(unverified.status, StatusCode::FORBIDDEN);
    env.finish().await;
}
