//! The Deployment Consumer against real queues, stores and runtimes: the cases of
//! [`cases`] run on the in-process queue and store ([`memory`]) and on RabbitMQ and Redis
//! ([`amqp`]), with a scripted runtime and with the `local` runtime ([`local`]).

mod amqp;
mod cases;
mod local;
mod memory;
mod support;
