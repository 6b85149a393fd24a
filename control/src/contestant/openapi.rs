//! The OpenAPI 3.0 document of the whole Contestant Service API, served at [`PATH`]: the
//! accounts and play path items ([`accounts::openapi::paths`], [`play::openapi::paths`]), this
//! route, the shared schemas and the two credentials. Hand-written JSON: the routes are few and
//! stable, and a test checks the document against the router both ways.
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
