//! Resilience primitives as plain structs with small APIs, independent of tower and HTTP, so
//! they can be tested step by step under tokio's paused clock. Thin layers in `middleware/` wrap
//! them.

pub mod breaker;
pub mod client_ip;
pub mod in_flight;
pub mod limiter;
pub mod redis_limiter;
