//! The objects one instance is made of, as pure functions of its identity and spec.
//!
//! The `kubernetes` runtime applies exactly these; the Argo `start-chal-v2-template` in
//! `deploy/argo/` renders the same shapes from the parameters [`super::super::argo`] submits
//! (a test compares the two), so both runtimes produce the same cluster state.

use std::collections::BTreeMap;

use fctf_core::ids::TeamId;
use fctf_core::naming;
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{DEADLINE_MARGIN, InstanceRef};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, LocalObjectReference, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label every instance object and pod carries; the watcher and the snapshot select on it.
pub const LABEL_KIND: &str = "ctf/kind";
/// Value of [`LABEL_KIND`] on instance objects.
pub const KIND_CHALLENGE: &str = "challenge";
/// Team id (`shared` for the shared team).
pub const LABEL_TEAM: &str = "ctf/team";
/// Challenge id.
pub const LABEL_CHALLENGE: &str = "ctf/challenge";
/// Instance id (32 hex digits): what keys every operation to one instance lifetime.
pub const LABEL_INSTANCE: &str = "ctf/instance";
/// Unix seconds after which the instance is over at the latest (start + lifetime), for a
/// label-selected cleanup that works without the control plane.
pub const LABEL_EXPIRY: &str = "ctf/expiry";
/// Annotation with the lifetime asked for, in seconds (read back by the snapshot).
pub const ANNOTATION_LIFETIME: &str = "ctf/lifetime-secs";
/// The port every instance Service listens on; the gateway dials it.
pub const SERVICE_PORT: i32 = 3333;
/// Name of the instance's Job and of its container.
pub const JOB_NAME: &str = "challenge";
/// Label the platform's gateway pods carry (deploy/platform/gateway.yaml); the only pods the
/// NetworkPolicy lets in.
pub const GATEWAY_LABEL: (&str, &str) = ("app.kubernetes.io/name", "fctf-gateway");
/// Networks an instance may never reach: private, shared, loopback and link-local ranges (cloud
/// metadata at 169.254.169.254 included), so a player's shell cannot probe the cluster.
pub const EGRESS_DENIED_V4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
];
/// The IPv6 counterpart of [`EGRESS_DENIED_V4`]: unique-local, link-local and loopback.
pub const EGRESS_DENIED_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];
/// Runtime class of the gVisor sandbox.
pub const GVISOR_RUNTIME_CLASS: &str = "gvisor";

/// What the manifests depend on besides the instance: the `[runtime]` section's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Namespace of the platform (gateway pods, the pull secret's source).
    pub platform_namespace: String,
    /// Image pull secret copied into each instance namespace; `None` for none.
    pub image_pull_secret: Option<String>,
    /// `ttlSecondsAfterFinished` of each Job.
    pub job_ttl_after_finished_secs: u32,
}

/// Every object of one instance, in the order they are applied.
#[derive(Clone, Debug)]
pub struct InstanceObjects {
    pub namespace: Namespace,
    pub service: Service,
    pub policies: Vec<NetworkPolicy>,
    pub job: Job,
}

/// The team as a label value and namespace part: `shared`, or the decimal id.
pub fn team_label(team: TeamId) -> String {
    if team == TeamId::SHARED {
        "shared".to_owned()
    } else if team.0 < 0 {
        format!("m{}", team.0.unsigned_abs())
    } else {
        team.0.to_string()
    }
}

/// The namespace `id` runs in when started at `started_at_ms`.
pub fn namespace_of(id: &InstanceRef, spec: &DeploySpec, started_at_ms: u64) -> String {
    naming::namespace_name(
        id.team,
        id.challenge,
        &spec.challenge_name,
        started_at_ms / 1000,
    )
}

/// The labels every object of `id` carries.
pub fn instance_labels(id: &InstanceRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_KIND.to_owned(), KIND_CHALLENGE.to_owned()),
        (LABEL_TEAM.to_owned(), team_label(id.team)),
        (LABEL_CHALLENGE.to_owned(), id.challenge.0.to_string()),
        (LABEL_INSTANCE.to_owned(), id.instance.to_string()),
    ])
}

/// The label selector that finds `id`'s objects.
pub fn instance_selector(id: &InstanceRef) -> String {
    format!(
        "{LABEL_KIND}={KIND_CHALLENGE},{LABEL_INSTANCE}={}",
        id.instance
    )
}

/// Every object of `id`.
pub fn instance_objects(
    id: &InstanceRef,
    spec: &DeploySpec,
    started_at_ms: u64,
    settings: &ClusterSettings,
) -> InstanceObjects {
    let ns = namespace_of(id, spec, started_at_ms);
    let labels = instance_labels(id);
    let expiry = (started_at_ms / 1000).saturating_add(spec.lifetime_secs);
    let mut ns_labels = labels.clone();
    ns_labels.insert(LABEL_EXPIRY.to_owned(), expiry.to_string());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(ns_labels),
            annotations: Some(lifetime_annotation(spec)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    InstanceObjects {
        service: service(&ns, &labels, spec),
        policies: network_policies(&ns, &labels, spec, settings),
        job: job(&ns, &labels, spec, settings),
        namespace,
    }
}

fn lifetime_annotation(spec: &DeploySpec) -> BTreeMap<String, String> {
    BTreeMap::from([(
        ANNOTATION_LIFETIME.to_owned(),
        spec.lifetime_secs.to_string(),
    )])
}

fn meta(name: &str, ns: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

fn selector_of(id_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    id_labels
        .iter()
        .filter(|(k, _)| *k == LABEL_KIND || *k == LABEL_INSTANCE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// ClusterIP Service `<ns>-svc`: port 3333 to the container's port.
fn service(ns: &str, labels: &BTreeMap<String, String>, spec: &DeploySpec) -> Service {
    Service {
        metadata: meta(&naming::service_name(ns), ns, labels),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_of(labels)),
            ports: Some(vec![ServicePort {
                name: Some("challenge".to_owned()),
                protocol: Some("TCP".to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(i32::from(spec.container_port))),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".to_owned()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..LabelSelector::default()
    }
}

/// Default deny both ways; ingress from the gateway pods only; egress to cluster DNS and to
/// the public internet only.
fn network_policies(
    ns: &str,
    labels: &BTreeMap<String, String>,
    spec: &DeploySpec,
    settings: &ClusterSettings,
) -> Vec<NetworkPolicy> {
    let policy = |name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: meta(name, ns, labels),
        spec: Some(spec),
    };
    let all_pods = LabelSelector::default();
    let deny = policy(
        "default-deny",
        NetworkPolicySpec {
            pod_selector: Some(all_pods.clone()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ..NetworkPolicySpec::default()
        },
    );
    let gateway = policy(
        "allow-gateway",
        NetworkPolicySpec {
            pod_selector: Some(all_pods.clone()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(match_labels(&[(
                        "kubernetes.io/metadata.name",
                        &settings.platform_namespace,
                    )])),
                    pod_selector: Some(match_labels(&[GATEWAY_LABEL])),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![tcp_port(i32::from(spec.container_port))]),
            }]),
            ..NetworkPolicySpec::default()
        },
    );
    let dns_port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(53)),
        ..NetworkPolicyPort::default()
    };
    let internet = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(except.iter().map(|s| (*s).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    };
    let egress = policy(
        "allow-egress",
        NetworkPolicySpec {
            pod_selector: Some(all_pods),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(match_labels(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )])),
                        pod_selector: Some(match_labels(&[("k8s-app", "kube-dns")])),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![
                        internet("0.0.0.0/0", &EGRESS_DENIED_V4),
                        internet("::/0", &EGRESS_DENIED_V6),
                    ]),
                    ports: None,
                },
            ]),
            ..NetworkPolicySpec::default()
        },
    );
    vec![deny, gateway, egress]
}

/// The challenge Job: one pod, limits from the spec, a TCP readiness probe, ended by the
/// cluster itself after the lifetime plus the margin (`activeDeadlineSeconds`,
/// [`deploy_deadline_secs`]) even when the control plane is down, and deleted `ttlSecondsAfterFinished` later.
fn job(
    ns: &str,
    labels: &BTreeMap<String, String>,
    spec: &DeploySpec,
    settings: &ClusterSettings,
) -> Job {
    let port = i32::from(spec.container_port);
    let resources = BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", spec.cpu_millicores)),
        ),
        (
            "memory".to_owned(),
            Quantity(format!("{}Mi", spec.memory_mib)),
        ),
    ]);
    let env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        })
        .collect();
    let container = Container {
        name: JOB_NAME.to_owned(),
        image: spec.image.clone(),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![ContainerPort {
            container_port: port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            // Requests equal limits: Guaranteed QoS, so a busy node never evicts an instance
            // in the middle of a contest.
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port),
                ..TCPSocketAction::default()
            }),
            initial_delay_seconds: Some(1),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(container_security(spec.harden)),
        ..Container::default()
    };
    let mut pod_annotations = lifetime_annotation(spec);
    pod_annotations.insert(
        "kubectl.kubernetes.io/default-container".to_owned(),
        JOB_NAME.to_owned(),
    );
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("OnFailure".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        runtime_class_name: spec.use_gvisor.then(|| GVISOR_RUNTIME_CLASS.to_owned()),
        image_pull_secrets: settings
            .image_pull_secret
            .as_ref()
            .map(|name| vec![LocalObjectReference { name: name.clone() }]),
        security_context: spec.harden.then(|| PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(5),
        ..PodSpec::default()
    };
    Job {
        metadata: ObjectMeta {
            annotations: Some(lifetime_annotation(spec)),
            ..meta(JOB_NAME, ns, labels)
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(deploy_deadline_secs(spec)),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.job_ttl_after_finished_secs).unwrap_or(i32::MAX),
            ),
            // Restarts in place (OnFailure) so the listener sees them; it fails a crash loop first.
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Plain: no privilege escalation. Hardened: also read-only root, no capabilities, non-root.
fn container_security(harden: bool) -> SecurityContext {
    if harden {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }
    } else {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            ..SecurityContext::default()
        }
    }
}

/// A copy of the platform's pull secret for namespace `ns`: its type and data only, so
/// nothing the cluster set on the original (uid, owner, resourceVersion) is copied.
pub fn pull_secret_copy(source: &Secret, name: &str, ns: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Secret::default()
    }
}

/// When `job` started counting its `activeDeadlineSeconds` (Unix milliseconds): its
/// `status.startTime`, else (not started yet) its creation time, which is no later.
pub fn job_start_ms(job: &Job) -> Option<u64> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .and_then(|t| u64::try_from(t.0.as_millisecond()).ok())
}

/// The `activeDeadlineSeconds` a Job is created with: its lifetime plus [`DEADLINE_MARGIN`].
/// The player's time counts from Running, which comes after the Job's start, and the listener
/// ends the instance on that time; the cluster's own kill is the backstop for when the control
/// plane is down, so it must never come first. The listener moves it to the exact end
/// ([`active_deadline_secs`]) once the instance is Running.
pub fn deploy_deadline_secs(spec: &DeploySpec) -> i64 {
    i64::try_from(spec.lifetime_secs.saturating_add(DEADLINE_MARGIN.as_secs())).unwrap_or(i64::MAX)
}

/// The `activeDeadlineSeconds` that ends a Job started at `job_start_ms` no earlier than
/// `ends_at_ms` plus `margin_secs` (rounded up; at least 1, the smallest the API accepts).
pub fn active_deadline_secs(job_start_ms: u64, ends_at_ms: u64, margin_secs: u64) -> i64 {
    let run_secs = ends_at_ms.saturating_sub(job_start_ms).div_ceil(1000);
    i64::try_from(run_secs.saturating_add(margin_secs))
        .unwrap_or(i64::MAX)
        .max(1)
}

/// The `ctf/expiry` label value for an instance ending at `ends_at_ms`: Unix seconds, rounded up.
pub fn expiry_label(ends_at_ms: u64) -> String {
    ends_at_ms.div_ceil(1000).to_string()
}
