//! The `invitations` table: the tokens (stored as hashes) that bring a person into an
//! organization, each offering the membership it was created with. An invitation is pending
//! until it is accepted, revoked or expires, and each of those happens at most once. Every
//! change holds the organization's lock ([`lock_organization`]), as membership changes do, so
//! the role an invitation offers is read as committed and cannot change between the check of
//! the caller's right and the write; a revoked invitation takes its still-invited membership
//! with it.

use keyplane_core::InvitationId;
use keyplane_core::OrganizationId;
use keyplane_core::paging::{Page, Position, SortValue};
use keyplane_core::records::{
    AuditEvent, Invitation, InvitationQuery, Membership, PendingInvitation, User,
};
use keyplane_core::secrets::CredentialHash;
use keyplane_core::values::{Role, UserStatus};

use crate::StoreError;
use crate::audit::{commit_if, insert_audit_events};
use crate::engine::{Backend, Param, SqlConnection, after, begin, commit, query};
use crate::organizations::{lock_organization, lock_organization_of_invitation};
use crate::people::{insert_membership, insert_user};
use crate::rows::{Bind, Columns, FromRow, parse_column};

pub(crate) async fn insert_invitation(
    conn: &mut impl SqlConnection,
    invitation: &Invitation,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO invitations (id, organization_id, user_id, token_hash, invited_by, \
         created_at, expires_at, accepted_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(invitation.id.to_string())
    .bind(invitation.organization_id.to_string())
    .bind(invitation.user_id.to_string())
    .bind(invitation.token_hash.as_bytes())
    .bind(invitation.invited_by.map(|id| id.to_string()))
    .bind(invitation.created_at)
    .bind(invitation.expires_at)
    .bind(invitation.accepted_at)
    .bind(invitation.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The invitation being updated still offers the role bound as parameter `$n`: its right to be
/// changed was checked against that role.
fn offers_role(n: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM memberships m \
         WHERE m.organization_id = invitations.organization_id \
         AND m.user_id = invitations.user_id AND m.role = ${n})"
    )
}

pub(crate) async fn invitations_of_organization(
    store: &impl Backend,
    organization_id: OrganizationId,
) -> Result<Vec<Invitation>, StoreError> {
    query("SELECT * FROM invitations WHERE organization_id = $1 ORDER BY id")
        .bind(organization_id.to_string())
        .fetch_records(&mut *store.read().await?)
        .await
}

const PENDING: &str = "FROM invitations i \
     JOIN users u ON u.id = i.user_id \
     JOIN memberships m \
       ON m.organization_id = i.organization_id AND m.user_id = i.user_id \
     WHERE i.organization_id = $1 AND i.accepted_at IS NULL \
     AND i.revoked_at IS NULL AND i.expires_at > $2";

/// The page query of [`crate::Store::pending_invitations`]: `$1` the organization, `$2` now,
/// then (after a cursor) the position's sort value and id, then limit and offset. Only
/// whitelisted columns are spliced in. Public so that tests can `EXPLAIN` it.
pub fn pending_invitations_sql(listing: &InvitationQuery) -> String {
    // Ties break by id (time-ordered); by creation time the list is a range of the index
    // `invitations_by_created`.
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let column = if listing.by_email {
        "lower(u.email)"
    } else {
        "i.created_at"
    };
    let (after_filter, limit, offset) = match listing.after {
        Some(_) => (
            format!(
                " AND ({column}, i.id) {} ($3, $4)",
                after(listing.descending)
            ),
            "$5",
            "$6",
        ),
        None => (String::new(), "$3", "$4"),
    };
    format!(
        "SELECT i.*, u.email AS person_email, m.role AS person_role, {column} AS sort_value \
         {PENDING}{after_filter} \
         ORDER BY {column} {direction}, i.id {direction} LIMIT {limit} OFFSET {offset}"
    )
}

/// An organization's invitations still pending at `now`, with their people's emails and roles
/// (one query), how many are pending, and where the next page starts.
pub(crate) async fn pending_invitations(
    store: &impl Backend,
    organization_id: OrganizationId,
    now: i64,
    listing: &InvitationQuery,
) -> Result<Page<PendingInvitation>, StoreError> {
    let mut reader = store.read().await?;
    // One invitation more than the page tells whether a further page exists.
    let rows = query(pending_invitations_sql(listing))
        .bind(organization_id.to_string())
        .bind(now)
        .bind_all(
            listing
                .after
                .iter()
                .flat_map(|after| after.0.iter().map(Param::from)),
        )
        .bind(i64::from(listing.limit) + 1)
        .bind(i64::try_from(listing.offset).unwrap_or(i64::MAX))
        .fetch_all(&mut *reader)
        .await?;
    let count: i64 = query(format!("SELECT COUNT(*) {PENDING}"))
        .bind(organization_id.to_string())
        .bind(now)
        .fetch_scalar(&mut *reader)
        .await?;
    let page = rows
        .iter()
        .map(|row| {
            let invitation = Invitation::from_row(row)?;
            let sort_value = if listing.by_email {
                SortValue::Text(row.get("sort_value")?)
            } else {
                SortValue::Int(row.get("sort_value")?)
            };
            let position = Position(vec![sort_value, SortValue::Text(invitation.id.to_string())]);
            Ok((
                PendingInvitation {
                    invitation,
                    email: row.get("person_email")?,
                    role: parse_column("role", &row.get::<String>("person_role")?)?,
                },
                position,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let count = u64::try_from(count).unwrap_or(0);
    let page = Page::from_rows(page, listing.limit, count, |(_, position)| position.clone());
    Ok(page.map(|(pending, _)| pending))
}

pub(crate) async fn invitation(
    store: &impl Backend,
    id: InvitationId,
) -> Result<Option<Invitation>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM invitations WHERE id = $1",
            &[Bind::Text(&id.to_string())],
        )
        .await
}

pub(crate) async fn invitation_by_hash(
    store: &impl Backend,
    hash: &CredentialHash,
) -> Result<Option<Invitation>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM invitations WHERE token_hash = $1",
            &[Bind::Bytes(hash.as_bytes())],
        )
        .await
}

/// Invites a person: the user when `new_user`, the membership and the invitation, with their
/// audit events; a conflict when the person already belongs to the organization.
pub(crate) async fn invite(
    store: &impl Backend,
    new_user: Option<&User>,
    membership: &Membership,
    invitation: &Invitation,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    if let Some(user) = new_user {
        insert_user(&mut *tx, user).await?;
    }
    insert_membership(&mut *tx, membership).await?;
    insert_invitation(&mut *tx, invitation).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}

/// Makes the person an owner of the invitation's organization (invited, or still active when
/// they already were) and stores the invitation. False when the organization is gone.
pub(crate) async fn grant_owner_invitation(
    store: &impl Backend,
    new_user: Option<&User>,
    invitation: &Invitation,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    if !lock_organization(&mut *tx, invitation.organization_id).await? {
        return Ok(false);
    }
    if let Some(user) = new_user {
        insert_user(&mut *tx, user).await?;
    }
    query(
        "INSERT INTO memberships (organization_id, user_id, role, status, created_at, \
         token_version) VALUES ($1, $2, $3, $4, $5, $7) \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role, \
         status = CASE WHEN memberships.status = $6 THEN memberships.status \
         ELSE excluded.status END",
    )
    .bind(invitation.organization_id.to_string())
    .bind(invitation.user_id.to_string())
    .bind(Role::Owner.as_str())
    .bind(UserStatus::Invited.as_str())
    .bind(invitation.created_at)
    .bind(UserStatus::Active.as_str())
    .bind(Membership::fresh_token_version())
    .execute(&mut *tx)
    .await?;
    insert_invitation(&mut *tx, invitation).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(true)
}

/// Replaces a pending invitation's token and expiry (a resend) while it offers `offered`.
pub(crate) async fn renew_invitation(
    store: &impl Backend,
    invitation: &Invitation,
    offered: Role,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    // Membership changes hold the organization's lock while they read and write: taking it
    // here, the role checked below is the role as committed, and a promotion cannot slip in
    // between this check and this write.
    if !lock_organization(&mut *tx, invitation.organization_id).await? {
        return Ok(false);
    }
    let renewed = query(format!(
        "UPDATE invitations SET token_hash = $1, expires_at = $2 \
         WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL \
         AND {}",
        offers_role(4)
    ))
    .bind(invitation.token_hash.as_bytes())
    .bind(invitation.expires_at)
    .bind(invitation.id.to_string())
    .bind(offered.as_str())
    .execute(&mut *tx)
    .await?
        == 1;
    commit_if(tx, renewed, events).await
}

/// Revokes a pending invitation while it offers `offered`, and removes its membership if that
/// is still only invited.
pub(crate) async fn revoke_invitation(
    store: &impl Backend,
    id: InvitationId,
    offered: Role,
    now: i64,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    // Membership changes hold the organization's lock while they read and write: taking it
    // here, the role checked below is the role as committed, and a promotion cannot slip in
    // between this check and this write.
    if !lock_organization_of_invitation(&mut *tx, id).await? {
        return Ok(false);
    }
    let revoked = query(format!(
        "UPDATE invitations SET revoked_at = $1 \
         WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL \
         AND {}",
        offers_role(3)
    ))
    .bind(now)
    .bind(id.to_string())
    .bind(offered.as_str())
    .execute(&mut *tx)
    .await?
        == 1;
    if revoked {
        // The membership existed only through the invitation: a revoked one leaves no member
        // behind who can never sign in (and who would count as an owner).
        query(
            "DELETE FROM memberships WHERE status = $1 AND (organization_id, user_id) \
             IN (SELECT organization_id, user_id FROM invitations WHERE id = $2)",
        )
        .bind(UserStatus::Invited.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    }
    commit_if(tx, revoked, events).await
}

/// Accepts a pending, unexpired invitation: marks it accepted, sets the person's password (and
/// names) and activates the membership. False, changing nothing, when it was not pending.
pub(crate) async fn accept_invitation(
    store: &impl Backend,
    invitation: &Invitation,
    user: &User,
    now: i64,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    // Membership changes of the organization hold its lock while they read and write a
    // membership: taking it here keeps a role change from writing back the `invited` status it
    // read over the acceptance.
    if !lock_organization(&mut *tx, invitation.organization_id).await? {
        return Ok(false);
    }
    let accepted = query(
        "UPDATE invitations SET accepted_at = $1 WHERE id = $2 \
         AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
    )
    .bind(now)
    .bind(invitation.id.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?
        == 1;
    if !accepted {
        return Ok(false);
    }
    query(
        "UPDATE users SET password_hash = $1, first_name = $2, last_name = $3 \
         WHERE id = $4",
    )
    .bind(&user.password_hash)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(user.id.to_string())
    .execute(&mut *tx)
    .await?;
    query(
        "UPDATE memberships SET status = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND status = $4",
    )
    .bind(UserStatus::Active.as_str())
    .bind(invitation.organization_id.to_string())
    .bind(invitation.user_id.to_string())
    .bind(UserStatus::Invited.as_str())
    .execute(&mut *tx)
    .await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(true)
}
