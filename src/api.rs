//! The HTTP API: versioned routers, the probes, and what they share (body parsing).

pub mod body;
pub mod openapi;
pub mod ops;
pub mod v1;
