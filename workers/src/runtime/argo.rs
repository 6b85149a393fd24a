//! The `argo` runtime: deploys by submitting a Workflow that runs the `start-chal-v2-template`
//! WorkflowTemplate (deploy/argo/), which applies the same objects as the `kubernetes` runtime.
//! Everything else (remove, snapshot, logs) reads and changes the cluster directly through
//! [`KubernetesRuntime`], so both runtimes observe instances the same way.
//!
//! The consumer's budget counts running workflows ([`InstanceRuntime::in_progress`]), as in the
//! original system.

pub mod workflow;

use async_trait::async_trait;
use fctf_core::config::RuntimeConfig;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{
    InstanceRef, InstanceRuntime, Observed, Placement, RuntimeError, RuntimeResult,
};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};

use super::kubernetes::{KubernetesRuntime, manifest, runtime_error};

/// The `argo` runtime.
#[derive(Clone, Debug)]
pub struct ArgoRuntime {
    cluster: KubernetesRuntime,
    argo_namespace: String,
}

impl ArgoRuntime {
    /// Submits workflows into `argo_namespace` and observes the cluster through `cluster`.
    pub fn new(cluster: KubernetesRuntime, argo_namespace: impl Into<String>) -> Self {
        Self {
            cluster,
            argo_namespace: argo_namespace.into(),
        }
    }

    /// A runtime for the cluster found the standard way, with the `[runtime]` section's settings.
    pub async fn connect(config: &RuntimeConfig) -> RuntimeResult<Self> {
        let cluster = KubernetesRuntime::connect(config).await?;
        Ok(Self::new(cluster, config.argo_namespace.clone()))
    }

    /// The cluster side (for [`KubernetesRuntime::watch_hints`]).
    pub fn cluster(&self) -> &KubernetesRuntime {
        &self.cluster
    }

    fn workflows(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.cluster.client().clone(),
            &self.argo_namespace,
            &workflow::workflow_resource(),
        )
    }

    /// Every page of workflows matching `selector`.
    async fn list_workflows(&self, selector: &str) -> RuntimeResult<Vec<DynamicObject>> {
        let api = self.workflows();
        let mut out = Vec::new();
        let mut params = ListParams::default()
            .labels(selector)
            .limit(super::kubernetes::LIST_PAGE_SIZE);
        loop {
            let page = api.list(&params).await.map_err(runtime_error)?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl InstanceRuntime for ArgoRuntime {
    fn kind(&self) -> &'static str {
        "argo"
    }

    async fn deploy(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<Placement> {
        if spec.image.is_none() {
            return Err(RuntimeError::Rejected(
                "the challenge has no container image".to_owned(),
            ));
        }
        if self.cluster.settings().image_pull_secret.is_none() {
            // The template always references the copied secret (a Job cannot have an
            // imagePullSecrets entry without a name).
            return Err(RuntimeError::Rejected(
                "the argo runtime needs [runtime].image_pull_secret".to_owned(),
            ));
        }
        let wf = workflow::start_workflow(
            id,
            spec,
            started_at_ms,
            self.cluster.settings(),
            &self.argo_namespace,
        );
        match self.workflows().create(&PostParams::default(), &wf).await {
            Ok(_) => {}
            // Submitted before (a redelivered job): the workflow already does the work.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(runtime_error(e)),
        }
        Ok(Placement {
            route: manifest::namespace_of(id, spec, started_at_ms),
        })
    }

    /// Deletes the start workflow first (so a still-running one cannot re-create the
    /// namespace), then the namespace.
    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        let api = self.workflows();
        for wf in self
            .list_workflows(&workflow::instance_selector(id))
            .await?
        {
            let Some(name) = wf.metadata.name else {
                continue;
            };
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) => match runtime_error(e) {
                    RuntimeError::NotFound => {}
                    other => return Err(other),
                },
            }
        }
        self.cluster.delete_namespaces(id).await
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        let running = self.list_workflows(&workflow::running_selector()).await?;
        Ok(u32::try_from(running.len()).unwrap_or(u32::MAX))
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        self.cluster.snapshot().await
    }

    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        self.cluster.logs(id, tail).await
    }

    /// The workflow only creates the objects: the deadline lives on the Job it applied.
    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        self.cluster.set_deadline(id, ends_at_ms).await
    }
}
