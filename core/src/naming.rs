//! naming: being written.
