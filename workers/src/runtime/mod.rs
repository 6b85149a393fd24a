//! The instance runtimes.

pub mod argo;
pub mod kubernetes;
pub mod local;
