//! The Argo image builder against the stand-in: the Workflow it submits (checked against
//! deploy/argo/up-challenge-template.yaml), how it reads a workflow's status and the build
//! step's logs, and how API failures read.

use std::collections::BTreeSet;

use axum::http::Method;
use fctf_core::builds::{BuildError, BuildRequest, ImageBuilder, WorkflowPhase};
use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_workers::runtime::argo_builds::{ArgoBuilder, BUILD_PARAMETERS};
use serde_json::{Value, json};

use super::fake_api::FakeApi;
use super::manifests::{deploy_dir, yaml_docs};

const WORKFLOWS: &str = "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows";

fn builder(api: &FakeApi) -> ArgoBuilder {
    ArgoBuilder::new(api.client(), "argo")
}

fn request() -> BuildRequest {
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

fn build_template() -> Value {
    yaml_docs(&deploy_dir().join("argo/up-challenge-template.yaml"))
        .into_iter()
        .next()
        .unwrap()
}

#[tokio::test]
async fn submit_posts_one_workflow_with_exactly_the_templates_parameters() {
    let api = FakeApi::start().await;
    let b = builder(&api);
    let r = request();
    let submitted = b.submit_build(&r).await.unwrap();
    assert_eq!(submitted.workflow, format!("build-{}", r.preview));
    assert!(submitted.created);

    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::POST);
    assert_eq!(writes[0].path, WORKFLOWS);
    let body = writes[0].body.clone().unwrap();
    assert_eq!(body["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(body["kind"], "Workflow");
    assert_eq!(body["metadata"]["name"], submitted.workflow);
    assert_eq!(body["metadata"]["labels"]["ctf/workflow"], "build");
    assert_eq!(body["metadata"]["labels"]["ctf/challenge"], "42");
    assert_eq!(
        body["metadata"]["labels"]["ctf/instance"],
        r.preview.to_string()
    );
    assert_eq!(
        body["metadata"]["annotations"]["ctf/challenge-name"],
        "Web Login"
    );
    assert_eq!(
        body["spec"]["workflowTemplateRef"]["name"],
        "up-challenge-template"
    );
    let params = body["spec"]["arguments"]["parameters"].as_array().unwrap();
    let value = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(value("TEAM_ID"), json!("0"));
    assert_eq!(value("CHALLENGE_ID"), json!("42"));
    assert_eq!(value("INSTANCE_ID"), json!(r.preview.to_string()));
    assert_eq!(value("CONTEXT_SUBPATH"), json!("web/web-login"));
    assert_eq!(
        value("IMAGE"),
        json!("registry.example/challenges/web-login:3")
    );
    assert_eq!(value("DOCKERFILE"), json!("Dockerfile"));
    assert!(params.iter().all(|p| p["value"].is_string()));

    // Against the template: every submitted parameter is declared, every declared one without a
    // default is submitted, and only CALLBACK_URL keeps its cluster-wide default.
    let template = build_template();
    assert_eq!(template["metadata"]["name"], "up-challenge-template");
    let declared = template["spec"]["arguments"]["parameters"]
        .as_array()
        .unwrap();
    let declared_names: BTreeSet<&str> = declared
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let required: BTreeSet<&str> = declared
        .iter()
        .filter(|p| p.get("value").is_none())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let submitted_names: BTreeSet<&str> =
        params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(submitted_names, BUILD_PARAMETERS.into_iter().collect());
    assert_eq!(submitted_names.len(), params.len(), "no name twice");
    assert!(
        required.is_subset(&submitted_names),
        "{required:?} vs {submitted_names:?}"
    );
    assert_eq!(
        declared_names
            .difference(&submitted_names)
            .copied()
            .collect::<Vec<_>>(),
        ["CALLBACK_URL"]
    );
    // And the template reads each of them.
    let text =
        std::fs::read_to_string(deploy_dir().join("argo/up-challenge-template.yaml")).unwrap();
    for name in &submitted_names {
        assert!(
            text.contains(&format!("{{{{workflow.parameters.{name}}}}}")),
            "the template never uses {name}"
        );
    }

    // The same build again: the existing workflow, nothing new.
    let again = b.submit_build(&r).await.unwrap();
    assert_eq!(again.workflow, submitted.workflow);
    assert!(!again.created);
    assert_eq!(api.count("workflows"), 1);

    // A different build for the same preview instance: a conflict, nothing changed.
    let other = BuildRequest {
        image: "registry.example/challenges/web-login:4".to_owned(),
        ..r.clone()
    };
    let err = b.submit_build(&other).await.unwrap_err();
    assert!(matches!(err, BuildError::Conflict(_)), "{err:?}");
    let stored = api
        .object("workflows", "argo", &submitted.workflow)
        .unwrap();
    assert_eq!(stored["spec"], body["spec"]);
}

#[tokio::test]
async fn an_invalid_request_sends_nothing() {
    let api = FakeApi::start().await;
    let r = BuildRequest {
        context: "../../etc".to_owned(),
        ..request()
    };
    let err = builder(&api).submit_build(&r).await.unwrap_err();
    assert!(matches!(err, BuildError::Invalid(_)), "{err:?}");
    let err = builder(&api)
        .workflow_status("Not/A-Name")
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid(_)), "{err:?}");
    assert!(api.requests().is_empty());
}

fn workflow(name: &str, status: Option<Value>) -> Value {
    let mut wf = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": "argo", "labels": {"ctf/workflow": "build"}},
        "spec": {"workflowTemplateRef": {"name": "up-challenge-template"}},
    });
    if let Some(status) = status {
        wf["status"] = status;
    }
    wf
}

/// A failed build as Argo records it: the Kaniko pod node failed, the exit hook ran.
fn failed_status(name: &str) -> Value {
    json!({
        "phase": "Failed",
        "message": "child 'build-x' failed",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:02:30Z",
        "nodes": {
            format!("{name}-exit"): {
                "id": format!("{name}-exit"), "name": format!("{name}.onExit"),
                "displayName": format!("{name}.onExit"), "type": "Pod",
                "templateName": "callback", "phase": "Succeeded",
                "startedAt": "2026-01-01T00:02:20Z", "finishedAt": "2026-01-01T00:02:30Z",
            },
            name: {
                "id": name, "name": name, "displayName": name, "type": "Pod",
                "templateName": "build", "phase": "Failed",
                "message": "Error (exit code 1)",
                "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:02:19Z",
            },
        },
    })
}

#[tokio::test]
async fn status_maps_argos_phase_message_times_and_nodes() {
    let api = FakeApi::start().await;
    let b = builder(&api);
    api.put(
        "workflows",
        workflow("build-a", Some(failed_status("build-a"))),
    );
    let status = b.workflow_status("build-a").await.unwrap();
    assert_eq!(status.workflow, "build-a");
    assert_eq!(status.phase, WorkflowPhase::Failed);
    assert_eq!(status.message.as_deref(), Some("child 'build-x' failed"));
    assert_eq!(status.started_at_ms, Some(1_767_225_600_000));
    assert_eq!(status.finished_at_ms, Some(1_767_225_750_000));
    // By start time: the Kaniko step, then the exit hook.
    let nodes: Vec<(&str, Option<&str>, &str)> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.template.as_deref(), n.phase.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("build-a", Some("build"), "Failed"),
            ("build-a.onExit", Some("callback"), "Succeeded"),
        ]
    );
    assert_eq!(
        status.nodes[0].message.as_deref(),
        Some("Error (exit code 1)")
    );
    assert_eq!(status.nodes[0].kind, "Pod");
    assert_eq!(status.nodes[0].started_at_ms, Some(1_767_225_601_000));
    let get = api.requests().pop().unwrap();
    assert_eq!(get.method, Method::GET);
    assert_eq!(get.path, format!("{WORKFLOWS}/build-a"));

    // Not picked up by the controller yet: Pending, no nodes.
    api.put("workflows", workflow("build-b", None));
    let status = b.workflow_status("build-b").await.unwrap();
    assert_eq!(status.phase, WorkflowPhase::Pending);
    assert!(status.nodes.is_empty());
    assert_eq!(status.message, None);

    for (phase, expected) in [
        ("Running", WorkflowPhase::Running),
        ("Succeeded", WorkflowPhase::Succeeded),
        ("Error", WorkflowPhase::Error),
        ("Pending", WorkflowPhase::Pending),
    ] {
        api.put(
            "workflows",
            workflow("build-c", Some(json!({"phase": phase}))),
        );
        assert_eq!(b.workflow_status("build-c").await.unwrap().phase, expected);
    }
    // A phase this version does not know is not guessed at.
    api.put(
        "workflows",
        workflow("build-c", Some(json!({"phase": "Exploded"}))),
    );
    let err = b.workflow_status("build-c").await.unwrap_err();
    assert!(matches!(err, BuildError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_workflows_are_not_found_and_server_errors_unavailable() {
    let api = FakeApi::start().await;
    let b = builder(&api);
    let err = b.workflow_status("build-none").await.unwrap_err();
    assert!(matches!(err, BuildError::NotFound(_)), "{err:?}");
    let err = b.build_logs("build-none", 10).await.unwrap_err();
    assert!(matches!(err, BuildError::NotFound(_)), "{err:?}");

    api.put("workflows", workflow("build-a", None));
    api.fail_when(500, 1, |r| r.path.ends_with("/workflows/build-a"));
    let err = b.workflow_status("build-a").await.unwrap_err();
    assert!(matches!(err, BuildError::Unavailable(_)), "{err:?}");
    // The fault was for one request only.
    b.workflow_status("build-a").await.unwrap();

    api.fail_when(500, 1, |r| r.method == Method::POST);
    let err = b.submit_build(&request()).await.unwrap_err();
    assert!(matches!(err, BuildError::Unavailable(_)), "{err:?}");
    api.fail_when(422, 1, |r| r.method == Method::POST);
    let err = b.submit_build(&request()).await.unwrap_err();
    assert!(matches!(err, BuildError::Rejected(_)), "{err:?}");
}

fn argo_pod(name: &str, workflow: &str, node_id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "argo",
            "labels": {"workflows.argoproj.io/workflow": workflow},
            "annotations": {"workflows.argoproj.io/node-id": node_id},
        },
        "spec": {"containers": [{"name": "main", "image": "x"}, {"name": "wait", "image": "y"}]},
    })
}

#[tokio::test]
async fn logs_are_the_kaniko_pods_main_container() {
    let api = FakeApi::start().await;
    let b = builder(&api);
    api.put(
        "workflows",
        workflow("build-a", Some(failed_status("build-a"))),
    );
    // The exit hook's pod and the build pod of the workflow; a pod of another workflow with the
    // same node id.
    api.put(
        "pods",
        argo_pod("build-a-callback-1", "build-a", "build-a-exit"),
    );
    api.put("pods", argo_pod("build-a-build-2", "build-a", "build-a"));
    api.put("pods", argo_pod("build-b-build-3", "build-b", "build-a"));
    api.set_logs("argo", "build-a-callback-1", "posted\n");
    api.set_logs(
        "argo",
        "build-a-build-2",
        "INFO Retrieving image\nINFO Building\nerror building image: exit 1\n",
    );
    api.set_logs("argo", "build-b-build-3", "other\n");

    let logs = b.build_logs("build-a", 2).await.unwrap();
    assert_eq!(logs, "INFO Building\nerror building image: exit 1\n");
    let requests = api.requests();
    let list = requests
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/argo/pods")
        .unwrap();
    assert_eq!(
        list.query["labelSelector"],
        "workflows.argoproj.io/workflow=build-a"
    );
    let read = requests.last().unwrap();
    assert_eq!(
        read.path,
        "/api/v1/namespaces/argo/pods/build-a-build-2/log"
    );
    assert_eq!(read.query["container"], "main");
    assert_eq!(read.query["tailLines"], "2");

    // The pod is gone (removed after success): not found, with the reason.
    api.remove("pods", "argo", "build-a-build-2");
    let err = b.build_logs("build-a", 2).await.unwrap_err();
    match err {
        BuildError::NotFound(message) => assert!(message.contains("gone"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Not started: no build node yet.
    api.put(
        "workflows",
        workflow("build-c", Some(json!({"phase": "Pending"}))),
    );
    let err = b.build_logs("build-c", 2).await.unwrap_err();
    assert!(matches!(err, BuildError::NotFound(_)), "{err:?}");

    // The API server fails on the log read: unavailable.
    api.put("pods", argo_pod("build-a-build-2", "build-a", "build-a"));
    api.fail_when(500, 1, |r| r.path.ends_with("/log"));
    let err = b.build_logs("build-a", 2).await.unwrap_err();
    assert!(matches!(err, BuildError::Unavailable(_)), "{err:?}");
}
