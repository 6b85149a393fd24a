//! fctf-gateway
