//! The API-key use cases, shared by both path styles of the API (by name in the caller's
//! own organization, by id in any organization the caller can see): who may do what, the rules,
//! the audit events, and telling the bearer cache about changes.

use keyplane_core::api_keys::{self, ApiKeyQuery, NewApiKey};
use keyplane_core::audit::AuditAction;
use keyplane_core::paging::Page;
use keyplane_core::policy::{self, Action, KeyRoleRefusal};
use keyplane_core::records::{ApiKey, ApiKeyChanges, AuditEvent, Metadata, Organization};
use keyplane_core::secrets::PlainCredential;
use keyplane_core::time::now_unix;
use keyplane_core::values::{ApiKeyKind, ApiKeyStatus, KeyName, Role};
use keyplane_core::{ApiKeyId, ValidationError};
use keyplane_store::StoreError;

use crate::service::access::{self, Actor, Forbidden};
use crate::service::context::RequestContext;
use crate::service::organizations::OrganizationError;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("organization not found")]
    OrganizationNotFound,
    #[error("API key not found")]
    NotFound,
    #[error("the role does not allow this")]
    Forbidden,
    #[error("the key's role is above the caller's")]
    AboveCallerRole,
    #[error("the organization does not have the LIVE env")]
    EnvNotEnabled,
    #[error("the name is taken")]
    NameTaken,
    #[error("the key changed concurrently")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a request names a key.
pub enum KeyRef<'a> {
    Name(&'a str),
    Id(&'a str),
}

/// An organization a caller acts on: its own (`None`) or one it can see by id.
pub async fn organization(
    state: &AppState,
    actor: &Actor,
    id: Option<&str>,
) -> Result<Organization, ApiKeyError> {
    crate::service::organizations::visible_or_own(state, actor, id)
        .await
        .map_err(|error| match error {
            OrganizationError::Store(error) => ApiKeyError::Store(error),
            _ => ApiKeyError::OrganizationNotFound,
        })
}

impl From<Forbidden> for ApiKeyError {
    fn from(_: Forbidden) -> Self {
        ApiKeyError::Forbidden
    }
}

/// Whether the caller may manage a key of this role: its role allows managing keys, and the
/// key's role is not above its own. The env of the caller's token does not matter: it names
/// the platform environment the token's holder calls, while the management plane is one for
/// both (a key that must not manage keys gets the `viewer` role).
fn may_manage(actor: &Actor, role: Role) -> Result<(), ApiKeyError> {
    actor.require(Action::ManageApiKeys)?;
    if !policy::may_touch_key(actor.role, role) {
        return Err(ApiKeyError::AboveCallerRole);
    }
    Ok(())
}

/// The role a key gets from this caller: see [`policy::key_role`].
fn granted_role(actor: &Actor, requested: Option<Role>) -> Result<Role, ApiKeyError> {
    policy::key_role(actor.role, requested).map_err(|refusal| match refusal {
        KeyRoleRefusal::NotAKeyRole => ValidationError::new(
            "role",
            "must be admin, developer or viewer (owner is a person's role)",
        )
        .into(),
        KeyRoleRefusal::AboveCaller => ApiKeyError::AboveCallerRole,
    })
}

pub async fn find(
    state: &AppState,
    organization: &Organization,
    key: KeyRef<'_>,
) -> Result<ApiKey, ApiKeyError> {
    let found = match key {
        KeyRef::Name(name) => state.store().api_key_by_name(organization.id, name).await?,
        KeyRef::Id(id) => match id.parse::<ApiKeyId>() {
            Ok(id) => state.store().api_key(id).await?,
            Err(_) => None,
        },
    };
    found
        .filter(|key| key.organization_id == organization.id)
        .ok_or(ApiKeyError::NotFound)
}

fn event(context: &RequestContext, actor: &Actor, key: &ApiKey, action: AuditAction) -> AuditEvent {
    context.event_by(
        actor,
        key.organization_id,
        action,
        ("api_key", &key.id.to_string()),
    )
}

/// What a create request asks for, before validation.
pub struct CreateRequest {
    pub name: String,
    pub kind: ApiKeyKind,
    pub status: ApiKeyStatus,
    pub role: Option<Role>,
    pub metadata: Option<Metadata>,
    pub expires_at: Option<i64>,
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization: &Organization,
    request: CreateRequest,
) -> Result<(ApiKey, PlainCredential), ApiKeyError> {
    let role = granted_role(actor, request.role)?;
    may_manage(actor, role)?;
    let now = now_unix();
    let name = KeyName::parse(request.name)?;
    let metadata = request.metadata.unwrap_or_default();
    api_keys::validate_metadata(&metadata)?;
    if let Some(at) = request.expires_at {
        api_keys::validate_expires_at(at, now)?;
    }
    if !organization.may_hold(request.kind) {
        return Err(ApiKeyError::EnvNotEnabled);
    }
    let created_by_user = access::credited_user(state, actor).await?;
    let (key, secret) = api_keys::create(
        NewApiKey {
            organization_id: organization.id,
            name,
            kind: request.kind,
            status: request.status,
            role,
            metadata,
            expires_at: request.expires_at,
            created_by_user,
        },
        state.secrets(),
        now,
    );
    let created = event(context, actor, &key, AuditAction::ApiKeyCreated);
    match state.store().create_api_key(&key, &[created]).await {
        Ok(()) => Ok((key, secret)),
        Err(StoreError::Conflict(_)) => Err(ApiKeyError::NameTaken),
        Err(error) => Err(error.into()),
    }
}

/// A partial update: only what is `Some` changes.
pub struct UpdateRequest {
    pub status: Option<ApiKeyStatus>,
    pub role: Option<Role>,
    pub metadata: Option<Metadata>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<i64>>,
}

/// How often a write is tried against a key whose role changed between the check and the write.
const ATTEMPTS: usize = 3;

/// The key as it is now, after a write found its role changed.
async fn reread(state: &AppState, key: &ApiKey) -> Result<ApiKey, ApiKeyError> {
    state
        .store()
        .api_key(key.id)
        .await?
        .filter(|found| found.organization_id == key.organization_id)
        .ok_or(ApiKeyError::NotFound)
}

/// Writes `changes` (built from the key as last read) only while the key still has the role the
/// caller's right was checked against: a role raised concurrently sends the check round again,
/// so nobody changes, rotates or deletes a key above their role by racing a promotion.
async fn checked_update<T>(
    state: &AppState,
    actor: &Actor,
    mut key: ApiKey,
    change: impl Fn(&ApiKey) -> (ApiKeyChanges, AuditEvent, T),
) -> Result<(ApiKey, T), ApiKeyError> {
    for _ in 0..ATTEMPTS {
        may_manage(actor, key.role)?;
        let (mut changes, event, made) = change(&key);
        changes.only_if_role = Some(key.role);
        if let Some(updated) = state
            .store()
            .update_api_key(key.id, &changes, &[event])
            .await?
        {
            forget(state, &updated).await;
            return Ok((updated, made));
        }
        key = reread(state, &key).await?;
    }
    Err(ApiKeyError::Concurrent)
}

pub async fn update(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    key: ApiKey,
    request: UpdateRequest,
) -> Result<ApiKey, ApiKeyError> {
    may_manage(actor, key.role)?;
    if let Some(role) = request.role {
        granted_role(actor, Some(role))?;
    }
    if let Some(metadata) = &request.metadata {
        api_keys::validate_metadata(metadata)?;
    }
    if let Some(Some(at)) = request.expires_at {
        api_keys::validate_expires_at(at, now_unix())?;
    }
    checked_update(state, actor, key, |key| {
        let action = match request.status {
            Some(status) if status != key.status => match status {
                ApiKeyStatus::Enabled => AuditAction::ApiKeyEnabled,
                ApiKeyStatus::Disabled => AuditAction::ApiKeyDisabled,
            },
            _ => AuditAction::ApiKeyUpdated,
        };
        let changes = ApiKeyChanges {
            status: request.status,
            metadata: request.metadata.clone(),
            expires_at: request.expires_at,
            role: request.role,
            ..Default::default()
        };
        (changes, event(context, actor, key, action), ())
    })
    .await
    .map(|(key, ())| key)
}

/// A new secret for the key, shown once; the old one works for the grace period.
/// Rotates `key`'s secret. With `of_generation` (a form shown for one secret), only that secret
/// is rotated, in the same statement that checks it is still the key's: once it is gone this is
/// a conflict, so a second submit of the same form never rotates again.
pub async fn rotate(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    key: ApiKey,
    grace_period_seconds: i64,
    of_generation: Option<i64>,
) -> Result<(ApiKey, PlainCredential), ApiKeyError> {
    may_manage(actor, key.role)?;
    api_keys::validate_grace_period(grace_period_seconds)?;
    checked_update(state, actor, key, |key| {
        let (change, secret) = api_keys::rotate(grace_period_seconds, state.secrets(), now_unix());
        let changes = ApiKeyChanges {
            secret: Some(change),
            only_if_secret_generation: of_generation,
            ..Default::default()
        };
        (
            changes,
            event(context, actor, key, AuditAction::ApiKeyRotated),
            secret,
        )
    })
    .await
}

pub async fn delete(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    mut key: ApiKey,
) -> Result<(), ApiKeyError> {
    for _ in 0..ATTEMPTS {
        may_manage(actor, key.role)?;
        let deleted = event(context, actor, &key, AuditAction::ApiKeyDeleted);
        if state
            .store()
            .delete_api_key(key.id, Some(key.role), &[deleted])
            .await?
        {
            forget(state, &key).await;
            return Ok(());
        }
        key = reread(state, &key).await?;
    }
    Err(ApiKeyError::Concurrent)
}

pub async fn list(
    state: &AppState,
    organization: &Organization,
    query: &ApiKeyQuery,
) -> Result<Page<ApiKey>, ApiKeyError> {
    Ok(state.store().list_api_keys(organization.id, query).await?)
}

/// This node stops trusting its cached view of the key at once; other nodes within
/// [`access::SUBJECT_STATE_TTL`].
async fn forget(state: &AppState, key: &ApiKey) {
    state.subjects().forget_key(key).await;
}
