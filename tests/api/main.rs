//! Integration tests over real HTTP: in-process servers on ephemeral ports for the API, and the
//! real binary for signals and logs. Backend-sensitive tests run on SQLite (a temp file each) and
//! PostgreSQL (a fresh database each, from TEST_DATABASE_URL).

mod binary;
mod errors;
mod faults;
mod health;
mod helpers;
mod orders;
mod process;
mod resilience;
mod telemetry;
mod validation;
