//! The one integration-test binary of fctf-core.
//!
//! Tests that need Redis or RabbitMQ talk to the real servers on loopback (see `services`); they
//! fail, never skip, when a server does not answer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod config;
mod db;
mod naming;
mod queue;
mod redis_fixture;
mod services;
mod signing;
mod store;
mod token;
