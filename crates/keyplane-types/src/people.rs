//! People and invitations: the resources, their lists, and the invite, update and accept bodies.

use keyplane_core::values::{Env, Role, UserStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A person as one organization sees them.
#[derive(Serialize, ToSchema)]
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
pub struct UserList {
    pub data: Vec<UserResource>,
    pub count: u64,
    #[schema(example = "USER_LIST")]
    pub _type: &'static str,
}

#[derive(Serialize, ToSchema)]
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
pub struct InvitationList {
    pub data: Vec<InvitationResource>,
    pub count: u64,
    #[schema(example = "INVITATION_LIST")]
    pub _type: &'static str,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Default `developer`.
    pub role: Option<Role>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    pub role: Option<Role>,
    /// `active` or `disabled`.
    pub status: Option<UserStatus>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// From the invitation link.
    pub token: String,
    /// 12 to 256 characters.
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}
