//! The HTTP API: versioned routers, the probes, and what they share (body parsing).

pub mod admin;
pub mod body;
pub mod create;
pub mod openapi;
pub mod ops;
pub mod status;
pub mod v1;
pub mod v2;
