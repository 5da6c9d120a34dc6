//! orders-api: a versioned REST API for orders, wrapped in what an operator expects.
//!
//! A map of the crate:
//! - [`cli`] parses the command line and dispatches; `main.rs` only calls it.
//! - [`config`] layers defaults, profile file, `--config` and environment into [`config::Settings`],
//!   validated once; each component receives only its own section.
//! - [`server`] binds the API and ops listeners, keeps the schema current, and shuts down
//!   gracefully (readiness off → drain → finish in-flight → close the pool).
//! - [`router`] declares routes only; [`middleware`] is the one ordered layer stack.
//! - [`api`] holds the handlers: [`api::v1`] and [`api::v2`] (orders, each with its OpenAPI
//!   document; [`api::openapi`] holds what the documents share), [`api::ops`] (`/healthz`,
//!   `/readyz`); [`api::create`] makes creates idempotent for both versions.
//! - [`error`] is the only place errors become status codes (RFC 9457 problem+json).
//! - [`auth`] knows the API keys (by SHA-256 only) and their scopes; `middleware::auth`
//!   identifies the caller and refuses with 401/403.
//! - [`orders`] is the domain (no HTTP, no SQL); [`store`] persists it in SQLite or PostgreSQL.
//! - [`idempotency`] decides what a repeated `Idempotency-Key` gets; the store keeps the records.
//! - [`telemetry`] installs the log subscriber (JSON lines or pretty).

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod error;
pub mod idempotency;
pub mod middleware;
pub mod orders;
pub mod resilience;
pub mod router;
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
