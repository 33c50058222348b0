//! Reading an organization's audit log: who may, and one page of events.

use keyplane_core::paging::Page;
use keyplane_core::policy::Action;
use keyplane_core::records::{AuditEvent, AuditQuery, Organization};
use keyplane_store::StoreError;

use crate::service::access::{Actor, Forbidden};
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the role does not allow reading the audit log")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Forbidden> for AuditError {
    fn from(_: Forbidden) -> Self {
        AuditError::Forbidden
    }
}

/// One page of `organization`'s events (one the caller may see), with how many match.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    organization: &Organization,
    query: &AuditQuery,
) -> Result<Page<AuditEvent>, AuditError> {
    actor.require(Action::Read)?;
    Ok(state
        .store()
        .list_audit_events(organization.id, query)
        .await?)
}
