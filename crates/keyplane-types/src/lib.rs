//! The JSON bodies of Keyplane's HTTP API: what requests carry and what responses answer, in one
//! place that the server and its clients (a client library, the CLI) share.
//!
//! Every type derives `ToSchema` (or `IntoParams`): the server's OpenAPI document is generated
//! from these definitions, so their names, field order, serde attributes and doc comments are
//! the contract. Conversions from domain records to resources stay in the server; this crate
//! knows nothing of HTTP frameworks, storage or async runtimes.
//!
//! One module per area: [`api_keys`], [`organizations`], [`people`], [`audit`], [`tokens`]
//! (`POST /api/v0/auth`, Fiskil's `POST /v1/token`, the JWKS), [`oauth`], [`errors`],
//! [`health`] and [`common`] (the body of a delete).

pub mod api_keys;
pub mod audit;
pub mod common;
pub mod errors;
pub mod health;
pub mod oauth;
pub mod organizations;
pub mod people;
pub mod tokens;
