//! The organization use cases (README, "Organizations"): who may do what, the rules, the audit events.

use keyplane_core::audit::AuditAction;
use keyplane_core::organizations::{self, OrganizationFields, OrganizationQuery};
use keyplane_core::paging::Page;
use keyplane_core::policy::Action;
use keyplane_core::records::{AuditEvent, Organization};
use keyplane_core::time::now_unix;
use keyplane_core::tokens::SubjectType;
use keyplane_core::values::Env;
use keyplane_core::{OrganizationId, ValidationError};
use keyplane_store::{OrganizationDeletion, StoreError};

use crate::service::access::{self, Actor, Forbidden};
use crate::service::context::RequestContext;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum OrganizationError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("organization not found")]
    NotFound,
    #[error("the role does not allow this")]
    Forbidden,
    #[error("an organization cannot delete itself")]
    DeleteOwn,
    #[error("the organization still manages organizations")]
    ManagesOthers,
    #[error("a managed organization's LIVE env is enabled by its manager")]
    LiveNeedsManager,
    #[error("the organization changed concurrently")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Forbidden> for OrganizationError {
    fn from(_: Forbidden) -> Self {
        OrganizationError::Forbidden
    }
}

/// An organization the caller can see, or `NotFound` (for malformed ids too).
pub async fn visible(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Organization, OrganizationError> {
    let id: OrganizationId = id.parse().map_err(|_| OrganizationError::NotFound)?;
    access::visible_organization(state, actor.organization_id, id)
        .await?
        .ok_or(OrganizationError::NotFound)
}

/// The organization a request acts on: the caller's own when the path names none (`None`),
/// else the one it names if the caller can see it.
pub async fn visible_or_own(
    state: &AppState,
    actor: &Actor,
    id: Option<&str>,
) -> Result<Organization, OrganizationError> {
    match id {
        Some(id) => visible(state, actor, id).await,
        None => visible(state, actor, &actor.organization_id.to_string()).await,
    }
}

fn event(
    context: &RequestContext,
    actor: &Actor,
    target: OrganizationId,
    action: AuditAction,
) -> AuditEvent {
    context.event_by(actor, target, action, ("organization", &target.to_string()))
}

pub async fn list(
    state: &AppState,
    actor: &Actor,
    query: &OrganizationQuery,
) -> Result<Page<Organization>, OrganizationError> {
    Ok(state
        .store()
        .list_organizations(actor.organization_id, query)
        .await?)
}

/// Creates an organization managed by `manager` (default: the caller's own).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    manager: Option<&str>,
    fields: OrganizationFields,
) -> Result<Organization, OrganizationError> {
    actor.require(Action::ManageOrganizations)?;
    let manager = match manager {
        None | Some("") => actor.organization_id,
        Some(id) => {
            // Unknown or invisible: 404, as fiskaly answers.
            visible(state, actor, id).await?.id
        }
    };
    match access::management_levels(state, manager).await? {
        Some(levels) if levels < organizations::MAX_MANAGEMENT_LEVELS => {}
        Some(_) => {
            return Err(ValidationError::new(
                "managed_by_organization_id",
                format!(
                    "management chains hold at most {} organizations",
                    organizations::MAX_MANAGEMENT_LEVELS
                ),
            )
            .into());
        }
        None => return Err(OrganizationError::NotFound),
    }
    let created_by_user = access::credited_user(state, actor).await?;
    let organization = organizations::create(fields, manager, created_by_user, now_unix())?;
    let created = event(
        context,
        actor,
        organization.id,
        AuditAction::OrganizationCreated,
    );
    match state
        .store()
        .create_organization(&organization, &[created])
        .await
    {
        Ok(()) => Ok(organization),
        // The manager was deleted while this request ran.
        Err(StoreError::ReferenceGone(_)) => Err(OrganizationError::NotFound),
        Err(error) => Err(error.into()),
    }
}

pub async fn update(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization: Organization,
    fields: OrganizationFields,
) -> Result<Organization, OrganizationError> {
    actor.require(Action::ManageOrganizations)?;
    let updated = event(
        context,
        actor,
        organization.id,
        AuditAction::OrganizationUpdated,
    );
    change_organization(state, organization.id, updated, |organization| {
        organizations::update(organization, fields.clone())?;
        Ok(true)
    })
    .await
}

/// How often a change is tried against an organization that changed between its read and its
/// write.
const ATTEMPTS: usize = 3;

/// Applies `change` to the organization as stored now and writes the result only while it is
/// still stored so; when another change came between, reads it again and applies `change`
/// again. So two changes never overwrite each other (an `enable-env` writes only the envs, under
/// the row lock, and needs no second try). `change`
/// answers whether there is anything to write.
async fn change_organization(
    state: &AppState,
    id: OrganizationId,
    event: AuditEvent,
    change: impl Fn(&mut Organization) -> Result<bool, OrganizationError>,
) -> Result<Organization, OrganizationError> {
    for _ in 0..ATTEMPTS {
        let before = fresh(state, id).await?;
        let mut after = before.clone();
        if !change(&mut after)? {
            return Ok(after);
        }
        if state
            .store()
            .update_organization(&after, Some(&before), std::slice::from_ref(&event))
            .await?
        {
            state.subjects().forget_organization(id).await;
            return Ok(after);
        }
    }
    Err(OrganizationError::Concurrent)
}

pub async fn enable_env(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization: Organization,
    env: Env,
) -> Result<Organization, OrganizationError> {
    actor.require(Action::ManageOrganizations)?;
    let organization = fresh(state, organization.id).await?;
    let manager_has_live = match organization.managed_by {
        Some(manager) if env == Env::Live => fresh(state, manager).await?.envs.contains(&Env::Live),
        _ => false,
    };
    if !organizations::may_enable(&organization, env, actor.organization_id, manager_has_live) {
        return Err(OrganizationError::LiveNeedsManager);
    }
    let enabled = event(
        context,
        actor,
        organization.id,
        AuditAction::OrganizationEnvEnabled,
    );
    let enabled = state
        .store()
        .enable_organization_env(organization.id, env, &[enabled])
        .await?
        .ok_or(OrganizationError::NotFound)?;
    state.subjects().forget_organization(enabled.id).await;
    Ok(enabled)
}

/// The organization as stored now: what the visibility check returned may be up to
/// [`access::SUBJECT_STATE_TTL`] old, and a change must not write back a stale copy.
async fn fresh(state: &AppState, id: OrganizationId) -> Result<Organization, OrganizationError> {
    state
        .store()
        .organization(id)
        .await?
        .ok_or(OrganizationError::NotFound)
}

/// Deletes an organization the caller manages (not its own); its keys stop working at once
/// here and within the subject cache's lifetime elsewhere.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    context: &RequestContext,
    organization: Organization,
) -> Result<(), OrganizationError> {
    actor.require(Action::ManageOrganizations)?;
    if organization.id == actor.organization_id {
        return Err(OrganizationError::DeleteOwn);
    }
    let deleted = event(
        context,
        actor,
        organization.id,
        AuditAction::OrganizationDeleted,
    );
    match state
        .store()
        .delete_organization(organization.id, &[deleted])
        .await?
    {
        OrganizationDeletion::Deleted(keys) => {
            state.subjects().forget_keys_of(organization.id);
            state.subjects().forget_organization(organization.id).await;
            for key in keys {
                state
                    .subjects()
                    .forget(SubjectType::ApiKey, &key.to_string(), organization.id)
                    .await;
            }
            Ok(())
        }
        OrganizationDeletion::ManagesOthers => Err(OrganizationError::ManagesOthers),
        OrganizationDeletion::NotFound => Err(OrganizationError::NotFound),
    }
}
