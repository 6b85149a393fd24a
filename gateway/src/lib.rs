//! fctf-gateway: the Challenge Gateway, the only door to a challenge instance.
//!
//! HTTP (token in `?fctftoken=`, then a cookie) and TCP (token as the first line); every token is
//! verified with [`fctf_core::token`], and rate limits and connection caps go through
//! [`fctf_core::store::StateStore`]. This crate depends only on fctf-core.
//!
//! The pure decisions (routes, cookies, redirects, framing, the TCP token line, instance hosts,
//! the PROXY protocol header) are their own modules with unit tests; [`admission`] holds the
//! checks shared by both protocols (token cache, instance liveness and the starting hold, rate
//! limits with a local fallback); [`client`] decides who the client is (the peer, or the address
//! a trusted proxy names); [`http`] and [`tcp`] are the Pingora adapters, [`access`] their access
//! log, [`cut`] ends an upgraded HTTP connection from outside (its instance stopped), [`tls`]
//! serves TLS next to plain text on the HTTP and TCP ports, and [`admin`] the health and metrics
//! port. [`server`] runs it all:
//! [`server::run_from_config`] is `fctf gateway`, [`server::spawn`] an in-process gateway.

pub mod access;
pub mod admin;
pub mod admission;
pub mod budget;
pub mod client;
pub mod cookie;
pub mod cut;
pub mod framing;
pub mod host;
pub mod http;
pub mod proxy_protocol;
pub mod redirect;
pub mod resolve;
pub mod routing;
pub mod server;
pub mod tcp;
pub mod tcp_line;
pub mod tls;
