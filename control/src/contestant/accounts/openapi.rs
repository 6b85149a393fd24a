//! The accounts routes' part of the OpenAPI 3.0 document: [`paths`], rendered like play's (the
//! envelope or the one error shape; request bodies field by field, unknown fields refused).

use serde_json::{Value, json};

use crate::contestant::play::openapi::{Op, object, op, render};

/// A body of optional fields only, unknown ones refused (as the handlers' `deny_unknown_fields`).
fn fields(props: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": props})
}

fn ops() -> Vec<Op> {
    let int = json!({"type": "integer"});
    let text = json!({"type": "string"});
    let flag = json!({"type": "boolean"});
    let nullable_ms = json!({"type": "integer", "nullable": true});
    let page: &'static [&'static str] = &["page", "per_page"];
    let admin_user = fields(json!({
        "name": text, "email": text, "password": text,
        "type": {"type": "string", "enum": ["user", "admin"]},
        "verified": flag, "hidden": flag, "banned": flag, "bracket_id": int,
        "website": text, "affiliation": text, "country": text}));
    let admin_team = fields(json!({
        "name": text, "captain_id": int, "website": text, "affiliation": text, "country": text,
        "new_invite_code": flag, "hidden": flag, "banned": flag, "bracket_id": int}));
    let bracket = fields(json!({
        "name": text, "description": text, "type": {"type": "string", "enum": ["users", "teams"]}}));
    let member = object(&["user_id"], json!({"user_id": int}));
    let settings = json!({"type": "object", "description": "`{key: value, ...}` (all or nothing) of the contest settings", "additionalProperties": true});
    vec![
        op("post", "/api/v1/auth/register", "Register (signed in by cookie)", "public").with(
            object(&["name", "password"], json!({"name": text, "email": {"type": "string", "nullable": true}, "password": text})),
        ),
        op("post", "/api/v1/auth/login", "Log in by name or email (cookie)", "public")
            .with(object(&["name", "password"], json!({"name": text, "password": text}))),
        op("post", "/api/v1/auth/logout", "End the session", "player"),
        op("post", "/api/v1/auth/password", "Change the password (other sessions end)", "player")
            .with(object(&["current", "new"], json!({"current": text, "new": text}))),
        op("get", "/api/v1/users", "Users (hidden and banned ones for admins)", "public").query(page),
        op("post", "/api/v1/users", "Create a user", "admin").with(admin_user.clone()),
        op("get", "/api/v1/users/me", "The caller's profile", "player"),
        op("patch", "/api/v1/users/me", "Change the caller's profile", "player").with(fields(json!({
            "name": text, "email": text, "website": text, "affiliation": text, "country": text,
            "password": text, "confirm": text}))),
        op("get", "/api/v1/users/{id}", "A user", "public"),
        op("patch", "/api/v1/users/{id}", "Change a user", "admin").with(admin_user),
        op("delete", "/api/v1/users/{id}", "Delete a user", "admin"),
        op("get", "/api/v1/teams", "Teams (hidden and banned ones for admins)", "public").query(page),
        op("post", "/api/v1/teams", "Create a team (the caller is its captain)", "player")
            .with(object(&["name"], json!({"name": text, "bracket_id": {"type": "integer", "nullable": true}}))),
        op("post", "/api/v1/teams/join", "Join a team by invite code", "player")
            .with(object(&["invite_code"], json!({"invite_code": text}))),
        op("get", "/api/v1/teams/me", "The caller's team, with invite code and members", "player"),
        op("patch", "/api/v1/teams/me", "Change the caller's team (captain)", "player").with(fields(json!({
            "name": text, "captain_id": int, "website": text, "affiliation": text, "country": text,
            "new_invite_code": flag}))),
        op("post", "/api/v1/teams/me/leave", "Leave the team", "player"),
        op("get", "/api/v1/teams/{id}", "A team", "public"),
        op("patch", "/api/v1/teams/{id}", "Change a team", "admin").with(admin_team),
        op("delete", "/api/v1/teams/{id}", "Delete a team", "admin"),
        op("get", "/api/v1/teams/{id}/members", "A team's members", "public"),
        op("post", "/api/v1/teams/{id}/members", "Add a member", "admin").with(member.clone()),
        op("delete", "/api/v1/teams/{id}/members", "Remove a member", "admin").with(member),
        op("get", "/api/v1/brackets", "Brackets", "public"),
        op("post", "/api/v1/brackets", "Create a bracket", "admin").with(bracket.clone()),
        op("patch", "/api/v1/brackets/{id}", "Change a bracket", "admin").with(bracket),
        op("delete", "/api/v1/brackets/{id}", "Delete a bracket", "admin"),
        op("get", "/api/v1/tokens", "The caller's API tokens (admins: all)", "player"),
        op("post", "/api/v1/tokens", "Issue an API token (the value is in this answer only)", "player")
            .with(fields(json!({"expiration_ms": nullable_ms, "description": {"type": "string", "nullable": true}, "user_id": {"type": "integer", "nullable": true}}))),
        op("get", "/api/v1/tokens/{id}", "An API token", "player"),
        op("delete", "/api/v1/tokens/{id}", "Revoke an API token", "player"),
        op("get", "/api/v1/configs", "The contest settings as `[{key, value}]`", "admin"),
        op("patch", "/api/v1/configs", "Change contest settings", "admin").with(settings),
        op("get", "/api/v1/configs/{key}", "One contest setting", "admin"),
        op("patch", "/api/v1/configs/{key}", "Change one contest setting", "admin")
            .with(object(&["value"], json!({"value": {}}))),
        op("get", "/api/v1/contest", "The settings in force, the phase and the server's clock", "public"),
    ]
}

/// The path items of the accounts routes.
pub fn paths() -> Value {
    render(ops())
}
