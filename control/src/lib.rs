//! fctf-control
