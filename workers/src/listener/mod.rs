//! The Deployment Listener (being built).
