//! fctf-control: the control-plane APIs.
//!
//! Not built yet: the Contestant Service and the admin REST API (issue 4) and the Deployment
//! Center (issue 5). They will share [`fctf_core::config`], [`fctf_core::store`],
//! [`fctf_core::queue`] and [`fctf_core::signing`]. This crate depends only on fctf-core.
