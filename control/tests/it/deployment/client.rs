//! `DeploymentClient` end to end against `serve` on a loopback port: the same answers as the
//! in-process center, errors decoded back into the same `ApiError`, transport failures as
//! `Unavailable`, and a graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use fctf_control::deployment::contract::{DeploymentControl, ExtendRequest, InstanceTarget};
use fctf_control::deployment::{DeploymentClient, serve};
use fctf_control::error::ErrorKind;
use fctf_core::ids::TeamId;
use fctf_core::signing::SigningKey;
use fctf_core::store::DeploymentState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::fixture::{Backend, Harness, key, now_ms, signing_key, start_request};

/// Serves `h`'s center on a loopback port; returns its base URL, the shutdown trigger and the
/// server task.
async fn served(
    h: &Harness,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&h.center), async move {
        let _ = stopped.await;
    }));
    (base, stop, server)
}

#[tokio::test]
async fn the_client_drives_a_served_center_end_to_end() {
    for backend in [Backend::Memory, Backend::Real] {
        let h = backend.harness("client", 300).await;
        let (base, stop, server) = served(&h).await;
        let client = DeploymentClient::new(&base, signing_key()).unwrap();
        let k = key(7, 1);

        let started = client.start(&start_request(k, 1)).await.unwrap();
        assert_eq!(started.state, Some(DeploymentState::Queued));
        assert_eq!(started.queue_position, Some(0));
        let instance = started.instance.unwrap();
        assert_eq!(h.record(k).await.unwrap().instance, instance);

        // Errors come back as the same ApiError the center answered.
        let refused = client
            .start(&start_request(key(7, 2), 1))
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::QuotaExceeded, "{backend:?}");
        assert!(
            refused.message.contains("stop one first"),
            "{}",
            refused.message
        );

        h.set_running(k, now_ms() + 10 * 60_000).await;
        let target = InstanceTarget {
            key: k,
            instance: Some(instance),
        };
        let status = client.status(&target).await.unwrap();
        assert_eq!(status.state, Some(DeploymentState::Running));
        let access = status.access.expect("access once running");
        assert!(access.http_url.ends_with(&access.token));
        let extended = client
            .extend(&ExtendRequest {
                target,
                contest_ends_at_ms: None,
            })
            .await
            .unwrap();
        assert_eq!(extended.extensions_left, Some(1));

        let listed = client.list(Some(TeamId(7)), 10, 0).await.unwrap();
        assert_eq!(listed.len(), 1);
        let logs = client.logs(&target, 10).await.unwrap_err();
        assert_eq!(logs.kind, ErrorKind::Unavailable);

        let stopped = client.stop(&target).await.unwrap();
        assert_eq!(stopped.state, Some(DeploymentState::Stopping));
        let stale = client
            .stop(&InstanceTarget {
                key: k,
                instance: Some(fctf_core::ids::InstanceId::new()),
            })
            .await
            .unwrap_err();
        assert_eq!(stale.kind, ErrorKind::Conflict);
        assert_eq!(client.stop_all().await.unwrap(), 0);

        // A caller with the wrong secret is refused.
        let forger = SigningKey::new("s1", &[1u8; 32]).unwrap();
        let intruder = DeploymentClient::new(&base, forger).unwrap();
        assert_eq!(
            intruder.status(&target).await.unwrap_err().kind,
            ErrorKind::Unauthorized
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("graceful shutdown")
            .unwrap()
            .unwrap();
        // Gone: a transport failure is Unavailable.
        let gone = client.status(&target).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::Unavailable);
        assert_eq!(gone.retry_after, Some(2));
    }
}

#[tokio::test]
async fn retry_after_survives_the_round_trip() {
    let h = Backend::Memory.harness("client-full", 1).await;
    let (base, _stop, _server) = served(&h).await;
    let client = DeploymentClient::new(&base, signing_key()).unwrap();
    client.start(&start_request(key(7, 1), 5)).await.unwrap();
    let full = client
        .start(&start_request(key(7, 2), 5))
        .await
        .unwrap_err();
    assert_eq!(full.kind, ErrorKind::QueueFull);
    assert_eq!(full.retry_after, Some(10));
}

/// What `fctf deployment-center` does: `run` from a config, reached by a client built from the
/// same config (the embedded default generates the keys both sides share).
#[tokio::test]
async fn run_and_client_from_one_config() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let toml = format!(
        "[deployment]\nlisten = \"127.0.0.1:{port}\"\n\
         [contestant]\ndeployment_center_url = \"http://127.0.0.1:{port}\"\n"
    );
    let config = fctf_core::config::load(&toml, &fctf_core::config::MapSource::new()).unwrap();
    let store: Arc<dyn fctf_core::store::StateStore> =
        Arc::new(fctf_core::store::MemoryStore::new());
    let queue: Arc<dyn fctf_core::queue::JobQueue> =
        Arc::new(fctf_core::queue::MemoryQueue::new(&Default::default()));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = {
        let config = config.clone();
        tokio::spawn(async move {
            fctf_control::deployment::run(&config, store, queue, None, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    let client = DeploymentClient::from_config(&config).unwrap();
    let mut started = None;
    for _ in 0..100 {
        match client.start(&start_request(key(7, 1), 3)).await {
            Ok(status) => {
                started = Some(status);
                break;
            }
            Err(e) if e.kind == ErrorKind::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        started.expect("the server came up").state,
        Some(DeploymentState::Queued)
    );

    // Keys of another deployment do not open it.
    let stranger = fctf_control::deployment::CenterKeys::ephemeral();
    let base = format!("http://127.0.0.1:{port}");
    let signing = stranger.signing.get("s1").unwrap().clone();
    let intruder = DeploymentClient::new(&base, signing).unwrap();
    let refused = intruder
        .status(&InstanceTarget {
            key: key(7, 1),
            instance: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorized);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
