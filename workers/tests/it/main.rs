//! The one integration-test binary of fctf-workers. Tests that need Redis, RabbitMQ or MariaDB
//! talk to the real servers on loopback; they fail, never skip, when a server does not answer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod consumer;
mod kubernetes;
mod listener;
mod runtime_local;
