//! fctf-workers
