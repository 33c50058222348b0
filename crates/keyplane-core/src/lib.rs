//! Keyplane's domain: identifiers, validated values, secrets and the records the store keeps.
//!
//! Nothing here knows about HTTP or SQL; the server and the store both speak these types.

pub mod api_keys;
pub mod audit;
pub mod idempotency;
pub mod ids;
pub mod onboarding;
pub mod organizations;
pub mod paging;
pub mod policy;
pub mod records;
pub mod secrets;
pub mod standing;
pub mod time;
pub mod tokens;
pub mod values;

pub use ids::{ApiKeyId, AuditEventId, InvitationId, OrganizationId, UserId};
pub use values::ValidationError;
