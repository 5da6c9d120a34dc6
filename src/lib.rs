//! orders-api: a versioned REST API for orders, wrapped in what an operator expects.
//!
//! A map of the crate, lowest layer first (`tests/structure.rs` keeps the imports acyclic):
//! - `context` (private) is the request being served: request id, trace and span ids. A leaf.
//! - [`orders`] is the domain (no HTTP, no SQL); [`idempotency`] decides what a repeated
//!   `Idempotency-Key` gets; [`auth`] knows the API keys (by SHA-256 only) and their scopes.
//! - [`config`] layers defaults, profile file, `--config` and environment into [`config::Settings`],
//!   validated once, one file per section; each component receives only its own section.
//! - [`telemetry`] installs the log subscriber (JSON lines or pretty), the Prometheus recorder
//!   and the OTLP exporter, and names every metric.
//! - [`resilience`] holds the rate limiters (in memory, and in Redis), the circuit breaker, the
//!   in-flight slots and the client key, as plain structs with no HTTP.
//! - [`store`] persists orders and idempotency records in SQLite or PostgreSQL.
//! - [`state`] is what handlers and layers share: store, limiters, breaker, readiness.
//! - `error` (private) is the only place errors become status codes (RFC 9457 problem+json).
//! - [`middleware`] is the one ordered layer stack; `middleware::auth` identifies the caller
//!   and refuses with 401/403.
//! - [`api`] holds the handlers: [`api::v1`] and [`api::v2`] (orders; each with `wire`
//!   response types, `requests` schema types and its OpenAPI document; [`api::openapi`] holds
//!   what the documents share), [`api::ops`] (`/healthz`, `/readyz`); [`api::create`] makes
//!   creates idempotent for both versions.
//! - `router` (private) declares routes only.
//! - [`reload`] applies edited configuration files while running (watch, `SIGHUP`).
//! - [`server`] binds the API and ops listeners, keeps the schema current, and shuts down
//!   gracefully (readiness off → drain → finish in-flight → close the pool).
//! - [`cli`] parses the command line and dispatches; `main.rs` only calls it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Nothing a user, a file or the network controls may panic the service; tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
mod context;
mod error;
pub mod idempotency;
pub mod middleware;
pub mod orders;
pub mod reload;
pub mod resilience;
mod router;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;

/// Selects ring as the process-wide rustls crypto provider (TLS to PostgreSQL and to an OTLP
/// collector over https). Idempotent; call it before building any TLS client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
