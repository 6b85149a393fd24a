//! signing: being written.
