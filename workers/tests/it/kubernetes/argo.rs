//! The `argo` runtime against the stand-in, and its Workflow against the WorkflowTemplate in
//! deploy/argo/: the parameters it submits are the ones the template declares, and the template
//! renders with them exactly what the `kubernetes` runtime applies.

use std::collections::BTreeSet;

use axum::http::Method;
use fctf_core::runtime::{InstanceRuntime, RuntimeError};
use fctf_workers::runtime::argo::ArgoRuntime;
use fctf_workers::runtime::argo::workflow::{self, TEMPLATE_PARAMETERS};
use fctf_workers::runtime::kubernetes::KubernetesRuntime;
use serde_json::{Value, json};

use super::fake_api::FakeApi;
use super::manifests::{deploy_dir, example_instance, objects_as_values, yaml_docs};
use super::{STARTED_AT_MS, instance, ns_of, put_platform_secret, settings, spec};
use fctf_workers::runtime::kubernetes::manifest;

const WORKFLOWS: &str = "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows";

fn argo(api: &FakeApi) -> ArgoRuntime {
    ArgoRuntime::new(KubernetesRuntime::new(api.client(), settings()), "argo")
}

fn start_template() -> Value {
    yaml_docs(&deploy_dir().join("argo/start-chal-v2-template.yaml"))
        .into_iter()
        .next()
        .unwrap()
}

#[tokio::test]
async fn deploy_submits_one_workflow_with_the_templates_parameters() {
    let api = FakeApi::start().await;
    let rt = argo(&api);
    let id = instance(-1, 7); // the shared team
    let placement = rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    assert_eq!(placement.route, ns_of(&id));

    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::POST);
    assert_eq!(writes[0].path, WORKFLOWS);
    let body = writes[0].body.clone().unwrap();
    assert_eq!(body["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(body["kind"], "Workflow");
    assert_eq!(body["metadata"]["name"], format!("start-{}", id.instance));
    assert_eq!(body["metadata"]["labels"]["ctf/workflow"], "start");
    assert_eq!(body["metadata"]["labels"]["ctf/team"], "shared");
    assert_eq!(
        body["spec"]["workflowTemplateRef"]["name"],
        "start-chal-v2-template"
    );
    let params = body["spec"]["arguments"]["parameters"].as_array().unwrap();
    let value = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(value("NAMESPACE"), json!(ns_of(&id)));
    assert_eq!(value("SERVICE_NAME"), json!(format!("{}-svc", ns_of(&id))));
    assert_eq!(value("TEAM_ID"), json!("-1"));
    assert_eq!(value("TEAM_LABEL"), json!("shared"));
    assert_eq!(value("CPU_LIMIT"), json!("500m"));
    assert_eq!(value("MEMORY_LIMIT"), json!("256Mi"));
    assert_eq!(value("USE_GVISOR"), json!("false"));
    assert_eq!(
        value("ENV_JSON"),
        json!(r#"[{"name":"FLAG","value":"fctf{test}"}]"#)
    );

    // Every submitted parameter is declared; every declared one without a default is submitted.
    let template = start_template();
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
    let submitted: BTreeSet<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(submitted, TEMPLATE_PARAMETERS.into_iter().collect());
    assert!(
        submitted.is_subset(&declared_names),
        "{submitted:?} vs {declared_names:?}"
    );
    assert_eq!(required, submitted);
    assert!(params.iter().all(|p| p["value"].is_string()));

    // A redelivered job finds the workflow (409) and is fine with it.
    let again = rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    assert_eq!(again, placement);
    assert_eq!(api.count("workflows"), 1);
}

#[tokio::test]
async fn deploy_refuses_without_a_pull_secret_and_maps_errors() {
    let api = FakeApi::start().await;
    let mut s = settings();
    s.image_pull_secret = None;
    let rt = ArgoRuntime::new(KubernetesRuntime::new(api.client(), s), "argo");
    let err = rt
        .deploy(&instance(1, 1), &spec(), STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Rejected(_)), "{err:?}");

    let rt = argo(&api);
    api.fail_when(503, 1, |r| r.method == Method::POST);
    let err = rt
        .deploy(&instance(1, 1), &spec(), STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn in_progress_counts_running_workflows_only() {
    let api = FakeApi::start().await;
    let rt = argo(&api);
    for (i, completed) in [None, Some("false"), Some("true"), Some("true")]
        .into_iter()
        .enumerate()
    {
        let mut labels = json!({"ctf/workflow": "start"});
        if let Some(c) = completed {
            labels["workflows.argoproj.io/completed"] = json!(c);
        }
        api.put(
            "workflows",
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": format!("start-{i}"), "namespace": "argo", "labels": labels}}),
        );
    }
    // A workflow of something else is not counted.
    api.put(
        "workflows",
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "build-1", "namespace": "argo", "labels": {}}}),
    );
    assert_eq!(rt.in_progress().await.unwrap(), 2);
    let list = api
        .requests()
        .into_iter()
        .find(|r| r.path == WORKFLOWS && r.method == Method::GET)
        .unwrap();
    assert_eq!(
        list.query["labelSelector"],
        "ctf/workflow=start,workflows.argoproj.io/completed!=true"
    );
}

#[tokio::test]
async fn remove_deletes_the_workflow_then_the_namespace() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = argo(&api);
    let id = instance(3, 3);
    rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    // What the workflow would apply.
    KubernetesRuntime::new(api.client(), settings())
        .deploy(&id, &spec(), STARTED_AT_MS)
        .await
        .unwrap();
    api.clear_requests();
    rt.remove(&id).await.unwrap();
    let deletes: Vec<String> = api.writes().into_iter().map(|r| r.path).collect();
    assert_eq!(
        deletes,
        [
            format!("{WORKFLOWS}/start-{}", id.instance),
            format!("/api/v1/namespaces/{}", ns_of(&id)),
        ]
    );
    assert_eq!(api.count("workflows"), 0);
    assert_eq!(api.count("jobs"), 0);
    // Gone already: Ok.
    rt.remove(&id).await.unwrap();
}

#[tokio::test]
async fn an_extension_moves_the_deadline_of_the_job_the_workflow_applied() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = argo(&api);
    let id = instance(3, 4);
    rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    // No namespace yet (the workflow has not applied it): nothing to move.
    assert!(matches!(
        rt.set_deadline(&id, STARTED_AT_MS + 7_200_000).await,
        Err(RuntimeError::NotFound)
    ));
    // What the workflow would apply; the fake stamps creation at 2026-01-01T00:00:00Z.
    KubernetesRuntime::new(api.client(), settings())
        .deploy(&id, &spec(), STARTED_AT_MS)
        .await
        .unwrap();
    api.clear_requests();
    rt.set_deadline(&id, 1_767_225_600_000 + 7_200_000)
        .await
        .unwrap();
    let job = api.object("jobs", &ns_of(&id), "challenge").unwrap();
    assert_eq!(
        job["spec"]["activeDeadlineSeconds"],
        7200 + fctf_core::runtime::DEADLINE_MARGIN.as_secs()
    );
    // The workflow itself is left alone.
    assert!(api.writes().iter().all(|w| !w.path.contains("workflows")));
}

/// Substitutes `{{workflow.parameters.X}}` as Argo does.
fn substitute(text: &str, params: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in params {
        out = out.replace(&format!("{{{{workflow.parameters.{name}}}}}"), value);
    }
    assert!(
        !out.contains("{{workflow.parameters."),
        "unsubstituted: {out}"
    );
    out
}

/// Evaluates a `when` of the form `'a' == 'b' && 'c' != 'd'`.
fn when_holds(expr: &str) -> bool {
    expr.split("&&").all(|term| {
        let term = term.trim();
        let (a, b, equal) = match term.split_once("==") {
            Some((a, b)) => (a, b, true),
            None => {
                let (a, b) = term.split_once("!=").unwrap();
                (a, b, false)
            }
        };
        (a.trim() == b.trim()) == equal
    })
}

#[test]
fn the_template_renders_what_the_kubernetes_runtime_applies() {
    let template = start_template();
    let templates = template["spec"]["templates"].as_array().unwrap();
    let by_name = |name: &str| {
        templates
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no template {name}"))
    };
    let steps = by_name("start")["steps"].as_array().unwrap();
    // Namespace first, then the secret, then the namespaced objects, the Job last.
    let step_names: Vec<Vec<&str>> = steps
        .iter()
        .map(|group| {
            group
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(step_names[0], ["namespace"]);
    assert_eq!(step_names[1], ["pull-secret"]);
    assert_eq!(step_names.len(), 4);

    for (harden, gvisor) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut s = spec();
        s.harden = harden;
        s.use_gvisor = gvisor;
        let id = example_instance();
        let params = workflow::parameters(&id, &s, STARTED_AT_MS, &settings());
        let expected = objects_as_values(&manifest::instance_objects(
            &id,
            &s,
            STARTED_AT_MS,
            &settings(),
        ));
        // The steps that run for these parameters, in order.
        let mut rendered = Vec::new();
        for group in steps {
            for step in group.as_array().unwrap() {
                if let Some(when) = step["when"].as_str()
                    && !when_holds(&substitute(when, &params))
                {
                    continue;
                }
                let t = by_name(step["template"].as_str().unwrap());
                if let Some(manifest) = t["resource"]["manifest"].as_str() {
                    assert_eq!(t["resource"]["action"], "apply");
                    let text = substitute(manifest, &params);
                    let value: Value = serde_norway::from_str(&text).unwrap();
                    rendered.push(value);
                }
            }
        }
        assert_eq!(rendered, expected, "harden={harden} gvisor={gvisor}");
    }
}
