//! deploy/: every YAML parses; every Kubernetes object is exactly its k8s-openapi type (a
//! round trip through the type loses nothing, so no field is unknown or misspelt); RBAC grants
//! each service only what it needs; the challenge manifests are what the runtime applies; the
//! RabbitMQ definitions are core's topology.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::{ArgumentValue, Topology};
use fctf_core::runtime::InstanceRef;
use fctf_workers::runtime::kubernetes::manifest::{self, InstanceObjects};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{STARTED_AT_MS, settings, spec};

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    out.sort();
}

/// Every document of a YAML file, as JSON values.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every Kubernetes object (a document with `apiVersion` and `kind`) under deploy/.
fn all_objects() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    files
        .into_iter()
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d)))
        .filter(|(_, d)| d.get("apiVersion").is_some() && d.get("kind").is_some())
        .collect()
}

/// `value` read as `T` and written back is `value` again: nothing unknown, nothing mistyped.
fn round_trips<T: DeserializeOwned + serde::Serialize>(what: &str, value: &Value) {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "{what}: fields lost or changed by the typed round trip"
    );
}

#[test]
#[should_panic(expected = "fields lost or changed")]
fn the_typed_round_trip_catches_a_misspelt_field() {
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"prots": [{"port": 3333}]},
    });
    round_trips::<k8s_openapi::api::core::v1::Service>("misspelt", &service);
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        assert!(!yaml_docs(file).is_empty(), "{} is empty", file.display());
    }
}

#[test]
fn every_kubernetes_object_is_exactly_its_type() {
    use k8s_openapi::api::{apps, autoscaling, batch, core, networking, node, policy, rbac};
    let objects = all_objects();
    let mut kinds = BTreeSet::new();
    for (file, obj) in &objects {
        let kind = obj["kind"].as_str().unwrap();
        let what = format!("{} {kind} {}", file.display(), obj["metadata"]["name"]);
        kinds.insert(kind.to_owned());
        match (obj["apiVersion"].as_str().unwrap(), kind) {
            ("v1", "Namespace") => round_trips::<core::v1::Namespace>(&what, obj),
            ("v1", "Service") => round_trips::<core::v1::Service>(&what, obj),
            ("v1", "ServiceAccount") => round_trips::<core::v1::ServiceAccount>(&what, obj),
            ("v1", "ConfigMap") => round_trips::<core::v1::ConfigMap>(&what, obj),
            ("v1", "Secret") => round_trips::<core::v1::Secret>(&what, obj),
            ("apps/v1", "Deployment") => round_trips::<apps::v1::Deployment>(&what, obj),
            ("batch/v1", "Job") => round_trips::<batch::v1::Job>(&what, obj),
            ("batch/v1", "CronJob") => round_trips::<batch::v1::CronJob>(&what, obj),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                round_trips::<networking::v1::NetworkPolicy>(&what, obj)
            }
            ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                round_trips::<autoscaling::v2::HorizontalPodAutoscaler>(&what, obj)
            }
            ("policy/v1", "PodDisruptionBudget") => {
                round_trips::<policy::v1::PodDisruptionBudget>(&what, obj)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => round_trips::<rbac::v1::Role>(&what, obj),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                round_trips::<rbac::v1::ClusterRole>(&what, obj)
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                round_trips::<rbac::v1::RoleBinding>(&what, obj)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                round_trips::<rbac::v1::ClusterRoleBinding>(&what, obj)
            }
            ("node.k8s.io/v1", "RuntimeClass") => round_trips::<node::v1::RuntimeClass>(&what, obj),
            ("argoproj.io/v1alpha1", "WorkflowTemplate") => {
                // No typed schema here: checked by the argo tests (parameters, rendered
                // manifests) instead.
                assert!(obj["spec"]["templates"].is_array(), "{what}");
            }
            (api, kind) => panic!("{what}: no check for {api} {kind}"),
        }
    }
    for kind in [
        "Namespace",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ServiceAccount",
        "Job",
        "WorkflowTemplate",
        "RuntimeClass",
        "CronJob",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/");
    }
}

/// What each service account may do: (apiGroup, resource, verb). Nothing else is granted.
fn allowed() -> BTreeMap<&'static str, BTreeSet<(&'static str, &'static str, &'static str)>> {
    let grant = |rules: &[(&'static str, &'static str, &[&'static str])]| {
        rules
            .iter()
            .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (*g, *r, *v)))
            .collect::<BTreeSet<_>>()
    };
    BTreeMap::from([
        ("fctf-gateway", BTreeSet::new()),
        ("fctf-contestant", BTreeSet::new()),
        (
            "fctf-deployment-center",
            grant(&[
                ("", "pods", &["get", "list", "watch"]),
                ("", "pods/log", &["get"]),
                ("", "namespaces", &["list", "patch"]),
                ("batch", "jobs", &["patch"]),
            ]),
        ),
        (
            "fctf-consumer",
            grant(&[
                (
                    "",
                    "namespaces",
                    &["get", "list", "create", "patch", "delete"],
                ),
                ("", "services", &["get", "create", "patch"]),
                ("", "secrets", &["get", "create", "patch"]),
                (
                    "networking.k8s.io",
                    "networkpolicies",
                    &["get", "create", "patch"],
                ),
                ("batch", "jobs", &["get", "create", "patch"]),
                ("", "pods", &["get", "list", "watch"]),
                ("", "pods/log", &["get"]),
                (
                    "argoproj.io",
                    "workflows",
                    &["get", "list", "create", "delete"],
                ),
            ]),
        ),
        (
            "fctf-listener",
            grant(&[
                ("", "pods", &["get", "list", "watch"]),
                ("", "namespaces", &["list", "delete"]),
                ("argoproj.io", "workflows", &["list", "delete"]),
            ]),
        ),
        (
            "fctf-argo-start",
            grant(&[
                ("", "namespaces", &["get", "create", "patch"]),
                ("", "services", &["get", "create", "patch"]),
                ("", "secrets", &["get", "create", "patch"]),
                (
                    "networking.k8s.io",
                    "networkpolicies",
                    &["get", "create", "patch"],
                ),
                ("batch", "jobs", &["get", "create", "patch"]),
                ("argoproj.io", "workflowtaskresults", &["create", "patch"]),
            ]),
        ),
        (
            "fctf-cleanup",
            grant(&[("", "namespaces", &["list", "delete"])]),
        ),
        (
            "fctf-argo-build",
            grant(&[("argoproj.io", "workflowtaskresults", &["create", "patch"])]),
        ),
    ])
}

#[test]
fn rbac_grants_each_service_only_what_it_needs() {
    let objects = all_objects();
    let role_rules: BTreeMap<(String, String), Vec<Value>> = objects
        .iter()
        .filter(|(_, o)| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
        .map(|(_, o)| {
            let key = (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            (key, o["rules"].as_array().cloned().unwrap_or_default())
        })
        .collect();
    let mut granted: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for (file, binding) in &objects {
        if !matches!(
            binding["kind"].as_str(),
            Some("RoleBinding" | "ClusterRoleBinding")
        ) {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap().to_owned();
        let role_name = binding["roleRef"]["name"].as_str().unwrap().to_owned();
        assert_ne!(role_name, "cluster-admin", "{}", file.display());
        assert_ne!(role_name, "admin", "{}", file.display());
        assert_ne!(role_name, "edit", "{}", file.display());
        let rules = role_rules
            .get(&(role_kind.clone(), role_name.clone()))
            .unwrap_or_else(|| panic!("{}: unknown role {role_kind}/{role_name}", file.display()));
        for subject in binding["subjects"].as_array().unwrap() {
            assert_eq!(subject["kind"], "ServiceAccount", "{}", file.display());
            let who = subject["name"].as_str().unwrap().to_owned();
            for rule in rules {
                assert!(rule["resourceNames"].is_null() || rule["resourceNames"].is_array());
                assert!(rule["nonResourceURLs"].is_null(), "{who}: nonResourceURLs");
                for group in rule["apiGroups"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        for verb in rule["verbs"].as_array().unwrap() {
                            let (g, r, v) = (
                                group.as_str().unwrap(),
                                resource.as_str().unwrap(),
                                verb.as_str().unwrap(),
                            );
                            assert!(
                                g != "*" && r != "*" && v != "*",
                                "{who}: wildcard grant in {}",
                                file.display()
                            );
                            granted.entry(who.clone()).or_default().insert((
                                g.to_owned(),
                                r.to_owned(),
                                v.to_owned(),
                            ));
                        }
                    }
                }
            }
        }
    }
    let allowed = allowed();
    for (who, grants) in &granted {
        let mine = allowed
            .get(who.as_str())
            .unwrap_or_else(|| panic!("unexpected service account {who} has grants"));
        for (g, r, v) in grants {
            assert!(
                mine.contains(&(g.as_str(), r.as_str(), v.as_str())),
                "{who} may {v} {g}/{r}, which it does not need"
            );
        }
    }
    // The services that talk to the API have what they need; the gateway has nothing.
    for who in ["fctf-consumer", "fctf-listener", "fctf-deployment-center"] {
        let grants = granted
            .get(who)
            .unwrap_or_else(|| panic!("{who} has no role"));
        assert!(
            grants.contains(&("".into(), "pods".into(), "list".into())),
            "{who}"
        );
    }
    assert!(!granted.contains_key("fctf-gateway"));
    // Every platform Deployment runs as its own account, without a token unless it needs one.
    for (file, obj) in &objects {
        if obj["kind"] != "Deployment" {
            continue;
        }
        let pod = &obj["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"].as_str().unwrap();
        assert!(
            allowed.contains_key(account),
            "{}: {account}",
            file.display()
        );
        let needs_token = granted.contains_key(account);
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(needs_token),
            "{}: {account}",
            file.display()
        );
    }
}

/// The instance the example manifests in deploy/challenge/ show.
pub fn example_instance() -> InstanceRef {
    InstanceRef {
        team: TeamId(42),
        challenge: ChallengeId(7),
        instance: InstanceId(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        )),
    }
}

/// The objects the runtime applies for the example, plain or hardened with gVisor.
pub fn example_objects(hardened: bool) -> InstanceObjects {
    let mut s = spec();
    s.harden = hardened;
    s.use_gvisor = hardened;
    manifest::instance_objects(&example_instance(), &s, STARTED_AT_MS, &settings())
}

pub fn objects_as_values(objects: &InstanceObjects) -> Vec<Value> {
    let mut out = vec![
        serde_json::to_value(&objects.namespace).unwrap(),
        serde_json::to_value(&objects.service).unwrap(),
    ];
    out.extend(
        objects
            .policies
            .iter()
            .map(|p| serde_json::to_value(p).unwrap()),
    );
    out.push(serde_json::to_value(&objects.job).unwrap());
    out
}

/// deploy/challenge/{plain,hardened}.yaml are what the runtime applies for the example
/// instance. `FCTF_BLESS=1` rewrites them after an intended change.
#[test]
fn challenge_manifests_are_what_the_runtime_applies() {
    for (file, hardened) in [("plain.yaml", false), ("hardened.yaml", true)] {
        let path = deploy_dir().join("challenge").join(file);
        let expected = objects_as_values(&example_objects(hardened));
        if std::env::var_os("FCTF_BLESS").is_some() {
            let mut text = format!(
                "# What the kubernetes runtime applies for one instance ({}), in order.\n\
                 # Generated from workers/src/runtime/kubernetes/manifest.rs; a test keeps it\n\
                 # equal (FCTF_BLESS=1 cargo test -p fctf-workers --test it manifests rewrites it).\n",
                if hardened {
                    "hardened, gVisor"
                } else {
                    "plain"
                }
            );
            for doc in &expected {
                text.push_str("---\n");
                text.push_str(&serde_norway::to_string(doc).unwrap());
            }
            std::fs::write(&path, text).unwrap();
        }
        assert_eq!(
            yaml_docs(&path),
            expected,
            "{file} differs from the runtime's objects"
        );
    }
}

#[test]
fn challenge_policies_deny_by_default_and_admit_only_the_gateway() {
    let objects = example_objects(false);
    let by_name = |name: &str| {
        let p = objects
            .policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap();
        serde_json::to_value(p).unwrap()["spec"].clone()
    };
    let deny = by_name("default-deny");
    assert_eq!(deny["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(deny["ingress"].is_null() && deny["egress"].is_null());

    let gateway = by_name("allow-gateway");
    let from = &gateway["ingress"][0]["from"];
    assert_eq!(from.as_array().unwrap().len(), 1);
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "fctf"
    );
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "fctf-gateway"
    );
    // The gateway pods of deploy/platform carry that label.
    let gateway_pods = all_objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "Deployment" && o["metadata"]["name"] == "fctf-gateway")
        .unwrap()
        .1;
    assert_eq!(
        gateway_pods["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "fctf-gateway"
    );

    let egress = by_name("allow-egress");
    let blocks: Vec<&Value> = egress["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["to"].as_array().unwrap())
        .filter(|peer| !peer["ipBlock"].is_null())
        .collect();
    for block in blocks {
        let except: Vec<&str> = block["ipBlock"]["except"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if block["ipBlock"]["cidr"] == "0.0.0.0/0" {
            for private in [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
            ] {
                assert!(except.contains(&private), "{private} reachable");
            }
        } else {
            assert_eq!(block["ipBlock"]["cidr"], "::/0");
            assert!(except.contains(&"fe80::/10") && except.contains(&"fc00::/7"));
        }
    }
}

fn argument(value: &ArgumentValue) -> Value {
    match value {
        ArgumentValue::Int(n) => Value::from(*n),
        ArgumentValue::Text(s) => Value::from(s.as_str()),
    }
}

#[test]
fn rabbitmq_definitions_are_cores_topology() {
    let docs = {
        let text = std::fs::read_to_string(deploy_dir().join("rabbitmq/definitions.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let topology = Topology::default();
    assert_eq!(docs["vhosts"][0]["name"], topology.vhost);
    let exchange = |name: &str| {
        docs["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no exchange {name}"))
    };
    let work = exchange(&topology.exchange);
    assert_eq!(work["type"], "direct");
    assert_eq!(work["durable"], true);
    assert_eq!(work["vhost"], topology.vhost);
    assert_eq!(exchange(&topology.dead_letter_exchange)["type"], "fanout");

    let queue = |name: &str| {
        docs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no queue {name}"))
    };
    let expect_args = |q: &Value, args: Vec<(&str, ArgumentValue)>| {
        let want: serde_json::Map<String, Value> = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), argument(v)))
            .collect();
        assert_eq!(q["arguments"], Value::Object(want), "{}", q["name"]);
        assert_eq!(q["durable"], true);
    };
    expect_args(&queue(&topology.queue), topology.queue_arguments());
    expect_args(
        &queue(&topology.parked_queue),
        topology.parked_queue_arguments(),
    );

    let bindings = docs["bindings"].as_array().unwrap();
    assert!(bindings.iter().any(|b| b["source"] == topology.exchange
        && b["destination"] == topology.queue
        && b["destination_type"] == "queue"
        && b["routing_key"] == topology.routing_key));
    assert!(
        bindings
            .iter()
            .any(|b| b["source"] == topology.dead_letter_exchange
                && b["destination"] == topology.parked_queue)
    );
}
