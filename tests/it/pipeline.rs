//! The instance pipeline end to end on the real servers (issue 5, "Done when"): the Deployment
//! Center in-process, the Deployment Consumer over RabbitMQ, the local runtime running the
//! `fctf demo-challenge` programs, the Deployment Listener over Redis and MariaDB, and the
//! gateway in front of it all.
//!
//! Isolation: each test has its own RabbitMQ exchange and queues (deleted at the end), its own
//! Redis key prefix, its own MariaDB database and its own local-runtime directory; every process
//! it started is removed before it ends.

mod lifecycle;
mod restarts;
mod scale;
mod support;
