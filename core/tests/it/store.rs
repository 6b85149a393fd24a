//! store tests: being written.
