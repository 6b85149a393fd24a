//! Tests of the `kubernetes` and `argo` runtimes against the Kubernetes API stand-in (H3,
//! [`fake_api`]), and checks of every manifest in deploy/.

mod argo;
mod builds;
mod fake_api;
mod manifests;
mod runtime;
mod watch;

use std::collections::BTreeMap;

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::InstanceRef;
use fctf_workers::runtime::kubernetes::KubernetesRuntime;
use fctf_workers::runtime::kubernetes::manifest::ClusterSettings;
use serde_json::{Value, json};

use self::fake_api::FakeApi;

/// 2026-01-01T00:00:00Z, the start time of the test instances.
const STARTED_AT_MS: u64 = 1_767_225_600_000;

fn settings() -> ClusterSettings {
    ClusterSettings {
        platform_namespace: "fctf".to_owned(),
        image_pull_secret: Some("global-regcred".to_owned()),
        job_ttl_after_finished_secs: 60,
    }
}

fn spec() -> DeploySpec {
    DeploySpec {
        challenge_name: "Web Login".to_owned(),
        image: Some("registry.example/web-login:1".to_owned()),
        command: None,
        container_port: 8000,
        cpu_millicores: 500,
        memory_mib: 256,
        use_gvisor: false,
        harden: false,
        lifetime_secs: 3600,
        env: BTreeMap::from([("FLAG".to_owned(), "fctf{test}".to_owned())]),
    }
}

fn instance(team: i64, challenge: i64) -> InstanceRef {
    InstanceRef {
        team: TeamId(team),
        challenge: ChallengeId(challenge),
        instance: InstanceId::new(),
    }
}

/// The namespace [`spec`] deploys `id` into.
fn ns_of(id: &InstanceRef) -> String {
    fctf_workers::runtime::kubernetes::manifest::namespace_of(id, &spec(), STARTED_AT_MS)
}

fn runtime(api: &FakeApi) -> KubernetesRuntime {
    KubernetesRuntime::new(api.client(), settings())
}

/// The platform's pull secret, as the operator created it.
fn put_platform_secret(api: &FakeApi) {
    api.put(
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "global-regcred", "namespace": "fctf",
                "annotations": {"owner": "ops"}},
            "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
        }),
    );
}

/// A challenge pod of `id` in namespace `ns` with `status`.
fn pod(id: &InstanceRef, ns: &str, name: &str, created: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "creationTimestamp": created,
            "labels": {"ctf/kind": "challenge", "ctf/instance": id.instance.to_string()},
            "annotations": {"ctf/lifetime-secs": "3600"},
        },
        "spec": {"containers": [{"name": "challenge", "image": "x"}]},
        "status": status,
    })
}
