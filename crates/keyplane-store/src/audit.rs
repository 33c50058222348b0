//! The `audit_events` table: the record of every change, written in the same transaction as the
//! change it records (each mutating operation takes its events), so neither exists without the
//! other. Events are only ever inserted, never changed; their ids are UUIDv7, so id order is
//! time order and pages read the index backwards for "newest first".

use keyplane_core::OrganizationId;
use keyplane_core::paging::{Page, Position, SortValue};
use keyplane_core::records::{AuditEvent, AuditQuery};

use crate::StoreError;
use crate::engine::{Backend, Param, Placeholders, SqlConnection, after, begin, commit, query};

/// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 1_000;

/// Inserts `events` in multi-row INSERTs.
pub(crate) async fn insert_audit_events<'e, C: SqlConnection>(
    conn: &mut C,
    events: impl IntoIterator<Item = &'e AuditEvent>,
) -> Result<(), StoreError> {
    let events: Vec<&AuditEvent> = events.into_iter().collect();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut insert = query(
            "INSERT INTO audit_events (id, organization_id, action, actor_type, actor_id, \
             target_type, target_id, request_id, ip, created_at) ",
        );
        insert.push_values::<C, _>(chunk, |row, event| {
            row.bind(event.id.to_string())
                .bind(event.organization_id.to_string())
                .bind(&event.action)
                .bind(event.actor_type.as_str())
                .bind(&event.actor_id)
                .bind(&event.target_type)
                .bind(&event.target_id)
                .bind(&event.request_id)
                .bind(&event.ip)
                .bind(event.created_at);
        });
        insert.execute(conn).await?;
    }
    Ok(())
}

/// Ends a transaction whose change may have found nothing to change: with `changed`, its audit
/// events are added and it commits; without, it rolls back (on drop).
pub(crate) async fn commit_if<DB>(
    mut tx: sqlx::Transaction<'_, DB>,
    changed: bool,
    events: &[AuditEvent],
) -> Result<bool, StoreError>
where
    DB: sqlx::Database<Connection: SqlConnection>,
{
    if changed {
        insert_audit_events(&mut *tx, events).await?;
        commit(tx).await?;
    }
    Ok(changed)
}

/// The organization's audit events, newest first.
pub(crate) async fn audit_events(
    store: &impl Backend,
    organization_id: OrganizationId,
) -> Result<Vec<AuditEvent>, StoreError> {
    query("SELECT * FROM audit_events WHERE organization_id = $1 ORDER BY id DESC")
        .bind(organization_id.to_string())
        .fetch_records(&mut *store.read().await?)
        .await
}

/// The page and count queries of [`crate::Store::list_audit_events`]: `$1` the organization,
/// then one placeholder per action, then the actor, `since` and `until` when given; the page
/// query then takes (after a cursor) the position's id, and limit and offset. Only fixed SQL is
/// spliced in; every value is bound.
fn audit_sql(listing: &AuditQuery) -> (String, String) {
    let mut filters = String::new();
    let mut placeholders = Placeholders::after_organization();
    let mut placeholder = || placeholders.take(1);
    if !listing.actions.is_empty() {
        let list: Vec<String> = listing.actions.iter().map(|_| placeholder()).collect();
        filters.push_str(&format!(" AND action IN ({})", list.join(", ")));
    }
    if listing.actor_id.is_some() {
        filters.push_str(&format!(" AND actor_id = {}", placeholder()));
    }
    if listing.since.is_some() {
        filters.push_str(&format!(" AND created_at >= {}", placeholder()));
    }
    if listing.until.is_some() {
        filters.push_str(&format!(" AND created_at <= {}", placeholder()));
    }
    let mut after_filter = String::new();
    if listing.after.is_some() {
        after_filter = format!(" AND id {} {}", after(!listing.oldest_first), placeholder());
    }
    let (limit, offset) = (placeholder(), placeholder());
    // Ids are UUIDv7: id order is time order, read backwards from the index.
    let direction = if listing.oldest_first { "ASC" } else { "DESC" };
    let page = format!(
        "SELECT * FROM audit_events WHERE organization_id = $1{filters}{after_filter} \
         ORDER BY id {direction} LIMIT {limit} OFFSET {offset}"
    );
    let count = format!("SELECT COUNT(*) FROM audit_events WHERE organization_id = $1{filters}");
    (page, count)
}

/// The page query of [`crate::Store::list_audit_events`] (see `audit_sql`). Public so that
/// tests can `EXPLAIN` it.
pub fn list_audit_events_sql(listing: &AuditQuery) -> String {
    audit_sql(listing).0
}

/// One page of an organization's audit events, how many match, and where the next page starts.
pub(crate) async fn list_audit_events(
    store: &impl Backend,
    organization_id: OrganizationId,
    listing: &AuditQuery,
) -> Result<Page<AuditEvent>, StoreError> {
    let (page, count) = audit_sql(listing);
    let mut values: Vec<Param<'_>> = vec![organization_id.to_string().into()];
    values.extend(listing.actions.iter().map(Param::from));
    values.extend(listing.actor_id.as_ref().map(Param::from));
    values.extend(listing.since.map(Param::from));
    values.extend(listing.until.map(Param::from));
    let mut page_values = values.clone();
    if let Some(position) = &listing.after {
        page_values.extend(position.0.iter().map(Param::from));
    }
    // One event more than the page tells whether a further page exists.
    let events: Vec<AuditEvent> = query(page)
        .bind_all(page_values)
        .bind(i64::from(listing.limit) + 1)
        .bind(i64::try_from(listing.offset).unwrap_or(i64::MAX))
        .fetch_records(&mut *store.read().await?)
        .await?;
    let total: i64 = query(count)
        .bind_all(values)
        .fetch_scalar(&mut *store.read().await?)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    Ok(Page::from_rows(events, listing.limit, total, |event| {
        Position(vec![SortValue::Text(event.id.to_string())])
    }))
}

/// Records audit events that accompany no other change (e.g. a failed login).
pub(crate) async fn record_audit_events(
    store: &impl Backend,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}
