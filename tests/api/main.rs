//! Integration tests over real HTTP: in-process servers on ephemeral ports for the API, and the
//! real binary for signals, logs, telemetry, the Kubernetes manifests and a rolling update.
//! Backend-sensitive tests run on SQLite (a temp file each) and PostgreSQL (a fresh database
//! each, from TEST_DATABASE_URL).

mod auth;
mod breaker;
mod commit_order;
mod conformance;
mod connections;
mod deploy;
mod errors;
mod health;
mod idempotency;
mod openapi;
mod orders;
mod process;
mod redis_limits;
mod reload;
mod resilience;
mod rollout;
mod support;
mod telemetry;
#[cfg(feature = "otlp-grpc")]
mod telemetry_grpc;
mod v1_contract;
mod v2;
mod validation;
