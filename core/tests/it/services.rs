//! Where the real services of the test machine are, and a loud failure when one is down.

#![allow(dead_code)] // each test module uses part of this

use std::time::Duration;

/// Redis for tests: `FCTF_TEST_REDIS_URL`, or the machine's default.
pub fn redis_url() -> String {
    std::env::var("FCTF_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// RabbitMQ for tests (AMQP URL without vhost): `FCTF_TEST_AMQP_URL`, or the machine's default.
pub fn amqp_url() -> String {
    std::env::var("FCTF_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

/// Panics with instructions unless something accepts TCP connections at `host:port`.
pub async fn require_tcp(service: &str, addr: &str, how_to_start: &str) {
    let ok = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    assert!(
        ok,
        "{service} does not answer on {addr}; this test needs the real server.\n\
         Start it with: {how_to_start}\n(or run `bash .ci/run`, which starts every service it needs)"
    );
}

/// Fails the test loudly unless Redis answers on the default address.
pub async fn require_redis() {
    require_tcp(
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    )
    .await;
}

/// Fails the test loudly unless RabbitMQ answers on the default address.
pub async fn require_rabbitmq() {
    require_tcp("RabbitMQ", "127.0.0.1:5672", "rabbitmq-server -detached").await;
}

/// A prefix no other test (or test run) shares, so tests against one server never collide.
pub fn unique_prefix(test: &str) -> String {
    format!("fctf-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// MariaDB for tests (a server URL with a database to connect to first): `FCTF_TEST_MYSQL_URL`,
/// or the machine's default. Tests create a database of their own on it
/// ([`fctf_core::db::ScratchDatabase`]).
pub fn mysql_url() -> String {
    std::env::var("FCTF_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// Fails the test loudly unless MariaDB answers on the default address.
pub async fn require_mariadb() {
    require_tcp("MariaDB", "127.0.0.1:3306", "service mariadb start").await;
}
