//! Audit events: the resource, the `{type, id}` of its actor and target, and its list.

use keyplane_core::values::Env;
use serde::Serialize;
use utoipa::ToSchema;

/// `{type, id}` of an actor or a target.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"type": "api_key", "id": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92"}))]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "_id": "0190c8e5-7d3b-7e4c-9f1a-0b5d7c2e4f69",
    "_type": "AUDIT_EVENT",
    "_envs": ["TEST"],
    "action": "api_key.created",
    "actor": {"type": "user", "id": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13"},
    "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
    "target": {"type": "api_key", "id": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92"},
    "request_id": "0190c8e5-7d3a-7c1b-8e2f-9a4c6b1d3e58",
    "ip": "203.0.113.7",
    "created_at": 1764547200
}))]
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
#[schema(example = json!({"data": [{
        "_id": "0190c8e5-7d3b-7e4c-9f1a-0b5d7c2e4f69",
        "_type": "AUDIT_EVENT",
        "_envs": ["TEST"],
        "action": "api_key.created",
        "actor": {"type": "user", "id": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13"},
        "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
        "target": {"type": "api_key", "id": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92"},
        "request_id": "0190c8e5-7d3a-7c1b-8e2f-9a4c6b1d3e58",
        "ip": "203.0.113.7",
        "created_at": 1764547200
    }], "count": 2, "next_cursor": "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX", "_type": "AUDIT_EVENT_LIST"}))]
pub struct AuditEventList {
    pub data: Vec<AuditEventResource>,
    pub count: u64,
    /// Where the next page starts: pass it as `cursor` with the same query (same order and
    /// filters, without `offset`). Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub next_cursor: Option<String>,
    #[schema(example = "AUDIT_EVENT_LIST")]
    pub _type: &'static str,
}
