//! Row mapping, shared by both engines and by SQLite's in-place point reads: how each record is
//! read from a row by column name ([`FromRow`], over [`Columns`]), how the values the schema
//! stores as text (environments, metadata, enumerations, ids) are written and parsed, and the
//! values a point read binds ([`Bind`]). A value the domain does not accept is
//! [`StoreError::Corrupt`], never a panic; hashes must be exactly 32 bytes.

use keyplane_core::records::{
    ActorType, ApiKey, AuditEvent, ConsoleSession, Invitation, Membership, Metadata, Organization,
    PasswordReset, RefreshToken, User,
};
use keyplane_core::secrets::CredentialHash;
use keyplane_core::tokens::{StoredSigningKey, SubjectType};
use keyplane_core::values::{Email, Env, KeyName};
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

/// A result row, read by column name (or, for one-column results, by position): what the
/// [`FromRow`] implementations below need, so each record is mapped from its columns once for
/// every kind of row.
pub(crate) trait Columns {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError>;

    /// The value of the first column, e.g. of `SELECT COUNT(*)`.
    fn first<T: Column>(&self) -> Result<T, StoreError>;
}

impl Columns for sqlx::sqlite::SqliteRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        sqlx::Row::try_get(self, column).map_err(StoreError::sqlx)
    }

    fn first<T: Column>(&self) -> Result<T, StoreError> {
        sqlx::Row::try_get(self, 0).map_err(StoreError::sqlx)
    }
}

impl Columns for sqlx::postgres::PgRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        sqlx::Row::try_get(self, column).map_err(StoreError::sqlx)
    }

    fn first<T: Column>(&self) -> Result<T, StoreError> {
        sqlx::Row::try_get(self, 0).map_err(StoreError::sqlx)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn get<T: Column>(&self, column: &str) -> Result<T, StoreError> {
        rusqlite::Row::get(self, column).map_err(StoreError::rusqlite)
    }

    fn first<T: Column>(&self) -> Result<T, StoreError> {
        rusqlite::Row::get(self, 0).map_err(StoreError::rusqlite)
    }
}

/// A record read from a row by column name.
pub(crate) trait FromRow: Sized {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError>;
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

/// A stored value the domain refuses: a bug or a hand-edited database.
pub(crate) fn corrupt(error: keyplane_core::ValidationError) -> StoreError {
    StoreError::Corrupt(format!("{}: {}", error.field, error.message))
}

pub(crate) fn parse_actor_type(text: &str) -> Result<ActorType, StoreError> {
    ActorType::parse(text).ok_or_else(|| StoreError::Corrupt(format!("actor_type: {text:?}")))
}

fn hash_from_bytes(column: &str, bytes: Vec<u8>) -> Result<CredentialHash, StoreError> {
    CredentialHash::from_slice(&bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: not 32 bytes")))
}

impl FromRow for Organization {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
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
}

impl FromRow for User {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(User {
            id: parse_column("id", &row.get::<String>("id")?)?,
            email: Email::parse(row.get::<String>("email")?).map_err(corrupt)?,
            first_name: row.get("first_name")?,
            last_name: row.get("last_name")?,
            password_hash: row.get("password_hash")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl FromRow for Membership {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(Membership {
            user_id: parse_column("user_id", &row.get::<String>("user_id")?)?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
            role: parse_column("role", &row.get::<String>("role")?)?,
            status: parse_column("status", &row.get::<String>("status")?)?,
            created_at: row.get("created_at")?,
            token_version: row.get("token_version")?,
            invited_first_name: row.get("invited_first_name")?,
            invited_last_name: row.get("invited_last_name")?,
        })
    }
}

impl FromRow for Invitation {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        let invited_by: Option<String> = row.get("invited_by")?;
        Ok(Invitation {
            id: parse_column("id", &row.get::<String>("id")?)?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
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
}

impl FromRow for ApiKey {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        let previous: Option<Vec<u8>> = row.get("previous_secret_hash")?;
        let created_by_user: Option<String> = row.get("created_by_user")?;
        Ok(ApiKey {
            id: parse_column("id", &row.get::<String>("id")?)?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
            name: KeyName::parse(row.get::<String>("name")?).map_err(corrupt)?,
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
}

impl FromRow for AuditEvent {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(AuditEvent {
            id: parse_column("id", &row.get::<String>("id")?)?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
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
}

impl FromRow for StoredSigningKey {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(StoredSigningKey {
            kid: row.get("kid")?,
            encrypted_private_key: row.get("encrypted_private_key")?,
            public_key: row.get("public_key")?,
            created_at: row.get("created_at")?,
            retired_at: row.get("retired_at")?,
        })
    }
}

impl FromRow for ConsoleSession {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(ConsoleSession {
            id_hash: hash_from_bytes("id_hash", row.get("id_hash")?)?,
            user_id: parse_column("user_id", &row.get::<String>("user_id")?)?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
            token_version: row.get("token_version")?,
            csrf_token: row.get("csrf_token")?,
            created_at: row.get("created_at")?,
            last_seen_at: row.get("last_seen_at")?,
        })
    }
}

impl FromRow for PasswordReset {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(PasswordReset {
            token_hash: hash_from_bytes("token_hash", row.get("token_hash")?)?,
            user_id: parse_column("user_id", &row.get::<String>("user_id")?)?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
        })
    }
}

impl FromRow for RefreshToken {
    fn from_row(row: &impl Columns) -> Result<Self, StoreError> {
        let subject_type: String = row.get("subject_type")?;
        Ok(RefreshToken {
            id: row.get("id")?,
            family_id: row.get("family_id")?,
            token_hash: hash_from_bytes("token_hash", row.get("token_hash")?)?,
            subject_type: SubjectType::parse(&subject_type)
                .ok_or_else(|| StoreError::Corrupt(format!("subject_type: {subject_type:?}")))?,
            subject_id: row.get("subject_id")?,
            organization_id: parse_column(
                "organization_id",
                &row.get::<String>("organization_id")?,
            )?,
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
}
