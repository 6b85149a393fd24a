//! Logical key names: being written.
