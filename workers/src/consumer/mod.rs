//! The Deployment Consumer (being built).
