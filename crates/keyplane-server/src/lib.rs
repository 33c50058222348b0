//! Keyplane's server: configuration, the HTTPS listener, the HTTP API and operator commands.
//!
//! The layers, each importing only those below it:
//! - [`http`]: routes, extractors, middleware and error rendering; thin handlers that call
//!   (beside it, [`console`]: the web console's pages, sessions and CSRF, calling the same)
//! - [`service`]: the use cases (one module per resource, plus credentials and refresh), which
//!   never import `http`; they use
//! - [`state`]: what every request shares, built on
//! - [`infra`]: TLS and the listener, throttles, group commit, usage, signing, passwords, mail,
//!   metrics, files and caches; and the store (`keyplane-store`) and domain (`keyplane-core`).
//!
//! [`startup`] assembles them (its errors, which [`state`] may also raise, are in
//! [`startup_error`]); [`config`] is the command line and file settings.

pub mod config;
pub mod console;
pub mod http;
pub mod infra;
pub mod service;
pub mod startup;
pub mod startup_error;
pub mod state;

pub use config::{ServeConfig, StoreConfig};
pub use startup::{Application, StartupError};
pub use state::AppState;
