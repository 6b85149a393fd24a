//! queue tests: being written.
