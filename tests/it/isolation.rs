//! T74, the local runtime's isolation. The `local` runtime runs challenges as ordinary processes
//! on the platform's host, so a challenge can reach whatever listens on loopback (Redis and
//! MariaDB included). No mitigation is built in; the plan's alternative holds instead: the
//! operations guide states the limitation and its mitigations. Both halves are checked: the
//! limitation is real (a challenge process connects to a loopback port of the test's), so the
//! section cannot silently become wrong the other way either, and the section is there.

use std::collections::BTreeMap;
use std::time::Duration;

use fctf_core::ids::{ChallengeId, InstanceId, TeamId};
use fctf_core::queue::DeploySpec;
use fctf_core::runtime::{InstanceRef, InstanceRuntime as _};
use fctf_workers::runtime::local::{LocalRuntime, LocalSettings};

use super::{Scratch, repo_path};

#[test]
fn the_operations_guide_states_that_the_local_runtime_is_not_a_sandbox() {
    let guide = std::fs::read_to_string(repo_path("docs/operations.md")).unwrap();
    let section = guide
        .split("\n## ")
        .find(|s| s.starts_with("The `local` runtime is not a sandbox"))
        .expect("docs/operations.md has the section \"The `local` runtime is not a sandbox\"");
    for phrase in [
        "reach every service on loopback",
        "Redis",
        "MariaDB",
        "Redis ACL password",
        "A MariaDB user of its own",
        "network namespace",
        "The `kubernetes` runtime",
    ] {
        assert!(section.contains(phrase), "the section names {phrase:?}");
    }
}

/// A challenge process of the local runtime reaches a loopback port nobody gave it: what the
/// section above warns about (were a mitigation added, this fails and the guide must change).
#[tokio::test]
async fn a_local_challenge_reaches_loopback_services() {
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("this test needs bash: apt-get install -y bash");
    }
    let scratch = Scratch::new();
    // Stands for Redis or MariaDB on loopback.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = service.local_addr().unwrap().port();
    let runtime = LocalRuntime::open(scratch.dir.join("state"), LocalSettings::default())
        .await
        .unwrap();
    let id = InstanceRef {
        team: TeamId(1),
        challenge: ChallengeId(1),
        instance: InstanceId::new(),
    };
    let spec = DeploySpec {
        challenge_name: "curious".to_owned(),
        image: None,
        command: Some(vec![
            "bash".to_owned(),
            "-c".to_owned(),
            format!("exec 3<>/dev/tcp/127.0.0.1/{port}; echo SET platform:key owned >&3; sleep 30"),
        ]),
        container_port: 80,
        cpu_millicores: 100,
        memory_mib: 64,
        use_gvisor: false,
        harden: false,
        lifetime_secs: 60,
        env: BTreeMap::new(),
    };
    runtime.deploy(&id, &spec, 0).await.unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(10), service.accept()).await;
    let reached = match accepted {
        Ok(Ok((mut stream, _))) => {
            use tokio::io::AsyncReadExt as _;
            let mut line = vec![0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut line))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            String::from_utf8_lossy(&line[..n]).into_owned()
        }
        _ => String::new(),
    };
    runtime.remove(&id).await.unwrap();
    assert!(
        reached.starts_with("SET platform:key"),
        "the challenge process did not reach the loopback service ({reached:?}): if the local \
         runtime now isolates instances, update docs/operations.md and this test"
    );
}
