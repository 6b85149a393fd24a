//! Roles: each loads its config (exit 64 on mistakes), the process roles refuse the embedded
//! default and name an unreachable backend (exit 69); `fctf gateway` serves until SIGTERM.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{SECRET, Scratch, assert_exit, fctf, run, stderr};

#[test]
fn process_roles_need_shared_backends_and_say_which_is_down() {
    let scratch = Scratch::new();
    let embedded = scratch.file("embedded.toml", "");
    let key = scratch.file("k.key", SECRET);
    let down = scratch.file(
        "down.toml",
        &format!(
            "[tokens]\nkeys = [{{ kid = \"k1\", secret_file = \"{key}\" }}]\n\
             [signing]\nkeys = [{{ kid = \"s1\", secret_file = \"{key}\" }}]\n\
             [store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n\
             [queue]\nbackend = \"rabbitmq\"\namqp_url = \"amqp://guest:guest@127.0.0.1:1\"\n",
            key = key.display()
        ),
    );
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key, mode).unwrap();
    for role in ["contestant", "deployment-center", "consumer", "listener"] {
        let output = run(&[role]);
        assert_exit(&output, 64);
        assert!(stderr(&output).contains("needs its config file: -c FILE"));

        // One process of a deployment cannot run on in-process state: it would be an island.
        let output = run(&[role, "-c", embedded.to_str().unwrap()]);
        assert_exit(&output, 64);
        let message = stderr(&output);
        assert!(message.contains("needs the shared backends"), "{message}");
        assert!(message.contains("fctf up"), "{message}");

        // A backend that does not answer: exit 69, naming it.
        let output = run(&[role, "-c", down.to_str().unwrap()]);
        assert_exit(&output, 69);
        let message = stderr(&output);
        assert!(
            message.contains("127.0.0.1:1"),
            "the unreachable address is named: {message}"
        );
    }
}

#[test]
fn the_gateway_needs_a_valid_config() {
    let output = run(&["gateway"]);
    assert_exit(&output, 64);
    assert!(stderr(&output).contains("needs its config file: -c FILE"));

    let scratch = Scratch::new();
    let bad = scratch.file(
        "bad.toml",
        "[gateway]\nhttp_listen = \"nowhere\"\ntcp_connections_per_token = -1\n",
    );
    let output = run(&["gateway", "-c", bad.to_str().unwrap()]);
    assert_exit(&output, 64);
    let message = stderr(&output);
    assert!(message.contains("gateway.http_listen"), "{message}");
    assert!(
        message.contains("gateway.tcp_connections_per_token"),
        "{message}"
    );
    assert!(message.contains("2 mistakes"), "{message}");
}

/// A child process killed when the test ends, however it ends: a failed assertion must not leave
/// a gateway running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago (the gateway binds it by address, as in production).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET on a connection of its own; the whole response.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn the_gateway_serves_until_sigterm() {
    let scratch = Scratch::new();
    let (http, tcp, admin) = (free_port(), free_port(), free_port());
    let config = scratch.file(
        "gateway.toml",
        &format!(
            "[gateway]\nhttp_listen = \"127.0.0.1:{http}\"\ntcp_listen = \"127.0.0.1:{tcp}\"\n\
             admin_listen = \"127.0.0.1:{admin}\"\n"
        ),
    );
    let mut child = KillOnDrop(
        fctf()
            .args(["gateway", "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;

    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(response) = get(admin, "/healthz") {
            break response;
        }
        assert!(Instant::now() < deadline, "the admin port never answered");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // No token, no entry: the player is told why.
    let refused = get(http, "/").unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exit.code(), Some(0), "the gateway's exit after SIGTERM");

    // The refused request is in the access log on standard error, without any token.
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("fctf_gateway::access"))
        .unwrap_or_else(|| panic!("no access-log line in:\n{log}"));
    assert!(line.contains("401"), "{line}");
    assert!(!log.contains("fctftoken"), "{log}");
}
