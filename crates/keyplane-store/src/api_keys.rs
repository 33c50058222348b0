//! The `api_keys` table and its per-organization counts, `api_key_counts` (one row per kind and
//! status, so a filtered total is a sum of a few rows rather than a scan). Every insert, delete
//! and status change adjusts the counts in the same transaction. A change of a key first
//! rewrites its row, which on PostgreSQL locks it until the transaction ends (SQLite has one
//! writer), so concurrent changes of one key queue instead of each working from a stale read;
//! a change writes only the fields it names. A new secret also ends the refresh-token families
//! obtained with older ones, and a disable counts up the key's token version.

use keyplane_core::api_keys::{ApiKeyOrder, ApiKeyQuery};
use keyplane_core::paging::{Page, Position, SortValue};
use keyplane_core::records::{ApiKey, ApiKeyChanges, AuditEvent};
use keyplane_core::values::{ApiKeyKind, ApiKeyStatus, Role};
use keyplane_core::{ApiKeyId, OrganizationId};

use crate::StoreError;
use crate::audit::insert_audit_events;
use crate::engine::{Backend, Placeholders, SqlConnection, after, begin, commit, query};
use crate::rows::{Bind, Columns, FromRow, metadata_to_text, parse_column};

/// The columns a key list is sorted by, a unique key within an organization: ties break by name
/// (unique per organization), or by id (time-ordered UUIDv7) for creation time. When the filter
/// leaves one value of the sorted column, the name alone orders the page (SQLite would otherwise
/// sort the rest of that value's keys).
fn sort_key(query: &ApiKeyQuery) -> &'static str {
    match query.order_by {
        ApiKeyOrder::Kind if query.kinds.len() != 1 => "kind, name",
        ApiKeyOrder::Status if query.statuses.len() != 1 => "status, name",
        ApiKeyOrder::Name | ApiKeyOrder::Kind | ApiKeyOrder::Status => "name",
        ApiKeyOrder::CreatedAt => "created_at, id",
    }
}

/// Where a page that ends with `key` ends, in the list of `query`.
fn position(query: &ApiKeyQuery, key: &ApiKey) -> Position {
    Position(
        sort_key(query)
            .split(", ")
            .map(|column| match column {
                "kind" => SortValue::Text(key.kind.as_str().to_owned()),
                "status" => SortValue::Text(key.status.as_str().to_owned()),
                "created_at" => SortValue::Int(key.created_at),
                "id" => SortValue::Text(key.id.to_string()),
                _ => SortValue::Text(key.name.as_str().to_owned()),
            })
            .collect(),
    )
}

/// The page query of [`crate::Store::list_api_keys`]: `$1` the organization, then one placeholder
/// per kind and per status filter, then either limit and offset, or (after a cursor) the
/// position's values and limit. Only whitelisted column names and directions are spliced in;
/// every value is bound. Public so that tests can `EXPLAIN` it.
///
/// A page costs one walk of an index and nothing else, on both engines, at any depth. After a
/// cursor the page is an index range from the position (a row-value comparison on the sort
/// key). At an offset, the subquery finds the page's first sort key by skipping `offset` entries
/// of the index that serves the order (reading no table rows), and the page is then an index
/// range from that key. A plain `ORDER BY … OFFSET` made PostgreSQL read and sort every key of
/// the organization once the offset was a few thousand.
pub fn list_api_keys_sql(query: &ApiKeyQuery) -> String {
    let key = sort_key(query);
    let (direction, from) = if query.descending {
        ("DESC", "<=")
    } else {
        ("ASC", ">=")
    };
    let order = key
        .split(", ")
        .map(|column| format!("{column} {direction}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut filters = String::from("organization_id = $1");
    let mut placeholders = Placeholders::after_organization();
    if !query.kinds.is_empty() {
        let kinds = placeholders.take(query.kinds.len());
        filters.push_str(&format!(" AND kind IN ({kinds})"));
    }
    if !query.statuses.is_empty() {
        let statuses = placeholders.take(query.statuses.len());
        filters.push_str(&format!(" AND status IN ({statuses})"));
    }
    if query.after.is_some() {
        let position = placeholders.take(key.split(", ").count());
        let limit = placeholders.take(1);
        let after = after(query.descending);
        return format!(
            "SELECT * FROM api_keys WHERE {filters} AND ({key}) {after} ({position}) \
             ORDER BY {order} LIMIT {limit}"
        );
    }
    let (limit, offset) = (placeholders.take(1), placeholders.take(1));
    format!(
        "SELECT * FROM api_keys WHERE {filters} AND ({key}) {from} (\
         SELECT {key} FROM api_keys WHERE {filters} ORDER BY {order} LIMIT 1 OFFSET {offset}\
         ) ORDER BY {order} LIMIT {limit}"
    )
}

pub(crate) async fn insert_api_key(
    conn: &mut impl SqlConnection,
    key: &ApiKey,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO api_keys (id, organization_id, name, kind, status, public_key, \
         secret_hash, previous_secret_hash, previous_secret_expires_at, metadata, \
         created_at, created_by_user, last_used_at, expires_at, role, \
         secret_generation, token_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17)",
    )
    .bind(key.id.to_string())
    .bind(key.organization_id.to_string())
    .bind(key.name.as_str())
    .bind(key.kind.as_str())
    .bind(key.status.as_str())
    .bind(&key.public_key)
    .bind(key.secret_hash.as_bytes())
    .bind(key.previous_secret_hash.as_ref().map(|h| h.as_bytes()))
    .bind(key.previous_secret_expires_at)
    .bind(metadata_to_text(&key.metadata))
    .bind(key.created_at)
    .bind(key.created_by_user.map(|id| id.to_string()))
    .bind(key.last_used_at)
    .bind(key.expires_at)
    .bind(key.role.as_str())
    .bind(key.secret_generation)
    .bind(key.token_version)
    .execute(&mut *conn)
    .await?;
    count_api_key(conn, key.organization_id, key.kind, key.status, 1).await
}

/// Adds `delta` to the organization's count of keys of this kind and status.
async fn count_api_key(
    conn: &mut impl SqlConnection,
    organization_id: OrganizationId,
    kind: ApiKeyKind,
    status: ApiKeyStatus,
    delta: i64,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO api_key_counts (organization_id, kind, status, n) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id, kind, status) \
         DO UPDATE SET n = api_key_counts.n + excluded.n",
    )
    .bind(organization_id.to_string())
    .bind(kind.as_str())
    .bind(status.as_str())
    .bind(delta)
    .execute(conn)
    .await?;
    Ok(())
}

/// The organization, kind and status a key has now, read with a write that locks its row until
/// the transaction ends (on PostgreSQL; SQLite has one writer), so that concurrent changes of
/// one key queue instead of each working from a stale read.
/// With `only_if_role`, a key whose role is another reads as absent.
async fn api_key_class(
    conn: &mut impl SqlConnection,
    id: ApiKeyId,
    only_if_role: Option<Role>,
    only_if_secret_generation: Option<i64>,
) -> Result<Option<(OrganizationId, ApiKeyKind, ApiKeyStatus)>, StoreError> {
    let Some(row) = query(
        "UPDATE api_keys SET status = status WHERE id = $1 \
         AND ($2 IS NULL OR role = $2) AND ($3 IS NULL OR secret_generation = $3) \
         RETURNING organization_id, kind, status",
    )
    .bind(id.to_string())
    .bind(only_if_role.map(|role| role.as_str()))
    .bind(only_if_secret_generation)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some((
        parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        parse_column("kind", &row.get::<String>("kind")?)?,
        parse_column("status", &row.get::<String>("status")?)?,
    )))
}

/// Looks an API key up by its public `key`, the credential's first half.
pub(crate) async fn api_key_by_public_key(
    store: &impl Backend,
    public_key: &str,
) -> Result<Option<ApiKey>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM api_keys WHERE public_key = $1",
            &[Bind::Text(public_key)],
        )
        .await
}

pub(crate) async fn api_key(
    store: &impl Backend,
    id: ApiKeyId,
) -> Result<Option<ApiKey>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM api_keys WHERE id = $1",
            &[Bind::Text(&id.to_string())],
        )
        .await
}

pub(crate) async fn api_key_by_name(
    store: &impl Backend,
    organization_id: OrganizationId,
    name: &str,
) -> Result<Option<ApiKey>, StoreError> {
    store
        .read_optional(
            "SELECT * FROM api_keys WHERE organization_id = $1 AND name = $2",
            &[Bind::Text(&organization_id.to_string()), Bind::Text(name)],
        )
        .await
}

/// Stores a new API key with its audit events; a conflict when the name is taken.
pub(crate) async fn create_api_key(
    store: &impl Backend,
    key: &ApiKey,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    insert_api_key(&mut *tx, key).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await
}

/// One page of an organization's keys, the number of keys that match the filters, and where
/// the next page starts.
pub(crate) async fn list_api_keys(
    store: &impl Backend,
    organization_id: OrganizationId,
    listing: &ApiKeyQuery,
) -> Result<Page<ApiKey>, StoreError> {
    let sql = list_api_keys_sql(listing);
    // One key more than the page tells whether a further page exists.
    let mut page = query(sql)
        .bind(organization_id.to_string())
        .bind_all(listing.kinds.iter().map(|kind| kind.as_str().into()))
        .bind_all(listing.statuses.iter().map(|status| status.as_str().into()));
    page = match &listing.after {
        Some(after) => page
            .bind_all(after.0.iter().map(Into::into))
            .bind(i64::from(listing.limit) + 1),
        None => page
            .bind(i64::from(listing.limit) + 1)
            .bind(i64::try_from(listing.offset).unwrap_or(i64::MAX)),
    };
    let keys: Vec<ApiKey> = page.fetch_records(&mut *store.read().await?).await?;
    let counts = query("SELECT kind, status, n FROM api_key_counts WHERE organization_id = $1")
        .bind(organization_id.to_string())
        .fetch_all(&mut *store.read().await?)
        .await?;
    let mut total = 0u64;
    for row in counts {
        let kind: ApiKeyKind = parse_column("kind", &row.get::<String>("kind")?)?;
        let status: ApiKeyStatus = parse_column("status", &row.get::<String>("status")?)?;
        if (listing.kinds.is_empty() || listing.kinds.contains(&kind))
            && (listing.statuses.is_empty() || listing.statuses.contains(&status))
        {
            total += u64::try_from(row.get::<i64>("n")?).unwrap_or(0);
        }
    }
    Ok(Page::from_rows(keys, listing.limit, total, |key| {
        position(listing, key)
    }))
}

/// Records when keys last obtained a token (batched; never moves a time backwards).
pub(crate) async fn touch_api_keys(
    store: &impl Backend,
    used: &[(ApiKeyId, i64)],
) -> Result<(), StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    for (id, at) in used {
        query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(*at)
        .bind(id.to_string())
        .bind(*at)
        .execute(&mut *tx)
        .await?;
    }
    commit(tx).await
}

/// Applies `changes` to an API key under its row lock, writing only the given fields, with
/// their audit events; the key as it is now, `None` when it is gone.
pub(crate) async fn update_api_key(
    store: &impl Backend,
    id: ApiKeyId,
    changes: &ApiKeyChanges,
    events: &[AuditEvent],
) -> Result<Option<ApiKey>, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let Some((organization_id, kind, status)) = api_key_class(
        &mut *tx,
        id,
        changes.only_if_role,
        changes.only_if_secret_generation,
    )
    .await?
    else {
        return Ok(None);
    };
    let id_text = id.to_string();
    if let Some(new_status) = changes.status
        && new_status != status
    {
        // A disable counts: tokens issued before it stay dead after an enable.
        let suspended = i64::from(new_status == ApiKeyStatus::Disabled);
        query(
            "UPDATE api_keys SET status = $1, token_version = token_version + $2 \
             WHERE id = $3",
        )
        .bind(new_status.as_str())
        .bind(suspended)
        .bind(&id_text)
        .execute(&mut *tx)
        .await?;
        count_api_key(&mut *tx, organization_id, kind, status, -1).await?;
        count_api_key(&mut *tx, organization_id, kind, new_status, 1).await?;
    }
    if let Some(metadata) = &changes.metadata {
        query("UPDATE api_keys SET metadata = $1 WHERE id = $2")
            .bind(metadata_to_text(metadata))
            .bind(&id_text)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(expires_at) = changes.expires_at {
        query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(expires_at)
            .bind(&id_text)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(role) = changes.role {
        query("UPDATE api_keys SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(&id_text)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(secret) = &changes.secret {
        query(
            "UPDATE api_keys SET secret_hash = $1, \
             previous_secret_hash = CASE WHEN $2 IS NULL THEN NULL ELSE secret_hash END, \
             previous_secret_expires_at = $2, \
             secret_generation = secret_generation + 1 WHERE id = $3",
        )
        .bind(secret.secret_hash.as_bytes())
        .bind(secret.previous_secret_expires_at)
        .bind(&id_text)
        .execute(&mut *tx)
        .await?;
        // Families obtained with older secrets end with the grace period.
        let end = secret.old_families_end_at;
        query(
            "UPDATE refresh_tokens SET family_expires_at = $1, \
             expires_at = CASE WHEN expires_at > $2 THEN $3 ELSE expires_at END \
             WHERE subject_id = $4 \
             AND (family_expires_at IS NULL OR family_expires_at > $5)",
        )
        .bind(end)
        .bind(end)
        .bind(end)
        .bind(&id_text)
        .bind(end)
        .execute(&mut *tx)
        .await?;
    }
    insert_audit_events(&mut *tx, events).await?;
    let key = query("SELECT * FROM api_keys WHERE id = $1")
        .bind(&id_text)
        .fetch_one(&mut *tx)
        .await?;
    let key = ApiKey::from_row(&key)?;
    commit(tx).await?;
    Ok(Some(key))
}

/// Deletes an API key and its refresh tokens, with its audit events. False when it was gone (or,
/// with `only_if_role`, holds another role now).
pub(crate) async fn delete_api_key(
    store: &impl Backend,
    id: ApiKeyId,
    only_if_role: Option<Role>,
    events: &[AuditEvent],
) -> Result<bool, StoreError> {
    let mut writer = store.write().await?;
    let mut tx = begin(&mut *writer).await?;
    let Some((organization_id, kind, status)) =
        api_key_class(&mut *tx, id, only_if_role, None).await?
    else {
        return Ok(false);
    };
    query("DELETE FROM refresh_tokens WHERE subject_id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    query("DELETE FROM api_keys WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    count_api_key(&mut *tx, organization_id, kind, status, -1).await?;
    insert_audit_events(&mut *tx, events).await?;
    commit(tx).await?;
    Ok(true)
}
