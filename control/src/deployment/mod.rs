//! The Deployment Center.

pub mod contract;
