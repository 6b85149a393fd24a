//! What a challenge pod says about its instance: a pure mapping from [`Pod`] to [`Observed`].

use std::collections::HashMap;
use std::time::Duration;

use fctf_core::ids::InstanceId;
use fctf_core::naming;
use fctf_core::runtime::{InstanceRef, Observed, Phase};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::manifest::{ANNOTATION_LIFETIME, LABEL_INSTANCE};

/// The instance a pod belongs to: team and challenge from its namespace's name, the instance
/// from its label. `None` for a pod that is not one of ours.
pub fn instance_of_pod(pod: &Pod) -> Option<InstanceRef> {
    let ns = pod.metadata.namespace.as_deref()?;
    let parsed = naming::parse_namespace(ns).ok()?;
    let instance: InstanceId = pod
        .metadata
        .labels
        .as_ref()?
        .get(LABEL_INSTANCE)?
        .parse()
        .ok()?;
    Some(InstanceRef {
        team: parsed.team,
        challenge: parsed.challenge,
        instance,
    })
}

fn millis(t: Option<&Time>) -> Option<u64> {
    t.and_then(|t| u64::try_from(t.0.as_millisecond()).ok())
}

/// The instance as `pod` shows it; `None` for a pod that is not one of ours.
pub fn observe_pod(pod: &Pod) -> Option<Observed> {
    let id = instance_of_pod(pod)?;
    let created_at_ms = millis(pod.metadata.creation_timestamp.as_ref()).unwrap_or(0);
    let status = pod.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let restarts = statuses
        .iter()
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .fold(0u32, u32::saturating_add);
    let waiting_reason = statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .next();
    let ready_condition = status
        .and_then(|s| s.conditions.as_deref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let ready = ready_condition.is_some_and(|c| c.status == "True");
    let ready_since = millis(ready_condition.and_then(|c| c.last_transition_time.as_ref()));
    let finished = statuses
        .iter()
        .filter_map(|c| millis(c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()))
        .max();
    let started = millis(status.and_then(|s| s.start_time.as_ref()));
    let pod_phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let any_started = statuses.iter().any(|c| c.started == Some(true) || c.ready);

    let (phase, since) = match pod_phase {
        "Succeeded" => (Phase::Ended { succeeded: true }, finished.or(ready_since)),
        "Failed" => {
            let deadline = status.and_then(|s| s.reason.as_deref()) == Some("DeadlineExceeded");
            let phase = if deadline {
                Phase::Ended { succeeded: false }
            } else {
                Phase::Failed
            };
            (phase, finished.or(ready_since))
        }
        "Running" => (Phase::Started { ready }, ready_since.or(started)),
        // Pending (pulling, scheduling, creating) and Unknown (node lost).
        _ if any_started => (Phase::Started { ready }, ready_since.or(started)),
        _ => (Phase::Creating, Some(created_at_ms)),
    };
    let lifetime = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_LIFETIME))
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    Some(Observed {
        route: pod.metadata.namespace.clone(),
        id,
        phase,
        restarts,
        waiting_reason,
        created_at_ms,
        phase_since_ms: since.unwrap_or(created_at_ms),
        lifetime,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// One [`Observed`] per instance from every pod listed: a Job that replaced its pod has two for
/// a while, and the newest tells what the instance does now.
pub fn observe_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Observed> {
    let mut by_instance: HashMap<InstanceRef, Observed> = HashMap::new();
    for observed in pods.into_iter().filter_map(observe_pod) {
        match by_instance.get(&observed.id) {
            Some(kept) if kept.created_at_ms >= observed.created_at_ms => {}
            _ => {
                by_instance.insert(observed.id, observed);
            }
        }
    }
    let mut out: Vec<Observed> = by_instance.into_values().collect();
    out.sort_by_key(|o| (o.created_at_ms, o.id.instance.0));
    out
}

/// True while the pod's instance counts as a deployment in progress (not ready, not ended).
pub fn is_in_progress(observed: &Observed) -> bool {
    matches!(
        observed.phase,
        Phase::Creating | Phase::Started { ready: false }
    ) && !observed.terminating
}
