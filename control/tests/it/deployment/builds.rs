//! The image-build routes (`/v1/builds`, `/v1/workflows/status`, `/v1/builds/logs`) with a
//! recording fake builder: signed like every route, 503 without a builder, the builder's
//! answers and errors in the one error shape.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use fctf_control::deployment::contract::{
    BuildLogsRequest, BuildRef, BuildRequest, WorkflowRequest, WorkflowStatus, paths,
};
use fctf_control::deployment::{MAX_LOG_TAIL, router_with_builder};
use fctf_core::builds::{BuildError, ImageBuilder, WorkflowNode, WorkflowPhase};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::signing::{self, SigningKey};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt as _;

use super::fixture::{Answer, Backend, Harness, now_secs, signed_request, signed_with};

/// What the fake builder was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Submit(BuildRequest),
    Status(String),
    Logs(String, u32),
}

/// A builder that records its calls and answers from what the test put in it: workflows by
/// name with their status and logs; the workflow named `down` is unreachable.
#[derive(Debug, Default)]
struct FakeBuilder {
    calls: Mutex<Vec<Call>>,
    workflows: Mutex<BTreeMap<String, (WorkflowStatus, String)>>,
}

impl FakeBuilder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn add(&self, status: WorkflowStatus, logs: &str) {
        self.workflows
            .lock()
            .unwrap()
            .insert(status.workflow.clone(), (status, logs.to_owned()));
    }

    fn lookup(&self, name: &str) -> Result<(WorkflowStatus, String), BuildError> {
        if name == "down" {
            return Err(BuildError::Unavailable("connection refused".to_owned()));
        }
        self.workflows
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| BuildError::NotFound(format!("workflow {name} does not exist")))
    }
}

#[async_trait]
impl ImageBuilder for FakeBuilder {
    async fn submit_build(&self, request: &BuildRequest) -> Result<BuildRef, BuildError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Submit(request.clone()));
        let workflow = format!("build-{}", request.preview);
        let created = self.lookup(&workflow).is_err();
        self.add(status(&workflow, WorkflowPhase::Pending), "");
        Ok(BuildRef { workflow, created })
    }

    async fn workflow_status(&self, name: &str) -> Result<WorkflowStatus, BuildError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Status(name.to_owned()));
        Ok(self.lookup(name)?.0)
    }

    async fn build_logs(&self, name: &str, tail: u32) -> Result<String, BuildError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Logs(name.to_owned(), tail));
        let logs = self.lookup(name)?.1;
        let lines: Vec<&str> = logs.lines().collect();
        let start = lines.len().saturating_sub(tail as usize);
        Ok(lines[start..].iter().map(|l| format!("{l}\n")).collect())
    }
}

fn status(name: &str, phase: WorkflowPhase) -> WorkflowStatus {
    WorkflowStatus {
        workflow: name.to_owned(),
        phase,
        message: None,
        started_at_ms: None,
        finished_at_ms: None,
        nodes: Vec::new(),
    }
}

fn build_request() -> BuildRequest {
    BuildRequest {
        challenge: ChallengeId(42),
        challenge_name: "Web Login".to_owned(),
        context: "web/web-login".to_owned(),
        dockerfile: None,
        image: "registry.example/challenges/web-login:3".to_owned(),
        preview: InstanceId::new(),
        team: TeamId::PREVIEW,
    }
}

/// Sends `request` through the router with `builder`.
async fn send(h: &Harness, builder: Option<Arc<FakeBuilder>>, request: Request<Body>) -> Answer {
    let builder = builder.map(|b| b as Arc<dyn ImageBuilder>);
    let response = router_with_builder(Arc::clone(&h.center), builder)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

async fn post(
    h: &Harness,
    builder: &Arc<FakeBuilder>,
    path: &str,
    body: &impl Serialize,
) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    send(
        h,
        Some(Arc::clone(builder)),
        signed_request(path, &bytes, now_secs()),
    )
    .await
}

const BUILD_ROUTES: [&str; 3] = [paths::BUILD, paths::WORKFLOW_STATUS, paths::BUILD_LOGS];

fn any_body(path: &str) -> Vec<u8> {
    match path {
        paths::BUILD => serde_json::to_vec(&build_request()).unwrap(),
        paths::WORKFLOW_STATUS => serde_json::to_vec(&WorkflowRequest {
            workflow: "build-a".to_owned(),
        })
        .unwrap(),
        _ => serde_json::to_vec(&BuildLogsRequest {
            workflow: "build-a".to_owned(),
            tail: 10,
        })
        .unwrap(),
    }
}

#[tokio::test]
async fn build_routes_refuse_unsigned_and_forged_requests() {
    let h = Backend::Memory.harness("builds-unsigned", 300).await;
    let builder = Arc::new(FakeBuilder::default());
    builder.add(status("build-a", WorkflowPhase::Running), "x\n");
    let forger = SigningKey::new("s1", b"not-the-deployment-center-secret-at-all!").unwrap();
    for path in BUILD_ROUTES {
        let body = any_body(path);
        let unsigned = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        send(&h, Some(Arc::clone(&builder)), unsigned)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let forged = signed_with(&forger, path, &body, now_secs(), &signing::new_nonce());
        send(&h, Some(Arc::clone(&builder)), forged)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        // Signed for another route: refused too.
        let mut rerouted = signed_request(paths::STATUS, &body, now_secs());
        *rerouted.uri_mut() = path.parse().unwrap();
        send(&h, Some(Arc::clone(&builder)), rerouted)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(builder.calls(), []);

    // A replayed build submit is refused the second time.
    let body = any_body(paths::BUILD);
    let nonce = signing::new_nonce();
    let first = send(
        &h,
        Some(Arc::clone(&builder)),
        signed_with(
            &super::fixture::signing_key(),
            paths::BUILD,
            &body,
            now_secs(),
            &nonce,
        ),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    send(
        &h,
        Some(Arc::clone(&builder)),
        signed_with(
            &super::fixture::signing_key(),
            paths::BUILD,
            &body,
            now_secs(),
            &nonce,
        ),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(builder.calls().len(), 1);
}

#[tokio::test]
async fn without_a_builder_the_build_routes_answer_503() {
    let h = Backend::Memory.harness("builds-none", 300).await;
    for path in BUILD_ROUTES {
        // The plain router (what `fctf deployment-center` serves without Argo) and the router
        // given no builder answer alike.
        for answer in [
            h.send(signed_request(path, &any_body(path), now_secs()))
                .await,
            send(&h, None, signed_request(path, &any_body(path), now_secs())).await,
        ] {
            answer.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
            let message = answer.body["message"].as_str().unwrap();
            assert!(message.contains("image builder"), "{message}");
            assert!(message.contains("argo"), "{message}");
        }
    }
    // Unsigned is still 401 first.
    let unsigned = Request::post(paths::BUILD)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    h.send(unsigned)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_build_is_submitted_as_asked_and_invalid_ones_never_reach_the_builder() {
    let h = Backend::Memory.harness("builds-submit", 300).await;
    let builder = Arc::new(FakeBuilder::default());
    let request = build_request();
    let answer = post(&h, &builder, paths::BUILD, &request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let answered: BuildRef = serde_json::from_value(answer.body).unwrap();
    assert_eq!(
        answered,
        BuildRef {
            workflow: format!("build-{}", request.preview),
            created: true,
        }
    );
    assert_eq!(builder.calls(), [Call::Submit(request.clone())]);

    // The same again: the builder says it exists.
    let answer = post(&h, &builder, paths::BUILD, &request).await;
    assert_eq!(answer.body["created"], false);

    let calls_before = builder.calls().len();
    for bad in [
        BuildRequest {
            context: "../secrets".to_owned(),
            ..build_request()
        },
        BuildRequest {
            image: "registry.example/x:1 --insecure".to_owned(),
            ..build_request()
        },
        BuildRequest {
            dockerfile: Some("/etc/passwd".to_owned()),
            ..build_request()
        },
    ] {
        post(&h, &builder, paths::BUILD, &bad)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let mut missing = serde_json::to_value(build_request()).unwrap();
    missing.as_object_mut().unwrap().remove("image");
    post(&h, &builder, paths::BUILD, &missing)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(builder.calls().len(), calls_before);
}

#[tokio::test]
async fn workflow_status_answers_the_builders_status_or_404_or_503() {
    let h = Backend::Memory.harness("builds-status", 300).await;
    let builder = Arc::new(FakeBuilder::default());
    let failed = WorkflowStatus {
        message: Some("child failed".to_owned()),
        started_at_ms: Some(1_767_225_600_000),
        finished_at_ms: Some(1_767_225_750_000),
        nodes: vec![WorkflowNode {
            name: "build-a".to_owned(),
            display_name: "build-a".to_owned(),
            kind: "Pod".to_owned(),
            template: Some("build".to_owned()),
            phase: "Failed".to_owned(),
            message: Some("Error (exit code 1)".to_owned()),
            started_at_ms: Some(1_767_225_601_000),
            finished_at_ms: Some(1_767_225_749_000),
        }],
        ..status("build-a", WorkflowPhase::Failed)
    };
    builder.add(failed.clone(), "");
    let ask = |name: &str| WorkflowRequest {
        workflow: name.to_owned(),
    };

    let answer = post(&h, &builder, paths::WORKFLOW_STATUS, &ask("build-a")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["phase"], "Failed");
    let answered: WorkflowStatus = serde_json::from_value(answer.body).unwrap();
    assert_eq!(answered, failed);

    let missing = post(&h, &builder, paths::WORKFLOW_STATUS, &ask("build-zz")).await;
    missing.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap()
            .contains("build-zz"),
        "{:?}",
        missing.body
    );

    let down = post(&h, &builder, paths::WORKFLOW_STATUS, &ask("down")).await;
    down.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    // The cause is logged, never sent.
    assert!(
        !down.body["message"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );

    // A name that is not a Kubernetes object name never reaches the builder.
    post(&h, &builder, paths::WORKFLOW_STATUS, &ask("../../pods"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        builder.calls(),
        [
            Call::Status("build-a".to_owned()),
            Call::Status("build-zz".to_owned()),
            Call::Status("down".to_owned()),
        ]
    );
}

#[tokio::test]
async fn build_logs_are_the_builders_tail_capped() {
    let h = Backend::Memory.harness("builds-logs", 300).await;
    let builder = Arc::new(FakeBuilder::default());
    builder.add(
        status("build-a", WorkflowPhase::Running),
        "step 1\nstep 2\nstep 3\n",
    );
    let ask = |name: &str, tail| BuildLogsRequest {
        workflow: name.to_owned(),
        tail,
    };
    let answer = post(&h, &builder, paths::BUILD_LOGS, &ask("build-a", 2)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["logs"], "step 2\nstep 3\n");

    let answer = post(&h, &builder, paths::BUILD_LOGS, &ask("build-a", 1_000_000)).await;
    assert_eq!(answer.body["logs"], "step 1\nstep 2\nstep 3\n");

    post(&h, &builder, paths::BUILD_LOGS, &ask("build-zz", 5))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    post(&h, &builder, paths::BUILD_LOGS, &ask("down", 5))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(
        builder.calls(),
        [
            Call::Logs("build-a".to_owned(), 2),
            Call::Logs("build-a".to_owned(), MAX_LOG_TAIL),
            Call::Logs("build-zz".to_owned(), 5),
            Call::Logs("down".to_owned(), 5),
        ]
    );

    // The build routes are counted like every other route.
    let metrics = send(
        &h,
        Some(Arc::clone(&builder)),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(
            "fctf_deployment_requests_total{route=\"/v1/builds/logs\",status=\"404\"} 1\n"
        ),
        "{text}"
    );
}
