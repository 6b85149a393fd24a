//! Deploy queue tests.
//!
//! - `conformance`: one suite, generated for [`MemoryQueue`](fctf_core::queue::MemoryQueue) and
//!   [`AmqpQueue`](fctf_core::queue::AmqpQueue) (the real RabbitMQ on 127.0.0.1:5672).
//! - `amqp`: what only the broker has: topology declaration and mismatch, routing, the wire
//!   properties, connection loss and stalls (through a local TCP proxy, so the shared broker is
//!   never stopped).
//! - `evidence`: the measurements behind the classic-queue choice, re-checked on every run.
//!
//! Every test uses its own exchanges and queues in the `fctf_deploy` vhost and deletes them when it
//! ends, pass or fail.

mod amqp;
mod conformance;
mod evidence;
mod fixture;
mod proxy;
