//! The `kubernetes` runtime: what it sends, and how it reads what the cluster says.

use std::time::Duration;

use axum::http::Method;
use fctf_core::runtime::{InstanceRuntime, Phase, RuntimeError};
use serde_json::json;

use super::fake_api::FakeApi;
use super::{STARTED_AT_MS, instance, ns_of, pod, put_platform_secret, runtime, settings, spec};
use fctf_workers::runtime::kubernetes::KubernetesRuntime;

#[tokio::test]
async fn deploy_applies_namespace_first_then_namespaced_objects() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let id = instance(42, 7);
    let ns = ns_of(&id);
    assert_eq!(ns, "team-42-7-web-login-1767225600");

    let placement = rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    assert_eq!(placement.route, ns);

    let writes = api.writes();
    let paths: Vec<&str> = writes.iter().map(|r| r.path.as_str()).collect();
    let expected = [
        format!("/api/v1/namespaces/{ns}"),
        format!("/api/v1/namespaces/{ns}/secrets/global-regcred"),
        format!("/api/v1/namespaces/{ns}/services/{ns}-svc"),
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/default-deny"),
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/allow-gateway"),
        format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/allow-egress"),
        format!("/apis/batch/v1/namespaces/{ns}/jobs/challenge"),
    ];
    assert_eq!(paths, expected);
    for write in &writes {
        assert_eq!(write.method, Method::PATCH, "{}", write.path);
        assert_eq!(
            write.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            write.query.get("fieldManager").map(String::as_str),
            Some("fctf")
        );
        assert_eq!(write.query.get("force").map(String::as_str), Some("true"));
    }

    // The namespace carries the lifecycle labels.
    let namespace = &writes[0].body.as_ref().unwrap();
    let labels = &namespace["metadata"]["labels"];
    assert_eq!(labels["ctf/kind"], "challenge");
    assert_eq!(labels["ctf/team"], "42");
    assert_eq!(labels["ctf/challenge"], "7");
    assert_eq!(labels["ctf/instance"], id.instance.to_string());
    assert_eq!(
        labels["ctf/expiry"],
        (STARTED_AT_MS / 1000 + 3600).to_string()
    );

    // The secret copy has the data and type, nothing the cluster set on the original.
    let secret = writes[1].body.as_ref().unwrap();
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(secret["data"][".dockerconfigjson"], "eyJhdXRocyI6e319");
    assert!(secret["metadata"]["uid"].is_null());
    assert!(secret["metadata"]["resourceVersion"].is_null());
    assert!(secret["metadata"]["annotations"].is_null());

    // Service: 3333 -> container port, selecting this instance only.
    let svc = writes[2].body.as_ref().unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["port"], 3333);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8000);
    assert_eq!(
        svc["spec"]["selector"]["ctf/instance"],
        id.instance.to_string()
    );

    let job = writes[6].body.as_ref().unwrap();
    let job_spec = &job["spec"];
    // The lifetime plus the margin: the cluster's kill is a backstop behind the listener's.
    assert_eq!(
        job_spec["activeDeadlineSeconds"],
        3600 + fctf_core::runtime::DEADLINE_MARGIN.as_secs()
    );
    assert_eq!(job_spec["ttlSecondsAfterFinished"], 60);
    let pod_spec = &job_spec["template"]["spec"];
    assert_eq!(pod_spec["automountServiceAccountToken"], false);
    assert!(pod_spec["runtimeClassName"].is_null());
    assert_eq!(pod_spec["imagePullSecrets"][0]["name"], "global-regcred");
    let container = &pod_spec["containers"][0];
    assert_eq!(container["image"], "registry.example/web-login:1");
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(container["resources"]["requests"]["cpu"], "500m");
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 8000);
    assert_eq!(
        container["env"],
        json!([{"name": "FLAG", "value": "fctf{test}"}])
    );
    assert!(container["securityContext"]["readOnlyRootFilesystem"].is_null());
    assert_eq!(
        job_spec["template"]["metadata"]["labels"]["ctf/kind"],
        "challenge"
    );
}

#[tokio::test]
async fn gvisor_and_harden_change_the_pod() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let id = instance(1, 2);
    let mut s = spec();
    s.use_gvisor = true;
    s.harden = true;
    rt.deploy(&id, &s, STARTED_AT_MS).await.unwrap();
    let job = api
        .object("jobs", &ns_of(&id), "challenge")
        .expect("job applied");
    let pod_spec = &job["spec"]["template"]["spec"];
    assert_eq!(pod_spec["runtimeClassName"], "gvisor");
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &pod_spec["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
}

#[tokio::test]
async fn redeploy_is_idempotent() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let id = instance(3, 4);
    let first = rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    let counts = |api: &FakeApi| {
        [
            "namespaces",
            "secrets",
            "services",
            "networkpolicies",
            "jobs",
        ]
        .map(|r| api.count(r))
    };
    let after_first = counts(&api);
    assert_eq!(after_first, [1, 2, 1, 3, 1]);
    let job_version =
        api.object("jobs", &ns_of(&id), "challenge").unwrap()["metadata"]["resourceVersion"]
            .clone();

    let second = rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(counts(&api), after_first);
    // Nothing changed, so nothing got a new version.
    assert_eq!(
        api.object("jobs", &ns_of(&id), "challenge").unwrap()["metadata"]["resourceVersion"],
        job_version
    );
}

#[tokio::test]
async fn deploy_without_the_platform_pull_secret_is_unavailable() {
    let api = FakeApi::start().await;
    let rt = runtime(&api);
    let err = rt
        .deploy(&instance(1, 1), &spec(), STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Unavailable(m) if m.contains("global-regcred")),
        "{err:?}"
    );

    // With no pull secret configured, none is read or copied.
    let mut s = settings();
    s.image_pull_secret = None;
    let rt = KubernetesRuntime::new(api.client(), s);
    let id = instance(1, 2);
    rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    let job = api.object("jobs", &ns_of(&id), "challenge").unwrap();
    assert!(job["spec"]["template"]["spec"]["imagePullSecrets"].is_null());
}

#[tokio::test]
async fn api_refusals_and_overload_map_to_rejected_and_unavailable() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    api.fail_when(422, 1, |r| r.path.ends_with("/jobs/challenge"));
    let err = rt
        .deploy(&instance(5, 5), &spec(), STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Rejected(_)), "{err:?}");

    api.fail_when(429, 1, |r| r.method == Method::PATCH);
    let err = rt
        .deploy(&instance(5, 6), &spec(), STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");

    let mut no_image = spec();
    no_image.image = None;
    let err = rt
        .deploy(&instance(5, 7), &no_image, STARTED_AT_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Rejected(_)), "{err:?}");
}

#[tokio::test]
async fn remove_deletes_the_namespace_and_gone_is_ok() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let a = instance(8, 9);
    let b = instance(8, 9); // same team and challenge, another instance
    rt.deploy(&a, &spec(), STARTED_AT_MS).await.unwrap();
    let mut later = spec();
    later.challenge_name = "Web Login".to_owned();
    rt.deploy(&b, &later, STARTED_AT_MS + 5_000).await.unwrap();
    let ns_a = ns_of(&a);
    assert_eq!(api.count("namespaces"), 2);

    api.clear_requests();
    rt.remove(&a).await.unwrap();
    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::DELETE);
    assert_eq!(writes[0].path, format!("/api/v1/namespaces/{ns_a}"));
    assert!(api.object("namespaces", "", &ns_a).is_none());
    // Instance b, of the same team and challenge, is untouched.
    assert_eq!(api.count("namespaces"), 1);
    assert_eq!(api.count("jobs"), 1);

    // Already gone: Ok, and nothing deleted.
    api.clear_requests();
    rt.remove(&a).await.unwrap();
    assert!(api.writes().is_empty());

    // Gone between the list and the delete: the 404 is Ok too.
    api.fail_when(404, 1, |r| r.method == Method::DELETE);
    rt.remove(&b).await.unwrap();
    // A 500 on delete is an error.
    api.fail_when(500, 1, |r| r.method == Method::DELETE);
    assert!(matches!(
        rt.remove(&b).await,
        Err(RuntimeError::Unavailable(_))
    ));
}

/// Five pods in five states, listed two per page.
fn put_pods(api: &FakeApi) -> [fctf_core::runtime::InstanceRef; 5] {
    let ids = [
        instance(1, 10),
        instance(2, 10),
        instance(3, 10),
        instance(-1, 10),
        instance(5, 10),
    ];
    let ns: Vec<String> = ids.iter().map(ns_of).collect();
    api.put(
        "pods",
        pod(
            &ids[0],
            &ns[0],
            "ready",
            "2026-01-01T00:00:01Z",
            json!({
                "phase": "Running", "startTime": "2026-01-01T00:00:02Z",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:05Z"}],
                "containerStatuses": [{"name": "challenge", "image": "x", "imageID": "",
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:02Z"}}}],
            }),
        ),
    );
    api.put(
        "pods",
        pod(
            &ids[1],
            &ns[1],
            "pull",
            "2026-01-01T00:00:02Z",
            json!({
                "phase": "Pending",
                "containerStatuses": [{"name": "challenge", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
            }),
        ),
    );
    api.put(
        "pods",
        pod(
            &ids[2],
            &ns[2],
            "crash",
            "2026-01-01T00:00:03Z",
            json!({
                "phase": "Running", "startTime": "2026-01-01T00:00:04Z",
                "conditions": [{"type": "Ready", "status": "False",
                    "lastTransitionTime": "2026-01-01T00:00:09Z"}],
                "containerStatuses": [{"name": "challenge", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 3, "started": false,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
            }),
        ),
    );
    api.put(
        "pods",
        pod(
            &ids[3],
            &ns[3],
            "done",
            "2026-01-01T00:00:04Z",
            json!({
                "phase": "Failed", "reason": "DeadlineExceeded",
                "containerStatuses": [{"name": "challenge", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137,
                        "finishedAt": "2026-01-01T01:00:04Z"}}}],
            }),
        ),
    );
    // A deleting pod.
    let mut deleting = pod(
        &ids[4],
        &ns[4],
        "bye",
        "2026-01-01T00:00:05Z",
        json!({
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
        }),
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
    api.put("pods", deleting);
    // Not ours: no label, and a labelled pod in a namespace that is not an instance's.
    let mut other = pod(
        &ids[0],
        "kube-system",
        "dns",
        "2026-01-01T00:00:00Z",
        json!({}),
    );
    other["metadata"]["labels"] = json!({"k8s-app": "kube-dns"});
    api.put("pods", other);
    api.put(
        "pods",
        pod(
            &ids[0],
            "default",
            "stray",
            "2026-01-01T00:00:00Z",
            json!({"phase": "Running"}),
        ),
    );
    ids
}

#[tokio::test]
async fn snapshot_pages_through_every_pod_and_maps_states() {
    let api = FakeApi::start().await;
    let rt = runtime(&api).with_page_size(2);
    let ids = put_pods(&api);

    let snap = rt.snapshot().await.unwrap();
    let lists: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    // 6 labelled pods, 2 per page: 3 pages, each after the previous page's token.
    assert_eq!(lists.len(), 3);
    assert!(lists.iter().all(|r| r.query["limit"] == "2"));
    assert!(
        lists
            .iter()
            .all(|r| r.query["labelSelector"] == "ctf/kind=challenge")
    );
    assert!(!lists[0].query.contains_key("continue"));
    assert!(lists[1].query.contains_key("continue"));
    assert!(lists[2].query.contains_key("continue"));

    assert_eq!(snap.len(), 5, "{snap:#?}");
    let by = |i: usize| snap.iter().find(|o| o.id == ids[i]).unwrap();
    let t0 = STARTED_AT_MS;

    let ready = by(0);
    assert_eq!(ready.phase, Phase::Started { ready: true });
    assert_eq!(ready.route.as_deref(), Some(ns_of(&ids[0]).as_str()));
    assert_eq!(ready.created_at_ms, t0 + 1_000);
    assert_eq!(ready.phase_since_ms, t0 + 5_000);
    assert_eq!(ready.lifetime, Duration::from_secs(3600));
    assert!(!ready.terminating);

    let pull = by(1);
    assert_eq!(pull.phase, Phase::Creating);
    assert_eq!(pull.waiting_reason.as_deref(), Some("ImagePullBackOff"));
    assert_eq!(pull.phase_since_ms, t0 + 2_000);

    let crash = by(2);
    assert_eq!(crash.phase, Phase::Started { ready: false });
    assert_eq!(crash.restarts, 3);
    assert_eq!(crash.waiting_reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(crash.phase_since_ms, t0 + 9_000);

    let done = by(3);
    assert_eq!(done.id.team, fctf_core::ids::TeamId::SHARED);
    assert_eq!(done.phase, Phase::Ended { succeeded: false });
    assert_eq!(done.phase_since_ms, t0 + 3_604_000);

    assert!(by(4).terminating);

    // Not ready and not ended: the pulling and the crashing one.
    assert_eq!(rt.in_progress().await.unwrap(), 2);
}

#[tokio::test]
async fn a_failure_mid_list_fails_the_whole_snapshot() {
    for code in [500, 429, 410] {
        let api = FakeApi::start().await;
        let rt = runtime(&api).with_page_size(2);
        put_pods(&api);
        api.fail_when(code, 1, |r| {
            r.path == "/api/v1/pods" && r.query.contains_key("continue")
        });
        let err = rt.snapshot().await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::Unavailable(_)),
            "{code}: {err:?}"
        );
        // The fault is spent: the next snapshot is complete again.
        assert_eq!(rt.snapshot().await.unwrap().len(), 5);
    }
}

#[tokio::test]
async fn logs_come_from_the_newest_pod_of_the_instance() {
    let api = FakeApi::start().await;
    let rt = runtime(&api);
    let id = instance(4, 4);
    let ns = ns_of(&id);
    api.put(
        "pods",
        pod(
            &id,
            &ns,
            "old",
            "2026-01-01T00:00:01Z",
            json!({"phase": "Failed"}),
        ),
    );
    api.put(
        "pods",
        pod(
            &id,
            &ns,
            "new",
            "2026-01-01T00:01:00Z",
            json!({"phase": "Running"}),
        ),
    );
    api.set_logs(&ns, "old", "stale\n");
    api.set_logs(&ns, "new", "one\ntwo\nthree\n");

    assert_eq!(rt.logs(&id, 2).await.unwrap(), "two\nthree\n");
    let log_request = api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .unwrap();
    assert_eq!(
        log_request.path,
        format!("/api/v1/namespaces/{ns}/pods/new/log")
    );
    assert_eq!(log_request.query["container"], "challenge");
    assert_eq!(log_request.query["tailLines"], "2");

    assert!(matches!(
        rt.logs(&instance(4, 4), 10).await,
        Err(RuntimeError::NotFound)
    ));
}

#[tokio::test]
async fn an_extension_moves_the_cluster_deadline_and_the_expiry_label() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let id = instance(6, 6);
    rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    api.clear_requests();

    rt.set_deadline(&id, STARTED_AT_MS + 5_400_000)
        .await
        .unwrap();
    let writes = api.writes();
    assert_eq!(writes.len(), 2);
    assert!(writes.iter().all(|w| w.method == Method::PATCH
        && w.content_type.as_deref() == Some("application/merge-patch+json")));
    let ns = ns_of(&id);
    let job = api.object("jobs", &ns, "challenge").unwrap();
    assert!(job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() >= 5400);
    // The rest of the Job is untouched.
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 60);
    let namespace = api.object("namespaces", "", &ns).unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["ctf/expiry"],
        (STARTED_AT_MS / 1000 + 5400).to_string()
    );
    assert_eq!(namespace["metadata"]["labels"]["ctf/kind"], "challenge");

    assert!(matches!(
        rt.set_deadline(&instance(6, 7), STARTED_AT_MS).await,
        Err(RuntimeError::NotFound)
    ));
}

#[tokio::test]
async fn a_moved_deadline_counts_from_the_jobs_start_plus_the_margin() {
    let api = FakeApi::start().await;
    put_platform_secret(&api);
    let rt = runtime(&api);
    let id = instance(6, 8);
    rt.deploy(&id, &spec(), STARTED_AT_MS).await.unwrap();
    let ns = ns_of(&id);
    // The fake stamps creationTimestamp 2026-01-01T00:00:00Z; the Job started 10 s later.
    let created_ms: u64 = 1_767_225_600_000;
    let mut job = api.object("jobs", &ns, "challenge").unwrap();
    job["status"] = json!({"startTime": "2026-01-01T00:00:10Z"});
    api.put("jobs", job);
    api.clear_requests();

    let ends_at_ms = created_ms + 10_000 + 3_600_500;
    let dyn_rt: &dyn InstanceRuntime = &rt;
    dyn_rt.set_deadline(&id, ends_at_ms).await.unwrap();
    let writes = api.writes();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert!(writes.iter().all(|w| w.method == Method::PATCH
        && w.content_type.as_deref() == Some("application/merge-patch+json")));
    let job = api.object("jobs", &ns, "challenge").unwrap();
    // 3600.5 s after the start, rounded up, plus the backstop margin.
    let margin = fctf_core::runtime::DEADLINE_MARGIN.as_secs();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 3601 + margin);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 60);
    let namespace = api.object("namespaces", "", &ns).unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["ctf/expiry"],
        ends_at_ms.div_ceil(1000).to_string()
    );

    // A Job not started yet counts from its creation (no later than its start).
    let mut job = api.object("jobs", &ns, "challenge").unwrap();
    job["status"] = json!({});
    api.put("jobs", job);
    dyn_rt
        .set_deadline(&id, created_ms + 7_200_000)
        .await
        .unwrap();
    let job = api.object("jobs", &ns, "challenge").unwrap();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 7200 + margin);

    assert!(matches!(
        dyn_rt.set_deadline(&instance(6, 9), ends_at_ms).await,
        Err(RuntimeError::NotFound)
    ));
}
