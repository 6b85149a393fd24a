//! Instances through the Deployment Center contract: start carries the team's dynamic flag and
//! the quota in force, captain-only start, a solve or the last attempt stops the instance, and
//! a submitted copy of another team's flag is recorded as a flag-sharing event.

use axum::http::{Method, StatusCode};
use fctf_control::contestant::accounts::testkit::DeploymentCall;
use serde_json::json;

use super::support::{Backend, Env, on_both, outcome};

fn instance_challenge(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"name": "Web Inst", "category": "web", "description": "d", "value": 100,
                          "image": "registry.local/web:1", "port": 8080, "cpu_millicores": 250,
                          "memory_mib": 128, "lifetime_secs": 900, "protocol": "http",
                          "team_flag": true, "harden": true});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

async fn instances_reach_the_deployment_center(backend: Backend) {
    let env = Env::new(backend, &[("instances_per_team", json!(2))]).await;
    let id = env.challenge(instance_challenge(json!({}))).await;
    let captain = env.player("cap", "inst-team").await;
    let member = env.player("mem", "inst-team").await;
    let other = env.player("other", "other-team").await;
    let uri = format!("/api/v1/challenges/{id}/instance");

    // Captain-only start is the default.
    let (s, answer) = env.call(Method::POST, &uri, Some(&member), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{answer}");
    let (s, answer) = env.call(Method::POST, &uri, Some(&captain), None).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["state"], "queued");
    let start = env
        .deployment
        .calls()
        .into_iter()
        .find_map(|c| match c {
            DeploymentCall::Start(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let team = captain.team_id.unwrap();
    assert_eq!(start.key.team.0, team);
    assert_eq!(start.key.challenge.0, id);
    assert_eq!(start.quota, 2);
    assert_eq!(start.spec.image.as_deref(), Some("registry.local/web:1"));
    assert_eq!(start.spec.container_port, 8080);
    assert_eq!(start.spec.cpu_millicores, 250);
    assert_eq!(start.spec.memory_mib, 128);
    assert_eq!(start.spec.lifetime_secs, 900);
    assert!(start.spec.harden);
    let flag = start.spec.env.get("FLAG").cloned().unwrap();
    assert!(flag.starts_with("FCTF{") && flag.ends_with('}'));
    assert_eq!(flag, env.state.play.team_flag(team, id));

    // Status and extend reach it too; a member may read the status.
    let (s, _) = env.call(Method::GET, &uri, Some(&member), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env
        .call(Method::POST, &format!("{uri}/extend"), Some(&captain), None)
        .await;
    assert_eq!(s, StatusCode::OK);

    // Another team's copy of the flag is wrong for it and recorded as flag sharing.
    assert_eq!(outcome(&env.submit(&other, id, &flag).await.1), "incorrect");
    let (_, cheats) = env
        .call(Method::GET, "/api/v1/cheats", Some(&env.admin), None)
        .await;
    let event = &cheats["data"][0];
    assert_eq!(event["team_id"], other.team_id.unwrap());
    assert_eq!(event["flag_owner_team_id"], team);
    assert_eq!(event["challenge_id"], id);
    let (s, _) = env
        .call(Method::GET, "/api/v1/cheats", Some(&captain), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The owner's flag solves it, and the solve stops the team's instance.
    assert_eq!(outcome(&env.submit(&member, id, &flag).await.1), "correct");
    let stops: Vec<_> = env
        .deployment
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            DeploymentCall::Stop(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 1);
    assert_eq!((stops[0].key.team.0, stops[0].key.challenge.0), (team, id));
    // No new instance after the solve.
    let (s, _) = env.call(Method::POST, &uri, Some(&captain), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // The team's action log shows what its members did, newest first.
    let (_, log) = env
        .call(Method::GET, "/api/v1/actions", Some(&member), None)
        .await;
    let log: Vec<String> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        log,
        vec!["submit_correct", "instance_extend", "instance_start"]
    );
    let (_, other_log) = env
        .call(Method::GET, "/api/v1/actions", Some(&other), None)
        .await;
    assert_eq!(other_log["data"][0]["action"], "submit_incorrect");
    assert_eq!(other_log["data"].as_array().unwrap().len(), 1);
    // Admin list and force stop.
    let (s, list) = env
        .call(Method::GET, "/api/v1/instances", Some(&env.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (s, _) = env
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{team}/{id}"),
            Some(&env.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    env.finish().await;
}

on_both!(instances_reach_the_deployment_center);

#[tokio::test]
async fn the_last_wrong_attempt_stops_the_instance_and_members_may_start_when_allowed() {
    let env = Env::new(Backend::Sqlite, &[("captain_only_start", json!(false))]).await;
    let id = env
        .challenge(instance_challenge(json!({"max_attempts": 2})))
        .await;
    let _captain = env.player("c2", "t2").await;
    let member = env.player("m2", "t2").await;
    let uri = format!("/api/v1/challenges/{id}/instance");
    let (s, _) = env.call(Method::POST, &uri, Some(&member), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        outcome(&env.submit(&member, id, "no1").await.1),
        "incorrect"
    );
    let stops = |env: &Env| {
        env.deployment
            .calls()
            .iter()
            .filter(|c| matches!(c, DeploymentCall::Stop(_)))
            .count()
    };
    assert_eq!(stops(&env), 0);
    assert_eq!(
        outcome(&env.submit(&member, id, "no2").await.1),
        "incorrect"
    );
    assert_eq!(stops(&env), 1);
    let (s, _) = env.call(Method::POST, &uri, Some(&member), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A challenge without an instance has no instance route.
    let plain = env
        .challenge(json!({"name": "plain", "description": "d", "value": 1}))
        .await;
    let (s, _) = env
        .call(
            Method::POST,
            &format!("/api/v1/challenges/{plain}/instance"),
            Some(&member),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.finish().await;
}
