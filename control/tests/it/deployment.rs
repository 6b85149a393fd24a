//! Tests of the Deployment Center (control/src/deployment/): the signed HTTP API through tower's
//! `oneshot`, the instance lifecycle on the in-process store and queue and on real Redis and
//! RabbitMQ, and the HTTP client against a served Deployment Center.

mod builds;
mod client;
mod fixture;
mod lifecycle;
mod publish;
mod signed;
