//! fctf-gateway: the Challenge Gateway, the only door to a challenge instance.
//!
//! Not built yet (issue 3). It will serve HTTP on 8080 (token in `?fctftoken=`, then an
//! instance-scoped cookie) and TCP on 1337 (token as the first line), verify every token with
//! [`fctf_core::token`], and enforce rate limits and connection caps through
//! [`fctf_core::store::StateStore`]. This crate depends only on fctf-core.
