//! The Workflow the `argo` runtime submits, as a pure function of the instance and its spec.
//!
//! It only references `start-chal-v2-template` (deploy/argo/start-chal-v2-template.yaml) and
//! passes [`TEMPLATE_PARAMETERS`]; the template renders the same objects as
//! [`crate::runtime::kubernetes::manifest`] from them (tests hold the two together).

use fctf_core::queue::DeploySpec;
#[cfg(doc)]
use fctf_core::runtime::DEADLINE_MARGIN;
use fctf_core::runtime::InstanceRef;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::runtime::kubernetes::manifest::{
    self, ClusterSettings, LABEL_CHALLENGE, LABEL_INSTANCE, LABEL_TEAM,
};

/// Name of the WorkflowTemplate that starts an instance.
pub const START_TEMPLATE: &str = "start-chal-v2-template";
/// Label on every start workflow; `in_progress` selects on it.
pub const LABEL_WORKFLOW: &str = "ctf/workflow";
/// Value of [`LABEL_WORKFLOW`] on start workflows.
pub const WORKFLOW_START: &str = "start";
/// Label Argo's controller sets to `true` once a workflow has finished.
pub const LABEL_COMPLETED: &str = "workflows.argoproj.io/completed";

/// Every parameter the start workflow passes, in order; the template declares these (and
/// `CALLBACK_URL`, which has a default). `TEAM_ID` is the decimal id (for the callback),
/// `TEAM_LABEL` its label form (`shared` for the shared team). `DEADLINE_SECS` is the Job's
/// `activeDeadlineSeconds`: the lifetime plus [`DEADLINE_MARGIN`], as the `kubernetes` runtime
/// applies it (the cluster's kill is a backstop behind the listener's, never ahead of it).
pub const TEMPLATE_PARAMETERS: [&str; 19] = [
    "NAMESPACE",
    "SERVICE_NAME",
    "TEAM_ID",
    "TEAM_LABEL",
    "CHALLENGE_ID",
    "INSTANCE_ID",
    "EXPIRY_UNIX",
    "LIFETIME_SECS",
    "DEADLINE_SECS",
    "IMAGE",
    "CONTAINER_PORT",
    "CPU_LIMIT",
    "MEMORY_LIMIT",
    "USE_GVISOR",
    "HARDEN",
    "ENV_JSON",
    "JOB_TTL_SECS",
    "PLATFORM_NAMESPACE",
    "IMAGE_PULL_SECRET",
];

/// `argoproj.io/v1alpha1` `Workflow`.
pub fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

/// The start workflow's name: one per instance, so a redelivered job finds it (409) instead of
/// starting a second one.
pub fn workflow_name(id: &InstanceRef) -> String {
    format!("start-{}", id.instance)
}

/// The parameter values, in [`TEMPLATE_PARAMETERS`] order.
pub fn parameters(
    id: &InstanceRef,
    spec: &DeploySpec,
    started_at_ms: u64,
    settings: &ClusterSettings,
) -> Vec<(&'static str, String)> {
    let ns = manifest::namespace_of(id, spec, started_at_ms);
    let env: Vec<serde_json::Value> = spec
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let values = [
        fctf_core::naming::service_name(&ns),
        id.team.0.to_string(),
        manifest::team_label(id.team),
        id.challenge.0.to_string(),
        id.instance.to_string(),
        (started_at_ms / 1000)
            .saturating_add(spec.lifetime_secs)
            .to_string(),
        spec.lifetime_secs.to_string(),
        manifest::deploy_deadline_secs(spec).to_string(),
        spec.image.clone().unwrap_or_default(),
        spec.container_port.to_string(),
        format!("{}m", spec.cpu_millicores),
        format!("{}Mi", spec.memory_mib),
        spec.use_gvisor.to_string(),
        spec.harden.to_string(),
        serde_json::Value::Array(env).to_string(),
        settings.job_ttl_after_finished_secs.to_string(),
        settings.platform_namespace.clone(),
        settings.image_pull_secret.clone().unwrap_or_default(),
    ];
    std::iter::once(ns)
        .chain(values)
        .zip(TEMPLATE_PARAMETERS)
        .map(|(value, name)| (name, value))
        .collect()
}

/// The Workflow object submitted into `argo_namespace`.
pub fn start_workflow(
    id: &InstanceRef,
    spec: &DeploySpec,
    started_at_ms: u64,
    settings: &ClusterSettings,
    argo_namespace: &str,
) -> DynamicObject {
    let params: Vec<serde_json::Value> = parameters(id, spec, started_at_ms, settings)
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut wf = DynamicObject::new(&workflow_name(id), &workflow_resource())
        .within(argo_namespace)
        .data(json!({
            "spec": {
                "workflowTemplateRef": {"name": START_TEMPLATE},
                "arguments": {"parameters": params},
            }
        }));
    wf.metadata.labels = Some(
        [
            (LABEL_WORKFLOW, WORKFLOW_START.to_owned()),
            (LABEL_TEAM, manifest::team_label(id.team)),
            (LABEL_CHALLENGE, id.challenge.0.to_string()),
            (LABEL_INSTANCE, id.instance.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    wf
}

/// Selects the start workflows still running (no `completed=true` label yet).
pub fn running_selector() -> String {
    format!("{LABEL_WORKFLOW}={WORKFLOW_START},{LABEL_COMPLETED}!=true")
}

/// Selects `id`'s start workflows.
pub fn instance_selector(id: &InstanceRef) -> String {
    format!(
        "{LABEL_WORKFLOW}={WORKFLOW_START},{LABEL_INSTANCE}={}",
        id.instance
    )
}
