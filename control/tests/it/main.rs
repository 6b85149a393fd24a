//! The one integration-test binary of fctf-control. Tests that need Redis, RabbitMQ or MariaDB
//! talk to the real servers on loopback; they fail, never skip, when a server does not answer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod accounts;
mod contestant;
mod deployment;
mod play;
