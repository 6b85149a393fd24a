//! token: being written.
