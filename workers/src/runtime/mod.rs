//! The instance runtimes.

pub mod argo;
pub mod argo_builds;
pub mod kubernetes;
pub mod local;
