//! fctf-workers: the Deployment Consumer, the runtimes and the Deployment Listener.
//!
//! Not built yet (issue 5). The consumer will take [`fctf_core::queue::DeployJob`]s from the
//! deploy queue and start instances through a runtime (`local`, `kubernetes`, `argo`); the
//! listener will reconcile what really runs with the state store and the database. This crate
//! depends only on fctf-core.
