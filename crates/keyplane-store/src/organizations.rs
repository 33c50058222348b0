//! The `organizations` table: the tree of organizations (each `managed_by` its manager) and the
//! organization row lock. Every change that must not interleave with another change of the same
//! organization — membership and owner changes, invitations, guarded updates, deletion — first
//! rewrites the organization's row (`SET name = name`), which on PostgreSQL holds its lock until
//! the transaction ends (SQLite has one writer). An organization is deleted only while it
//! manages none, together with everything that belongs to it, and never loses its audit events.

use keyplane_core::organizations::{OrganizationOrder, OrganizationQuery};
use keyplane_core::paging::{Page, Position, SortValue};
use keyplane_core::records::{AuditEvent, Organization};
use keyplane_core::values::Env;
use keyplane_core::{InvitationId, OrganizationId};

use crate::audit::{commit_if, insert_audit_events};
use crate::engine::{Backend, Param, SqlConnection, after, begin, commit, query};
use crate::rows::{Bind, FromRow, envs_to_text, metadata_to_text, parse_column};
use crate::{OrganizationDeletion, StoreError};

pub(crate) async fn insert_organization(
    conn: &mut impl SqlConnection,
    org: &Organization,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO organizations (id, name, display_name, address_line1, address_line2, \
         zip, town, state, country_code, vat_id, tax_number, economy_id, \
         contact_person_id, billing_address_id, metadata, managed_by, envs, created_at, \
         created_by_user) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19)",
    )
    .bind(org.id.to_string())
    .bind(&org.name)
    .bind(&org.display_name)
    .bind(&org.address_line1)
    .bind(&org.address_line2)
    .bind(&org.zip)
    .bind(&org.town)
    .bind(&org.state)
    .bind(&org.country_code)
    .bind(&org.vat_id)
    .bind(&org.tax_number)
    .bind(&org.economy_id)
    .bind(&org.contact_person_id)
    .bind(&org.billing_address_id)
    .bind(metadata_to_text(&org.metadata))
    .bind(org.managed_by.map(|id| id.to_string()))
    .bind(envs_to_text(&org.envs))
    .bind(org.created_at)
    .bind(org.created_by_user.map(|id| id.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks an organization's row until the transaction ends (PostgreSQL; SQLite has one writer):
/// owner changes of one organization happen one at a time. False when gone.
pub(crate) async fn lock_organization(
    conn: &mut impl SqlConnection,
    id: OrganizationId,
) -> Result<bool, StoreError> {
    Ok(query("UPDATE organizations SET name = name WHERE id = $1")
        .bind(id.to_string())
        .execute(conn)
        .await?
        == 1)
}

/// Locks the organization of an invitation like [`lock_organization`]. False when the
/// invitation is gone.
pub(crate) async fn lock_organization_of_invitation(
    conn: &mut impl SqlConnection,
    id: InvitationId,
) -> Result<bool, StoreError> {
    Ok(query(
        "UPDATE organizations SET name = name \
         WHERE id = (SELECT organization_id FROM invitations WHERE id = $1)",
    )
    .bind(id.to_string())
    .execute(conn)
    .await?
        == 1)
}

pub(crate) async fn organization(
    store: &impl Backend,
    id: OrganizationId,
) -> Result<Option<Organization>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM organizations WHERE id = $1",
            &[Bind::Text(&id.to_string())],
        )
        .await
}

/// Stores a new organization with its audit events.
pub(crate) async fn create_organization(
    store: &impl Backend,
    organization: &Organization,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    insert_organization(&mut *tx, organization).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}

/// Writes an organization's mutable fields; with `expected`, only while the stored organization
/// still equals it, under its row lock.
pub(crate) async fn update_organization(
    store: &impl Backend,
    o: &Organization,
    expected: Option<&Organization>,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    if let Some(expected) = expected {
        if !lock_organization(&mut *tx, o.id).await? {
            return Ok(false);
        }
        let current = query("SELECT * FROM organizations WHERE id = $1")
            .bind(o.id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if Organization::from_row(&current)? != *expected {
            return Ok(false);
        }
    }
    let updated = query(
        "UPDATE organizations SET name = $1, display_name = $2, address_line1 = $3, \
         address_line2 = $4, zip = $5, town = $6, state = $7, country_code = $8, \
         vat_id = $9, tax_number = $10, economy_id = $11, contact_person_id = $12, \
         billing_address_id = $13, metadata = $14, envs = $15 WHERE id = $16",
    )
    .bind(&o.name)
    .bind(&o.display_name)
    .bind(&o.address_line1)
    .bind(&o.address_line2)
    .bind(&o.zip)
    .bind(&o.town)
    .bind(&o.state)
    .bind(&o.country_code)
    .bind(&o.vat_id)
    .bind(&o.tax_number)
    .bind(&o.economy_id)
    .bind(&o.contact_person_id)
    .bind(&o.billing_address_id)
    .bind(metadata_to_text(&o.metadata))
    .bind(envs_to_text(&o.envs))
    .bind(o.id.to_string())
    .execute(&mut *tx)
    .await?
        == 1;
    commit_if(tx, updated, events).await
}

/// Adds `env` to an organization's envs under its row lock, reading it inside the same
/// transaction, and writes only the envs (with `events` when it changed): it never conflicts
/// with a concurrent change of other fields. The organization as it is now; `None` when gone.
pub(crate) async fn enable_organization_env(
    store: &impl Backend,
    id: OrganizationId,
    env: Env,
    events: &[AuditEvent],
) -> Result<Option<Organization>, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    if !lock_organization(&mut *tx, id).await? {
        return Ok(None);
    }
    let row = query("SELECT * FROM organizations WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
    let mut organization = Organization::from_row(&row)?;
    if organization.envs.contains(&env) {
        return Ok(Some(organization));
    }
    organization.envs.push(env);
    organization.envs.sort();
    query("UPDATE organizations SET envs = $1 WHERE id = $2")
        .bind(envs_to_text(&organization.envs))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    commit_if(tx, true, events).await?;
    Ok(Some(organization))
}

/// The filters of an organization list, as SQL after `WHERE …` and the values to bind in order
/// (placeholders from `$2`).
pub(crate) fn organization_filters(listing: &OrganizationQuery) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(manager) = listing.managed_by {
        binds.push(manager.to_string());
        sql.push_str(&format!(" AND managed_by = ${}", binds.len() + 1));
    }
    match listing.managed {
        Some(true) => sql.push_str(" AND managed_by IS NOT NULL"),
        Some(false) => sql.push_str(" AND managed_by IS NULL"),
        None => {}
    }
    if let Some(env) = listing.env {
        binds.push(format!("%,{},%", env.as_str()));
        sql.push_str(&format!(
            " AND (',' || envs || ',') LIKE ${}",
            binds.len() + 1
        ));
    }
    (sql, binds)
}

/// The column an organization list is sorted by (then by id).
fn sort_column(order: OrganizationOrder) -> &'static str {
    match order {
        OrganizationOrder::Name => "name",
        OrganizationOrder::CreatedAt => "created_at",
        OrganizationOrder::Town => "town",
        OrganizationOrder::Zip => "zip",
        OrganizationOrder::DisplayName => "display_name",
    }
}

/// Where a page that ends with `organization` ends: its sort value (possibly unset) and id.
fn position(order: OrganizationOrder, organization: &Organization) -> Position {
    let value = match order {
        OrganizationOrder::Name => SortValue::Text(organization.name.clone()),
        OrganizationOrder::CreatedAt => SortValue::Int(organization.created_at),
        OrganizationOrder::Town => organization.town.clone().into(),
        OrganizationOrder::Zip => organization.zip.clone().into(),
        OrganizationOrder::DisplayName => organization.display_name.clone().into(),
    };
    Position(vec![value, SortValue::Text(organization.id.to_string())])
}

/// One page of `root` and every organization it manages, transitively, how many match, and
/// where the next page starts.
///
/// Unset values sort last in either direction, so the next page after a set value holds the
/// later set values and every unset one, and after an unset value only later unset ones.
pub(crate) async fn list_organizations(
    store: &impl Backend,
    root: OrganizationId,
    listing: &OrganizationQuery,
) -> Result<Page<Organization>, StoreError> {
    let (filters, binds) = organization_filters(listing);
    let tree = "WITH RECURSIVE visible(id) AS (\
         SELECT id FROM organizations WHERE id = $1 \
         UNION ALL \
         SELECT o.id FROM organizations o JOIN visible v ON o.managed_by = v.id) ";
    let column = sort_column(listing.order_by);
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let mut next = binds.len() + 2;
    let mut placeholder = || {
        next += 1;
        format!("${}", next - 1)
    };
    let mut page_binds: Vec<Param<'_>> = binds.iter().map(Into::into).collect();
    let mut after_filter = String::new();
    if let Some(Position(values)) = &listing.after {
        let (Some(value), Some(id)) = (values.first(), values.get(1)) else {
            return Err(StoreError::Corrupt(
                "a cursor position of another shape".into(),
            ));
        };
        let after = after(listing.descending);
        if *value == SortValue::Null {
            after_filter = format!(" AND {column} IS NULL AND id {after} {}", placeholder());
            page_binds.push(id.into());
        } else {
            after_filter = format!(
                " AND ({column} IS NULL OR {column} {after} {} \
                 OR ({column} = {} AND id {after} {}))",
                placeholder(),
                placeholder(),
                placeholder()
            );
            page_binds.extend([value.into(), value.into(), id.into()]);
        }
    }
    let (limit, offset) = (placeholder(), placeholder());
    // Unset values sort last on both engines.
    let page = format!(
        "{tree}SELECT * FROM organizations WHERE id IN (SELECT id FROM visible)\
         {filters}{after_filter} \
         ORDER BY CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, \
         id {direction} LIMIT {limit} OFFSET {offset}"
    );
    // One organization more than the page tells whether a further page exists.
    let organizations: Vec<Organization> = query(page)
        .bind(root.to_string())
        .bind_all(page_binds)
        .bind(i64::from(listing.limit) + 1)
        .bind(i64::try_from(listing.offset).unwrap_or(i64::MAX))
        .fetch_records(&mut *store.read().await?)
        .await?;
    let count = format!(
        "{tree}SELECT COUNT(*) FROM organizations \
         WHERE id IN (SELECT id FROM visible){filters}"
    );
    let total: i64 = query(count)
        .bind(root.to_string())
        .bind_all(binds.iter().map(Into::into))
        .fetch_scalar(&mut *store.read().await?)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    Ok(Page::from_rows(
        organizations,
        listing.limit,
        total,
        |organization| position(listing.order_by, organization),
    ))
}

/// Deletes an organization with its keys, refresh tokens, memberships and invitations, and
/// writes its audit events. Refuses while it manages organizations.
pub(crate) async fn delete_organization(
    store: &impl Backend,
    id: OrganizationId,
    events: &[AuditEvent],
) -> Result<OrganizationDeletion, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let id_text = id.to_string();
    // Locks the row (PostgreSQL) so that no child is created meanwhile unseen.
    let exists = query("UPDATE organizations SET name = name WHERE id = $1")
        .bind(&id_text)
        .execute(&mut *tx)
        .await?
        == 1;
    if !exists {
        return Ok(OrganizationDeletion::NotFound);
    }
    let children: i64 = query("SELECT COUNT(*) FROM organizations WHERE managed_by = $1")
        .bind(&id_text)
        .fetch_scalar(&mut *tx)
        .await?;
    if children > 0 {
        return Ok(OrganizationDeletion::ManagesOthers);
    }
    let keys: Vec<String> = query("SELECT id FROM api_keys WHERE organization_id = $1")
        .bind(&id_text)
        .fetch_scalars(&mut *tx)
        .await?;
    for statement in [
        "DELETE FROM refresh_tokens WHERE organization_id = $1",
        "DELETE FROM api_keys WHERE organization_id = $1",
        "DELETE FROM api_key_counts WHERE organization_id = $1",
        "DELETE FROM invitations WHERE organization_id = $1",
        "DELETE FROM memberships WHERE organization_id = $1",
        "DELETE FROM organizations WHERE id = $1",
    ] {
        query(statement).bind(&id_text).execute(&mut *tx).await?;
    }
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    let keys = keys
        .iter()
        .map(|key| parse_column("api_keys.id", key))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OrganizationDeletion::Deleted(keys))
}
