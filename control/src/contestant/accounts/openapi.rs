//! The accounts routes' part of the OpenAPI 3.0 document: [`paths`], rendered like play's (the
//! envelope or the one error shape; request bodies field by field, unknown fields refused).

use serde_json::{Value, json};

use super::passwords::MAX_PASSWORD_LEN;
use super::records::MAX_NAME_CHARS;
use crate::contestant::play::openapi::{Op, object, op, render};

/// A body of optional fields only, unknown ones refused (as the handlers' `deny_unknown_fields`).
fn fields(props: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": props})
}

/// No control character (`char::is_control`: C0, DEL, C1), as the handlers refuse them.
pub(crate) const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";

/// A user or team name as `records::check_name` takes it: at most [`MAX_NAME_CHARS`]
/// characters, no control character, something left after trimming.
fn name() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS,
           "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"})
}

/// A new password under the default policy (`[contestant].password_min_len`, default 8; at
/// most [`MAX_PASSWORD_LEN`] bytes, so at most a quarter of that in characters; not only
/// spaces). A server with a longer minimum answers 422 to a shorter one.
fn new_password() -> Value {
    json!({"type": "string", "minLength": 8, "maxLength": MAX_PASSWORD_LEN / 4, "pattern": "\\S",
           "description": "At least `[contestant].password_min_len` characters (default 8), not only spaces"})
}

/// An email address as `records::check_email` takes it (or empty: none).
fn email() -> Value {
    json!({"type": "string", "maxLength": 63,
           "pattern": "^$|^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f]*\\.[^@\\s\\x00-\\x1f\\x7f-\\x9f]*$",
           "description": "`user@host.tld`, at most 255 bytes; empty for none"})
}

/// A free-text profile field of at most `max` characters, no control character.
fn profile(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": NO_CONTROL})
}

/// A body with these `required` fields, unknown ones refused (`deny_unknown_fields`).
fn strict(required: &[&str], props: Value) -> Value {
    let mut body = object(required, props);
    body["additionalProperties"] = json!(false);
    body
}

fn ops() -> Vec<Op> {
    let id = json!({"type": "integer", "minimum": 1, "maximum": i64::MAX});
    let text = json!({"type": "string"});
    let flag = json!({"type": "boolean"});
    let page: &'static [&'static str] = &["page", "per_page"];
    let admin_user = |required: &[&str]| {
        strict(
            required,
            json!({
        "name": name(), "email": email(), "password": new_password(),
        "type": {"type": "string", "enum": ["user", "admin"]},
        "verified": flag, "hidden": flag, "banned": flag, "bracket_id": id,
        "website": profile(255), "affiliation": profile(255), "country": profile(32)}),
        )
    };
    let admin_team = fields(json!({
        "name": name(), "captain_id": id, "website": profile(255), "affiliation": profile(255),
        "country": profile(32), "new_invite_code": flag, "hidden": flag, "banned": flag,
        "bracket_id": id}));
    let bracket = |required: &[&str]| {
        strict(
            required,
            json!({
        "name": name(), "description": text, "type": {"type": "string", "enum": ["users", "teams"]}}),
        )
    };
    let member = strict(&["user_id"], json!({"user_id": id}));
    let settings = fields(settings_properties());
    vec![
        op("post", "/api/v1/auth/register", "Register (signed in by cookie)", "public").with(
            strict(&["name", "password"], json!({"name": name(), "email": nullable(email()), "password": new_password()})),
        ),
        op("post", "/api/v1/auth/login", "Log in by name or email (cookie)", "public")
            .with(strict(&["name", "password"], json!({"name": text, "password": text}))),
        op("post", "/api/v1/auth/logout", "End the session", "player"),
        op("post", "/api/v1/auth/password", "Change the password (other sessions end)", "player")
            .with(strict(&["current", "new"], json!({"current": text, "new": new_password()}))),
        op("get", "/api/v1/users", "Users (hidden and banned ones for admins)", "public").query(page),
        op("post", "/api/v1/users", "Create a user", "admin").with(admin_user(&["name", "password"])),
        op("get", "/api/v1/users/me", "The caller's profile", "player"),
        op("patch", "/api/v1/users/me", "Change the caller's profile", "player").with(fields(json!({
            "name": name(), "email": email(), "website": profile(255), "affiliation": profile(255),
            "country": profile(32), "password": new_password(), "confirm": text}))),
        op("get", "/api/v1/users/{id}", "A user", "public"),
        op("patch", "/api/v1/users/{id}", "Change a user", "admin").with(admin_user(&[])),
        op("delete", "/api/v1/users/{id}", "Delete a user", "admin"),
        op("get", "/api/v1/teams", "Teams (hidden and banned ones for admins)", "public").query(page),
        op("post", "/api/v1/teams", "Create a team (the caller is its captain)", "player")
            .with(strict(&["name"], json!({"name": name(), "bracket_id": nullable(id.clone())}))),
        op("post", "/api/v1/teams/join", "Join a team by invite code", "player")
            .with(strict(&["invite_code"], json!({"invite_code": text}))),
        op("get", "/api/v1/teams/me", "The caller's team, with invite code and members", "player"),
        op("patch", "/api/v1/teams/me", "Change the caller's team (captain)", "player").with(fields(json!({
            "name": name(), "captain_id": id, "website": profile(255), "affiliation": profile(255),
            "country": profile(32), "new_invite_code": flag}))),
        op("post", "/api/v1/teams/me/leave", "Leave the team", "player"),
        op("get", "/api/v1/teams/{id}", "A team", "public"),
        op("patch", "/api/v1/teams/{id}", "Change a team", "admin").with(admin_team),
        op("delete", "/api/v1/teams/{id}", "Delete a team", "admin"),
        op("get", "/api/v1/teams/{id}/members", "A team's members", "public"),
        op("post", "/api/v1/teams/{id}/members", "Add a member", "admin").with(member.clone()),
        op("delete", "/api/v1/teams/{id}/members", "Remove a member", "admin").with(member),
        op("get", "/api/v1/brackets", "Brackets", "public"),
        op("post", "/api/v1/brackets", "Create a bracket", "admin").with(bracket(&["name"])),
        op("patch", "/api/v1/brackets/{id}", "Change a bracket", "admin").with(bracket(&[])),
        op("delete", "/api/v1/brackets/{id}", "Delete a bracket", "admin"),
        op("get", "/api/v1/tokens", "The caller's API tokens (admins: all)", "player"),
        op("post", "/api/v1/tokens", "Issue an API token (the value is in this answer only)", "player")
            .with(fields(json!({"expiration_ms": {"type": "integer", "nullable": true, "description": "Milliseconds since the epoch, in the future (else 422)"},
                "description": {"type": "string", "nullable": true, "maxLength": 250}, "user_id": nullable(id.clone())}))),
        op("get", "/api/v1/tokens/{id}", "An API token", "player"),
        op("delete", "/api/v1/tokens/{id}", "Revoke an API token", "player"),
        op("get", "/api/v1/configs", "The contest settings as `[{key, value}]`", "admin"),
        op("patch", "/api/v1/configs", "Change contest settings", "admin").with(settings),
        op("get", "/api/v1/configs/{key}", "One contest setting", "admin"),
        op("patch", "/api/v1/configs/{key}", "Change one contest setting", "admin")
            .with(strict(&["value"], json!({"value": {"description": "Of the kind `GET /api/v1/configs` shows for this key (else 422)"}}))),
        op("get", "/api/v1/contest", "The settings in force, the phase and the server's clock", "public"),
    ]
}

/// `schema`, or null.
fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

/// The contest settings by key, each with the kind of value it takes
/// ([`super::settings::ContestSettings`]); rules across keys (the end after the start) are 422.
fn settings_properties() -> Value {
    let ms = json!({"type": "integer", "nullable": true, "description": "Milliseconds since the epoch, or null"});
    let flag = json!({"type": "boolean"});
    json!({
        "start_ms": ms, "end_ms": ms, "freeze_ms": ms,
        "paused": flag, "view_after_end": flag, "captain_only_start": flag,
        "captain_only_submit": flag, "registration_open": flag,
        "instances_per_team": {"type": "integer", "minimum": 1, "maximum": 1000},
        "team_size": {"type": "integer", "minimum": 1, "maximum": 1000},
        "max_users": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
        "score_visibility": {"type": "string", "enum": ["public", "private", "hidden"]},
    })
}

/// The keys `/api/v1/configs/{key}` knows.
pub(crate) fn setting_keys() -> Vec<String> {
    settings_properties()
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The path items of the accounts routes.
pub fn paths() -> Value {
    render(ops())
}
