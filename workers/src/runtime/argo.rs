//! The `argo` runtime (being built).
