//! Admin file uploads as CTFd and ctfcli send them (`multipart/form-data` on `POST
//! /api/v1/files`): stored under the files directory, limited by
//! `[contestant].max_upload_bytes`, names with folders refused, admins only.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fctf_control::contestant::accounts::testkit::Player;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::support::{Backend, Env};

const BOUNDARY: &str = "----fctf-test-boundary-7MA4YWxkTrZu0gW";

/// One form part: a text field (`file_name` None) or a file.
struct Part<'a> {
    name: &'a str,
    file_name: Option<&'a str>,
    content: &'a [u8],
}

fn text<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part {
        name,
        file_name: None,
        content: value.as_bytes(),
    }
}

fn file<'a>(file_name: &'a str, content: &'a [u8]) -> Part<'a> {
    Part {
        name: "file",
        file_name: Some(file_name),
        content,
    }
}

/// The body of a `multipart/form-data` request with [`BOUNDARY`], as Python's requests
/// (ctfcli) writes it.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part.file_name {
            Some(file_name) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{file_name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
        }
        body.extend_from_slice(part.content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(env: &Env, who: Option<&Player>, parts: &[Part<'_>]) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    if let Some(who) = who {
        request = request.header("authorization", who.authorization());
    }
    let request = request.body(Body::from(form(parts))).unwrap();
    let response = env.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1024 * 1024)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every regular file under `dir`, relative, sorted (temporary upload files included).
fn stored_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

async fn rows(env: &Env) -> i64 {
    env.count("SELECT COUNT(*) AS n FROM files", &[]).await
}

#[tokio::test]
async fn multipart_upload_as_ctfcli_sends_it_stores_files_for_the_challenge() {
    let env = Env::new(Backend::Sqlite, &[]).await;
    let id = env
        .challenge(json!({"name": "upload", "description": "d", "value": 1}))
        .await;
    let challenge = id.to_string();
    let (status, answer) = upload(
        &env,
        Some(&env.admin),
        &[
            text("challenge_id", &challenge),
            text("type", "challenge"),
            file("dist.tar.gz", b"\x00\x01binary\r\n--not-a-boundary\xff"),
            file("notes.txt", b"hello multipart"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{answer}");
    assert_eq!(data[0]["type"], "challenge");
    assert_eq!(data[0]["challenge_id"], id);
    let location = data[1]["location"].as_str().unwrap();
    assert!(location.ends_with("/notes.txt"), "{location}");
    assert_eq!(
        std::fs::read(env.files_dir.join(location)).unwrap(),
        b"hello multipart"
    );
    assert_eq!(
        std::fs::read(env.files_dir.join(data[0]["location"].as_str().unwrap())).unwrap(),
        b"\x00\x01binary\r\n--not-a-boundary\xff"
    );
    // No temporary file is left behind; both rows are listed and linked from the challenge.
    assert_eq!(stored_files(&env.files_dir).len(), 2);
    let listed = env
        .admin_ok(Method::GET, "/api/v1/files", Value::Null)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let p = env.player("reader", "read-team").await;
    let (_, detail) = env
        .call(
            Method::GET,
            &format!("/api/v1/challenges/{id}"),
            Some(&p),
            None,
        )
        .await;
    assert_eq!(detail["data"]["files"].as_array().unwrap().len(), 2);

    // CTFd's older field name, a page file with no challenge, the admin page's nonce.
    let (status, answer) = upload(
        &env,
        Some(&env.admin),
        &[
            text("nonce", "abc"),
            text("type", "page"),
            file("logo.png", b"png"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"][0]["type"], "page");
    assert_eq!(answer["data"][0]["challenge_id"], Value::Null);
    env.finish().await;
}

#[tokio::test]
async fn multipart_upload_refuses_too_large_bad_names_and_non_admins() {
    let env = Env::with(Backend::Sqlite, &[], |config| {
        config.contestant.max_upload_bytes = 1024;
    })
    .await;
    let id = env
        .challenge(json!({"name": "limits", "description": "d", "value": 1}))
        .await;
    let challenge = id.to_string();

    // Too large: one file over the limit, and two files over it together.
    let big = vec![b'x'; 1025];
    let (status, answer) = upload(
        &env,
        Some(&env.admin),
        &[text("challenge", &challenge), file("big.bin", &big)],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");
    let half = vec![b'y'; 600];
    let (status, answer) = upload(
        &env,
        Some(&env.admin),
        &[file("a.bin", &half), file("b.bin", &half)],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    // Far over the limit: cut off by the body limit before the form is read whole.
    let huge = vec![b'z'; 256 * 1024];
    let (status, answer) = upload(&env, Some(&env.admin), &[file("huge.bin", &huge)]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");

    // Names with folders in them are refused, not guessed at.
    for name in ["../x", "../../etc/passwd", "a/b.txt", "..\\x", "..", ""] {
        let (status, answer) = upload(
            &env,
            Some(&env.admin),
            &[text("challenge", &challenge), file(name, b"payload")],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{name:?}");
    }
    let parent = env.files_dir.parent().unwrap();
    assert!(!parent.join("x").exists());

    // Not a file, an unknown field, an unknown challenge, a bad type.
    for (parts, expect) in [
        (vec![text("challenge", &challenge)], StatusCode::BAD_REQUEST),
        (
            vec![text("location", "../x"), file("f.txt", b"f")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![text("challenge", "999999"), file("f.txt", b"f")],
            StatusCode::NOT_FOUND,
        ),
        (
            vec![text("challenge", "one"), file("f.txt", b"f")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![text("type", "../x"), file("f.txt", b"f")],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, answer) = upload(&env, Some(&env.admin), &parts).await;
        assert_eq!(status, expect, "{answer}");
        assert_eq!(answer["success"], false);
    }

    // Only admins: a player is refused, an anonymous caller must sign in.
    let p = env.player("uploader", "up-team").await;
    let (status, answer) = upload(
        &env,
        Some(&p),
        &[text("challenge", &challenge), file("f.txt", b"f")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = upload(&env, None, &[file("f.txt", b"f")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Nothing was stored by any refused upload (temporary files included).
    assert_eq!(rows(&env).await, 0);
    assert_eq!(stored_files(&env.files_dir), Vec::<String>::new());

    // At the limit is fine; the JSON (base64) upload has the same limit.
    let exact = vec![b'e'; 1024];
    let (status, answer) = upload(&env, Some(&env.admin), &[file("exact.bin", &exact)]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    use base64::Engine as _;
    let (status, answer) = env
        .call(
            Method::POST,
            "/api/v1/files",
            Some(&env.admin),
            Some(json!({"name": "big.json.bin",
                        "content": base64::engine::general_purpose::STANDARD.encode(&big)})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, answer) = env
        .call(
            Method::POST,
            "/api/v1/files",
            Some(&env.admin),
            Some(json!({"name": "far.json.bin",
                        "content": base64::engine::general_purpose::STANDARD.encode(&huge)})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");
    assert_eq!(rows(&env).await, 1);
    env.finish().await;
}
