//! Challenge files: listed in a challenge's detail as short-lived signed links
//! (`/files/{location}?token=EXPIRY.MAC`), served only inside `[contestant].files_dir`, and the
//! admin's `/api/v1/files` (upload as base64 JSON, list, delete).
//!
//! A location is a relative path of plain components (`[A-Za-z0-9._-]`, no `.` or `..`), so no
//! stored or requested location can name anything outside the directory; the served path is
//! also canonicalised and checked to be inside it (symlinks included).

use std::path::{Component, Path as FsPath, PathBuf};
use std::time::Duration;

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::challenges::delete_row;
use super::records::Table;
use super::{Body, db_error, now_ms, ok};
use crate::contestant::AppState;
use crate::contestant::accounts::AdminCaller;
use crate::error::{ApiError, ApiResult};

/// How long a download link works.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// Largest upload accepted through the JSON API (decoded bytes).
pub const MAX_UPLOAD_BYTES: usize = 8 * 1024 * 1024;

/// True when `location` is a relative path of plain, safe components.
pub fn is_safe_location(location: &str) -> bool {
    !location.is_empty()
        && location.len() <= 512
        && location.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
        && FsPath::new(location)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn mac(secret: &[u8], location: &str, expires_ms: i64) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(b"fctf-file\0");
    mac.update(location.as_bytes());
    mac.update(b"\0");
    mac.update(&expires_ms.to_be_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The download token of `location` valid until `expires_ms`.
pub fn sign(secret: &[u8], location: &str, expires_ms: i64) -> String {
    format!("{expires_ms}.{}", mac(secret, location, expires_ms))
}

/// True when `token` is a live signature of `location` at `now_ms`.
pub fn verify(secret: &[u8], location: &str, token: &str, now_ms: i64) -> bool {
    let Some((expiry, tag)) = token.split_once('.') else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<i64>() else {
        return false;
    };
    expiry > now_ms && super::flags::constant_time_eq(&mac(secret, location, expiry), tag)
}

/// The signed links of a challenge's files.
pub(crate) async fn links(state: &AppState, challenge: i64) -> ApiResult<Vec<String>> {
    let rows = sqlx::query("SELECT location FROM files WHERE challenge_id = ? ORDER BY id")
        .bind(challenge)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    let expires = now_ms() + i64::try_from(LINK_TTL.as_millis()).unwrap_or(600_000);
    rows.iter()
        .map(|r| {
            let location: String = r.try_get("location").map_err(|e| db_error(e.into()))?;
            Ok(format!(
                "/files/{location}?token={}",
                sign(&state.play.secret, &location, expires)
            ))
        })
        .collect()
}

/// The file of `location` inside `dir`, if it exists there (after resolving links).
fn confined(dir: &FsPath, location: &str) -> Option<PathBuf> {
    if !is_safe_location(location) {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let path = root.join(location).canonicalize().ok()?;
    (path.starts_with(&root) && path.is_file()).then_some(path)
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /files/{location}?token=...`.
async fn download(
    State(state): State<AppState>,
    Path(location): Path<String>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    let token = q.token.unwrap_or_default();
    if !is_safe_location(&location) || !verify(&state.play.secret, &location, &token, now_ms()) {
        return Err(ApiError::forbidden(
            "This download link is invalid or has expired; open the challenge again.",
        ));
    }
    let path = confined(&state.play.files_dir, &location)
        .ok_or_else(|| ApiError::not_found("No such file."))?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    let name = location.rsplit('/').next().unwrap_or("file").to_owned();
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Admin upload: the file as base64, stored under a fresh directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    #[serde(alias = "challenge")]
    challenge_id: Option<i64>,
    name: String,
    content: String,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
}

/// Keeps the safe characters of an uploaded name.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// `POST /api/v1/files` (admin).
async fn upload(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Body(body): Body<Upload>,
) -> ApiResult<Response> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.content.as_bytes())
        .map_err(|_| ApiError::bad_request("content must be base64."))?;
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ApiError::new(
            crate::error::ErrorKind::PayloadTooLarge,
            format!("Files are limited to {MAX_UPLOAD_BYTES} bytes here."),
        ));
    }
    if let Some(id) = body.challenge_id {
        super::records::challenge(&state.db, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    let location = format!("{}/{}", &digest[..16], clean_name(&body.name));
    let path = state.play.files_dir.join(&location);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ApiError::unavailable("file store", &e))?;
    }
    tokio::fs::write(&path, &bytes)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    let done = sqlx::query("INSERT INTO files (challenge_id, type, location, sha1sum) VALUES (?, 'challenge', ?, ?) RETURNING id")
        .bind(body.challenge_id)
        .bind(location.clone())
        .bind(digest.clone())
        .fetch_one(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(vec![
        json!({"id": super::records::returned_id(&done).map_err(db_error)?, "type": "challenge",
                      "location": location, "sha1sum": digest}),
    ]))
}

/// `GET /api/v1/files` (admin).
async fn list(State(state): State<AppState>, _admin: AdminCaller) -> ApiResult<Response> {
    let rows =
        sqlx::query("SELECT id, challenge_id, type, location, sha1sum FROM files ORDER BY id")
            .fetch_all(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?;
    let data = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<i64, _>("id")?,
                "challenge_id": r.try_get::<Option<i64>, _>("challenge_id")?,
                "type": r.try_get::<String, _>("type")?,
                "location": r.try_get::<String, _>("location")?,
                "sha1sum": r.try_get::<String, _>("sha1sum")?,
            }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()
        .map_err(|e| db_error(e.into()))?;
    Ok(ok(data))
}

/// `DELETE /api/v1/files/{id}` (admin; the bytes stay, other rows may share them).
async fn remove(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_row(&state, Table::Files, &id).await
}

/// The file routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/files/{*location}", get(download))
        .route("/api/v1/files", get(list).post(upload))
        .route("/api/v1/files/{id}", delete(remove))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_plain_relative_paths() {
        assert!(is_safe_location("ab12/file.txt"));
        assert!(is_safe_location("a-b_c.tar.gz"));
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a b",
            "%2e%2e/x",
        ] {
            assert!(!is_safe_location(bad), "{bad}");
        }
        assert_eq!(clean_name("../../evil name.sh"), "evil_name.sh");
        assert_eq!(clean_name(".."), "file");
    }

    #[test]
    fn links_expire_and_name_one_location() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = sign(secret, "a/b.txt", 1000);
        assert!(verify(secret, "a/b.txt", &token, 999));
        assert!(!verify(secret, "a/b.txt", &token, 1000));
        assert!(!verify(secret, "a/c.txt", &token, 999));
        assert!(!verify(
            b"another-secret-another-secret-xx",
            "a/b.txt",
            &token,
            999
        ));
        assert!(!verify(secret, "a/b.txt", "2000.00", 999));
        assert!(!verify(secret, "a/b.txt", "garbage", 0));
    }

    #[test]
    fn confinement_refuses_links_out_of_the_directory() {
        let dir =
            std::env::temp_dir().join(format!("fctf-files-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("ok")).unwrap();
        std::fs::write(dir.join("ok/f.txt"), b"x").unwrap();
        assert!(confined(&dir, "ok/f.txt").is_some());
        assert!(confined(&dir, "ok/missing").is_none());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", dir.join("ok/link")).unwrap();
            assert!(confined(&dir, "ok/link").is_none());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
