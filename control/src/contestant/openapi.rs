//! The OpenAPI 3.0 document of the whole Contestant Service API, served at [`PATH`]: the
//! accounts and play path items ([`accounts::openapi::paths`], [`play::openapi::paths`]), this
//! route, the shared schemas and the two credentials. Hand-written JSON: the routes are few and
//! stable, and a test checks the document against the router both ways. [`refine`] then states
//! the limits the handlers enforce, which schemathesis holds the server to (tests/it/api_fuzz.rs).
//!
//! [`accounts::openapi::paths`]: super::accounts::openapi::paths
//! [`play::openapi::paths`]: super::play::openapi::paths

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::accounts::session::COOKIE;
use super::{accounts, play};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for part in [accounts::openapi::paths(), play::openapi::paths()] {
        if let Value::Object(part) = part {
            for (path, item) in part {
                match (paths.get_mut(&path), item) {
                    (Some(Value::Object(existing)), Value::Object(item)) => existing.extend(item),
                    (_, item) => {
                        paths.insert(path, item);
                    }
                }
            }
        }
    }
    paths.insert(
        PATH.to_owned(),
        json!({"get": {
            "summary": "This document",
            "x-fctf-caller": "public",
            "parameters": [],
            "responses": {
                "200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }}),
    );
    refine(&mut paths);
    let mut components = play::openapi::components();
    components["securitySchemes"] = json!({
        "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": "`Token <API token>` (CTFd's scheme)"},
        "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "FCTF Contestant Service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The players' and admins' REST API, in CTFd's /api/v1 shapes. Successes are `{\"success\": true, \"data\": ...}`; every error is `{\"success\": false, \"error\": KIND, \"message\": ...}`.",
        },
        "paths": paths,
        "components": components,
    })
}

/// The schema of a path or query parameter by its name: what the handlers parse it as (ids are
/// `i64`, pages `u32`), and the values they take.
fn parameter_schema(name: &str, location: &str) -> Option<Value> {
    let id = json!({"type": "integer", "minimum": 1, "maximum": i64::MAX});
    Some(match (name, location) {
        ("page" | "per_page", _) => json!({"type": "integer", "minimum": 1, "maximum": u32::MAX}),
        ("count", "path") => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        ("part", "path") => {
            json!({"type": "string", "enum": ["tags", "topics", "hints", "files", "requirements"]})
        }
        ("key", "path") => json!({"type": "string", "enum": accounts::openapi::setting_keys()}),
        ("since_id", _) => json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
        ("team_id" | "challenge_id" | "bracket_id", _) => id,
        (_, "path") if name != "location" => id,
        _ => return None,
    })
}

/// Every integer of `schema` (nested too) without bounds gets `i64`'s: the handlers parse
/// integers as `i64` and refuse a larger number as malformed.
fn bound_integers(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("integer") {
                map.entry("minimum").or_insert_with(|| json!(i64::MIN));
                map.entry("maximum").or_insert_with(|| json!(i64::MAX));
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// A text that is not blank (something left after trimming) and at most `max` characters.
fn words(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": "\\S"})
}

/// Tightens the rendered path items to what the server enforces, so that a request the
/// document calls valid is one the server accepts (schemathesis' positive-data check, see
/// tests/it/api_fuzz.rs): parameter ranges by name, the play request bodies' limits, the
/// credentials answers (401 without or with bad credentials; 403 for a caller who may not),
/// and the one answer that is not JSON. The play bodies' limits belong with play's tables
/// (`play/openapi.rs`); they are applied here, by path, while that file is being reworked.
fn refine(paths: &mut Map<String, Value>) {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            if let Some(parameters) = operation["parameters"].as_array_mut() {
                for parameter in parameters {
                    let name = parameter["name"].as_str().unwrap_or_default().to_owned();
                    let location = parameter["in"].as_str().unwrap_or_default().to_owned();
                    if let Some(schema) = parameter_schema(&name, &location) {
                        parameter["schema"] = schema;
                    }
                }
            }
            if operation.get("security").is_some() {
                let mut unauthorized = error.clone();
                unauthorized["description"] =
                    json!("No credentials, or credentials that do not authenticate");
                operation["responses"]["401"] = unauthorized;
                let mut forbidden = error.clone();
                forbidden["description"] = json!(match operation["x-fctf-caller"].as_str() {
                    Some("admin") => "The caller is not an admin (or is banned)",
                    _ =>
                        "The caller may not do that now (banned, no team, not the captain, contest rules)",
                });
                operation["responses"]["403"] = forbidden;
            }
        }
    }
    // Play's request bodies (play/openapi.rs): the limits its handlers check.
    let mut body = |path: &str, method: &str, required: &[&str], props: Value| {
        let Some(schema) = paths
            .get_mut(path)
            .and_then(|item| item.get_mut(method))
            .and_then(|op| op.pointer_mut("/requestBody/content/application~1json/schema"))
        else {
            return;
        };
        if let (Some(have), Some(props)) = (schema["properties"].as_object_mut(), props.as_object())
        {
            for (name, constraint) in props {
                if constraint.is_null() {
                    have.remove(name);
                } else {
                    have.insert(name.clone(), constraint.clone());
                }
            }
        }
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        schema["additionalProperties"] = json!(false);
    };
    let id = json!({"type": "integer", "minimum": 1, "maximum": i64::MAX});
    // `challenge` is CTFd's alias of `challenge_id`: documented once, as sending both is refused.
    for path in [
        "/api/v1/flags",
        "/api/v1/flags/{id}",
        "/api/v1/hints",
        "/api/v1/hints/{id}",
        "/api/v1/files",
    ] {
        for method in ["post", "patch"] {
            body(
                path,
                method,
                &[],
                json!({"challenge": null, "challenge_id": id}),
            );
        }
    }
    body(
        "/api/v1/hints",
        "post",
        &["challenge_id", "content"],
        json!({"content": words(65_536), "cost": {"type": "integer", "minimum": 0}}),
    );
    body(
        "/api/v1/hints/{id}",
        "patch",
        &[],
        json!({"content": words(65_536), "cost": {"type": "integer", "minimum": 0}}),
    );
    for path in ["/api/v1/tags", "/api/v1/topics"] {
        body(
            path,
            "post",
            &["challenge_id", "value"],
            json!({"challenge": null, "challenge_id": id, "value": words(255), "type": {"type": "string"}}),
        );
    }
    body(
        "/api/v1/awards",
        "post",
        &["team_id", "name", "value"],
        // The scoreboard adds award values with `+`: two near `i64::MAX` overflow (a panic in a
        // debug build). The contract is ±10^9 points; play does not enforce it yet (see
        // tests/it/api_fuzz.rs).
        json!({"team_id": id, "user_id": id, "name": words(255),
               "value": {"type": "integer", "minimum": -1_000_000_000, "maximum": 1_000_000_000}}),
    );
    body(
        "/api/v1/notifications",
        "post",
        &["title", "content"],
        json!({"title": words(255), "content": {"type": "string", "minLength": 1}}),
    );
    body(
        "/api/v1/tickets",
        "post",
        &["title", "content"],
        json!({"title": words(255), "content": words(2048), "challenge_id": id}),
    );
    let at_least = |min: i64| json!({"type": "integer", "minimum": min});
    let challenge = json!({
        "name": words(255), "category": {"type": "string", "maxLength": 255},
        "value": at_least(0), "initial": at_least(0), "minimum": at_least(0), "decay": at_least(0),
        "first_blood_bonus": at_least(0), "max_attempts": at_least(0), "cooldown_secs": at_least(0),
        "port": {"type": "integer", "minimum": 1, "maximum": 65_535},
        "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "cpu_millicores": at_least(1), "memory_mib": at_least(1), "lifetime_secs": at_least(1),
        "requirements": {"type": "object", "additionalProperties": false, "properties": {
            "prerequisites": {"type": "array", "items": id}, "anonymize": {"type": "boolean"}}},
    });
    body("/api/v1/challenges", "post", &["name"], challenge.clone());
    body("/api/v1/challenges/{id}", "patch", &[], challenge);
    // Not blank; at most `MAX_PATTERN_BYTES` (512) bytes. A regex must also compile, which no
    // schema states (play answers that 400 for now: see tests/it/api_fuzz.rs).
    let content = json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "\\S"});
    body(
        "/api/v1/flags",
        "post",
        &["challenge_id", "content"],
        json!({"content": content}),
    );
    body(
        "/api/v1/flags/{id}",
        "patch",
        &[],
        json!({"content": content}),
    );
    body(
        "/api/v1/unlocks",
        "post",
        &["target"],
        json!({"target": id}),
    );
    body(
        "/api/v1/files",
        "post",
        &["name", "content"],
        json!({
        "name": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"},
        "content": {"type": "string", "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
                    "description": "The file, base64 (standard alphabet, padded, no bits after the end)"}}),
    );
    // The multipart upload needs at least one file part; its challenge field is a positive id.
    if let Some(form) = paths
        .get_mut("/api/v1/files")
        .and_then(|item| item.get_mut("post"))
        .and_then(|op| {
            op.pointer_mut("/requestBody/content/multipart~1form-data/schema/properties")
        })
        .and_then(Value::as_object_mut)
    {
        if let Some(files) = form.get_mut("file").filter(|f| f["type"] == "array") {
            files["minItems"] = json!(1);
        }
        for name in ["challenge", "challenge_id"] {
            if let Some(field) = form.get_mut(name) {
                *field = id.clone();
            }
        }
    }
    // ctfcli's challenge.yml: its scalar fields and topics.
    if let Some(import) = paths
        .get_mut("/api/v1/challenges/import")
        .and_then(|i| i.get_mut("post"))
    {
        import["requestBody"]["content"]["application/yaml"]["schema"] = json!({
            "type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": words(255), "category": {"type": "string", "maxLength": 255},
                "description": {"type": "string"}, "value": at_least(0),
                "type": {"type": "string", "enum": ["standard", "dynamic"]},
                "state": {"type": "string", "enum": ["visible", "hidden"]},
                "attempts": at_least(0), "topics": {"type": "array", "items": words(255)},
                "version": {"type": "string"}}});
    }
    for item in paths.values_mut() {
        if let Some(item) = item.as_object_mut() {
            for operation in item.values_mut() {
                if let Some(body) = operation.get_mut("requestBody") {
                    bound_integers(body);
                }
            }
        }
    }
    // ctfcli's export is YAML (a mapping), not the envelope.
    if let Some(export) = paths
        .get_mut("/api/v1/challenges/{id}/export")
        .and_then(|i| i.get_mut("get"))
    {
        export["responses"]["200"] = json!({"description": "The challenge as ctfcli's challenge.yml",
            "content": {"application/yaml": {"schema": {"type": "object", "required": ["name"]}}}});
    }
}

/// `GET /api/v1/openapi.json` (rendered once per process).
pub(crate) async fn serve() -> Response {
    static RENDERED: OnceLock<String> = OnceLock::new();
    let body = RENDERED.get_or_init(|| document().to_string()).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_with_both_parts() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/auth/login"));
        assert!(paths.contains_key("/api/v1/challenges/attempt"));
        assert!(paths.contains_key(PATH));
        assert!(doc["components"]["securitySchemes"]["token"].is_object());
        assert!(doc["components"]["schemas"]["Error"].is_object());
    }
}
