//! People and invitations: the resources, their lists, and the invite, update and accept bodies.

use keyplane_core::values::{Env, Role, UserStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A person as one organization sees them.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "_id": "0190c8e4-2b8d-7f1a-8c3e-6d9b2e4a7f05",
    "_type": "USER",
    "_envs": ["TEST"],
    "email": "jane.doe@example.com",
    "first_name": "Jane",
    "last_name": "Doe",
    "role": "developer",
    "status": "active",
    "created_at": 1764547200
}))]
pub struct UserResource {
    pub _id: String,
    #[schema(example = "USER")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": [{
        "_id": "0190c8e4-2b8d-7f1a-8c3e-6d9b2e4a7f05",
        "_type": "USER",
        "_envs": ["TEST"],
        "email": "jane.doe@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "role": "developer",
        "status": "active",
        "created_at": 1764547200
    }], "count": 2, "next_cursor": "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX", "_type": "USER_LIST"}))]
pub struct UserList {
    pub data: Vec<UserResource>,
    pub count: u64,
    /// Where the next page starts: pass it as `cursor` with the same query (same order and
    /// filters, without `offset`). Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub next_cursor: Option<String>,
    #[schema(example = "USER_LIST")]
    pub _type: &'static str,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "_id": "0190c8e4-2b8e-7a2b-9d4f-7e0c3f5b8a16",
    "_type": "INVITATION",
    "_envs": ["TEST"],
    "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
    "user_id": "0190c8e4-2b8d-7f1a-8c3e-6d9b2e4a7f05",
    "email": "jane.doe@example.com",
    "role": "developer",
    "created_at": 1764547200,
    "expires_at": 1765152000
}))]
pub struct InvitationResource {
    pub _id: String,
    #[schema(example = "INVITATION")]
    pub _type: &'static str,
    pub _envs: Vec<Env>,
    pub organization_id: String,
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"data": [{
        "_id": "0190c8e4-2b8e-7a2b-9d4f-7e0c3f5b8a16",
        "_type": "INVITATION",
        "_envs": ["TEST"],
        "organization_id": "0190c8e2-4f6b-7a1e-9c3d-2b5e8f1a4c70",
        "user_id": "0190c8e4-2b8d-7f1a-8c3e-6d9b2e4a7f05",
        "email": "jane.doe@example.com",
        "role": "developer",
        "created_at": 1764547200,
        "expires_at": 1765152000
    }], "count": 2, "next_cursor": "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX", "_type": "INVITATION_LIST"}))]
pub struct InvitationList {
    pub data: Vec<InvitationResource>,
    pub count: u64,
    /// Where the next page starts: pass it as `cursor` with the same query (same order and
    /// filters, without `offset`). Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "WyIwMTkwYzhlMy0xYTdjIl3xQ2Zr9mP4bV7sK1dT8wN3yH6cJ0aR5uE2gL9oI4fX")]
    pub next_cursor: Option<String>,
    #[schema(example = "INVITATION_LIST")]
    pub _type: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe", "role": "developer"}))]
pub struct InviteBody {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Default `developer`.
    pub role: Option<Role>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "viewer", "status": "disabled"}))]
pub struct UpdateUserBody {
    pub role: Option<Role>,
    /// `active` or `disabled`.
    pub status: Option<UserStatus>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "<token from the invitation link>", "password": "<your new password>", "first_name": "Jane", "last_name": "Doe"}))]
pub struct AcceptBody {
    /// From the invitation link.
    pub token: String,
    /// 12 to 256 characters.
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}
