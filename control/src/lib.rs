//! fctf-control: the control-plane APIs (axum).
//!
//! - [`contestant`]: the Contestant Service and the admin REST API.
//! - [`deployment`]: the Deployment Center, the one control API for instance start, stop,
//!   status and logs, and [`deployment::contract`], what the Contestant Service asks of it.
//! - [`error`]: the one JSON error shape of every API here.
//! - [`prometheus`]: the text format of the services' counters.
//!
//! This crate depends only on fctf-core; the `fctf` binary wires it to a runtime from
//! fctf-workers through [`fctf_core::runtime::InstanceRuntime`].

pub mod contestant;
pub mod deployment;
pub mod error;
pub mod prometheus;
