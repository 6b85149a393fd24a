//! Image builds on Argo Workflows: [`ArgoBuilder`] submits a Workflow that runs the
//! `up-challenge-template` WorkflowTemplate (deploy/argo/up-challenge-template.yaml: Kaniko
//! builds the challenge package on the NFS share and pushes the image; its exit hook posts the
//! workflow's status to the Deployment Center's signed callback), reads any workflow's status,
//! and reads the build step's pod logs.
//!
//! The workflow and the status are pure functions of their inputs ([`build_workflow`],
//! [`workflow_status`], [`build_pod`]); the builder only moves them over the Kubernetes API.

use async_trait::async_trait;
use fctf_core::builds::{
    BuildError, BuildRef, BuildRequest, ImageBuilder, WorkflowNode, WorkflowPhase, WorkflowStatus,
    check_workflow_name,
};
use fctf_core::config::RuntimeConfig;
use fctf_core::runtime::RuntimeError;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, LogParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::argo::workflow::{LABEL_WORKFLOW, workflow_resource};
use super::kubernetes::manifest::{LABEL_CHALLENGE, LABEL_INSTANCE, LABEL_TEAM, team_label};
use super::kubernetes::{KubernetesRuntime, LIST_PAGE_SIZE};

/// Name of the WorkflowTemplate that builds an image.
pub const BUILD_TEMPLATE: &str = "up-challenge-template";
/// Value of [`LABEL_WORKFLOW`] on build workflows (start workflows have `start`, so the
/// consumer's budget never counts builds).
pub const WORKFLOW_BUILD: &str = "build";
/// The template (in [`BUILD_TEMPLATE`]) whose pod runs Kaniko: its logs are the build logs.
pub const BUILD_STEP_TEMPLATE: &str = "build";
/// The container of an Argo pod that runs the template's own container.
pub const MAIN_CONTAINER: &str = "main";
/// Annotation on a build workflow with the challenge's display name.
pub const ANNOTATION_CHALLENGE_NAME: &str = "ctf/challenge-name";
/// Label Argo puts on every pod of a workflow.
pub const LABEL_POD_WORKFLOW: &str = "workflows.argoproj.io/workflow";
/// Annotation Argo puts on a workflow pod: the id of the node it runs.
pub const ANNOTATION_NODE_ID: &str = "workflows.argoproj.io/node-id";
/// Annotation Argo puts on a workflow pod: the name of the node it runs.
pub const ANNOTATION_NODE_NAME: &str = "workflows.argoproj.io/node-name";
/// Most bytes of log one call reads (Kaniko is verbose).
pub const MAX_LOG_BYTES: i64 = 1024 * 1024;

/// Every parameter the build workflow passes, in order; the template declares these and
/// `CALLBACK_URL`, which keeps its cluster-wide default (as for the start workflow).
pub const BUILD_PARAMETERS: [&str; 6] = [
    "TEAM_ID",
    "CHALLENGE_ID",
    "INSTANCE_ID",
    "CONTEXT_SUBPATH",
    "IMAGE",
    "DOCKERFILE",
];

/// The build workflow's name: one per preview instance, so a repeated submit finds it (409)
/// instead of building twice.
pub fn build_workflow_name(request: &BuildRequest) -> String {
    format!("build-{}", request.preview)
}

/// The parameter values, in [`BUILD_PARAMETERS`] order.
pub fn build_parameters(request: &BuildRequest) -> Vec<(&'static str, String)> {
    let values = [
        request.team.0.to_string(),
        request.challenge.0.to_string(),
        request.preview.to_string(),
        request.context.clone(),
        request.image.clone(),
        request.dockerfile().to_owned(),
    ];
    BUILD_PARAMETERS.into_iter().zip(values).collect()
}

fn parameters_json(request: &BuildRequest) -> Value {
    Value::Array(
        build_parameters(request)
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The Workflow object submitted into `argo_namespace` (the request is assumed valid).
pub fn build_workflow(request: &BuildRequest, argo_namespace: &str) -> DynamicObject {
    let mut wf = DynamicObject::new(&build_workflow_name(request), &workflow_resource())
        .within(argo_namespace)
        .data(json!({
            "spec": {
                "workflowTemplateRef": {"name": BUILD_TEMPLATE},
                "arguments": {"parameters": parameters_json(request)},
            }
        }));
    wf.metadata.labels = Some(
        [
            (LABEL_WORKFLOW, WORKFLOW_BUILD.to_owned()),
            (LABEL_TEAM, team_label(request.team)),
            (LABEL_CHALLENGE, request.challenge.0.to_string()),
            (LABEL_INSTANCE, request.preview.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    wf.metadata.annotations = Some(
        [(
            ANNOTATION_CHALLENGE_NAME.to_owned(),
            request.challenge_name.clone(),
        )]
        .into_iter()
        .collect(),
    );
    wf
}

/// Whether `existing` (found under the build's name) is the build `request` asks for: the same
/// template and parameters. Then a second submit is the same build, not a conflict.
pub fn is_same_build(existing: &DynamicObject, request: &BuildRequest) -> bool {
    let spec = &existing.data["spec"];
    spec["workflowTemplateRef"]["name"] == BUILD_TEMPLATE
        && spec["arguments"]["parameters"] == parameters_json(request)
}

/// Argo's `status` of a Workflow, the fields read here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgoStatus {
    phase: Option<String>,
    message: Option<String>,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    #[serde(default)]
    nodes: std::collections::BTreeMap<String, ArgoNode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgoNode {
    id: Option<String>,
    name: Option<String>,
    display_name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    template_name: Option<String>,
    phase: Option<String>,
    message: Option<String>,
    started_at: Option<Time>,
    finished_at: Option<Time>,
}

fn millis(t: Option<&Time>) -> Option<u64> {
    t.and_then(|t| u64::try_from(t.0.as_millisecond()).ok())
}

fn argo_status(workflow: &DynamicObject) -> Result<ArgoStatus, BuildError> {
    match workflow.data.get("status") {
        None | Some(Value::Null) => Ok(ArgoStatus::default()),
        Some(status) => ArgoStatus::deserialize(status).map_err(|e| {
            BuildError::Unavailable(format!("unreadable workflow status from the cluster: {e}"))
        }),
    }
}

/// The status of `workflow` as Argo's controller wrote it (none yet: `Pending`, no nodes).
pub fn workflow_status(workflow: &DynamicObject) -> Result<WorkflowStatus, BuildError> {
    let name = workflow.metadata.name.clone().unwrap_or_default();
    let status = argo_status(workflow)?;
    let phase = WorkflowPhase::parse(status.phase.as_deref()).ok_or_else(|| {
        BuildError::Unavailable(format!(
            "workflow {name} has a phase this version does not know: {:?}",
            status.phase
        ))
    })?;
    let mut nodes: Vec<WorkflowNode> = status
        .nodes
        .into_iter()
        .map(|(key, node)| WorkflowNode {
            name: node.name.unwrap_or_else(|| key.clone()),
            display_name: node.display_name.unwrap_or_default(),
            kind: node.kind.unwrap_or_default(),
            template: node.template_name,
            phase: node.phase.unwrap_or_else(|| "Pending".to_owned()),
            message: node.message.filter(|m| !m.is_empty()),
            started_at_ms: millis(node.started_at.as_ref()),
            finished_at_ms: millis(node.finished_at.as_ref()),
        })
        .collect();
    // Not started yet last; ties by name, so the order is stable.
    nodes.sort_by(|a, b| {
        (a.started_at_ms.is_none(), a.started_at_ms, &a.name).cmp(&(
            b.started_at_ms.is_none(),
            b.started_at_ms,
            &b.name,
        ))
    });
    Ok(WorkflowStatus {
        workflow: name,
        phase,
        message: status.message.filter(|m| !m.is_empty()),
        started_at_ms: millis(status.started_at.as_ref()),
        finished_at_ms: millis(status.finished_at.as_ref()),
        nodes,
    })
}

/// The node that runs the Kaniko step of `workflow`: (node id, node name).
fn build_node(workflow: &DynamicObject) -> Result<Option<(String, String)>, BuildError> {
    let status = argo_status(workflow)?;
    Ok(status.nodes.into_iter().find_map(|(key, node)| {
        (node.template_name.as_deref() == Some(BUILD_STEP_TEMPLATE)
            && node.kind.as_deref() == Some("Pod"))
        .then(|| {
            let id = node.id.unwrap_or_else(|| key.clone());
            (id, node.name.unwrap_or(key))
        })
    }))
}

/// Among the pods of a workflow, the one that runs the build node (matched by Argo's node-id
/// annotation, or its node-name annotation).
pub fn build_pod<'a>(pods: &'a [Pod], node_id: &str, node_name: &str) -> Option<&'a Pod> {
    let annotation = |pod: &Pod, key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    pods.iter()
        .find(|p| annotation(p, ANNOTATION_NODE_ID).as_deref() == Some(node_id))
        .or_else(|| {
            pods.iter()
                .find(|p| annotation(p, ANNOTATION_NODE_NAME).as_deref() == Some(node_name))
        })
}

/// How a failed API call reads to the Deployment Center.
fn build_error(err: kube::Error, what: &str) -> BuildError {
    match super::kubernetes::runtime_error(err) {
        RuntimeError::NotFound => BuildError::NotFound(format!("{what} does not exist")),
        RuntimeError::Rejected(message) => BuildError::Rejected(message),
        RuntimeError::Unavailable(message) => BuildError::Unavailable(message),
    }
}

/// The Argo image builder.
#[derive(Clone)]
pub struct ArgoBuilder {
    client: Client,
    argo_namespace: String,
}

impl std::fmt::Debug for ArgoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoBuilder")
            .field("argo_namespace", &self.argo_namespace)
            .finish_non_exhaustive()
    }
}

impl ArgoBuilder {
    /// Submits and reads workflows in `argo_namespace` through `client`.
    pub fn new(client: Client, argo_namespace: impl Into<String>) -> Self {
        Self {
            client,
            argo_namespace: argo_namespace.into(),
        }
    }

    /// A builder for the cluster found the standard way, in `[runtime].argo_namespace`.
    pub async fn connect(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let cluster = KubernetesRuntime::connect(config).await?;
        Ok(Self::new(
            cluster.client().clone(),
            config.argo_namespace.clone(),
        ))
    }

    fn workflows(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.argo_namespace,
            &workflow_resource(),
        )
    }

    async fn get_workflow(&self, name: &str) -> Result<DynamicObject, BuildError> {
        self.workflows()
            .get(name)
            .await
            .map_err(|e| build_error(e, &format!("workflow {name}")))
    }

    /// Every pod of workflow `name`, all pages.
    async fn workflow_pods(&self, name: &str) -> Result<Vec<Pod>, BuildError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), &self.argo_namespace);
        let mut params = ListParams::default()
            .labels(&format!("{LABEL_POD_WORKFLOW}={name}"))
            .limit(LIST_PAGE_SIZE);
        let mut out = Vec::new();
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| build_error(e, "the pod list"))?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl ImageBuilder for ArgoBuilder {
    async fn submit_build(&self, request: &BuildRequest) -> Result<BuildRef, BuildError> {
        request.validate()?;
        let wf = build_workflow(request, &self.argo_namespace);
        let workflow = build_workflow_name(request);
        match self.workflows().create(&PostParams::default(), &wf).await {
            Ok(_) => Ok(BuildRef {
                workflow,
                created: true,
            }),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = self.get_workflow(&workflow).await?;
                if is_same_build(&existing, request) {
                    Ok(BuildRef {
                        workflow,
                        created: false,
                    })
                } else {
                    Err(BuildError::Conflict(format!(
                        "preview instance {} already has a different build ({workflow})",
                        request.preview
                    )))
                }
            }
            Err(e) => Err(build_error(e, &format!("workflow {workflow}"))),
        }
    }

    async fn workflow_status(&self, name: &str) -> Result<WorkflowStatus, BuildError> {
        check_workflow_name(name)?;
        workflow_status(&self.get_workflow(name).await?)
    }

    async fn build_logs(&self, name: &str, tail: u32) -> Result<String, BuildError> {
        check_workflow_name(name)?;
        let workflow = self.get_workflow(name).await?;
        let Some((node_id, node_name)) = build_node(&workflow)? else {
            return Err(BuildError::NotFound(format!(
                "workflow {name} has no build step yet"
            )));
        };
        let pods = self.workflow_pods(name).await?;
        let gone = || {
            BuildError::NotFound(format!(
                "the build pod of workflow {name} is gone (pods are removed after a successful build)"
            ))
        };
        let pod = build_pod(&pods, &node_id, &node_name).ok_or_else(gone)?;
        let pod_name = pod.metadata.name.as_deref().ok_or_else(gone)?;
        let params = LogParams {
            container: Some(MAIN_CONTAINER.to_owned()),
            tail_lines: Some(i64::from(tail)),
            limit_bytes: Some(MAX_LOG_BYTES),
            ..LogParams::default()
        };
        Api::<Pod>::namespaced(self.client.clone(), &self.argo_namespace)
            .logs(pod_name, &params)
            .await
            .map_err(|e| match build_error(e, "") {
                BuildError::NotFound(_) => gone(),
                other => other,
            })
    }
}
