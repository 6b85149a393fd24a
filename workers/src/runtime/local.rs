//! The `local` runtime (being built).
