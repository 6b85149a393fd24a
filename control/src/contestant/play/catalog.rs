//! Challenges in ctfcli's `challenge.yml` format: `POST /api/v1/challenges/import` (admin; the
//! YAML as the body) creates the challenge, or replaces the one of the same name with its flags,
//! hints, tags and topics; `GET /api/v1/challenges/{id}/export` (admin) writes it back.
//!
//! FCTF's own fields ride in `extra` next to ctfcli's dynamic-value ones (`initial`, `decay`,
//! `minimum`, `function`): `first_blood_bonus`, `cooldown_secs`, `command`, `port`,
//! `cpu_millicores`, `memory_mib`, `lifetime_secs`, `harden`, `gvisor`, `team_flag`. Files are not
//! carried (upload them through `/api/v1/files`).

use std::collections::HashMap;

use crate::contestant::accounts::Path;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::challenges::merge;
use super::flags::{FlagKind, FlagRule};
use super::records::{self, Challenge, FlagRow};
use super::{db_error, now_ms, ok, parse_id};
use crate::contestant::AppState;
use crate::contestant::accounts::AdminCaller;
use crate::error::{ApiError, ApiResult};

/// Largest `challenge.yml` accepted.
pub const MAX_YAML_BYTES: usize = 256 * 1024;

/// A flag entry: a bare string (static) or CTFd's object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagSpec {
    Plain(String),
    Full {
        #[serde(rename = "type", default = "static_word")]
        kind: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
}

fn static_word() -> String {
    "static".to_owned()
}

/// A hint entry: a bare string (free) or `{content, cost}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HintSpec {
    Plain(String),
    Full {
        content: String,
        #[serde(default)]
        cost: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

/// A tag entry: a bare string or `{value}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TagSpec {
    Plain(String),
    Full { value: String },
}

/// Prerequisites: a list of challenge names or ids, or CTFd's object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequirementsSpec {
    List(Vec<serde_norway::Value>),
    Full {
        #[serde(default)]
        prerequisites: Vec<serde_norway::Value>,
        #[serde(default)]
        anonymize: bool,
    },
}

/// ctfcli's `challenge.yml` (the fields FCTF reads; unknown ones such as `author` or `version`
/// are accepted and ignored, as ctfcli's own format grows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChallengeYml {
    pub name: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_info: Option<String>,
    #[serde(default)]
    pub value: i64,
    #[serde(rename = "type", default = "standard_word")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub flags: Vec<FlagSpec>,
    #[serde(default)]
    pub tags: Vec<TagSpec>,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub hints: Vec<HintSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<RequirementsSpec>,
    #[serde(default = "visible_word")]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn standard_word() -> String {
    "standard".to_owned()
}

fn visible_word() -> String {
    "visible".to_owned()
}

/// The `extra` keys FCTF reads.
const EXTRA_KEYS: &[&str] = &[
    "initial",
    "decay",
    "minimum",
    "function",
    "first_blood_bonus",
    "cooldown_secs",
    "command",
    "port",
    "cpu_millicores",
    "memory_mib",
    "lifetime_secs",
    "harden",
    "gvisor",
    "team_flag",
];

/// The challenge fields of `yml` as a body for [`merge`], with prerequisites resolved by
/// `ids` (challenge name -> id). Pure.
pub fn challenge_fields(yml: &ChallengeYml, ids: &HashMap<String, i64>) -> Result<Value, String> {
    let mut body = json!({
        "name": yml.name,
        "category": yml.category,
        "description": yml.description,
        "connection_info": yml.connection_info,
        "value": yml.value,
        "type": yml.kind,
        "state": yml.state,
        "max_attempts": yml.attempts.unwrap_or(0),
        "image": yml.image,
        "protocol": yml.protocol,
    });
    let Some(map) = body.as_object_mut() else {
        return Err("internal".to_owned());
    };
    for (key, value) in &yml.extra {
        if EXTRA_KEYS.contains(&key.as_str()) {
            map.insert(key.clone(), value.clone());
        }
    }
    if yml.kind == "dynamic" && !yml.extra.contains_key("initial") {
        map.insert("initial".to_owned(), json!(yml.value));
    }
    if let Some(req) = &yml.requirements {
        let (names, anonymize) = match req {
            RequirementsSpec::List(list) => (list.clone(), false),
            RequirementsSpec::Full {
                prerequisites,
                anonymize,
            } => (prerequisites.clone(), *anonymize),
        };
        let mut prerequisites = Vec::new();
        for entry in names {
            let id = match &entry {
                serde_norway::Value::Number(n) => n.as_i64(),
                serde_norway::Value::String(s) => ids.get(s).copied(),
                _ => None,
            }
            .ok_or_else(|| format!("Unknown prerequisite {entry:?}."))?;
            prerequisites.push(id);
        }
        map.insert(
            "requirements".to_owned(),
            json!({"prerequisites": prerequisites, "anonymize": anonymize}),
        );
    }
    Ok(body)
}

/// The flags of `yml`, checked. Pure.
pub fn flag_rows(yml: &ChallengeYml) -> Result<Vec<FlagRow>, ApiError> {
    yml.flags
        .iter()
        .map(|f| {
            let (kind, content, data) = match f {
                FlagSpec::Plain(content) => ("static".to_owned(), content.clone(), String::new()),
                FlagSpec::Full {
                    kind,
                    content,
                    data,
                } => (
                    kind.clone(),
                    content.clone(),
                    data.clone().unwrap_or_default(),
                ),
            };
            let parsed = FlagKind::parse(&kind)
                .ok_or_else(|| ApiError::bad_request(format!("Unknown flag type {kind:?}.")))?;
            if !matches!(data.as_str(), "" | "case_insensitive") {
                return Err(ApiError::bad_request(format!(
                    "Unknown flag data {data:?}."
                )));
            }
            FlagRule {
                kind: parsed,
                content: content.clone(),
                case_insensitive: data == "case_insensitive",
            }
            .validate()
            .map_err(|e| {
                ApiError::new(
                    crate::error::ErrorKind::Unprocessable,
                    format!("Invalid flag: {e}."),
                )
            })?;
            Ok(FlagRow {
                id: 0,
                challenge_id: 0,
                kind,
                content,
                data,
            })
        })
        .collect()
}

async fn name_ids(state: &AppState) -> ApiResult<HashMap<String, i64>> {
    Ok(records::challenges(&state.db)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|c| (c.name, c.id))
        .collect())
}

/// `POST /api/v1/challenges/import` (admin).
async fn import(
    State(state): State<AppState>,
    _admin: AdminCaller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if body.len() > MAX_YAML_BYTES {
        return Err(ApiError::new(
            crate::error::ErrorKind::PayloadTooLarge,
            format!("challenge.yml is limited to {MAX_YAML_BYTES} bytes."),
        ));
    }
    let yml: ChallengeYml = serde_norway::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Not a valid challenge.yml: {e}")))?;
    let ids = name_ids(&state).await?;
    let fields = challenge_fields(&yml, &ids).map_err(ApiError::bad_request)?;
    let flags = flag_rows(&yml)?;
    let existing = match ids.get(&yml.name) {
        Some(id) => records::challenge(&state.db, *id).await.map_err(db_error)?,
        None => None,
    };
    let base = existing.clone().unwrap_or_else(super::challenges::blank);
    let mut challenge: Challenge = merge(&base, &fields)?;
    if challenge.kind == "dynamic" {
        challenge.value = challenge.valuation().value(0);
    }
    let id = records::save_challenge(&state.db, &challenge, now_ms())
        .await
        .map_err(db_error)?;
    let mut tx = state
        .db
        .pool()
        .begin()
        .await
        .map_err(|e| db_error(e.into()))?;
    for table in ["flags", "hints", "tags", "topics"] {
        let sql = format!("DELETE FROM {table} WHERE challenge_id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e.into()))?;
    }
    for f in &flags {
        sqlx::query("INSERT INTO flags (challenge_id, type, content, data) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(f.kind.clone())
            .bind(f.content.clone())
            .bind(f.data.clone())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e.into()))?;
    }
    for h in &yml.hints {
        let (content, cost, title) = match h {
            HintSpec::Plain(content) => (content.clone(), 0, String::new()),
            HintSpec::Full {
                content,
                cost,
                title,
            } => (
                content.clone(),
                (*cost).max(0),
                title.clone().unwrap_or_default(),
            ),
        };
        sqlx::query("INSERT INTO hints (challenge_id, title, content, cost) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(title)
            .bind(content)
            .bind(cost)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e.into()))?;
    }
    let tags = yml.tags.iter().map(|t| match t {
        TagSpec::Plain(v) | TagSpec::Full { value: v } => v.clone(),
    });
    for (table, values) in [
        ("tags", tags.collect::<Vec<_>>()),
        ("topics", yml.topics.clone()),
    ] {
        for value in values {
            let sql = format!("INSERT INTO {table} (challenge_id, value) VALUES (?, ?)");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(value.chars().take(255).collect::<String>())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(e.into()))?;
        }
    }
    tx.commit().await.map_err(|e| db_error(e.into()))?;
    state.play.boards.invalidate();
    state.play.challenges_changed();
    Ok(ok(
        json!({"id": id, "name": challenge.name, "updated": existing.is_some()}),
    ))
}

async fn labels(state: &AppState, table: &'static str, id: i64) -> ApiResult<Vec<String>> {
    let sql = format!("SELECT value FROM {table} WHERE challenge_id = ? ORDER BY id");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| db_error(e.into()))?
        .iter()
        .map(|r| {
            r.try_get::<String, _>("value")
                .map_err(|e| db_error(e.into()))
        })
        .collect()
}

/// `GET /api/v1/challenges/{id}/export` (admin): `challenge.yml`.
async fn export(
    State(state): State<AppState>,
    _admin: AdminCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let c = records::challenge(&state.db, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found("No such challenge."))?;
    let names: HashMap<i64, String> = name_ids(&state)
        .await?
        .into_iter()
        .map(|(name, id)| (id, name))
        .collect();
    let flags = records::flags(&state.db, Some(id))
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|f| FlagSpec::Full {
            kind: f.kind,
            content: f.content,
            data: Some(f.data).filter(|d| !d.is_empty()),
        })
        .collect();
    let hints =
        sqlx::query("SELECT title, content, cost FROM hints WHERE challenge_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(state.db.pool())
            .await
            .map_err(|e| db_error(e.into()))?
            .iter()
            .map(|r| {
                Ok(HintSpec::Full {
                    content: r.try_get("content")?,
                    cost: r.try_get("cost")?,
                    title: Some(r.try_get::<String, _>("title")?).filter(|t| !t.is_empty()),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| db_error(e.into()))?;
    let mut extra = serde_json::Map::new();
    let Value::Object(fields) = serde_json::to_value(&c).map_err(|e| ApiError::internal(&e))?
    else {
        return Err(ApiError::internal(&"challenge is not an object"));
    };
    for key in EXTRA_KEYS {
        if let Some(v) = fields.get(*key).filter(|v| !v.is_null()) {
            extra.insert((*key).to_owned(), v.clone());
        }
    }
    let requirements = c.requirements.as_ref().map(|r| RequirementsSpec::Full {
        prerequisites: r
            .prerequisites
            .iter()
            .map(|p| match names.get(p) {
                Some(name) => serde_norway::Value::String(name.clone()),
                None => serde_norway::Value::Number((*p).into()),
            })
            .collect(),
        anonymize: r.anonymize,
    });
    let yml = ChallengeYml {
        name: c.name.clone(),
        category: c.category.clone(),
        description: c.description.clone(),
        connection_info: c.connection_info.clone(),
        value: c.initial.unwrap_or(c.value),
        kind: c.kind.clone(),
        extra,
        image: c.image.clone(),
        protocol: c.protocol.clone(),
        attempts: Some(c.max_attempts).filter(|a| *a > 0),
        flags,
        tags: labels(&state, "tags", id)
            .await?
            .into_iter()
            .map(TagSpec::Plain)
            .collect(),
        topics: labels(&state, "topics", id).await?,
        hints,
        requirements,
        state: c.state.clone(),
        version: Some("0.1".to_owned()),
    };
    let text = serde_norway::to_string(&yml).map_err(|e| ApiError::internal(&e))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    Ok(response)
}

/// The catalogue routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/challenges/import", post(import))
        .route("/api/v1/challenges/{id}/export", get(export))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = r#"
name: "Web Warmup"
author: someone
category: web
description: Find the flag.
value: 500
type: dynamic
extra:
  initial: 500
  decay: 10
  minimum: 100
  port: 8080
  team_flag: true
image: registry.local/web:1
protocol: http
attempts: 5
flags:
  - flag{plain}
  - {type: regex, content: 'flag\{[0-9]+\}', data: case_insensitive}
tags: [easy, {value: web}]
topics: [sqli]
hints:
  - free hint
  - {content: paid hint, cost: 20}
requirements: [Intro]
state: hidden
version: "0.1"
"#;

    #[test]
    fn ctfcli_yaml_reads_into_fields_and_flags() {
        let yml: ChallengeYml = serde_norway::from_str(YML).unwrap();
        let ids = HashMap::from([("Intro".to_owned(), 3)]);
        let body = challenge_fields(&yml, &ids).unwrap();
        let c = merge(&super::super::challenges::blank(), &body).unwrap();
        assert_eq!(c.kind, "dynamic");
        assert_eq!(
            (c.initial, c.minimum, c.decay),
            (Some(500), Some(100), Some(10))
        );
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.port, Some(8080));
        assert!(c.team_flag && c.has_instance());
        assert_eq!(c.requirements.unwrap().prerequisites, vec![3]);
        assert_eq!(c.state, "hidden");
        let flags = flag_rows(&yml).unwrap();
        assert_eq!(flags.len(), 2);
        assert_eq!(flags[1].data, "case_insensitive");
        // An unknown prerequisite or a bad flag is refused.
        assert!(challenge_fields(&yml, &HashMap::new()).is_err());
        let mut bad = yml.clone();
        bad.flags.push(FlagSpec::Full {
            kind: "regex".into(),
            content: "(".into(),
            data: None,
        });
        assert!(flag_rows(&bad).is_err());
    }
}
