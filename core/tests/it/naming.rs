//! naming tests: being written.
