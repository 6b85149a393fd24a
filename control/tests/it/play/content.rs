//! Files (signed links, confinement), tickets (near-duplicates refused), notifications, awards,
//! and the admin CRUD's answers to bad input (never a 500, always the one error shape).

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::json;

use super::support::{Backend, Env, call};

#[tokio::test]
async fn files_download_only_through_fresh_signed_links() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let id = env
        .challenge(json!({"name": "files", "description": "d", "value": 1}))
        .await;
    let content = base64::engine::general_purpose::STANDARD.encode(b"hello file");
    let uploaded = env
        .admin_ok(
            Method::POST,
            "/api/v1/files",
            json!({"challenge_id": id, "name": "../../notes.txt", "content": content}),
        )
        .await;
    let location = uploaded[0]["location"].as_str().unwrap().to_owned();
    assert!(location.ends_with("/notes.txt") && !location.contains(".."));
    let p = env.player("downloader", "dl-team").await;
    let (_, detail) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}"),
            Some(&p),
            None,
        )
        .await;
    let link = detail["data"]["files"][0].as_str().unwrap().to_owned();
    assert!(link.starts_with(&format!("/files/{location}?token=")));
    let request = axum::http::Request::get(&link)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(env.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"hello file");
    // A tampered token, another path with the same token, a traversal: refused.
    let tampered = format!("{}0", link);
    let (s, _) = call(&env.app, Method::GET, &tampered, None, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let token = link.split("token=").nth(1).unwrap();
    for path in [
        format!("/files/other.txt?token={token}"),
        format!("/files/../etc/passwd?token={token}"),
        format!("/files/%2e%2e/etc/passwd?token={token}"),
        "/files/x".to_owned(),
    ] {
        let (s, answer) = call(&env.app, Method::GET, &path, None, None).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
            "{path}: {s} {answer}"
        );
    }
    env.finish().await;
}

#[tokio::test]
async fn tickets_open_list_read_close_and_refuse_near_duplicates() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let p = env.player("asker", "ask-team").await;
    let q = env.player("nosy", "nosy-team").await;
    let (s, first) = env
        .call(
            Method::POST,
            "/api/v1/tickets",
            Some(&p),
            Some(json!({"title": "Web 1 down", "content": "The instance of web 1 answers 502."})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let id = first["data"]["id"].as_i64().unwrap();
    let (s, dup) = env
        .call(
            Method::POST,
            "/api/v1/tickets",
            Some(&p),
            Some(json!({"title": "web 1 DOWN", "content": "the instance of web 1 answers 502!"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    assert_eq!(dup["error"], "conflict");
    let (s, _) = env
        .call(
            Method::POST,
            "/api/v1/tickets",
            Some(&p),
            Some(json!({"title": "Crypto hint", "content": "Is the modulus prime?"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, mine) = env
        .call(Method::GET, "/api/v1/tickets", Some(&p), None)
        .await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 2);
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/tickets/{id}"),
            Some(&q),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, all) = env
        .call(Method::GET, "/api/v1/tickets", Some(&env.admin), None)
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let (s, closed) = env
        .call(
            Method::POST,
            &format!("/api/v1/tickets/{id}/close"),
            Some(&env.admin),
            Some(json!({"response": "Restarted."})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(closed["data"]["state"], "closed");
    assert_eq!(closed["data"]["response"], "Restarted.");
    env.finish().await;
}

#[tokio::test]
async fn admin_routes_refuse_players_and_bad_input_in_the_one_error_shape() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let p = env.player("plain", "plain-team").await;
    let (s, answer) = env
        .call(
            Method::POST,
            "/api/v1/challenges",
            Some(&p),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(answer["success"], false);
    let (s, _) = env
        .call(Method::GET, "/api/v1/challenges", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for (body, status, kind) in [
        (json!({"name": "x", "unknown_field": 1}), 400, "bad_request"),
        (json!({"name": ""}), 400, "bad_request"),
        (json!({"name": "x", "value": "many"}), 400, "bad_request"),
        (json!([1, 2]), 400, "bad_request"),
        // Each field valid, together not: a rule.
        (
            json!({"name": "x", "type": "dynamic", "initial": 10, "minimum": 50}),
            422,
            "unprocessable",
        ),
    ] {
        let (s, answer) = env
            .call(
                Method::POST,
                "/api/v1/challenges",
                Some(&env.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s.as_u16(), status, "{body}: {answer}");
        assert_eq!(answer["error"], kind);
    }
    for uri in [
        "/api/v1/challenges/abc",
        "/api/v1/challenges/-1",
        "/api/v1/challenges/999999",
    ] {
        let (s, answer) = env.call(Method::GET, uri, Some(&p), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {answer}");
    }
    let (s, _) = env
        .call(
            Method::POST,
            "/api/v1/challenges/attempt",
            Some(&p),
            Some(json!({"challenge_id": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(
            Method::POST,
            "/api/v1/challenges/attempt",
            Some(&p),
            Some(json!({"challenge_id": 1, "submission": "a".repeat(5000)})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env
        .call(Method::GET, "/api/v1/scoreboard/top/0", Some(&p), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Full CRUD round: create, patch, read, delete.
    let id = env
        .challenge(json!({"name": "crud", "description": "d", "value": 5}))
        .await;
    let patched = env
        .admin_ok(
            Method::PATCH,
            &format!("/api/v1/challenges/{id}"),
            json!({"value": 7, "state": "hidden"}),
        )
        .await;
    assert_eq!(patched["value"], 7);
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.admin_ok(
        Method::DELETE,
        &format!("/api/v1/challenges/{id}"),
        json!({}),
    )
    .await;
    let (s, _) = env
        .call(
            Method::DELETE,
            &format!("/api/v1/challenges/{id}"),
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.finish().await;
}

#[tokio::test]
async fn notifications_and_awards_follow_ctfd_shapes() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let p = env.player("reader", "read-team").await;
    let n = env
        .admin_ok(
            Method::POST,
            "/api/v1/notifications",
            json!({"title": "Hello", "content": "Welcome"}),
        )
        .await;
    let (_, list) = env
        .call(Method::GET, "/api/v1/notifications", None, None)
        .await;
    assert_eq!(list["data"][0]["title"], "Hello");
    let (_, since) = env
        .call(
            Method::GET,
            &format!("/api/v1/notifications?since_id={}", n["id"]),
            None,
            None,
        )
        .await;
    assert_eq!(since["data"].as_array().unwrap().len(), 0);
    env.admin_ok(
        Method::POST,
        "/api/v1/awards",
        json!({"team_id": p.team_id.unwrap(), "name": "Writeup", "value": 25}),
    )
    .await;
    let (_, awards) = env
        .call(Method::GET, "/api/v1/awards", Some(&p), None)
        .await;
    assert_eq!(awards["data"][0]["value"], 25);
    let (_, board) = env
        .call(Method::GET, "/api/v1/scoreboard", None, None)
        .await;
    assert_eq!(board["data"][0]["score"], 25);
    assert_eq!(board["data"][0]["account_type"], "team");
    // One writer: 200 concurrent readers after a change cause one computation (two at most,
    // should the readers outlast the snapshot's 2 s lifetime), not 200.
    env.admin_ok(
        Method::POST,
        "/api/v1/awards",
        json!({"team_id": p.team_id.unwrap(), "name": "Second", "value": 5}),
    )
    .await;
    let before = env.state.play.boards.computations();
    let reads = futures_util::future::join_all(
        (0..200).map(|_| env.call(Method::GET, "/api/v1/scoreboard", None, None)),
    )
    .await;
    assert!(reads.iter().all(|(s, _)| *s == StatusCode::OK));
    let computed = env.state.play.boards.computations() - before;
    assert!((1..=2).contains(&computed), "{computed} computations");
    let (_, board) = env
        .call(Method::GET, "/api/v1/scoreboard", None, None)
        .await;
    assert_eq!(board["data"][0]["score"], 30);
    let (_, feed) = env.call(Method::GET, "/api/v1/ctftime", None, None).await;
    assert_eq!(feed["standings"][0]["team"], "read-team");
    assert_eq!(feed["standings"][0]["pos"], 1);
    env.finish().await;
}

async fn post_yaml(env: &Env, yaml: &str) -> (StatusCode, serde_json::Value) {
    let request = axum::http::Request::post("/api/v1/challenges/import")
        .header("authorization", env.admin.authorization())
        .header("content-type", "application/yaml")
        .body(axum::body::Body::from(yaml.to_owned()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(env.app.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn ctfcli_challenge_yml_imports_exports_and_reimports() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let yaml = "name: Imported\ncategory: misc\ndescription: hi\nvalue: 300\ntype: dynamic\n\
                extra: {initial: 300, decay: 5, minimum: 50}\nflags:\n  - flag{imp}\n  - {type: static, content: 'FLAG{Ci}', data: case_insensitive}\n\
                tags: [warmup]\nhints:\n  - {content: think, cost: 0}\nattempts: 3\n";
    let (s, answer) = post_yaml(&env, yaml).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["updated"], false);
    let id = answer["data"]["id"].as_i64().unwrap();
    let p = env.player("importer", "imp-team").await;
    let (_, detail) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(detail["data"]["value"], 300);
    assert_eq!(detail["data"]["max_attempts"], 3);
    assert_eq!(detail["data"]["tags"][0]["value"], "warmup");
    assert_eq!(detail["data"]["hints"].as_array().unwrap().len(), 1);
    assert_eq!(
        super::support::outcome(&env.submit(&p, id, "flag{ci}").await.1),
        "correct"
    );
    // What ctfcli's sync reads back.
    let tags = env
        .admin_ok(
            Method::GET,
            &format!("/api/v1/challenges/{id}/tags"),
            json!({}),
        )
        .await;
    assert_eq!(tags[0]["value"], "warmup");
    let hints = env
        .admin_ok(
            Method::GET,
            &format!("/api/v1/challenges/{id}/hints"),
            json!({}),
        )
        .await;
    assert_eq!(hints[0]["content"], "think");
    let (s, _) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}/tags"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let request = axum::http::Request::get(format!("/api/v1/challenges/{id}/export"))
        .header("authorization", env.admin.authorization())
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(env.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let exported = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(exported.contains("name: Imported"), "{exported}");
    // Re-importing the export updates the same challenge and keeps one copy of each flag.
    let (s, again) = post_yaml(&env, &exported).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["data"]["id"], id);
    assert_eq!(again["data"]["updated"], true);
    assert_eq!(
        env.count(
            "SELECT COUNT(*) AS n FROM flags WHERE challenge_id = ?",
            &[id]
        )
        .await,
        2
    );
    // Not YAML: 400; a challenge.yml whose regex flag does not compile: 422.
    let (s, _) = post_yaml(&env, "name: [unclosed").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = post_yaml(&env, "name: Bad\nflags:\n  - {type: regex, content: '('}\n").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = post_yaml(&env, "name: Bad\nflags:\n  - {type: nope, content: x}\n").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    env.finish().await;
}

/// The OpenAPI paths of play match the router: every documented operation reaches a handler
/// (an answer in the one JSON shape, never axum's bare 404 or 405 for an unknown route).
#[tokio::test]
async fn every_documented_play_operation_reaches_a_handler() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let paths = fctf_control::contestant::play::openapi::paths();
    for (path, item) in paths.as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let uri: Vec<&str> = path
                .split('/')
                .map(|segment| match segment {
                    "{location}" => "a/b.txt",
                    "{count}" => "3",
                    s if s.starts_with('{') => "1",
                    s => s,
                })
                .collect();
            let uri = uri.join("/");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, answer) = env
                .call(method.clone(), &uri, Some(&env.admin), Some(json!({})))
                .await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                answer.is_object() || status == StatusCode::OK,
                "{method} {uri}: {status} without a JSON body"
            );
            assert!(
                !status.is_server_error(),
                "{method} {uri}: {status} {answer}"
            );
        }
    }
    env.finish().await;
}
