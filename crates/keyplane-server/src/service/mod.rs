//! The use cases: one module per resource, plus credentials (turning a credential into tokens)
//! and access (who a bearer token speaks for). They take the shared [`crate::state::AppState`],
//! decide with the domain's rules (`keyplane-core`) and write through the store; they never
//! import `http`, so the console and the CLI can call the same ones.

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod bootstrap;
pub mod context;
pub mod credentials;
pub mod idempotency;
pub mod organizations;
pub mod password_reset;
pub mod people;
pub mod refresh;
pub mod sessions;
pub mod setup;
pub mod tokens;
