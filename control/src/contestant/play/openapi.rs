//! The play routes' part of the OpenAPI 3.0 document: [`paths`] and [`components`], for the
//! whole-API document to merge. Every answer is CTFd's envelope (`Envelope`) or the one error
//! shape (`Error`); request bodies are described field by field.

use serde_json::{Map, Value, json};

/// One documented operation (also used by the accounts part, [`render`]ed the same way).
pub(crate) struct Op {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    /// `player`, `admin` or `public`.
    pub(crate) who: &'static str,
    pub(crate) body: Option<Value>,
    pub(crate) query: &'static [&'static str],
}

impl Op {
    /// With a JSON request body of `schema`.
    pub(crate) fn with(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }

    /// With these optional query parameters.
    pub(crate) fn query(mut self, names: &'static [&'static str]) -> Self {
        self.query = names;
        self
    }
}

pub(crate) const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    who: &'static str,
) -> Op {
    Op {
        method,
        path,
        summary,
        who,
        body: None,
        query: &[],
    }
}

pub(crate) fn object(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn ops() -> Vec<Op> {
    let int = json!({"type": "integer"});
    let text = json!({"type": "string"});
    let challenge_body = json!({"type": "object", "additionalProperties": false, "properties": {
        "name": text, "category": text, "description": text, "connection_info": {"type": "string", "nullable": true},
        "value": int, "type": {"type": "string", "enum": ["standard", "dynamic", "static"]},
        "initial": int, "minimum": int, "decay": int,
        "function": {"type": "string", "enum": ["linear", "logarithmic"]},
        "first_blood_bonus": int, "state": {"type": "string", "enum": ["visible", "hidden"]},
        "max_attempts": int, "cooldown_secs": int,
        "requirements": {"type": "object", "properties": {"prerequisites": {"type": "array", "items": int}, "anonymize": {"type": "boolean"}}},
        "position": int, "image": text, "command": {"type": "array", "items": text}, "port": int,
        "cpu_millicores": int, "memory_mib": int, "lifetime_secs": int,
        "protocol": {"type": "string", "enum": ["http", "tcp"]},
        "harden": {"type": "boolean"}, "gvisor": {"type": "boolean"}, "team_flag": {"type": "boolean"}}});
    let flag_body = json!({"type": "object", "additionalProperties": false, "properties": {
        "challenge": int, "challenge_id": int, "type": {"type": "string", "enum": ["static", "regex"]},
        "content": text, "data": {"type": "string", "enum": ["", "case_insensitive"]}}});
    let hint_body = json!({"type": "object", "additionalProperties": false, "properties": {
        "challenge": int, "challenge_id": int, "title": text, "content": text, "cost": int}});
    let label_body = object(
        &["value"],
        json!({"challenge": int, "challenge_id": int, "value": text}),
    );
    let with = |mut o: Op, body: Value| {
        o.body = Some(body);
        o
    };
    let query = |mut o: Op, q: &'static [&'static str]| {
        o.query = q;
        o
    };
    vec![
        op(
            "get",
            "/api/v1/challenges",
            "Visible challenges (locked ones hidden or anonymised)",
            "player",
        ),
        with(
            op("post", "/api/v1/challenges", "Create a challenge", "admin"),
            challenge_body.clone(),
        ),
        op(
            "get",
            "/api/v1/challenges/{id}",
            "A challenge's detail",
            "player",
        ),
        with(
            op(
                "patch",
                "/api/v1/challenges/{id}",
                "Change a challenge",
                "admin",
            ),
            challenge_body,
        ),
        op(
            "delete",
            "/api/v1/challenges/{id}",
            "Delete a challenge",
            "admin",
        ),
        op(
            "get",
            "/api/v1/challenges/{id}/solves",
            "Who solved it, in database order",
            "player",
        ),
        op(
            "get",
            "/api/v1/challenges/{id}/flags",
            "A challenge's flags",
            "admin",
        ),
        op(
            "get",
            "/api/v1/challenges/{id}/{part}",
            "What hangs off a challenge (`part`: tags, topics, hints, files, requirements), as ctfcli reads it",
            "admin",
        ),
        with(
            op(
                "post",
                "/api/v1/challenges/attempt",
                "Submit a flag",
                "player",
            ),
            object(
                &["challenge_id", "submission"],
                json!({"challenge_id": int, "submission": text}),
            ),
        ),
        with(
            op(
                "post",
                "/api/v1/challenges/import",
                "Import a ctfcli challenge.yml",
                "admin",
            ),
            json!({"type": "string"}),
        ),
        op(
            "get",
            "/api/v1/challenges/{id}/export",
            "Export as challenge.yml",
            "admin",
        ),
        op(
            "get",
            "/api/v1/challenges/{id}/instance",
            "The team's instance status",
            "player",
        ),
        op(
            "post",
            "/api/v1/challenges/{id}/instance",
            "Start the team's instance",
            "player",
        ),
        op(
            "delete",
            "/api/v1/challenges/{id}/instance",
            "Stop the team's instance",
            "player",
        ),
        op(
            "post",
            "/api/v1/challenges/{id}/instance/extend",
            "Extend the team's instance",
            "player",
        ),
        query(
            op("get", "/api/v1/instances", "Every instance", "admin"),
            &["team_id", "page", "per_page"],
        ),
        op(
            "delete",
            "/api/v1/instances/{team}/{challenge}",
            "Force-stop an instance",
            "admin",
        ),
        op("get", "/api/v1/flags", "Every flag", "admin"),
        with(
            op("post", "/api/v1/flags", "Add a flag", "admin"),
            flag_body.clone(),
        ),
        op("get", "/api/v1/flags/{id}", "A flag", "admin"),
        with(
            op("patch", "/api/v1/flags/{id}", "Change a flag", "admin"),
            flag_body,
        ),
        op("delete", "/api/v1/flags/{id}", "Delete a flag", "admin"),
        with(
            op("post", "/api/v1/tags", "Add a tag", "admin"),
            label_body.clone(),
        ),
        op("delete", "/api/v1/tags/{id}", "Delete a tag", "admin"),
        with(
            op("post", "/api/v1/topics", "Add a topic", "admin"),
            label_body,
        ),
        op("delete", "/api/v1/topics/{id}", "Delete a topic", "admin"),
        query(
            op("get", "/api/v1/hints", "Hints", "admin"),
            &["challenge_id"],
        ),
        with(
            op("post", "/api/v1/hints", "Add a hint", "admin"),
            hint_body.clone(),
        ),
        op(
            "get",
            "/api/v1/hints/{id}",
            "A hint (content once unlocked or free)",
            "player",
        ),
        with(
            op("patch", "/api/v1/hints/{id}", "Change a hint", "admin"),
            hint_body,
        ),
        op("delete", "/api/v1/hints/{id}", "Delete a hint", "admin"),
        op("get", "/api/v1/unlocks", "The team's unlocks", "player"),
        with(
            op(
                "post",
                "/api/v1/unlocks",
                "Unlock a hint (its cost is charged once)",
                "player",
            ),
            object(
                &["target"],
                json!({"target": int, "type": {"type": "string", "enum": ["hints"]}}),
            ),
        ),
        query(
            op(
                "get",
                "/files/{location}",
                "Download a file through a signed link",
                "public",
            ),
            &["token"],
        ),
        op("get", "/api/v1/files", "Every file", "admin"),
        with(
            op(
                "post",
                "/api/v1/files",
                "Upload files (CTFd's multipart form, or base64 JSON)",
                "admin",
            ),
            object(
                &["name", "content"],
                json!({"challenge_id": int, "challenge": int, "name": text, "content": text,
                       "type": {"type": "string", "enum": ["challenge", "page"]}}),
            ),
        ),
        op("delete", "/api/v1/files/{id}", "Delete a file row", "admin"),
        query(
            op(
                "get",
                "/api/v1/scoreboard",
                "The scoreboard (frozen for players)",
                "public",
            ),
            &["bracket_id"],
        ),
        query(
            op(
                "get",
                "/api/v1/scoreboard/top/{count}",
                "The top N with their solves",
                "public",
            ),
            &["bracket_id"],
        ),
        op(
            "get",
            "/api/v1/ctftime",
            "The CTFtime scoreboard feed",
            "public",
        ),
        query(
            op("get", "/api/v1/submissions", "Submissions", "admin"),
            &["challenge_id", "team_id", "type", "page", "per_page"],
        ),
        query(
            op("get", "/api/v1/awards", "Awards", "player"),
            &["team_id"],
        ),
        with(
            op("post", "/api/v1/awards", "Give an award", "admin"),
            object(
                &["team_id", "name", "value"],
                json!({"team_id": int, "user_id": int, "name": text, "description": text, "value": int, "category": text, "icon": text}),
            ),
        ),
        op("delete", "/api/v1/awards/{id}", "Delete an award", "admin"),
        query(
            op("get", "/api/v1/notifications", "Notifications", "public"),
            &["since_id"],
        ),
        with(
            op(
                "post",
                "/api/v1/notifications",
                "Send a notification",
                "admin",
            ),
            object(
                &["title", "content"],
                json!({"title": text, "content": text}),
            ),
        ),
        op(
            "delete",
            "/api/v1/notifications/{id}",
            "Delete a notification",
            "admin",
        ),
        op(
            "get",
            "/api/v1/tickets",
            "Tickets (own; admins: all)",
            "player",
        ),
        with(
            op("post", "/api/v1/tickets", "Open a ticket", "player"),
            object(
                &["title", "content"],
                json!({"title": text, "content": text, "challenge_id": int}),
            ),
        ),
        op("get", "/api/v1/tickets/{id}", "A ticket", "player"),
        op(
            "post",
            "/api/v1/tickets/{id}/close",
            "Close a ticket",
            "player",
        ),
        op("get", "/api/v1/cheats", "Flag-sharing events", "admin"),
        query(
            op("get", "/api/v1/actions", "The team action log", "player"),
            &["team_id"],
        ),
    ]
}

/// The path items of the play routes.
pub fn paths() -> Value {
    let mut paths = render(ops());
    // CTFtime reads its own format, not CTFd's envelope.
    paths["/api/v1/ctftime"]["get"]["responses"]["200"] = json!({
        "description": "CTFtime's scoreboard feed format",
        "content": {"application/json": {"schema": {"type": "object", "required": ["standings"], "properties": {
            "standings": {"type": "array", "items": {"type": "object", "required": ["pos", "team", "score"], "properties": {
                "pos": {"type": "integer"}, "team": {"type": "string"}, "score": {"type": "integer"}}}}}}}},
    });
    // CTFd's (and ctfcli's) upload is a multipart form; the JSON form above is the other one.
    paths["/api/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"] = json!({
        "schema": {"type": "object", "required": ["file"], "additionalProperties": false, "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "challenge": {"type": "integer"}, "challenge_id": {"type": "integer"},
            "type": {"type": "string", "enum": ["challenge", "page"]},
            "nonce": {"type": "string"}}},
        "encoding": {"file": {"contentType": "application/octet-stream"}},
    });
    paths
}

/// Path items of `ops`: every answer is the envelope or the error shape; path parameters are
/// positive integers except the named strings.
pub(crate) fn render(ops: Vec<Op>) -> Value {
    let mut paths = Map::new();
    for o in ops {
        let mut parameters: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if matches!(name, "location" | "key" | "part") {
                    json!({"type": "string"})
                } else {
                    json!({"type": "integer", "minimum": 1})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        parameters.extend(o.query.iter().map(|name| {
            let schema = if matches!(*name, "type" | "token") {
                json!({"type": "string"})
            } else {
                json!({"type": "integer"})
            };
            json!({"name": name, "in": "query", "required": false, "schema": schema})
        }));
        let mut operation = json!({
            "summary": o.summary,
            "x-fctf-caller": o.who,
            "parameters": parameters,
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if o.who != "public" {
            operation["security"] = json!([{"token": []}, {"session": []}]);
        }
        if let Some(body) = o.body {
            let media = if o.path.ends_with("/import") {
                "application/yaml"
            } else {
                "application/json"
            };
            operation["requestBody"] =
                json!({"required": true, "content": {media: {"schema": body}}});
        }
        let item = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(o.method.to_owned(), operation);
        }
    }
    Value::Object(paths)
}

/// The shared schemas the play paths refer to.
pub fn components() -> Value {
    json!({"schemas": {
        "Envelope": {"type": "object", "required": ["success"], "properties": {
            "success": {"type": "boolean", "enum": [true]}, "data": {}, "meta": {"type": "object"}}},
        "Error": {"type": "object", "required": ["success", "error", "message"], "properties": {
            "success": {"type": "boolean", "enum": [false]}, "error": {"type": "string"},
            "message": {"type": "string"}, "retry_after": {"type": "integer"}}},
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_takes_ctfds_multipart_form_and_json() {
        let paths = paths();
        let content = &paths["/api/v1/files"]["post"]["requestBody"]["content"];
        assert!(content["application/json"]["schema"].is_object());
        let form = &content["multipart/form-data"]["schema"];
        assert_eq!(form["required"], json!(["file"]));
        assert_eq!(form["properties"]["file"]["items"]["format"], "binary");
    }

    #[test]
    fn every_operation_names_its_path_parameters() {
        let paths = paths();
        let map = paths.as_object().unwrap();
        assert!(map.len() >= 30);
        for (path, item) in map {
            for (_, operation) in item.as_object().unwrap() {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let in_path = path.matches('{').count();
                assert_eq!(declared.len(), in_path, "{path}");
            }
        }
    }
}
