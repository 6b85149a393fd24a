//! The `kubernetes` runtime (being built).
