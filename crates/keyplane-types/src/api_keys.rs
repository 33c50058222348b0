//! API keys: the resource, its list, the list query, and the create, update and rotate bodies.

use keyplane_core::records::Metadata;
use keyplane_core::values::{ApiKeyKind, ApiKeyStatus, Env, Role};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An API key as the API shows it. `secret` appears only in create and rotate responses.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "_id": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92",
    "_type": "API_KEY",
    "_envs": ["TEST"],
    "key": "test_3fk2m9q8w1x7z5v4c6b2n8m1_pos-1",
    "name": "pos-1",
    "kind": "test",
    "status": "enabled",
    "role": "admin",
    "metadata": {"store": "berlin-01"},
    "managed_by_organization_id": "",
    "created_at": 1764547200,
    "created_by_user": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13",
    "last_used_at": 1764633600,
    "expires_at": 1796083200,
    "secret": "<shown once>"
}))]
pub struct ApiKeyResource {
    pub _id: String,
    /// `API_KEY`, or `MANAGED_API_KEY` for a key of a managed organization.
    #[schema(example = "API_KEY")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    pub key: String,
    pub name: String,
    pub kind: ApiKeyKind,
    pub status: ApiKeyStatus,
    /// What its tokens may do: `admin` (default), `developer` or `viewer`.
    pub role: Role,
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// `""` when the organization is not managed (fiskaly clients expect a string).
    pub managed_by_organization_id: String,
    pub created_at: i64,
    /// The person who created it or, when an API key did, the person credited with that key;
    /// `""` when no person is (fiskaly clients expect a string).
    pub created_by_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "data": [{
        "_id": "0190c8e3-1a7c-7b2d-9e4f-5c8a1d3b6e92",
        "_type": "API_KEY",
        "_envs": ["TEST"],
        "key": "test_3fk2m9q8w1x7z5v4c6b2n8m1_pos-1",
        "name": "pos-1",
        "kind": "test",
        "status": "enabled",
        "role": "admin",
        "metadata": {"store": "berlin-01"},
        "managed_by_organization_id": "",
        "created_at": 1764547200,
        "created_by_user": "0190c8e1-c3d5-7e8f-a1b2-4d6e8f0a2c13",
        "last_used_at": 1764633600
    }],
    "count": 2,
    "next_cursor": "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX",
    "_type": "API_KEY_LIST"
}))]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyResource>,
    /// Every key that matches the filters, not just this page.
    pub count: u64,
    /// Where the next page starts: pass it as `cursor` with the same query (same order and
    /// filters, without `offset`). Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub next_cursor: Option<String>,
    #[schema(example = "API_KEY_LIST")]
    pub _type: &'static str,
}

/// The list query (documented; parsed by hand to accept repeated and comma-separated filters).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1–100, default 100.
    pub limit: Option<u32>,
    /// Default 0.
    pub offset: Option<u64>,
    /// The `next_cursor` of the previous page: the page after it, in the same order and with the
    /// same filters (repeat them). Not with `offset`.
    #[param(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub cursor: Option<String>,
    /// `name` (default), `kind`, `status` or `created_at`.
    pub order_by: Option<String>,
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
    /// `test`, `live`: repeated (`kind=test&kind=live`) or comma-separated.
    pub kind: Option<String>,
    /// `enabled`, `disabled`: repeated or comma-separated.
    pub status: Option<String>,
}

/// Create in the caller's organization, by name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "test",
    "status": "enabled",
    "role": "developer",
    "metadata": {"store": "berlin-01"},
    "expires_at": 1796083200
}))]
pub struct PutApiKey {
    pub kind: ApiKeyKind,
    pub status: ApiKeyStatus,
    /// `admin`, `developer` or `viewer`, at most the caller's own role; default the caller's
    /// role (at most `admin`).
    pub role: Option<Role>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    pub expires_at: Option<i64>,
}

/// Create in an organization the caller can see (fiskaly's body).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "pos-1",
    "status": "enabled",
    "kind": "test",
    "role": "developer",
    "metadata": {"store": "berlin-01"},
    "managed_by_organization_id": "0190c8e1-9b2a-7d4c-8e1f-3a6b5c9d2e81",
    "expires_at": 1796083200
}))]
pub struct PostApiKey {
    pub name: String,
    pub status: ApiKeyStatus,
    /// Default `test`.
    pub kind: Option<ApiKeyKind>,
    /// `admin`, `developer` or `viewer`, at most the caller's own role; default the caller's
    /// role (at most `admin`).
    pub role: Option<Role>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// If given, must be the organization's manager (or empty).
    pub managed_by_organization_id: Option<String>,
    pub expires_at: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "status": "disabled",
    "role": "viewer",
    "metadata": {"store": "berlin-02"},
    "expires_at": 1796083200
}))]
pub struct PatchApiKey {
    pub status: Option<ApiKeyStatus>,
    /// At most the caller's own role.
    pub role: Option<Role>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    pub expires_at: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grace_period_seconds": 3600}))]
pub struct RotateApiKey {
    /// 0–604 800: how long the old secret keeps working. Default 0.
    #[serde(default)]
    pub grace_period_seconds: i64,
}
