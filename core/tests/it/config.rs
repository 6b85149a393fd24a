//! config tests: being written.
