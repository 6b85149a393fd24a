//! Integration tests of the Challenge Gateway: the gateway runs in-process on a socket bound to
//! port 0, in front of backends the tests start, against the in-process store or the real Redis.

mod access_log;
mod caps;
mod client;
mod config;
mod drain;
mod front_proxy;
mod hosts;
mod http;
mod leases;
mod metrics;
mod proxy_protocol;
mod starting;
mod support;
mod tcp;
mod tls;
mod two_gateways;
