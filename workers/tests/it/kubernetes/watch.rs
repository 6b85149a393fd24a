//! The pod watcher: hints keep coming through 410s, dropped streams, stalls and error storms.

use std::collections::HashSet;
use std::time::Duration;

use fctf_core::runtime::InstanceRef;
use fctf_workers::runtime::kubernetes::WatchSettings;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::json;

use super::fake_api::FakeApi;
use super::{instance, ns_of, pod, runtime};

fn fast(timeout_secs: u32) -> WatchSettings {
    WatchSettings {
        timeout_secs,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

fn put_running(api: &FakeApi, id: &InstanceRef, name: &str) {
    api.put(
        "pods",
        pod(
            id,
            &ns_of(id),
            name,
            "2026-01-01T00:00:01Z",
            json!({"phase": "Running"}),
        ),
    );
}

/// Waits (bounded) until every one of `want` has been hinted.
async fn expect_hints(hints: &mut BoxStream<'static, InstanceRef>, want: &[InstanceRef]) {
    let mut missing: HashSet<InstanceRef> = want.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        let hint = tokio::time::timeout_at(deadline, hints.next())
            .await
            .unwrap_or_else(|_| panic!("no hint for {missing:?}"))
            .expect("the hint stream never ends");
        missing.remove(&hint);
    }
}

fn list_calls(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .count()
}

#[tokio::test]
async fn hints_follow_adds_changes_and_deletes() {
    let api = FakeApi::start().await;
    let a = instance(1, 1);
    put_running(&api, &a, "a");
    let mut hints = runtime(&api).watch_hints(fast(30));
    expect_hints(&mut hints, &[a]).await; // from the initial list

    let b = instance(2, 1);
    put_running(&api, &b, "b");
    expect_hints(&mut hints, &[b]).await;
    api.remove("pods", &ns_of(&a), "a");
    expect_hints(&mut hints, &[a]).await;

    let watches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert!(!watches.is_empty());
    assert!(
        watches
            .iter()
            .all(|w| w.query["labelSelector"] == "ctf/kind=challenge")
    );
    assert!(
        watches
            .iter()
            .all(|w| w.query["allowWatchBookmarks"] == "true")
    );
}

/// What `fctf listener` runs on a cluster: the pod watch as the listener's change feed.
#[tokio::test]
async fn the_pod_watch_is_the_listeners_change_feed() {
    use fctf_workers::listener::ChangeFeed as _;

    let api = FakeApi::start().await;
    let a = instance(3, 1);
    put_running(&api, &a, "a");
    let feed = runtime(&api).pod_watch(fast(30));
    let mut hints = feed.changes();
    expect_hints(&mut hints, &[a]).await;
    let b = instance(4, 1);
    put_running(&api, &b, "b");
    expect_hints(&mut hints, &[b]).await;
}

#[tokio::test]
async fn a_410_relists_and_finds_pods_deleted_while_the_watch_was_down() {
    let api = FakeApi::start().await;
    let (a, b) = (instance(1, 1), instance(2, 2));
    put_running(&api, &a, "a");
    put_running(&api, &b, "b");
    let mut hints = runtime(&api).watch_hints(fast(30));
    expect_hints(&mut hints, &[a, b]).await;
    assert_eq!(list_calls(&api), 1);

    // While the watch is down, b goes away and the server forgets the history: resuming
    // gets 410 Gone, the watcher relists, and the relist lacks b.
    api.remove("pods", &ns_of(&b), "b");
    api.compact();
    api.drop_watches();
    let c = instance(3, 3);
    put_running(&api, &c, "c");
    expect_hints(&mut hints, &[b, c]).await;
    assert!(list_calls(&api) >= 2, "no relist after the 410");
}

#[tokio::test]
async fn a_dropped_stream_resumes_without_losing_events() {
    let api = FakeApi::start().await;
    let mut hints = runtime(&api).watch_hints(fast(30));
    let a = instance(1, 1);
    put_running(&api, &a, "a");
    expect_hints(&mut hints, &[a]).await;
    for round in 0..3 {
        api.drop_watches();
        let id = instance(10 + round, 1);
        put_running(&api, &id, &format!("p{round}"));
        expect_hints(&mut hints, &[id]).await;
    }
}

#[tokio::test]
async fn error_storms_are_retried_with_backoff() {
    let api = FakeApi::start().await;
    let a = instance(1, 1);
    put_running(&api, &a, "a");
    api.fail_when(500, 3, |r| r.path == "/api/v1/pods" && !r.is_watch());
    api.fail_when(429, 3, |r| r.path == "/api/v1/pods" && !r.is_watch());
    let mut hints = runtime(&api).watch_hints(fast(30));
    expect_hints(&mut hints, &[a]).await;
    // Six refusals, then the list that worked: retried, not hammered.
    assert_eq!(list_calls(&api), 7);
}

#[tokio::test]
async fn a_silent_stall_is_noticed_by_the_idle_timeout() {
    let api = FakeApi::start().await;
    let a = instance(1, 1);
    put_running(&api, &a, "a");
    // Drive the watcher all the time, as the listener does.
    let mut hints = runtime(&api).watch_hints(fast(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(hint) = hints.next().await {
            if tx.send(hint).is_err() {
                return;
            }
        }
    });
    assert_eq!(rx.recv().await, Some(a));

    // Stall the open stream for good (retried until one was open to stall).
    for _ in 0..200 {
        if api.stall_watches() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        api.stalled_streams() >= 1,
        "no watch stream was open to stall"
    );
    let b = instance(2, 2);
    put_running(&api, &b, "b");
    // Only a new watch, after the idle timeout (1 s + kube's 5 s margin), can see b.
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if rx.recv().await == Some(b) {
                return;
            }
        }
    })
    .await;
    driver.abort();
    assert!(got.is_ok(), "the stalled watch was never replaced");
}
