//! Keyplane's server: configuration, the HTTPS listener, the HTTP API and operator commands.

pub mod access;
pub mod api_keys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod files;
pub mod group_commit;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod organizations;
pub mod passwords;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod usage;
pub mod users;

pub use app::{AppState, Application, StartupError};
pub use config::{ServeConfig, StoreConfig};
