//! Audit events: the resource, the `{type, id}` of its actor and target, and its list.

use keyplane_core::values::Env;
use serde::Serialize;
use utoipa::ToSchema;

/// `{type, id}` of an actor or a target.
#[derive(Serialize, ToSchema)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventResource {
    pub _id: String,
    #[schema(example = "AUDIT_EVENT")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    /// Such as `api_key.created` or `auth.failed`.
    pub action: String,
    pub actor: Reference,
    pub organization_id: String,
    pub target: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventList {
    pub data: Vec<AuditEventResource>,
    pub count: u64,
    #[schema(example = "AUDIT_EVENT_LIST")]
    pub _type: &'static str,
}
