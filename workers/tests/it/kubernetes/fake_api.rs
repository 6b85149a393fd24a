//! H3: a Kubernetes API server stand-in on 127.0.0.1:0 that speaks the real HTTP API for what the
//! runtimes use. Objects are kept as JSON, keyed by (resource, namespace, name):
//!
//! - get, create (409 AlreadyExists), delete (404; a namespace takes its objects with it),
//!   server-side apply (`PATCH application/apply-patch+yaml`, creates or merges);
//! - list with label selectors, `limit` and `continue`;
//! - watch from a `resourceVersion`, with bookmarks; a version older than the last
//!   [`FakeApi::compact`] gets the in-stream `410 Gone` a real server sends;
//! - pod logs (`/log?tailLines=`);
//! - scripted faults ([`FakeApi::fail_next`]: a status code for the next matching requests;
//!   [`FakeApi::drop_watches`]: every open watch stream ends; [`FakeApi::stall_watches`]: open
//!   watches go silent without closing);
//! - a log of every request, so tests assert exactly what was sent.
//!
//! Custom resources (Argo `workflows`) are served like any other resource under `/apis/`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
}

/// A scripted failure: the next `times` requests `when` accepts get `code`.
struct Fault {
    when: Box<dyn Fn(&Recorded) -> bool + Send>,
    code: u16,
    times: u32,
}

type Key = (String, String, String); // (resource, namespace or "", name)

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: &'static str,
    resource: String,
    object: Value,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    compacted: u64,
    history: Vec<Change>,
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    logs: BTreeMap<(String, String), String>,
}

/// The stand-in server; dropped with the test's runtime.
pub struct FakeApi {
    pub addr: SocketAddr,
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch stream.
    cut: watch::Sender<u64>,
    /// Bumped to make every open watch stream go silent for good (a stalled connection).
    stall: watch::Sender<u64>,
    /// Watch streams that went silent.
    stalled_streams: std::sync::atomic::AtomicUsize,
}

impl FakeApi {
    pub async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changes, _) = broadcast::channel(4096);
        let api = Arc::new(Self {
            addr,
            store: Mutex::new(Store::default()),
            changes,
            cut: watch::channel(0).0,
            stall: watch::channel(0).0,
            stalled_streams: std::sync::atomic::AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    /// A kube client pointed at this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        let mut config = kube::Config::new(url);
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(30));
        fctf_workers::runtime::kubernetes::client(config).unwrap()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.store.lock().requests.clone()
    }

    /// Requests other than reads (what changed the cluster).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != Method::GET)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.store.lock().requests.clear();
    }

    /// The next `times` requests `when` accepts answer `code` (with a Status body).
    pub fn fail_when(
        &self,
        code: u16,
        times: u32,
        when: impl Fn(&Recorded) -> bool + Send + 'static,
    ) {
        self.store.lock().faults.push(Fault {
            when: Box::new(when),
            code,
            times,
        });
    }

    pub fn object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        self.store.lock().objects.get(&key).cloned()
    }

    pub fn count(&self, resource: &str) -> usize {
        let store = self.store.lock();
        store.objects.keys().filter(|k| k.0 == resource).count()
    }

    /// Puts (creates or replaces) an object as a controller would, with a watch event.
    pub fn put(&self, resource: &str, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let mut store = self.store.lock();
        let key = (resource.to_owned(), ns, name);
        let kind = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        stamp(&mut store, &mut object);
        self.commit(&mut store, key, kind, Some(object));
    }

    /// Removes an object as a controller would, with a watch event.
    pub fn remove(&self, resource: &str, ns: &str, name: &str) {
        let mut store = self.store.lock();
        let key = (resource.to_owned(), ns.to_owned(), name.to_owned());
        self.commit(&mut store, key, "DELETED", None);
    }

    pub fn set_logs(&self, ns: &str, pod: &str, text: &str) {
        let mut store = self.store.lock();
        store
            .logs
            .insert((ns.to_owned(), pod.to_owned()), text.to_owned());
    }

    /// Forgets history: a watch resuming from any version before now gets 410 Gone.
    pub fn compact(&self) {
        let mut store = self.store.lock();
        store.compacted = store.rv;
        store.history.clear();
    }

    /// Ends every open watch stream (as an API server restart or a load balancer would).
    pub fn drop_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Every open watch stream goes silent: no event, no close, not even at its timeout.
    /// Streams opened later work. Returns how many streams have stalled so far.
    pub fn stall_watches(&self) -> usize {
        self.stall.send_modify(|n| *n += 1);
        self.stalled_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many watch streams have stalled so far.
    pub fn stalled_streams(&self) -> usize {
        self.stalled_streams
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn commit(&self, store: &mut Store, key: Key, kind: &'static str, object: Option<Value>) {
        let object = match object {
            Some(object) => {
                store.objects.insert(key.clone(), object.clone());
                object
            }
            None => {
                let Some(mut old) = store.objects.remove(&key) else {
                    return;
                };
                store.rv += 1;
                old["metadata"]["resourceVersion"] = json!(store.rv.to_string());
                old
            }
        };
        let change = Change {
            rv: store.rv,
            kind,
            resource: key.0,
            object,
        };
        store.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

/// Gives an object its server-set metadata and the next resource version.
fn stamp(store: &mut Store, object: &mut Value) {
    store.rv += 1;
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(store.rv.to_string());
    if meta["uid"].is_null() {
        meta["uid"] = json!(format!("uid-{}", store.rv));
    }
    if meta["creationTimestamp"].is_null() {
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap();
    (code, axum::Json(body)).into_response()
}

/// The parts of an API path: resource, namespace ("" for all / cluster-scoped), name,
/// subresource.
fn route(path: &str) -> Option<(String, String, Option<String>, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    match rest {
        [res] => Some((owned(res), String::new(), None, None)),
        ["namespaces", name] => Some(("namespaces".into(), String::new(), Some(owned(name)), None)),
        ["namespaces", ns, res] => Some((owned(res), owned(ns), None, None)),
        ["namespaces", ns, res, name] => Some((owned(res), owned(ns), Some(owned(name)), None)),
        ["namespaces", ns, res, name, sub] => {
            Some((owned(res), owned(ns), Some(owned(name)), Some(owned(sub))))
        }
        _ => None,
    }
}

/// Label selector terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`, joined by commas.
fn matches_selector(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k].as_str() != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k].as_str() == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            labels[k].is_null()
        } else {
            !labels[term].is_null()
        }
    })
}

fn in_scope(key: &Key, resource: &str, ns: &str) -> bool {
    key.0 == resource && (ns.is_empty() || key.1 == ns)
}

fn list_kind(resource: &str) -> &'static str {
    match resource {
        "pods" => "PodList",
        "namespaces" => "NamespaceList",
        "workflows" => "WorkflowList",
        _ => "List",
    }
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

async fn handle(
    State(api): State<Arc<FakeApi>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let path = uri.path().to_owned();
    let recorded = Recorded {
        method: method.clone(),
        path: path.clone(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).ok(),
        query: query.clone(),
    };
    let is_watch = recorded.is_watch();
    {
        let mut store = api.store.lock();
        let fault = store
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && (f.when)(&recorded));
        if let Some(fault) = fault {
            fault.times -= 1;
            let code = fault.code;
            store.requests.push(recorded);
            return status(code, "Scripted", "scripted fault");
        }
        store.requests.push(recorded);
    }
    let Some((resource, ns, name, sub)) = route(&path) else {
        return status(404, "NotFound", "no such path");
    };
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    match (method, name, sub) {
        (Method::GET, None, None) if is_watch => watch_stream(api, resource, ns, selector, &query),
        (Method::GET, None, None) => list(&api, &resource, &ns, &selector, &query),
        (Method::GET, Some(name), None) => match api.object(&resource, &ns, &name) {
            Some(obj) => axum::Json(obj).into_response(),
            None => status(404, "NotFound", &format!("{resource} {name} not found")),
        },
        (Method::GET, Some(name), Some(sub)) if sub == "log" => {
            let store = api.store.lock();
            match store.logs.get(&(ns, name)) {
                Some(text) => {
                    let tail: usize = query
                        .get("tailLines")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(usize::MAX);
                    let lines: Vec<&str> = text.lines().collect();
                    let start = lines.len().saturating_sub(tail);
                    let mut out = lines[start..].join("\n");
                    out.push('\n');
                    out.into_response()
                }
                None => status(404, "NotFound", "pod not found"),
            }
        }
        (Method::POST, None, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
                return status(422, "Invalid", "metadata.name is required");
            };
            if !ns.is_empty() {
                object["metadata"]["namespace"] = json!(ns);
            }
            let mut store = api.store.lock();
            let key = (resource, ns, name.clone());
            if store.objects.contains_key(&key) {
                return status(409, "AlreadyExists", &format!("{name} already exists"));
            }
            stamp(&mut store, &mut object);
            api.commit(&mut store, key, "ADDED", Some(object.clone()));
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        (Method::PATCH, Some(name), None) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if content_type == "application/merge-patch+json" {
                return merge_patch(&api, resource, ns, name, &body);
            }
            if content_type != "application/apply-patch+yaml" {
                return status(415, "UnsupportedMediaType", "apply or merge patches only");
            }
            if query.get("fieldManager").is_none_or(String::is_empty) {
                return status(422, "Invalid", "fieldManager is required for apply");
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            if patch["metadata"]["name"].as_str() != Some(name.as_str()) {
                return status(400, "BadRequest", "name in body differs from the path");
            }
            let mut store = api.store.lock();
            let key = (resource, ns.clone(), name);
            let existing = store.objects.get(&key).cloned();
            let (kind, mut object) = match existing {
                Some(existing) => {
                    let mut merged = existing.clone();
                    merge(&mut merged, &patch);
                    if merged == existing {
                        // Nothing changed: no new version, no event (as a real server).
                        return axum::Json(existing).into_response();
                    }
                    ("MODIFIED", merged)
                }
                None => ("ADDED", patch),
            };
            if !ns.is_empty() {
                object["metadata"]["namespace"] = json!(ns);
            }
            stamp(&mut store, &mut object);
            api.commit(&mut store, key, kind, Some(object.clone()));
            axum::Json(object).into_response()
        }
        (Method::DELETE, Some(name), None) => {
            let mut store = api.store.lock();
            let key = (resource.clone(), ns, name.clone());
            if !store.objects.contains_key(&key) {
                return status(404, "NotFound", &format!("{resource} {name} not found"));
            }
            if resource == "namespaces" {
                let inside: Vec<Key> = store
                    .objects
                    .keys()
                    .filter(|k| k.1 == name)
                    .cloned()
                    .collect();
                for k in inside {
                    api.commit(&mut store, k, "DELETED", None);
                }
            }
            api.commit(&mut store, key, "DELETED", None);
            status_ok()
        }
        _ => status(405, "MethodNotAllowed", "not served by the stand-in"),
    }
}

/// A JSON merge patch (RFC 7386) of an existing object.
fn merge_patch(api: &FakeApi, resource: String, ns: String, name: String, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    let mut store = api.store.lock();
    let key = (resource, ns, name);
    let Some(mut object) = store.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("{} {} not found", key.0, key.2));
    };
    merge(&mut object, &patch);
    stamp(&mut store, &mut object);
    api.commit(&mut store, key, "MODIFIED", Some(object.clone()));
    axum::Json(object).into_response()
}

fn status_ok() -> Response {
    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A page of a list: objects in key order after the `continue` token (the last key sent).
fn list(
    api: &FakeApi,
    resource: &str,
    ns: &str,
    selector: &str,
    query: &BTreeMap<String, String>,
) -> Response {
    let store = api.store.lock();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = query.get("continue").filter(|c| !c.is_empty());
    let mut items: Vec<Value> = Vec::new();
    let mut next = None;
    for (key, object) in &store.objects {
        if !in_scope(key, resource, ns) || !matches_selector(object, selector) {
            continue;
        }
        let token = format!("{}/{}", key.1, key.2);
        if after.is_some_and(|a| token.as_str() <= a.as_str()) {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|o: &Value| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            });
            break;
        }
        items.push(object.clone());
    }
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    axum::Json(json!({
        "kind": list_kind(resource), "apiVersion": "v1", "metadata": metadata, "items": items,
    }))
    .into_response()
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch stream: the history after `resourceVersion`, then live changes, a bookmark after
/// the history when asked for, until `timeoutSeconds`, [`FakeApi::drop_watches`] or a 410.
fn watch_stream(
    api: Arc<FakeApi>,
    resource: String,
    ns: String,
    selector: String,
    query: &BTreeMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let mut live = api.changes.subscribe();
    let mut cut = api.cut.subscribe();
    let mut stall = api.stall.subscribe();
    stall.borrow_and_update();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (backlog, gone, rv_now) = {
        let store = api.store.lock();
        let gone = from != 0 && from < store.compacted;
        let backlog: Vec<Change> = store
            .history
            .iter()
            .filter(|c| c.rv > from)
            .cloned()
            .collect();
        (backlog, gone, store.rv)
    };
    let keep = move |c: &Change| {
        c.resource == resource
            && (ns.is_empty() || c.object["metadata"]["namespace"].as_str() == Some(&ns))
            && matches_selector(&c.object, &selector)
    };
    tokio::spawn(async move {
        if gone {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": "too old resource version"});
            let _ = tx.send(watch_line("ERROR", &status)).await;
            return;
        }
        for change in backlog.iter().filter(|c| keep(c)) {
            if tx
                .send(watch_line(change.kind, &change.object))
                .await
                .is_err()
            {
                return;
            }
        }
        if bookmarks {
            let bookmark = json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"resourceVersion": rv_now.to_string()}});
            let _ = tx.send(watch_line("BOOKMARK", &bookmark)).await;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = cut.changed() => return,
                _ = stall.changed() => {
                    // A stalled connection never recovers: silent until cut.
                    api.stalled_streams.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = cut.changed().await;
                    return;
                }
                change = live.recv() => match change {
                    Ok(change) if change.rv > rv_now && keep(&change) => {
                        if tx.send(watch_line(change.kind, &change.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    });
    let stream = tokio_stream_from(rx).map(Ok::<_, Infallible>);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
