//! fctf-core: what two or more FCTF services must agree on, written once.
//!
//! The seeds call this library "ResourceShared". Each module is pure where it can be; the I/O
//! sits behind the [`store::StateStore`] and [`queue::JobQueue`] traits, each with an in-process
//! implementation (the embedded default) and a production one (Redis, RabbitMQ) that pass the
//! same conformance suites.
//!
//! - [`token`]: HMAC-signed challenge access tokens (issued by the control plane, checked by the
//!   gateway).
//! - [`naming`]: instance namespace names and their inverse.
//! - [`signing`]: service-to-service request signatures with replay protection.
//! - [`config`]: the one TOML config file, its env overrides and its validation.
//! - [`store`]: deployment state, quotas, rate limits, leases, locks, counters.
//! - [`queue`]: the deploy job message and the RabbitMQ topology.
//! - [`runtime`]: the trait every instance runtime implements (local, Kubernetes, Argo).
//! - [`db`]: the database schema (MariaDB or SQLite), its migrations and the instance tracking
//!   rows.

pub mod builds;
pub mod clock;
pub mod config;
pub mod db;
pub mod ids;
pub mod naming;
pub mod queue;
pub mod runtime;
pub mod signing;
pub mod store;
pub mod token;
