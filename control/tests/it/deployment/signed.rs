//! Every instance route, the workflow callback included, refuses requests that are unsigned,
//! forged, stale, tampered with or replayed, with 401 and the one JSON error shape; the probes
//! stay unsigned.

use axum::body::Body;
use fctf_control::deployment::contract::{InstanceTarget, WorkflowCallback, WorkflowPhase, paths};
use fctf_core::ids::InstanceId;
use fctf_core::signing::{self, SigningKey};
use http::{Request, StatusCode};

use super::fixture::{Backend, Harness, key, now_secs, signed_request, signed_with, start_request};

fn status_body() -> Vec<u8> {
    serde_json::to_vec(&InstanceTarget {
        key: key(7, 1),
        instance: None,
    })
    .unwrap()
}

const ALL_ROUTES: [&str; 8] = [
    paths::START,
    paths::STOP,
    paths::STOP_ALL,
    paths::STATUS,
    paths::EXTEND,
    paths::LIST,
    paths::LOGS,
    paths::WORKFLOW_CALLBACK,
];

#[tokio::test]
async fn unsigned_requests_are_refused_on_every_route() {
    let h = Backend::Memory.harness("unsigned", 300).await;
    for path in ALL_ROUTES {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        h.send(request)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(h.ready_jobs().await, 0);
}

#[tokio::test]
async fn forged_stale_tampered_and_replayed_requests_are_refused() {
    for backend in [Backend::Memory, Backend::Real] {
        let h = Backend::harness(backend, "forged", 300).await;
        let body = status_body();

        // Signed with a secret the center does not hold, under the right key id.
        let forger = SigningKey::new("s1", b"not-the-deployment-center-secret-at-all!").unwrap();
        let forged = signed_with(
            &forger,
            paths::STATUS,
            &body,
            now_secs(),
            &signing::new_nonce(),
        );
        let answer = h.send(forged).await;
        answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(answer.body["message"], "bad request signature");

        // Correctly signed, ten minutes ago (the window is one minute).
        let stale = signed_request(paths::STATUS, &body, now_secs() - 600);
        let answer = h.send(stale).await;
        answer.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            answer.body["message"],
            "request timestamp outside the allowed window"
        );

        // Signed for one body, sent with another (the quota raised from 1 to 100).
        let signed_for = serde_json::to_vec(&start_request(key(7, 1), 1)).unwrap();
        let sent = serde_json::to_vec(&start_request(key(7, 1), 100)).unwrap();
        let mut tampered = signed_request(paths::START, &signed_for, now_secs());
        *tampered.body_mut() = Body::from(sent);
        h.send(tampered)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

        // Signed for another route.
        let mut rerouted = signed_request(paths::STATUS, &body, now_secs());
        *rerouted.uri_mut() = paths::STOP.parse().unwrap();
        h.send(rerouted)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

        // A genuine request passes once; the same bytes again are a replay.
        let nonce = signing::new_nonce();
        let at = now_secs();
        let first = h
            .send(signed_with(
                &super::fixture::signing_key(),
                paths::STATUS,
                &body,
                at,
                &nonce,
            ))
            .await;
        assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
        assert_eq!(first.body["state"], serde_json::Value::Null);
        let again = h
            .send(signed_with(
                &super::fixture::signing_key(),
                paths::STATUS,
                &body,
                at,
                &nonce,
            ))
            .await;
        again.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(again.body["message"], "request already seen");

        // Nothing got through to the queue.
        assert_eq!(h.ready_jobs().await, 0, "{backend:?}");
        let metrics = metrics_text(&h).await;
        for kind in ["bad_signature", "skewed", "replayed"] {
            assert!(
                metrics.contains(&format!(
                    "fctf_deployment_refusals_total{{kind=\"signature_{kind}\"}}"
                )),
                "{metrics}"
            );
        }
    }
}

#[tokio::test]
async fn the_workflow_callback_is_signed_too() {
    let h = Backend::Memory.harness("callback-signed", 300).await;
    let callback = WorkflowCallback {
        team: key(7, 1).team,
        challenge: key(7, 1).challenge,
        instance: InstanceId::new(),
        workflow: "start-chal-v2-abc".to_owned(),
        status: WorkflowPhase::Failed,
        message: Some("boom".to_owned()),
    };
    let body = serde_json::to_vec(&callback).unwrap();
    let unsigned = Request::post(paths::WORKFLOW_CALLBACK)
        .body(Body::from(body.clone()))
        .unwrap();
    h.send(unsigned)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Signed, about an instance that has no record: accepted as a request, refused as unknown.
    h.send(signed_request(paths::WORKFLOW_CALLBACK, &body, now_secs()))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn probes_and_metrics_are_unsigned_and_unknown_routes_answer_the_error_shape() {
    let h = Backend::Memory.harness("probes", 300).await;
    for path in ["/healthz", "/readyz"] {
        let answer = h
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    h.post(
        paths::STATUS,
        &InstanceTarget {
            key: key(1, 1),
            instance: None,
        },
    )
    .await;
    let text = metrics_text(&h).await;
    assert!(
        text.contains(
            "fctf_deployment_requests_total{route=\"/v1/instances/status\",status=\"200\"} 1"
        ),
        "{text}"
    );
    let answer = h
        .send(Request::get("/nope").body(Body::empty()).unwrap())
        .await;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let h = Backend::Memory.harness("malformed", 300).await;
    let answer = h
        .send(signed_request(paths::START, b"{\"key\":1}", now_secs()))
        .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "bad_request");
}

async fn metrics_text(h: &Harness) -> String {
    let answer = h
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    answer.body.as_str().unwrap().to_owned()
}
