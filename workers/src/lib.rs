//! fctf-workers: the Deployment Consumer, the instance runtimes and the Deployment Listener.
//!
//! - [`consumer`]: takes deploy jobs from the queue and carries them out through a runtime.
//! - [`runtime`]: the implementations of [`fctf_core::runtime::InstanceRuntime`]: `local`
//!   (child processes), `kubernetes` (objects applied directly) and `argo` (workflows).
//! - [`listener`]: observes what really runs and reconciles the state store and the database.
//! - [`metrics`]: the `/metrics` responder of the consumer and listener roles.
//!
//! This crate depends only on fctf-core.

pub mod consumer;
pub mod listener;
pub mod metrics;
pub mod runtime;
