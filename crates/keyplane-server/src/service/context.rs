//! Where a request came from (its request id and client address), and the audit events it
//! records: the one place an event gets its request id, address, actor and time.

use std::net::IpAddr;

use keyplane_core::audit::AuditAction;
use keyplane_core::records::{ActorType, AuditEvent};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::SubjectType;
use keyplane_core::{AuditEventId, OrganizationId};

/// Where a request came from, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
}

impl RequestContext {
    /// An audit event of this request: the one place events get their request id, address and
    /// time.
    pub fn event(
        &self,
        organization_id: OrganizationId,
        action: AuditAction,
        actor: (ActorType, &str),
        target: (&str, &str),
    ) -> AuditEvent {
        AuditEvent {
            id: AuditEventId::new(),
            organization_id,
            action: action.as_str().to_owned(),
            actor_type: actor.0,
            actor_id: Some(actor.1.to_owned()),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            request_id: self.request_id.clone(),
            ip: self.ip.map(|ip| ip.to_string()),
            created_at: now_unix(),
        }
    }

    /// An audit event of this request by an authenticated caller.
    pub fn event_by(
        &self,
        actor: &crate::service::access::Actor,
        organization_id: OrganizationId,
        action: AuditAction,
        target: (&str, &str),
    ) -> AuditEvent {
        self.event(
            organization_id,
            action,
            (actor_type(actor.subject_type), &actor.subject_id),
            target,
        )
    }
}

pub fn actor_type(subject: SubjectType) -> ActorType {
    match subject {
        SubjectType::ApiKey => ActorType::ApiKey,
        SubjectType::User => ActorType::User,
    }
}
