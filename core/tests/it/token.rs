//! token tests: being written.
