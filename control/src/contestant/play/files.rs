//! Challenge files: listed in a challenge's detail as short-lived signed links
//! (`/files/{location}?token=EXPIRY.MAC`), served only inside `[contestant].files_dir`, and the
//! admin's `/api/v1/files` (upload, list, delete).
//!
//! An upload is CTFd's `multipart/form-data` (`file` parts, `challenge` or `challenge_id`,
//! `type`, as ctfcli and CTFd's admin page send it) or a JSON body with the file as base64.
//! Either way the request is limited to `[contestant].max_upload_bytes` (of file bytes, plus a
//! little for the form) before anything is read, a multipart file is streamed to a temporary
//! file inside the directory (never held whole in memory), and each file lands at
//! `<first 16 hex of its SHA-256>/<its cleaned name>`. A name with a folder in it (`../x`,
//! `a/b`) is refused rather than guessed at.
//!
//! A location is a relative path of plain components (`[A-Za-z0-9._-]`, no `.` or `..`), so no
//! stored or requested location can name anything outside the directory; the served path is
//! also canonicalised and checked to be inside it (symlinks included), and so is the folder an
//! upload is written to.

use std::path::{Component, Path as FsPath, PathBuf};
use std::time::Duration;

use crate::contestant::accounts::{Path, Query};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::AsyncWriteExt as _;

use super::challenges::delete_row;
use super::records::Table;
use super::{Body, db_error, now_ms, ok};
use crate::contestant::AppState;
use crate::contestant::accounts::AdminCaller;
use crate::error::{ApiError, ApiResult};

/// How long a download link works.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// What an upload request may carry beyond its file bytes (form fields, part headers, the
/// JSON around base64).
const FORM_ALLOWANCE: u64 = 64 * 1024;

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

/// Admin upload as JSON: the file as base64.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    #[serde(alias = "challenge")]
    challenge_id: Option<i64>,
    name: String,
    content: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
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

/// The stored name of a multipart file part: its file name cleaned ([`clean_name`]), refused
/// when it names a folder (`../x`, `a/b`, `C:\x`) or nothing, since a client sending one means
/// something this directory cannot hold.
pub fn multipart_name(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() || raw.contains(['/', '\\', '\0', ':']) || raw.chars().all(|c| c == '.') {
        return Err(ApiError::bad_request(format!(
            "The file name {:?} is not a plain file name; name the file without folders.",
            raw.chars().take(100).collect::<String>()
        )));
    }
    Ok(clean_name(raw))
}

/// The `type` of an uploaded file row: CTFd's `challenge` (the default) or `page`.
fn file_kind(raw: Option<&str>) -> Result<&'static str, ApiError> {
    match raw.map(str::trim) {
        None | Some("" | "challenge" | "standard") => Ok("challenge"),
        Some("page") => Ok("page"),
        Some(other) => Err(ApiError::bad_request(format!(
            "Unknown file type {:?}; use \"challenge\" or \"page\".",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        crate::error::ErrorKind::PayloadTooLarge,
        format!("Uploads are limited to {max} bytes of files per request here."),
    )
}

/// `request` with its body cut off after `limit` bytes (reading past it fails with 413).
fn limited(request: Request, limit: u64) -> Request {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    request.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)))
}

/// `POST /api/v1/files` (admin): multipart (CTFd, ctfcli) or base64 JSON, by content type.
async fn upload(
    State(state): State<AppState>,
    _admin: AdminCaller,
    request: Request,
) -> ApiResult<Response> {
    let max = state.config.contestant.max_upload_bytes;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    let stored = if multipart {
        upload_multipart(
            &state,
            limited(request, max.saturating_add(FORM_ALLOWANCE)),
            max,
        )
        .await?
    } else {
        // Base64 is 4 bytes per 3.
        let limit = max
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(FORM_ALLOWANCE);
        let Body(body) = Body::<Upload>::from_request(limited(request, limit), &state).await?;
        upload_json(&state, body, max).await?
    };
    Ok(ok(stored))
}

/// A file written to its temporary name, waiting for the upload to be accepted.
#[derive(Debug)]
struct Staged {
    temp: PathBuf,
    name: String,
    digest: String,
}

/// Deletes staged files (the upload was refused).
async fn discard(staged: &[Staged]) {
    for file in staged {
        let _ = tokio::fs::remove_file(&file.temp).await;
    }
}

/// The files directory, created when missing, canonical.
async fn files_root(state: &AppState) -> ApiResult<PathBuf> {
    let dir = &state.play.files_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))
}

/// The path `location` is written to: its folder created, and checked (after resolving links)
/// to be inside `root`.
async fn destination(root: &FsPath, location: &str) -> ApiResult<PathBuf> {
    if !is_safe_location(location) {
        return Err(ApiError::bad_request("That file name cannot be stored."));
    }
    let path = root.join(location);
    let parent = path
        .parent()
        .ok_or_else(|| ApiError::bad_request("That file name cannot be stored."))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    let real = tokio::fs::canonicalize(parent)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    if !real.starts_with(root) {
        tracing::warn!(
            location,
            "upload folder resolves outside the files directory"
        );
        return Err(ApiError::forbidden("That file cannot be stored here."));
    }
    Ok(path)
}

/// Streams one `file` part to a temporary file inside `root`; `total` counts the bytes of the
/// whole request against `max`.
async fn stage(
    root: &FsPath,
    field: &mut axum::extract::multipart::Field<'_>,
    name: String,
    total: &mut u64,
    max: u64,
) -> ApiResult<Staged> {
    let temp = root.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
    let mut out = tokio::fs::File::create(&temp)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    let staged = Staged {
        temp,
        name,
        digest: String::new(),
    };
    let mut hasher = Sha256::new();
    let written: ApiResult<()> = async {
        while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e, max))? {
            *total += chunk.len() as u64;
            if *total > max {
                return Err(too_large(max));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| ApiError::unavailable("file store", &e))?;
        }
        out.flush()
            .await
            .map_err(|e| ApiError::unavailable("file store", &e))
    }
    .await;
    if let Err(error) = written {
        discard(std::slice::from_ref(&staged)).await;
        return Err(error);
    }
    Ok(Staged {
        digest: hex::encode(hasher.finalize()),
        ..staged
    })
}

fn multipart_error(error: &axum::extract::multipart::MultipartError, max: u64) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else {
        ApiError::bad_request(format!(
            "The upload is not valid multipart/form-data: {}",
            error.body_text().chars().take(200).collect::<String>()
        ))
    }
}

/// A small text field of the form (an id, a type).
async fn text_field(field: axum::extract::multipart::Field<'_>, max: u64) -> ApiResult<String> {
    let text = field.text().await.map_err(|e| multipart_error(&e, max))?;
    if text.len() > 64 {
        return Err(ApiError::bad_request("A form field is too long."));
    }
    Ok(text)
}

/// The fields of a multipart upload, staged; the staged files are the caller's to discard.
async fn read_form(
    root: &FsPath,
    form: &mut Multipart,
    staged: &mut Vec<Staged>,
    max: u64,
) -> ApiResult<(Option<i64>, &'static str)> {
    let mut challenge = None;
    let mut kind = "challenge";
    let mut total = 0u64;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(&e, max))?
    {
        match field.name().unwrap_or("") {
            "file" => {
                let name = multipart_name(field.file_name().unwrap_or(""))?;
                staged.push(stage(root, &mut field, name, &mut total, max).await?);
            }
            "challenge" | "challenge_id" => {
                let text = text_field(field, max).await?;
                let text = text.trim();
                challenge = if text.is_empty() {
                    None
                } else {
                    Some(
                        text.parse::<i64>()
                            .ok()
                            .filter(|id| *id > 0)
                            .ok_or_else(|| {
                                ApiError::bad_request("`challenge` must be a challenge id.")
                            })?,
                    )
                };
            }
            "type" => kind = file_kind(Some(&text_field(field, max).await?))?,
            // CTFd's admin page sends its CSRF nonce in the form.
            "nonce" => {
                text_field(field, max).await?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Unknown form field {:?}; send `file`, `challenge` and `type`.",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    Ok((challenge, kind))
}

/// A `multipart/form-data` upload (the body is already limited).
async fn upload_multipart(state: &AppState, request: Request, max: u64) -> ApiResult<Vec<Value>> {
    let mut form = Multipart::from_request(request, state).await.map_err(|e| {
        ApiError::bad_request(format!(
            "The upload is not valid multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let root = files_root(state).await?;
    let mut staged = Vec::new();
    let outcome = async {
        let (challenge, kind) = read_form(&root, &mut form, &mut staged, max).await?;
        if staged.is_empty() {
            return Err(ApiError::bad_request(
                "The upload has no file; send it as a `file` part.",
            ));
        }
        check_challenge(state, challenge).await?;
        let mut stored = Vec::with_capacity(staged.len());
        for file in &staged {
            let location = format!("{}/{}", &file.digest[..16], file.name);
            let path = destination(&root, &location).await?;
            tokio::fs::rename(&file.temp, &path)
                .await
                .map_err(|e| ApiError::unavailable("file store", &e))?;
            stored.push((location, file.digest.clone()));
        }
        let mut rows = Vec::with_capacity(stored.len());
        for (location, digest) in stored {
            rows.push(insert_row(state, challenge, kind, location, digest).await?);
        }
        Ok(rows)
    }
    .await;
    if outcome.is_err() {
        discard(&staged).await;
    }
    outcome
}

/// 404 unless `challenge` (when given) exists.
async fn check_challenge(state: &AppState, challenge: Option<i64>) -> ApiResult<()> {
    if let Some(id) = challenge {
        super::records::challenge(&state.db, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    }
    Ok(())
}

/// The `files` row of a stored file, as CTFd answers it.
async fn insert_row(
    state: &AppState,
    challenge: Option<i64>,
    kind: &str,
    location: String,
    digest: String,
) -> ApiResult<Value> {
    let done = sqlx::query(
        "INSERT INTO files (challenge_id, type, location, sha1sum) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(challenge)
    .bind(kind.to_owned())
    .bind(location.clone())
    .bind(digest.clone())
    .fetch_one(state.db.pool())
    .await
    .map_err(|e| db_error(e.into()))?;
    Ok(
        json!({"id": super::records::returned_id(&done).map_err(db_error)?, "type": kind,
              "challenge_id": challenge, "location": location, "sha1sum": digest}),
    )
}

/// A base64 JSON upload.
async fn upload_json(state: &AppState, body: Upload, max: u64) -> ApiResult<Vec<Value>> {
    let kind = file_kind(body.kind.as_deref())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.content.as_bytes())
        .map_err(|_| ApiError::bad_request("content must be base64."))?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    check_challenge(state, body.challenge_id).await?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let location = format!("{}/{}", &digest[..16], clean_name(&body.name));
    let root = files_root(state).await?;
    let path = destination(&root, &location).await?;
    tokio::fs::write(&path, &bytes)
        .await
        .map_err(|e| ApiError::unavailable("file store", &e))?;
    Ok(vec![
        insert_row(state, body.challenge_id, kind, location, digest).await?,
    ])
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
        // The upload applies `max_upload_bytes` itself (axum's default 2 MB would cut it).
        .route(
            "/api/v1/files",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
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
    fn multipart_names_with_folders_are_refused() {
        for bad in [
            "../x",
            "..",
            ".",
            "",
            "a/b",
            "..\\x",
            "C:\\x",
            "/etc/passwd",
            "x\0y",
        ] {
            assert!(multipart_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(multipart_name("chall.tar.gz").unwrap(), "chall.tar.gz");
        assert_eq!(
            multipart_name("my file (1).txt").unwrap(),
            "my_file__1_.txt"
        );
        assert_eq!(multipart_name(".hidden").unwrap(), "hidden");
        assert_eq!(file_kind(None).unwrap(), "challenge");
        assert_eq!(file_kind(Some("page")).unwrap(), "page");
        assert!(file_kind(Some("../x")).is_err());
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
