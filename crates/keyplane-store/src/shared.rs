//! The SQL both stores run, written once. `impl_store!` expands the [`crate::Store`] trait for a
//! concrete sqlx database type; every statement uses `$n` placeholders in ascending order, which
//! SQLite and PostgreSQL both accept, and only portable types (TEXT, BIGINT, bytes).

use keyplane_core::api_keys::{ApiKeyOrder, ApiKeyQuery};
use keyplane_core::organizations::OrganizationQuery;
use keyplane_core::records::{
    ActorType, ApiKey, AuditEvent, Invitation, Membership, Metadata, Organization, RefreshToken,
    User,
};
use keyplane_core::secrets::CredentialHash;
use keyplane_core::tokens::{StoredSigningKey, SubjectType};
use keyplane_core::values::Env;
use sqlx::{Postgres, Sqlite};

use crate::StoreError;

/// A value a column can be read as, by either engine's sqlx rows and by rusqlite (the point
/// reads SQLite runs in place, see [`crate::in_place`]).
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + rusqlite::types::FromSql
{
}

/// A result row, read by column name: what the `*_from_row` functions below need, so each
/// record is mapped from its columns once for every kind of row.
pub(crate) trait Columns {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError>;
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        Ok(rusqlite::Row::get(self, column)?)
    }
}

/// A value bound to a placeholder of a point read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bind<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Bind::Text(text) => text.to_sql(),
            Bind::Bytes(bytes) => bytes.to_sql(),
        }
    }
}

pub(crate) fn envs_to_text(envs: &[Env]) -> String {
    envs.iter().map(Env::as_str).collect::<Vec<_>>().join(",")
}

pub(crate) fn envs_from_text(text: &str) -> Result<Vec<Env>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(|e| parse_column("envs", e)).collect()
}

pub(crate) fn metadata_to_text(metadata: &Metadata) -> String {
    serde_json::Value::Object(metadata.clone()).to_string()
}

pub(crate) fn metadata_from_text(text: &str) -> Result<Metadata, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))
}

pub(crate) fn parse_column<T: std::str::FromStr>(
    column: &str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column}: unexpected value {text:?}")))
}

pub(crate) fn parse_actor_type(text: &str) -> Result<ActorType, StoreError> {
    ActorType::parse(text).ok_or_else(|| StoreError::Corrupt(format!("actor_type: {text:?}")))
}

/// Numbered placeholders for a query built with optional filters: `$2, $3, …` in the order the
/// values will be bound (`$1` is the organization).
pub(crate) struct Placeholders(usize);

impl Placeholders {
    pub(crate) fn after_organization() -> Self {
        Self(2)
    }

    /// `count` placeholders, comma-separated.
    pub(crate) fn take(&mut self, count: usize) -> String {
        let list: Vec<String> = (self.0..self.0 + count).map(|n| format!("${n}")).collect();
        self.0 += count;
        list.join(", ")
    }
}

/// The page query of [`crate::Store::list_api_keys`]: `$1` the organization, then one placeholder
/// per kind and per status filter, then limit and offset. Only whitelisted column names and
/// directions are spliced in; every value is bound. Public so that tests can `EXPLAIN` it.
///
/// A deep page costs one walk of an index and nothing else, on both engines: the subquery finds
/// the page's first sort key by skipping `offset` entries of the index that serves the order
/// (reading no table rows), and the page is then an index range from that key. A plain
/// `ORDER BY … OFFSET` made PostgreSQL read and sort every key of the organization once the
/// offset was a few thousand.
pub fn list_api_keys_sql(query: &ApiKeyQuery) -> String {
    // The sort key is unique within an organization: ties break by name (unique per
    // organization), or by id (time-ordered UUIDv7) for creation time.
    // When the filter leaves one value of the sorted column, the name alone orders the page
    // (SQLite would otherwise sort the rest of that value's keys).
    let key = match query.order_by {
        ApiKeyOrder::Kind if query.kinds.len() != 1 => "kind, name",
        ApiKeyOrder::Status if query.statuses.len() != 1 => "status, name",
        ApiKeyOrder::Name | ApiKeyOrder::Kind | ApiKeyOrder::Status => "name",
        ApiKeyOrder::CreatedAt => "created_at, id",
    };
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
    let (limit, offset) = (placeholders.take(1), placeholders.take(1));
    format!(
        "SELECT * FROM api_keys WHERE {filters} AND ({key}) {from} (\
         SELECT {key} FROM api_keys WHERE {filters} ORDER BY {order} LIMIT 1 OFFSET {offset}\
         ) ORDER BY {order} LIMIT {limit}"
    )
}

/// The filters of an organization list, as SQL after `WHERE …` and the values to bind in order
/// (placeholders from `$2`).
pub(crate) fn organization_filters(query: &OrganizationQuery) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(manager) = query.managed_by {
        binds.push(manager.to_string());
        sql.push_str(&format!(" AND managed_by = ${}", binds.len() + 1));
    }
    match query.managed {
        Some(true) => sql.push_str(" AND managed_by IS NOT NULL"),
        Some(false) => sql.push_str(" AND managed_by IS NULL"),
        None => {}
    }
    if let Some(env) = query.env {
        binds.push(format!("%,{},%", env.as_str()));
        sql.push_str(&format!(
            " AND (',' || envs || ',') LIKE ${}",
            binds.len() + 1
        ));
    }
    (sql, binds)
}

fn hash_from_bytes(column: &str, bytes: Vec<u8>) -> Result<CredentialHash, StoreError> {
    CredentialHash::from_slice(&bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: not 32 bytes")))
}

pub(crate) fn organization_from_row(row: &impl Columns) -> Result<Organization, StoreError> {
    let managed_by: Option<String> = row.get("managed_by")?;
    let created_by_user: Option<String> = row.get("created_by_user")?;
    Ok(Organization {
        id: parse_column("id", &row.get::<String>("id")?)?,
        name: row.get("name")?,
        display_name: row.get("display_name")?,
        address_line1: row.get("address_line1")?,
        address_line2: row.get("address_line2")?,
        zip: row.get("zip")?,
        town: row.get("town")?,
        state: row.get("state")?,
        country_code: row.get("country_code")?,
        vat_id: row.get("vat_id")?,
        tax_number: row.get("tax_number")?,
        economy_id: row.get("economy_id")?,
        contact_person_id: row.get("contact_person_id")?,
        billing_address_id: row.get("billing_address_id")?,
        metadata: metadata_from_text(&row.get::<String>("metadata")?)?,
        managed_by: managed_by
            .map(|id| parse_column("managed_by", &id))
            .transpose()?,
        envs: envs_from_text(&row.get::<String>("envs")?)?,
        created_at: row.get("created_at")?,
        created_by_user: created_by_user
            .map(|id| parse_column("created_by_user", &id))
            .transpose()?,
    })
}

pub(crate) fn user_from_row(row: &impl Columns) -> Result<User, StoreError> {
    Ok(User {
        id: parse_column("id", &row.get::<String>("id")?)?,
        email: row.get("email")?,
        first_name: row.get("first_name")?,
        last_name: row.get("last_name")?,
        password_hash: row.get("password_hash")?,
        created_at: row.get("created_at")?,
    })
}

pub(crate) fn membership_from_row(row: &impl Columns) -> Result<Membership, StoreError> {
    Ok(Membership {
        user_id: parse_column("user_id", &row.get::<String>("user_id")?)?,
        organization_id: parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        role: parse_column("role", &row.get::<String>("role")?)?,
        status: parse_column("status", &row.get::<String>("status")?)?,
        created_at: row.get("created_at")?,
        token_version: row.get("token_version")?,
        invited_first_name: row.get("invited_first_name")?,
        invited_last_name: row.get("invited_last_name")?,
    })
}

pub(crate) fn invitation_from_row(row: &impl Columns) -> Result<Invitation, StoreError> {
    let invited_by: Option<String> = row.get("invited_by")?;
    Ok(Invitation {
        id: parse_column("id", &row.get::<String>("id")?)?,
        organization_id: parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        user_id: parse_column("user_id", &row.get::<String>("user_id")?)?,
        token_hash: hash_from_bytes("token_hash", row.get("token_hash")?)?,
        invited_by: invited_by
            .map(|id| parse_column("invited_by", &id))
            .transpose()?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        accepted_at: row.get("accepted_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

pub(crate) fn api_key_from_row(row: &impl Columns) -> Result<ApiKey, StoreError> {
    let previous: Option<Vec<u8>> = row.get("previous_secret_hash")?;
    let created_by_user: Option<String> = row.get("created_by_user")?;
    Ok(ApiKey {
        id: parse_column("id", &row.get::<String>("id")?)?,
        organization_id: parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        name: row.get("name")?,
        kind: parse_column("kind", &row.get::<String>("kind")?)?,
        status: parse_column("status", &row.get::<String>("status")?)?,
        role: parse_column("role", &row.get::<String>("role")?)?,
        public_key: row.get("public_key")?,
        secret_hash: hash_from_bytes("secret_hash", row.get("secret_hash")?)?,
        previous_secret_hash: previous
            .map(|bytes| hash_from_bytes("previous_secret_hash", bytes))
            .transpose()?,
        previous_secret_expires_at: row.get("previous_secret_expires_at")?,
        metadata: metadata_from_text(&row.get::<String>("metadata")?)?,
        created_at: row.get("created_at")?,
        created_by_user: created_by_user
            .map(|id| parse_column("created_by_user", &id))
            .transpose()?,
        last_used_at: row.get("last_used_at")?,
        expires_at: row.get("expires_at")?,
        secret_generation: row.get("secret_generation")?,
        token_version: row.get("token_version")?,
    })
}

pub(crate) fn audit_event_from_row(row: &impl Columns) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        id: parse_column("id", &row.get::<String>("id")?)?,
        organization_id: parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        action: row.get("action")?,
        actor_type: parse_actor_type(&row.get::<String>("actor_type")?)?,
        actor_id: row.get("actor_id")?,
        target_type: row.get("target_type")?,
        target_id: row.get("target_id")?,
        request_id: row.get("request_id")?,
        ip: row.get("ip")?,
        created_at: row.get("created_at")?,
    })
}

pub(crate) fn signing_key_from_row(row: &impl Columns) -> Result<StoredSigningKey, StoreError> {
    Ok(StoredSigningKey {
        kid: row.get("kid")?,
        encrypted_private_key: row.get("encrypted_private_key")?,
        public_key: row.get("public_key")?,
        created_at: row.get("created_at")?,
        retired_at: row.get("retired_at")?,
    })
}

pub(crate) fn refresh_token_from_row(row: &impl Columns) -> Result<RefreshToken, StoreError> {
    let subject_type: String = row.get("subject_type")?;
    Ok(RefreshToken {
        id: row.get("id")?,
        family_id: row.get("family_id")?,
        token_hash: hash_from_bytes("token_hash", row.get("token_hash")?)?,
        subject_type: SubjectType::parse(&subject_type)
            .ok_or_else(|| StoreError::Corrupt(format!("subject_type: {subject_type:?}")))?,
        subject_id: row.get("subject_id")?,
        organization_id: parse_column("organization_id", &row.get::<String>("organization_id")?)?,
        env: parse_column("env", &row.get::<String>("env")?)?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        used_at: row.get("used_at")?,
        revoked_at: row.get("revoked_at")?,
        family_expires_at: row.get("family_expires_at")?,
        key_generation: row.get("key_generation")?,
        subject_token_version: row.get("subject_token_version")?,
    })
}

/// Expands `Store` for `$store`, whose `read()` and `write()` lend a connection to `$db` and
/// whose `read_optional()` runs a point read (one row by a unique key; in place on SQLite).
macro_rules! impl_store {
    ($store:ty, $db:ty, $engine:literal) => {
        use async_trait::async_trait;
        use keyplane_core::records::{
            ApiKey, ApiKeyChanges, AuditEvent, AuditQuery, Invitation, MembershipOutcome, PendingInvitation, UserQuery, Membership, Organization, RefreshIssue, RefreshToken,
            User,
        };
        use keyplane_core::secrets::CredentialHash;
        use keyplane_core::tokens::StoredSigningKey;
        use keyplane_core::api_keys::ApiKeyQuery;
        use keyplane_core::values::{ApiKeyKind, ApiKeyStatus, Role, UserStatus};
        use keyplane_core::{ApiKeyId, InvitationId, OrganizationId, UserId};
        use sqlx::Row;

        use keyplane_core::organizations::{OrganizationOrder, OrganizationQuery};

        use crate::OrganizationDeletion;
        use crate::shared::{
            Bind, Placeholders, organization_filters, api_key_from_row, audit_event_from_row,
            invitation_from_row, membership_from_row, organization_from_row, refresh_token_from_row,
            signing_key_from_row, user_from_row,
            envs_to_text, metadata_to_text, parse_column,
        };
        use crate::{Bootstrap, Store, StoreError};

        type Connection = <$db as sqlx::Database>::Connection;

        async fn insert_organization(
            conn: &mut Connection,
            org: &Organization,
        ) -> Result<(), StoreError> {
            sqlx::query(
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
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_user(conn: &mut Connection, user: &User) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO users (id, email, first_name, last_name, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.id.to_string())
            .bind(&user.email)
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_membership(
            conn: &mut Connection,
            membership: &Membership,
        ) -> Result<(), StoreError> {
            sqlx::query(
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
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_invitation(
            conn: &mut Connection,
            invitation: &Invitation,
        ) -> Result<(), StoreError> {
            sqlx::query(
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
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_api_key(conn: &mut Connection, key: &ApiKey) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO api_keys (id, organization_id, name, kind, status, public_key, \
                 secret_hash, previous_secret_hash, previous_secret_expires_at, metadata, \
                 created_at, created_by_user, last_used_at, expires_at, role, \
                 secret_generation, token_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17)",
            )
            .bind(key.id.to_string())
            .bind(key.organization_id.to_string())
            .bind(&key.name)
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
            conn: &mut Connection,
            organization_id: OrganizationId,
            kind: ApiKeyKind,
            status: ApiKeyStatus,
            delta: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO api_key_counts (organization_id, kind, status, n) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (organization_id, kind, status) \
                 DO UPDATE SET n = api_key_counts.n + excluded.n",
            )
            .bind(organization_id.to_string())
            .bind(kind.as_str())
            .bind(status.as_str())
            .bind(delta)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// The organization, kind and status a key has now, read with a write that locks its row
        /// until the transaction ends (on PostgreSQL; SQLite has one writer), so that concurrent
        /// changes of one key queue instead of each working from a stale read.
        /// With `only_if_role`, a key whose role is another reads as absent.
        async fn api_key_class(
            conn: &mut Connection,
            id: ApiKeyId,
            only_if_role: Option<Role>,
        ) -> Result<Option<(OrganizationId, ApiKeyKind, ApiKeyStatus)>, StoreError> {
            let Some(row) = sqlx::query(
                "UPDATE api_keys SET status = status WHERE id = $1 \
                 AND ($2 IS NULL OR role = $2) RETURNING organization_id, kind, status",
            )
            .bind(id.to_string())
            .bind(only_if_role.map(|role| role.as_str()))
            .fetch_optional(&mut *conn)
            .await?
            else {
                return Ok(None);
            };
            Ok(Some((
                parse_column("organization_id", row.try_get::<String, _>("organization_id")?.as_str())?,
                parse_column("kind", row.try_get::<String, _>("kind")?.as_str())?,
                parse_column("status", row.try_get::<String, _>("status")?.as_str())?,
            )))
        }

        /// Locks an organization's row until the transaction ends (PostgreSQL; SQLite has one
        /// writer): owner changes of one organization happen one at a time. False when gone.
        async fn lock_organization(
            conn: &mut Connection,
            id: OrganizationId,
        ) -> Result<bool, StoreError> {
            Ok(sqlx::query("UPDATE organizations SET name = name WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?
                .rows_affected()
                == 1)
        }

        /// Locks the organization of an invitation like [`lock_organization`]. False when the
        /// invitation is gone.
        async fn lock_organization_of_invitation(
            conn: &mut Connection,
            id: InvitationId,
        ) -> Result<bool, StoreError> {
            Ok(sqlx::query(
                "UPDATE organizations SET name = name \
                 WHERE id = (SELECT organization_id FROM invitations WHERE id = $1)",
            )
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1)
        }

        /// An owner who is not disabled (invited owners count: the bootstrap owner starts so).
        fn is_active_owner(membership: &Membership) -> bool {
            membership.role == Role::Owner && membership.status != UserStatus::Disabled
        }

        /// Owners (not disabled) of the membership's organization other than its person.
        async fn other_active_owners(
            conn: &mut Connection,
            membership: &Membership,
        ) -> Result<i64, StoreError> {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM memberships WHERE organization_id = $1 AND user_id <> $2 \
                 AND role = $3 AND status <> $4",
            )
            .bind(membership.organization_id.to_string())
            .bind(membership.user_id.to_string())
            .bind(Role::Owner.as_str())
            .bind(UserStatus::Disabled.as_str())
            .fetch_one(&mut *conn)
            .await?)
        }

        /// The membership as it is, under its organization's lock: `Err(NotFound)` when it or the
        /// organization is gone, `Err(Stale)` when its role or status is no longer `expected`'s.
        async fn locked_membership(
            conn: &mut Connection,
            expected: &Membership,
        ) -> Result<Result<Membership, MembershipOutcome>, StoreError> {
            if !lock_organization(conn, expected.organization_id).await? {
                return Ok(Err(MembershipOutcome::NotFound));
            }
            let Some(current) = sqlx::query(
                "SELECT * FROM memberships WHERE organization_id = $1 AND user_id = $2",
            )
            .bind(expected.organization_id.to_string())
            .bind(expected.user_id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            else {
                return Ok(Err(MembershipOutcome::NotFound));
            };
            let current = membership_from_row(&current)?;
            if (current.role, current.status) != (expected.role, expected.status) {
                return Ok(Err(MembershipOutcome::Stale));
            }
            Ok(Ok(current))
        }

        /// Writes a membership's role and status; a disable counts up its token version. True
        /// when the membership exists.
        async fn set_membership(
            conn: &mut Connection,
            membership: &Membership,
        ) -> Result<bool, StoreError> {
            Ok(sqlx::query(
                "UPDATE memberships SET role = $1, status = $2, token_version = token_version + \
                 CASE WHEN $2 = 'disabled' AND status <> 'disabled' THEN 1 ELSE 0 END \
                 WHERE organization_id = $3 AND user_id = $4",
            )
            .bind(membership.role.as_str())
            .bind(membership.status.as_str())
            .bind(membership.organization_id.to_string())
            .bind(membership.user_id.to_string())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1)
        }

        /// The invitation being updated still offers the role bound as parameter `$n`: its
        /// right to be changed was checked against that role.
        fn offers_role(n: usize) -> String {
            format!(
                "EXISTS (SELECT 1 FROM memberships m \
                 WHERE m.organization_id = invitations.organization_id \
                 AND m.user_id = invitations.user_id AND m.role = ${n})"
            )
        }

        /// Ends a transaction whose change may have found nothing to change: with `changed`, its
        /// audit events are added and it commits; without, it rolls back (on drop).
        async fn commit_if(
            mut tx: sqlx::Transaction<'_, $db>,
            changed: bool,
            events: &[AuditEvent],
        ) -> Result<bool, StoreError> {
            if changed {
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
            }
            Ok(changed)
        }

        /// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters.
        const ROWS_PER_INSERT: usize = 1_000;

        async fn insert_audit_events<'e>(
            conn: &mut Connection,
            events: impl IntoIterator<Item = &'e AuditEvent>,
        ) -> Result<(), StoreError> {
            let events: Vec<&AuditEvent> = events.into_iter().collect();
            for chunk in events.chunks(ROWS_PER_INSERT) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO audit_events (id, organization_id, action, actor_type, actor_id, \
                     target_type, target_id, request_id, ip, created_at) ",
                );
                insert.push_values(chunk, |mut row, event| {
                    row.push_bind(event.id.to_string())
                        .push_bind(event.organization_id.to_string())
                        .push_bind(event.action.clone())
                        .push_bind(event.actor_type.as_str())
                        .push_bind(event.actor_id.clone())
                        .push_bind(event.target_type.clone())
                        .push_bind(event.target_id.clone())
                        .push_bind(event.request_id.clone())
                        .push_bind(event.ip.clone())
                        .push_bind(event.created_at);
                });
                insert.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        async fn insert_refresh_tokens(
            conn: &mut Connection,
            tokens: &[&RefreshToken],
        ) -> Result<(), StoreError> {
            for chunk in tokens.chunks(ROWS_PER_INSERT) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO refresh_tokens (id, family_id, token_hash, subject_type, \
                     subject_id, organization_id, env, created_at, expires_at, used_at, \
                     revoked_at, family_expires_at, key_generation, subject_token_version) ",
                );
                insert.push_values(chunk, |mut row, token| {
                    row.push_bind(token.id.clone())
                        .push_bind(token.family_id.clone())
                        .push_bind(token.token_hash.as_bytes().to_vec())
                        .push_bind(token.subject_type.as_str())
                        .push_bind(token.subject_id.clone())
                        .push_bind(token.organization_id.to_string())
                        .push_bind(token.env.as_str())
                        .push_bind(token.created_at)
                        .push_bind(token.expires_at)
                        .push_bind(token.used_at)
                        .push_bind(token.revoked_at)
                        .push_bind(token.family_expires_at)
                        .push_bind(token.key_generation)
                        .push_bind(token.subject_token_version);
                });
                insert.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        #[async_trait]
        impl Store for $store {
            fn engine(&self) -> &'static str {
                $engine
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&mut *self.read().await?).await?;
                Ok(())
            }

            async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
                self.check_storage()?;
                let probe = async {
                    let mut writer = self.write().await?;
                    let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                    sqlx::query("UPDATE readiness_probe SET checked_at = $1 WHERE id = 1")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok::<(), StoreError>(())
                };
                let result = probe.await;
                if result.is_err() {
                    self.write_probe_failed();
                }
                result
            }

            async fn bootstrap(&self, b: &Bootstrap) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let organizations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
                    .fetch_one(&mut *tx)
                    .await?;
                if organizations > 0 {
                    return Err(StoreError::AlreadyBootstrapped);
                }
                // The singleton row makes a concurrent second bootstrap fail on commit.
                match sqlx::query("INSERT INTO bootstrap (id, done_at) VALUES (1, $1)")
                    .bind(b.organization.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)
                {
                    Err(StoreError::Conflict(_)) => return Err(StoreError::AlreadyBootstrapped),
                    other => other?,
                };
                insert_organization(&mut tx, &b.organization).await?;
                insert_user(&mut tx, &b.user).await?;
                insert_membership(&mut tx, &b.membership).await?;
                insert_invitation(&mut tx, &b.invitation).await?;
                insert_api_key(&mut tx, &b.api_key).await?;
                insert_audit_events(&mut tx, &b.events).await?;
                match tx.commit().await.map_err(StoreError::from) {
                    Err(StoreError::Conflict(_)) => Err(StoreError::AlreadyBootstrapped),
                    other => other,
                }
            }

            async fn organization(
                &self,
                id: OrganizationId,
            ) -> Result<Option<Organization>, StoreError> {
                self.read_optional(
                    "SELECT * FROM organizations WHERE id = $1",
                    &[Bind::Text(&id.to_string())],
                    |row| organization_from_row(row),
                )
                .await
            }

            async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
                self.read_optional(
                    "SELECT * FROM users WHERE id = $1",
                    &[Bind::Text(&id.to_string())],
                    |row| user_from_row(row),
                )
                .await
            }

            async fn memberships_of_user(
                &self,
                user_id: UserId,
            ) -> Result<Vec<Membership>, StoreError> {
                sqlx::query(
                    "SELECT * FROM memberships WHERE user_id = $1 ORDER BY organization_id",
                )
                .bind(user_id.to_string())
                .fetch_all(&mut *self.read().await?)
                .await?
                .iter()
                .map(membership_from_row)
                .collect()
            }

            async fn invitations_of_organization(
                &self,
                organization_id: OrganizationId,
            ) -> Result<Vec<Invitation>, StoreError> {
                sqlx::query("SELECT * FROM invitations WHERE organization_id = $1 ORDER BY id")
                    .bind(organization_id.to_string())
                    .fetch_all(&mut *self.read().await?)
                    .await?
                    .iter()
                    .map(invitation_from_row)
                    .collect()
            }

            async fn api_key_by_public_key(
                &self,
                public_key: &str,
            ) -> Result<Option<ApiKey>, StoreError> {
                self.read_optional(
                    "SELECT * FROM api_keys WHERE public_key = $1",
                    &[Bind::Text(public_key)],
                    |row| api_key_from_row(row),
                )
                .await
            }

            async fn audit_events(
                &self,
                organization_id: OrganizationId,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                sqlx::query(
                    "SELECT * FROM audit_events WHERE organization_id = $1 ORDER BY id DESC",
                )
                .bind(organization_id.to_string())
                .fetch_all(&mut *self.read().await?)
                .await?
                .iter()
                .map(audit_event_from_row)
                .collect()
            }

            async fn list_audit_events(
                &self,
                organization_id: OrganizationId,
                query: &AuditQuery,
            ) -> Result<(Vec<AuditEvent>, u64), StoreError> {
                let mut filters = String::new();
                let mut placeholders = Placeholders::after_organization();
                let mut placeholder = || placeholders.take(1);
                if !query.actions.is_empty() {
                    let list: Vec<String> = query.actions.iter().map(|_| placeholder()).collect();
                    filters.push_str(&format!(" AND action IN ({})", list.join(", ")));
                }
                if query.actor_id.is_some() {
                    filters.push_str(&format!(" AND actor_id = {}", placeholder()));
                }
                if query.since.is_some() {
                    filters.push_str(&format!(" AND created_at >= {}", placeholder()));
                }
                if query.until.is_some() {
                    filters.push_str(&format!(" AND created_at <= {}", placeholder()));
                }
                let (limit, offset) = (placeholder(), placeholder());
                // Ids are UUIDv7: id order is time order, read backwards from the index.
                let direction = if query.oldest_first { "ASC" } else { "DESC" };
                let page = format!(
                    "SELECT * FROM audit_events WHERE organization_id = $1{filters} \
                     ORDER BY id {direction} LIMIT {limit} OFFSET {offset}"
                );
                let count = format!(
                    "SELECT COUNT(*) FROM audit_events WHERE organization_id = $1{filters}"
                );
                let mut select = sqlx::query(&page).bind(organization_id.to_string());
                let mut counting =
                    sqlx::query_scalar::<_, i64>(&count).bind(organization_id.to_string());
                for action in &query.actions {
                    select = select.bind(action);
                    counting = counting.bind(action);
                }
                if let Some(actor) = &query.actor_id {
                    select = select.bind(actor);
                    counting = counting.bind(actor);
                }
                for bound in [query.since, query.until].into_iter().flatten() {
                    select = select.bind(bound);
                    counting = counting.bind(bound);
                }
                let events = select
                    .bind(i64::from(query.limit))
                    .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                    .fetch_all(&mut *self.read().await?)
                    .await?
                    .iter()
                    .map(audit_event_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                let total = counting.fetch_one(&mut *self.read().await?).await?;
                Ok((events, u64::try_from(total).unwrap_or(0)))
            }

            async fn api_key(&self, id: ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
                self.read_optional(
                    "SELECT * FROM api_keys WHERE id = $1",
                    &[Bind::Text(&id.to_string())],
                    |row| api_key_from_row(row),
                )
                .await
            }

            async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
                sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
                    .fetch_all(&mut *self.read().await?)
                    .await?
                    .iter()
                    .map(signing_key_from_row)
                    .collect()
            }

            async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, encrypted_private_key, public_key, created_at, \
                     retired_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.kid)
                .bind(&key.encrypted_private_key)
                .bind(&key.public_key)
                .bind(key.created_at)
                .bind(key.retired_at)
                .execute(&mut *self.write().await?)
                .await?;
                Ok(())
            }

            async fn rotate_signing_key(
                &self,
                new: &StoredSigningKey,
                retire_at: i64,
                expected_newest: Option<&str>,
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let newest: Option<String> = sqlx::query_scalar(
                    "SELECT kid FROM signing_keys ORDER BY created_at DESC, kid DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                if newest.as_deref() != expected_newest {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $1 \
                     WHERE retired_at IS NULL OR retired_at > $2",
                )
                .bind(retire_at)
                .bind(retire_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, encrypted_private_key, public_key, created_at, \
                     retired_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&new.kid)
                .bind(&new.encrypted_private_key)
                .bind(&new.public_key)
                .bind(new.created_at)
                .bind(new.retired_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
                self.read_optional(
                    "SELECT * FROM users WHERE lower(email) = lower($1)",
                    &[Bind::Text(email)],
                    |row| user_from_row(row),
                )
                .await
            }

            async fn membership(
                &self,
                organization_id: OrganizationId,
                user_id: UserId,
            ) -> Result<Option<Membership>, StoreError> {
                self.read_optional(
                    "SELECT * FROM memberships WHERE organization_id = $1 AND user_id = $2",
                    &[Bind::Text(&organization_id.to_string()), Bind::Text(&user_id.to_string())],
                    |row| membership_from_row(row),
                )
                .await
            }

            async fn list_users(
                &self,
                organization_id: OrganizationId,
                query: &UserQuery,
            ) -> Result<(Vec<(User, Membership)>, u64), StoreError> {
                let mut filters = String::new();
                let mut placeholders = Placeholders::after_organization();
                if !query.statuses.is_empty() {
                    filters.push_str(&format!(
                        " AND m.status IN ({})",
                        placeholders.take(query.statuses.len())
                    ));
                }
                if !query.roles.is_empty() {
                    filters.push_str(&format!(" AND m.role IN ({})", placeholders.take(query.roles.len())));
                }
                let (limit, offset) = (placeholders.take(1), placeholders.take(1));
                let column = if query.by_created_at { "m.created_at" } else { "lower(u.email)" };
                let direction = if query.descending { "DESC" } else { "ASC" };
                let page = format!(
                    "SELECT u.id AS u_id, u.email, u.first_name, u.last_name, u.password_hash, \
                     u.created_at AS u_created_at, m.organization_id, m.user_id, m.role, m.status, \
                     m.created_at, m.token_version, m.invited_first_name, m.invited_last_name \
                     FROM memberships m JOIN users u ON u.id = m.user_id \
                     WHERE m.organization_id = $1{filters} \
                     ORDER BY {column} {direction}, u.id {direction} LIMIT {limit} OFFSET {offset}"
                );
                let count = format!(
                    "SELECT COUNT(*) FROM memberships m WHERE m.organization_id = $1{filters}"
                );
                let mut select = sqlx::query(&page).bind(organization_id.to_string());
                let mut counting =
                    sqlx::query_scalar::<_, i64>(&count).bind(organization_id.to_string());
                for status in &query.statuses {
                    select = select.bind(status.as_str());
                    counting = counting.bind(status.as_str());
                }
                for role in &query.roles {
                    select = select.bind(role.as_str());
                    counting = counting.bind(role.as_str());
                }
                let rows = select
                    .bind(i64::from(query.limit))
                    .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                    .fetch_all(&mut *self.read().await?)
                    .await?;
                let mut people = Vec::with_capacity(rows.len());
                for row in &rows {
                    let user = User {
                        id: parse_column("users.id", row.try_get::<&str, _>("u_id")?)?,
                        email: row.try_get("email")?,
                        first_name: row.try_get("first_name")?,
                        last_name: row.try_get("last_name")?,
                        password_hash: row.try_get("password_hash")?,
                        created_at: row.try_get("u_created_at")?,
                    };
                    people.push((user, membership_from_row(row)?));
                }
                let total = counting.fetch_one(&mut *self.read().await?).await?;
                Ok((people, u64::try_from(total).unwrap_or(0)))
            }

            async fn invite(
                &self,
                new_user: Option<&User>,
                membership: &Membership,
                invitation: &Invitation,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                if let Some(user) = new_user {
                    insert_user(&mut tx, user).await?;
                }
                insert_membership(&mut tx, membership).await?;
                insert_invitation(&mut tx, invitation).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn grant_owner_invitation(
                &self,
                new_user: Option<&User>,
                invitation: &Invitation,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                if !lock_organization(&mut tx, invitation.organization_id).await? {
                    return Ok(false);
                }
                if let Some(user) = new_user {
                    insert_user(&mut tx, user).await?;
                }
                sqlx::query(
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
                insert_invitation(&mut tx, invitation).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn change_membership(
                &self,
                expected: &Membership,
                changed: &Membership,
                events: &[AuditEvent],
            ) -> Result<MembershipOutcome, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let current = match locked_membership(&mut tx, expected).await? {
                    Ok(current) => current,
                    Err(outcome) => return Ok(outcome),
                };
                if is_active_owner(&current)
                    && !is_active_owner(changed)
                    && other_active_owners(&mut tx, &current).await? == 0
                {
                    return Ok(MembershipOutcome::LastOwner);
                }
                set_membership(&mut tx, changed).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(MembershipOutcome::Done)
            }

            async fn remove_membership(
                &self,
                expected: &Membership,
                events: &[AuditEvent],
            ) -> Result<MembershipOutcome, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let current = match locked_membership(&mut tx, expected).await? {
                    Ok(current) => current,
                    Err(outcome) => return Ok(outcome),
                };
                if is_active_owner(&current) && other_active_owners(&mut tx, &current).await? == 0 {
                    return Ok(MembershipOutcome::LastOwner);
                }
                for statement in [
                    "DELETE FROM invitations WHERE organization_id = $1 AND user_id = $2",
                    "DELETE FROM refresh_tokens WHERE organization_id = $1 AND subject_id = $2",
                    "DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2",
                ] {
                    sqlx::query(statement)
                        .bind(current.organization_id.to_string())
                        .bind(current.user_id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(MembershipOutcome::Done)
            }

            async fn pending_invitations(
                &self,
                organization_id: OrganizationId,
                now: i64,
            ) -> Result<Vec<PendingInvitation>, StoreError> {
                sqlx::query(
                    "SELECT i.*, u.email AS person_email, m.role AS person_role \
                     FROM invitations i \
                     JOIN users u ON u.id = i.user_id \
                     JOIN memberships m \
                       ON m.organization_id = i.organization_id AND m.user_id = i.user_id \
                     WHERE i.organization_id = $1 AND i.accepted_at IS NULL \
                     AND i.revoked_at IS NULL AND i.expires_at > $2 ORDER BY i.id",
                )
                .bind(organization_id.to_string())
                .bind(now)
                .fetch_all(&mut *self.read().await?)
                .await?
                .iter()
                .map(|row| {
                    Ok(PendingInvitation {
                        invitation: invitation_from_row(row)?,
                        email: row.try_get("person_email")?,
                        role: parse_column("role", row.try_get::<&str, _>("person_role")?)?,
                    })
                })
                .collect()
            }

            async fn invitation(&self, id: InvitationId) -> Result<Option<Invitation>, StoreError> {
                self.read_optional(
                    "SELECT * FROM invitations WHERE id = $1",
                    &[Bind::Text(&id.to_string())],
                    |row| invitation_from_row(row),
                )
                .await
            }

            async fn invitation_by_hash(
                &self,
                hash: &CredentialHash,
            ) -> Result<Option<Invitation>, StoreError> {
                self.read_optional(
                    "SELECT * FROM invitations WHERE token_hash = $1",
                    &[Bind::Bytes(hash.as_bytes())],
                    |row| invitation_from_row(row),
                )
                .await
            }

            async fn renew_invitation(
                &self,
                invitation: &Invitation,
                offered: Role,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                // Membership changes hold the organization's lock while they read and write:
                // taking it here, the role checked below is the role as committed, and a
                // promotion cannot slip in between this check and this write.
                if !lock_organization(&mut tx, invitation.organization_id).await? {
                    return Ok(false);
                }
                let renewed = sqlx::query(&format!(
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
                .rows_affected()
                    == 1;
                commit_if(tx, renewed, events).await
            }

            async fn revoke_invitation(
                &self,
                id: InvitationId,
                offered: Role,
                now: i64,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                // Membership changes hold the organization's lock while they read and write:
                // taking it here, the role checked below is the role as committed, and a
                // promotion cannot slip in between this check and this write.
                if !lock_organization_of_invitation(&mut tx, id).await? {
                    return Ok(false);
                }
                let revoked = sqlx::query(&format!(
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
                .rows_affected()
                    == 1;
                if revoked {
                    // The membership existed only through the invitation: a revoked one leaves
                    // no member behind who can never sign in (and who would count as an owner).
                    sqlx::query(
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

            async fn accept_invitation(
                &self,
                invitation: &Invitation,
                user: &User,
                now: i64,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                // Membership changes of the organization hold its lock while they read and
                // write a membership: taking it here keeps a role change from writing back the
                // `invited` status it read over the acceptance.
                if !lock_organization(&mut tx, invitation.organization_id).await? {
                    return Ok(false);
                }
                let accepted = sqlx::query(
                    "UPDATE invitations SET accepted_at = $1 WHERE id = $2 \
                     AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $3",
                )
                .bind(now)
                .bind(invitation.id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !accepted {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE users SET password_hash = $1, first_name = $2, last_name = $3 \
                     WHERE id = $4",
                )
                .bind(&user.password_hash)
                .bind(&user.first_name)
                .bind(&user.last_name)
                .bind(user.id.to_string())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE memberships SET status = $1 \
                     WHERE organization_id = $2 AND user_id = $3 AND status = $4",
                )
                .bind(UserStatus::Active.as_str())
                .bind(invitation.organization_id.to_string())
                .bind(invitation.user_id.to_string())
                .bind(UserStatus::Invited.as_str())
                .execute(&mut *tx)
                .await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn set_user_password(
                &self,
                user_id: UserId,
                password_hash: &str,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_id.to_string())
                    .execute(&mut *self.write().await?)
                    .await?;
                Ok(())
            }

            async fn update_membership(
                &self,
                membership: &Membership,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let updated = set_membership(&mut tx, membership).await?;
                commit_if(tx, updated, events).await
            }

            async fn update_api_key(
                &self,
                id: ApiKeyId,
                changes: &ApiKeyChanges,
                events: &[AuditEvent],
            ) -> Result<Option<ApiKey>, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let Some((organization_id, kind, status)) =
                    api_key_class(&mut tx, id, changes.only_if_role).await?
                else {
                    return Ok(None);
                };
                let id_text = id.to_string();
                if let Some(new_status) = changes.status
                    && new_status != status
                {
                    // A disable counts: tokens issued before it stay dead after an enable.
                    let suspended = i64::from(new_status == ApiKeyStatus::Disabled);
                    sqlx::query(
                        "UPDATE api_keys SET status = $1, token_version = token_version + $2 \
                         WHERE id = $3",
                    )
                    .bind(new_status.as_str())
                    .bind(suspended)
                    .bind(&id_text)
                    .execute(&mut *tx)
                    .await?;
                    count_api_key(&mut tx, organization_id, kind, status, -1).await?;
                    count_api_key(&mut tx, organization_id, kind, new_status, 1).await?;
                }
                if let Some(metadata) = &changes.metadata {
                    sqlx::query("UPDATE api_keys SET metadata = $1 WHERE id = $2")
                        .bind(metadata_to_text(metadata))
                        .bind(&id_text)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(expires_at) = changes.expires_at {
                    sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
                        .bind(expires_at)
                        .bind(&id_text)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(role) = changes.role {
                    sqlx::query("UPDATE api_keys SET role = $1 WHERE id = $2")
                        .bind(role.as_str())
                        .bind(&id_text)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(secret) = &changes.secret {
                    sqlx::query(
                        "UPDATE api_keys SET secret_hash = $1, previous_secret_hash = $2, \
                         previous_secret_expires_at = $3, \
                         secret_generation = secret_generation + 1 WHERE id = $4",
                    )
                    .bind(secret.secret_hash.as_bytes())
                    .bind(secret.previous_secret_hash.as_ref().map(|h| h.as_bytes()))
                    .bind(secret.previous_secret_expires_at)
                    .bind(&id_text)
                    .execute(&mut *tx)
                    .await?;
                    // Families obtained with older secrets end with the grace period.
                    let end = secret.old_families_end_at;
                    sqlx::query(
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
                insert_audit_events(&mut tx, events).await?;
                let key = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
                    .bind(&id_text)
                    .fetch_one(&mut *tx)
                    .await?;
                let key = api_key_from_row(&key)?;
                tx.commit().await?;
                Ok(Some(key))
            }

            async fn delete_api_key(
                &self,
                id: ApiKeyId,
                only_if_role: Option<Role>,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let Some((organization_id, kind, status)) =
                    api_key_class(&mut tx, id, only_if_role).await?
                else {
                    return Ok(false);
                };
                sqlx::query("DELETE FROM refresh_tokens WHERE subject_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM api_keys WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                count_api_key(&mut tx, organization_id, kind, status, -1).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn create_organization(
                &self,
                organization: &Organization,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                insert_organization(&mut tx, organization).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_organization(
                &self,
                o: &Organization,
                expected: Option<&Organization>,
                events: &[AuditEvent],
            ) -> Result<bool, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                if let Some(expected) = expected {
                    if !lock_organization(&mut tx, o.id).await? {
                        return Ok(false);
                    }
                    let current = sqlx::query("SELECT * FROM organizations WHERE id = $1")
                        .bind(o.id.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                    if organization_from_row(&current)? != *expected {
                        return Ok(false);
                    }
                }
                let updated = sqlx::query(
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
                .rows_affected()
                    == 1;
                commit_if(tx, updated, events).await
            }

            async fn list_organizations(
                &self,
                root: OrganizationId,
                query: &OrganizationQuery,
            ) -> Result<(Vec<Organization>, u64), StoreError> {
                let (filters, binds) = organization_filters(query);
                let tree = "WITH RECURSIVE visible(id) AS (\
                     SELECT id FROM organizations WHERE id = $1 \
                     UNION ALL \
                     SELECT o.id FROM organizations o JOIN visible v ON o.managed_by = v.id) ";
                let column = match query.order_by {
                    OrganizationOrder::Name => "name",
                    OrganizationOrder::CreatedAt => "created_at",
                    OrganizationOrder::Town => "town",
                    OrganizationOrder::Zip => "zip",
                    OrganizationOrder::DisplayName => "display_name",
                };
                let direction = if query.descending { "DESC" } else { "ASC" };
                let next = binds.len() + 2;
                // Unset values sort last on both engines.
                let page = format!(
                    "{tree}SELECT * FROM organizations WHERE id IN (SELECT id FROM visible){filters} \
                     ORDER BY CASE WHEN {column} IS NULL THEN 1 ELSE 0 END, {column} {direction}, \
                     id {direction} LIMIT ${next} OFFSET ${}",
                    next + 1
                );
                let mut select = sqlx::query(&page).bind(root.to_string());
                for bind in &binds {
                    select = select.bind(bind);
                }
                let organizations = select
                    .bind(i64::from(query.limit))
                    .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                    .fetch_all(&mut *self.read().await?)
                    .await?
                    .iter()
                    .map(organization_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                let count_sql = format!(
                    "{tree}SELECT COUNT(*) FROM organizations \
                     WHERE id IN (SELECT id FROM visible){filters}"
                );
                let mut count = sqlx::query_scalar::<_, i64>(&count_sql).bind(root.to_string());
                for bind in &binds {
                    count = count.bind(bind);
                }
                let total = count.fetch_one(&mut *self.read().await?).await?;
                Ok((organizations, u64::try_from(total).unwrap_or(0)))
            }

            async fn delete_organization(
                &self,
                id: OrganizationId,
                events: &[AuditEvent],
            ) -> Result<OrganizationDeletion, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let id_text = id.to_string();
                // Locks the row (PostgreSQL) so that no child is created meanwhile unseen.
                let exists = sqlx::query("UPDATE organizations SET name = name WHERE id = $1")
                    .bind(&id_text)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !exists {
                    return Ok(OrganizationDeletion::NotFound);
                }
                let children: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM organizations WHERE managed_by = $1")
                        .bind(&id_text)
                        .fetch_one(&mut *tx)
                        .await?;
                if children > 0 {
                    return Ok(OrganizationDeletion::ManagesOthers);
                }
                let keys: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM api_keys WHERE organization_id = $1")
                        .bind(&id_text)
                        .fetch_all(&mut *tx)
                        .await?;
                for statement in [
                    "DELETE FROM refresh_tokens WHERE organization_id = $1",
                    "DELETE FROM api_keys WHERE organization_id = $1",
                    "DELETE FROM api_key_counts WHERE organization_id = $1",
                    "DELETE FROM invitations WHERE organization_id = $1",
                    "DELETE FROM memberships WHERE organization_id = $1",
                    "DELETE FROM organizations WHERE id = $1",
                ] {
                    sqlx::query(statement).bind(&id_text).execute(&mut *tx).await?;
                }
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                let keys = keys
                    .iter()
                    .map(|key| parse_column("api_keys.id", key))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(OrganizationDeletion::Deleted(keys))
            }

            async fn create_api_key(
                &self,
                key: &ApiKey,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                insert_api_key(&mut tx, key).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn api_key_by_name(
                &self,
                organization_id: OrganizationId,
                name: &str,
            ) -> Result<Option<ApiKey>, StoreError> {
                self.read_optional(
                    "SELECT * FROM api_keys WHERE organization_id = $1 AND name = $2",
                    &[Bind::Text(&organization_id.to_string()), Bind::Text(name)],
                    |row| api_key_from_row(row),
                )
                .await
            }

            async fn list_api_keys(
                &self,
                organization_id: OrganizationId,
                query: &ApiKeyQuery,
            ) -> Result<(Vec<ApiKey>, u64), StoreError> {
                let sql = crate::shared::list_api_keys_sql(query);
                let mut select = sqlx::query(&sql).bind(organization_id.to_string());
                for kind in &query.kinds {
                    select = select.bind(kind.as_str());
                }
                for status in &query.statuses {
                    select = select.bind(status.as_str());
                }
                let keys = select
                    .bind(i64::from(query.limit))
                    .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
                    .fetch_all(&mut *self.read().await?)
                    .await?
                    .iter()
                    .map(api_key_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                let counts = sqlx::query(
                    "SELECT kind, status, n FROM api_key_counts WHERE organization_id = $1",
                )
                .bind(organization_id.to_string())
                .fetch_all(&mut *self.read().await?)
                .await?;
                let mut total = 0u64;
                for row in counts {
                    let kind: ApiKeyKind = parse_column("kind", row.try_get::<String, _>("kind")?.as_str())?;
                    let status: ApiKeyStatus =
                        parse_column("status", row.try_get::<String, _>("status")?.as_str())?;
                    if (query.kinds.is_empty() || query.kinds.contains(&kind))
                        && (query.statuses.is_empty() || query.statuses.contains(&status))
                    {
                        total += u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                    }
                }
                Ok((keys, total))
            }

            async fn touch_api_keys(&self, used: &[(ApiKeyId, i64)]) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                for (id, at) in used {
                    sqlx::query(
                        "UPDATE api_keys SET last_used_at = $1 \
                         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
                    )
                    .bind(at)
                    .bind(id.to_string())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn issue_refresh_tokens(
                &self,
                batch: &[RefreshIssue],
            ) -> Result<Vec<bool>, StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                // Spending a parent and storing its successor commit together: whoever sees the
                // parent spent also sees the successor, and a family revocation reaches it.
                // Parents are spent in id order, so batches of two nodes cannot deadlock.
                let mut stored = vec![true; batch.len()];
                let mut spending: Vec<(usize, &str)> = batch
                    .iter()
                    .enumerate()
                    .filter_map(|(i, issue)| issue.spend_parent.as_deref().map(|p| (i, p)))
                    .collect();
                spending.sort_by_key(|&(_, parent)| parent);
                for (index, parent) in spending {
                    let spent = sqlx::query(
                        "UPDATE refresh_tokens SET used_at = $1 \
                         WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
                    )
                    .bind(batch[index].token.created_at)
                    .bind(parent)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    stored[index] = spent == 1;
                }
                let issued = || batch.iter().zip(&stored).filter(|(_, kept)| **kept);
                let tokens: Vec<&RefreshToken> = issued().map(|(issue, _)| &issue.token).collect();
                insert_refresh_tokens(&mut tx, &tokens).await?;
                insert_audit_events(&mut tx, issued().flat_map(|(issue, _)| &issue.events)).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn refresh_token(&self, id: &str) -> Result<Option<RefreshToken>, StoreError> {
                self.read_optional(
                    "SELECT * FROM refresh_tokens WHERE id = $1",
                    &[Bind::Text(id)],
                    |row| refresh_token_from_row(row),
                )
                .await
            }

            async fn revoke_refresh_family(
                &self,
                family_id: &str,
                now: i64,
                events: &[AuditEvent],
            ) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 \
                     WHERE family_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(family_id)
                .execute(&mut *tx)
                .await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                insert_audit_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn close(&self) {
                self.close_connections().await;
            }
        }
    };
}

pub(crate) use impl_store;
