//! signing tests: being written.
