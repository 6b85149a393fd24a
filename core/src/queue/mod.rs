//! queue: being written.
