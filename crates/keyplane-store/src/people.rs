//! People: the `users` table (one account per email address, whatever its case) and
//! `memberships` (a person's role and status in one organization, and the token version that a
//! disable counts up so that tokens issued before it stay dead). A membership change holds its
//! organization's lock ([`lock_organization`]) while it reads and writes, so changes of one
//! organization happen one at a time; a change is refused as stale when the membership no
//! longer has the role and status it was checked against, and an organization never loses its
//! last active owner (invited owners count: the bootstrap owner starts so).

use keyplane_core::paging::{Page, Position, SortValue};
use keyplane_core::records::{AuditEvent, Membership, MembershipOutcome, User, UserQuery};
use keyplane_core::values::{Email, Role, UserStatus};
use keyplane_core::{OrganizationId, UserId};

use crate::StoreError;
use crate::audit::{commit_if, insert_audit_events};
use crate::engine::{Backend, Param, Placeholders, SqlConnection, after, begin, commit, query};
use crate::organizations::lock_organization;
use crate::rows::{Bind, Columns, FromRow, corrupt, parse_column};

pub(crate) async fn insert_user(
    conn: &mut impl SqlConnection,
    user: &User,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO users (id, email, first_name, last_name, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user.id.to_string())
    .bind(user.email.as_str())
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(&user.password_hash)
    .bind(user.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_membership(
    conn: &mut impl SqlConnection,
    membership: &Membership,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO memberships (organization_id, user_id, role, status, created_at, \
         token_version, invited_first_name, invited_last_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(membership.organization_id.to_string())
    .bind(membership.user_id.to_string())
    .bind(membership.role.as_str())
    .bind(membership.status.as_str())
    .bind(membership.created_at)
    .bind(membership.token_version)
    .bind(&membership.invited_first_name)
    .bind(&membership.invited_last_name)
    .execute(conn)
    .await?;
    Ok(())
}

/// An owner who is not disabled (invited owners count: the bootstrap owner starts so).
fn is_active_owner(membership: &Membership) -> bool {
    membership.role == Role::Owner && membership.status != UserStatus::Disabled
}

/// Owners (not disabled) of the membership's organization other than its person.
async fn other_active_owners(
    conn: &mut impl SqlConnection,
    membership: &Membership,
) -> Result<i64, StoreError> {
    query(
        "SELECT COUNT(*) FROM memberships WHERE organization_id = $1 AND user_id <> $2 \
         AND role = $3 AND status <> $4",
    )
    .bind(membership.organization_id.to_string())
    .bind(membership.user_id.to_string())
    .bind(Role::Owner.as_str())
    .bind(UserStatus::Disabled.as_str())
    .fetch_scalar(conn)
    .await
}

/// The membership as it is, under its organization's lock: `Err(NotFound)` when it or the
/// organization is gone, `Err(Stale)` when its role or status is no longer `expected`'s.
async fn locked_membership(
    conn: &mut impl SqlConnection,
    expected: &Membership,
) -> Result<Result<Membership, MembershipOutcome>, StoreError> {
    if !lock_organization(&mut *conn, expected.organization_id).await? {
        return Ok(Err(MembershipOutcome::NotFound));
    }
    let Some(current) =
        query("SELECT * FROM memberships WHERE organization_id = $1 AND user_id = $2")
            .bind(expected.organization_id.to_string())
            .bind(expected.user_id.to_string())
            .fetch_optional(conn)
            .await?
    else {
        return Ok(Err(MembershipOutcome::NotFound));
    };
    let current = Membership::from_row(&current)?;
    if (current.role, current.status) != (expected.role, expected.status) {
        return Ok(Err(MembershipOutcome::Stale));
    }
    Ok(Ok(current))
}

/// Writes a membership's role and status; a disable counts up its token version. True when the
/// membership exists.
async fn set_membership(
    conn: &mut impl SqlConnection,
    membership: &Membership,
) -> Result<bool, StoreError> {
    Ok(query(
        "UPDATE memberships SET role = $1, status = $2, token_version = token_version + \
         CASE WHEN $2 = 'disabled' AND status <> 'disabled' THEN 1 ELSE 0 END \
         WHERE organization_id = $3 AND user_id = $4",
    )
    .bind(membership.role.as_str())
    .bind(membership.status.as_str())
    .bind(membership.organization_id.to_string())
    .bind(membership.user_id.to_string())
    .execute(conn)
    .await?
        == 1)
}

pub(crate) async fn user(store: &impl Backend, id: UserId) -> Result<Option<User>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM users WHERE id = $1",
            &[Bind::Text(&id.to_string())],
        )
        .await
}

/// A person by email address, whatever its case.
pub(crate) async fn user_by_email(
    store: &impl Backend,
    email: &str,
) -> Result<Option<User>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM users WHERE lower(email) = lower($1)",
            &[Bind::Text(email)],
        )
        .await
}

/// Stores a person's password hash (an Argon2id PHC string).
pub(crate) async fn set_user_password(
    store: &impl Backend,
    user_id: UserId,
    password_hash: &str,
) -> Result<(), StoreError> {
    query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(user_id.to_string())
        .execute(&mut *store.write().await?)
        .await?;
    Ok(())
}

pub(crate) async fn memberships_of_user(
    store: &impl Backend,
    user_id: UserId,
) -> Result<Vec<Membership>, StoreError> {
    query("SELECT * FROM memberships WHERE user_id = $1 ORDER BY organization_id")
        .bind(user_id.to_string())
        .fetch_records(&mut *store.read().await?)
        .await
}

/// A person's membership of one organization.
pub(crate) async fn membership(
    store: &impl Backend,
    organization_id: OrganizationId,
    user_id: UserId,
) -> Result<Option<Membership>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM memberships WHERE organization_id = $1 AND user_id = $2",
            &[
                Bind::Text(&organization_id.to_string()),
                Bind::Text(&user_id.to_string()),
            ],
        )
        .await
}

/// The page and count queries of [`crate::Store::list_users`]: `$1` the organization, then one
/// placeholder per status and per role filter; the page query then takes (after a cursor) the
/// position's sort value and id, and limit and offset. Only whitelisted columns are spliced in.
fn users_sql(listing: &UserQuery) -> (String, String) {
    let mut filters = String::new();
    let mut placeholders = Placeholders::after_organization();
    if !listing.statuses.is_empty() {
        filters.push_str(&format!(
            " AND m.status IN ({})",
            placeholders.take(listing.statuses.len())
        ));
    }
    if !listing.roles.is_empty() {
        filters.push_str(&format!(
            " AND m.role IN ({})",
            placeholders.take(listing.roles.len())
        ));
    }
    // Ties break by the person's id (`m.user_id` is `u.id`; by creation time the list is then a
    // range of the index `memberships_by_created`).
    let (column, tie) = if listing.by_created_at {
        ("m.created_at", "m.user_id")
    } else {
        ("lower(u.email)", "u.id")
    };
    let mut after_filter = String::new();
    if listing.after.is_some() {
        after_filter = format!(
            " AND ({column}, {tie}) {} ({})",
            after(listing.descending),
            placeholders.take(2)
        );
    }
    let (limit, offset) = (placeholders.take(1), placeholders.take(1));
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let page = format!(
        "SELECT u.id AS u_id, u.email, u.first_name, u.last_name, u.password_hash, \
         u.created_at AS u_created_at, m.organization_id, m.user_id, m.role, m.status, \
         m.created_at, m.token_version, m.invited_first_name, m.invited_last_name, \
         {column} AS sort_value \
         FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1{filters}{after_filter} \
         ORDER BY {column} {direction}, {tie} {direction} LIMIT {limit} OFFSET {offset}"
    );
    let count = format!("SELECT COUNT(*) FROM memberships m WHERE m.organization_id = $1{filters}");
    (page, count)
}

/// The page query of [`crate::Store::list_users`] (see `users_sql`). Public so that tests can
/// `EXPLAIN` it.
pub fn list_users_sql(listing: &UserQuery) -> String {
    users_sql(listing).0
}

/// One page of an organization's people (with their memberships), how many match, and where
/// the next page starts.
pub(crate) async fn list_users(
    store: &impl Backend,
    organization_id: OrganizationId,
    listing: &UserQuery,
) -> Result<Page<(User, Membership)>, StoreError> {
    let (page, count) = users_sql(listing);
    let mut values: Vec<Param<'_>> = vec![organization_id.to_string().into()];
    values.extend(listing.statuses.iter().map(|status| status.as_str().into()));
    values.extend(listing.roles.iter().map(|role| role.as_str().into()));
    let mut page_values = values.clone();
    if let Some(position) = &listing.after {
        page_values.extend(position.0.iter().map(Param::from));
    }
    // One person more than the page tells whether a further page exists.
    let rows = query(page)
        .bind_all(page_values)
        .bind(i64::from(listing.limit) + 1)
        .bind(i64::try_from(listing.offset).unwrap_or(i64::MAX))
        .fetch_all(&mut *store.read().await?)
        .await?;
    let mut people = Vec::with_capacity(rows.len());
    for row in &rows {
        let user = User {
            id: parse_column("users.id", &row.get::<String>("u_id")?)?,
            email: Email::parse(row.get::<String>("email")?).map_err(corrupt)?,
            first_name: row.get("first_name")?,
            last_name: row.get("last_name")?,
            password_hash: row.get("password_hash")?,
            created_at: row.get("u_created_at")?,
        };
        let sort_value = if listing.by_created_at {
            SortValue::Int(row.get("sort_value")?)
        } else {
            SortValue::Text(row.get("sort_value")?)
        };
        let position = Position(vec![sort_value, SortValue::Text(user.id.to_string())]);
        people.push(((user, Membership::from_row(row)?), position));
    }
    let total: i64 = query(count)
        .bind_all(values)
        .fetch_scalar(&mut *store.read().await?)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let page = Page::from_rows(people, listing.limit, total, |(_, position)| {
        position.clone()
    });
    Ok(page.map(|(person, _)| person))
}

/// Changes a membership from `expected` to `changed`'s role and status under the
/// organization's lock: `Stale` or `LastOwner` change nothing.
pub(crate) async fn change_membership(
    store: &impl Backend,
    expected: &Membership,
    changed: &Membership,
    events: &[AuditEvent],
) -> Result<MembershipOutcome, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let current = match locked_membership(&mut *tx, expected).await? {
        Ok(current) => current,
        Err(outcome) => return Ok(outcome),
    };
    if is_active_owner(&current)
        && !is_active_owner(changed)
        && other_active_owners(&mut *tx, &current).await? == 0
    {
        return Ok(MembershipOutcome::LastOwner);
    }
    set_membership(&mut *tx, changed).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(MembershipOutcome::Done)
}

/// Removes a person from an organization (membership, invitations, refresh tokens there) while
/// it still has `expected`'s role and status, refusing to remove its last active owner.
pub(crate) async fn remove_membership(
    store: &impl Backend,
    expected: &Membership,
    events: &[AuditEvent],
) -> Result<MembershipOutcome, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let current = match locked_membership(&mut *tx, expected).await? {
        Ok(current) => current,
        Err(outcome) => return Ok(outcome),
    };
    if is_active_owner(&current) && other_active_owners(&mut *tx, &current).await? == 0 {
        return Ok(MembershipOutcome::LastOwner);
    }
    for statement in [
        "DELETE FROM invitations WHERE organization_id = $1 AND user_id = $2",
        "DELETE FROM refresh_tokens WHERE organization_id = $1 AND subject_id = $2",
        "DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2",
    ] {
        query(statement)
            .bind(current.organization_id.to_string())
            .bind(current.user_id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(MembershipOutcome::Done)
}

/// Writes a membership's role and status, with its audit events. False when it is gone.
pub(crate) async fn update_membership(
    store: &impl Backend,
    membership: &Membership,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let updated = set_membership(&mut *tx, membership).await?;
    commit_if(tx, updated, events).await
}
