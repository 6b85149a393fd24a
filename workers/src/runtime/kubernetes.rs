//! The `kubernetes` runtime: each instance is a namespace of its own holding a ClusterIP
//! Service, NetworkPolicies and a Job, applied directly with server-side apply.
//!
//! - [`manifest`]: the objects, as pure functions of the instance and its spec.
//! - [`observe`]: what a pod says about its instance, as a pure function.
//! - [`watch`]: the pod watcher the Deployment Listener takes change hints from.
//!
//! Every object carries the labels `ctf/kind=challenge` and `ctf/instance=<id>`, so removal,
//! logs and observation find an instance by label, never by re-deriving its namespace name
//! (which needs the start time and challenge name that a stop job does not carry).

pub mod manifest;
pub mod observe;
pub mod watch;

use std::fmt;

use async_trait::async_trait;
use fctf_core::config::RuntimeConfig;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{
    DEADLINE_MARGIN, InstanceRef, InstanceRuntime, Observed, Placement, RuntimeError, RuntimeResult,
};
use futures_util::stream::BoxStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;

use self::manifest::{ClusterSettings, KIND_CHALLENGE, LABEL_KIND};
pub use self::watch::{PodWatch, WatchSettings};

/// The field manager of every server-side apply: the platform owns these fields.
pub const FIELD_MANAGER: &str = "fctf";
/// Objects per page of a list; the snapshot follows `continue` tokens until the end.
pub const LIST_PAGE_SIZE: u32 = 500;

impl ClusterSettings {
    /// The settings from the `[runtime]` section.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        Self {
            platform_namespace: config.platform_namespace.clone(),
            image_pull_secret: (!config.image_pull_secret.is_empty())
                .then(|| config.image_pull_secret.clone()),
            job_ttl_after_finished_secs: config.job_ttl_after_finished_secs,
        }
    }
}

/// How a failed API call reads to the consumer: a refusal of the spec is for good, the rest is
/// worth a retry.
pub fn runtime_error(err: kube::Error) -> RuntimeError {
    match err {
        kube::Error::Api(status) => match status.code {
            404 => RuntimeError::NotFound,
            400 | 422 => RuntimeError::Rejected(format!(
                "the cluster refused the instance: {}",
                status.message
            )),
            code => RuntimeError::Unavailable(format!(
                "Kubernetes API answered {code} {}: {}",
                status.reason, status.message
            )),
        },
        other => RuntimeError::Unavailable(format!("Kubernetes API: {other}")),
    }
}

/// A client for `config` without kube's built-in retries of 429/503/504: those retry for
/// minutes inside one call, while every caller here has its own backoff (the consumer's retry,
/// the watcher's backoff, the listener's next resync) and must hear `Unavailable` promptly.
pub fn client(mut config: kube::Config) -> RuntimeResult<Client> {
    config.default_retry = false;
    Client::try_from(config).map_err(runtime_error)
}

/// The `kubernetes` runtime (and the cluster side of `argo`).
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    settings: ClusterSettings,
    page_size: u32,
}

impl fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesRuntime {
    /// A runtime talking to the cluster through `client`.
    pub fn new(client: Client, settings: ClusterSettings) -> Self {
        Self {
            client,
            settings,
            page_size: LIST_PAGE_SIZE,
        }
    }

    /// A runtime for the cluster found the standard way (in-cluster service account, else
    /// `KUBECONFIG` / `~/.kube/config`), with the `[runtime]` section's settings.
    pub async fn connect(config: &RuntimeConfig) -> RuntimeResult<Self> {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("no Kubernetes config: {e}")))?;
        Ok(Self::new(
            client(kube_config)?,
            ClusterSettings::from_config(config),
        ))
    }

    /// The same runtime with lists paged by `page_size` objects (tests use small pages).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The listener's change feed on this cluster: a pod watch through the same client.
    pub fn pod_watch(&self, settings: WatchSettings) -> PodWatch {
        PodWatch::new(self.client.clone(), settings)
    }

    /// The client, for the Argo runtime sharing it.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The manifest settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Instance change hints for the Deployment Listener: the instance of every pod added,
    /// changed or deleted, forever (see [`watch::instance_hints`]).
    pub fn watch_hints(&self, settings: WatchSettings) -> BoxStream<'static, InstanceRef> {
        watch::instance_hints(self.client.clone(), settings)
    }

    async fn apply<K>(&self, api: &Api<K>, obj: &K) -> RuntimeResult<()>
    where
        K: Resource + Clone + Serialize + serde::de::DeserializeOwned + fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map(drop)
        .map_err(runtime_error)
    }

    /// Copies the platform's image pull secret into `ns`.
    async fn copy_pull_secret(&self, name: &str, ns: &str) -> RuntimeResult<()> {
        let source =
            Api::<Secret>::namespaced(self.client.clone(), &self.settings.platform_namespace)
                .get(name)
                .await
                .map_err(|e| match runtime_error(e) {
                    RuntimeError::NotFound => RuntimeError::Unavailable(format!(
                        "image pull secret {name} not found in namespace {}",
                        self.settings.platform_namespace
                    )),
                    other => other,
                })?;
        let copy = manifest::pull_secret_copy(&source, name, ns);
        self.apply(&Api::<Secret>::namespaced(self.client.clone(), ns), &copy)
            .await
    }

    /// Every page of a label-selected list, or an error: never a partial list.
    async fn list_all<K>(&self, api: &Api<K>, selector: &str) -> RuntimeResult<Vec<K>>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
    {
        let mut out = Vec::new();
        let mut params = ListParams::default().labels(selector).limit(self.page_size);
        loop {
            let page = api.list(&params).await.map_err(runtime_error)?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// Every challenge pod in the cluster.
    pub async fn list_pods(&self) -> RuntimeResult<Vec<Pod>> {
        let api = Api::<Pod>::all(self.client.clone());
        self.list_all(&api, &format!("{LABEL_KIND}={KIND_CHALLENGE}"))
            .await
    }

    /// Deletes every namespace of `id` (normally one). Already gone is `Ok`.
    pub async fn delete_namespaces(&self, id: &InstanceRef) -> RuntimeResult<()> {
        let api = Api::<Namespace>::all(self.client.clone());
        let namespaces = self
            .list_all(&api, &manifest::instance_selector(id))
            .await?;
        for ns in namespaces {
            let Some(name) = ns.metadata.name else {
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
        Ok(())
    }

    /// Applies `id`'s objects, namespace first; returns the namespace name.
    pub async fn apply_instance(
        &self,
        id: &InstanceRef,
        spec: &DeploySpec,
        started_at_ms: u64,
    ) -> RuntimeResult<String> {
        let objects = manifest::instance_objects(id, spec, started_at_ms, &self.settings);
        let ns = objects.namespace.metadata.name.clone().unwrap_or_default();
        self.apply(
            &Api::<Namespace>::all(self.client.clone()),
            &objects.namespace,
        )
        .await?;
        if let Some(secret) = &self.settings.image_pull_secret {
            self.copy_pull_secret(secret, &ns).await?;
        }
        self.apply(
            &Api::<Service>::namespaced(self.client.clone(), &ns),
            &objects.service,
        )
        .await?;
        let policies = Api::<NetworkPolicy>::namespaced(self.client.clone(), &ns);
        for policy in &objects.policies {
            self.apply(&policies, policy).await?;
        }
        self.apply(
            &Api::<Job>::namespaced(self.client.clone(), &ns),
            &objects.job,
        )
        .await?;
        Ok(ns)
    }

    /// Moves `id`'s end to `ends_at_ms` (an extension): the Job's `activeDeadlineSeconds`, which
    /// counts from the Job's start, becomes the time from that start to `ends_at_ms` plus
    /// [`DEADLINE_MARGIN`] (the cluster's kill is a backstop behind the listener's), and the
    /// namespace's `ctf/expiry` label becomes `ends_at_ms`, so the expiry cleanup does not end it
    /// early either. Merge patches, not an apply: an apply of these two fields alone would drop the
    /// manager's other fields. `NotFound` when `id` has no
    /// namespace or no Job.
    pub async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let found = self
            .list_all(&namespaces, &manifest::instance_selector(id))
            .await?;
        if found.is_empty() {
            return Err(RuntimeError::NotFound);
        }
        for ns in found {
            let Some(name) = ns.metadata.name else {
                continue;
            };
            let jobs = Api::<Job>::namespaced(self.client.clone(), &name);
            let job = jobs.get(manifest::JOB_NAME).await.map_err(runtime_error)?;
            let started = manifest::job_start_ms(&job).ok_or_else(|| {
                RuntimeError::Unavailable(format!("the Job in {name} has no start time yet"))
            })?;
            let deadline =
                manifest::active_deadline_secs(started, ends_at_ms, DEADLINE_MARGIN.as_secs());
            let params = PatchParams::default();
            let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": deadline}});
            jobs.patch(manifest::JOB_NAME, &params, &Patch::Merge(&patch))
                .await
                .map_err(runtime_error)?;
            let labels = serde_json::json!({"metadata": {"labels": {
                manifest::LABEL_EXPIRY: manifest::expiry_label(ends_at_ms)
            }}});
            namespaces
                .patch(&name, &params, &Patch::Merge(&labels))
                .await
                .map_err(runtime_error)?;
        }
        Ok(())
    }

    /// The last `tail` lines of `id`'s newest pod.
    pub async fn pod_logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        let api = Api::<Pod>::all(self.client.clone());
        let pods = self
            .list_all(&api, &manifest::instance_selector(id))
            .await?;
        let newest = pods
            .iter()
            .filter(|p| observe::instance_of_pod(p).as_ref() == Some(id))
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .ok_or(RuntimeError::NotFound)?;
        let (Some(ns), Some(name)) = (&newest.metadata.namespace, &newest.metadata.name) else {
            return Err(RuntimeError::NotFound);
        };
        let params = LogParams {
            container: Some(manifest::JOB_NAME.to_owned()),
            tail_lines: Some(i64::from(tail)),
            ..LogParams::default()
        };
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .logs(name, &params)
            .await
            .map_err(runtime_error)
    }
}

#[async_trait]
impl InstanceRuntime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
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
        let route = self.apply_instance(id, spec, started_at_ms).await?;
        Ok(Placement { route })
    }

    async fn remove(&self, id: &InstanceRef) -> RuntimeResult<()> {
        self.delete_namespaces(id).await
    }

    async fn in_progress(&self) -> RuntimeResult<u32> {
        let observed = self.snapshot().await?;
        let n = observed
            .iter()
            .filter(|o| observe::is_in_progress(o))
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn snapshot(&self) -> RuntimeResult<Vec<Observed>> {
        let pods = self.list_pods().await?;
        Ok(observe::observe_pods(&pods))
    }

    async fn logs(&self, id: &InstanceRef, tail: u32) -> RuntimeResult<String> {
        self.pod_logs(id, tail).await
    }

    async fn set_deadline(&self, id: &InstanceRef, ends_at_ms: u64) -> RuntimeResult<()> {
        KubernetesRuntime::set_deadline(self, id, ends_at_ms).await
    }
}
