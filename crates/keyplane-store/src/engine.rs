//! What the SQL modules run on, for either engine. [`Engine`] is sqlx's database type (SQLite
//! or PostgreSQL) whose connections run a [`Statement`] ([`SqlConnection`]); [`Backend`] is a
//! store (`SqliteStore`, `PostgresStore`) lending those connections. The resource modules are
//! written against these two traits only, so each statement is written once and runs on both
//! engines: `$n` placeholders in ascending order, which SQLite and PostgreSQL both accept, and
//! only portable types (TEXT, BIGINT, bytes). A transaction is rolled back when dropped, so an
//! early return leaves nothing behind.

use std::borrow::Cow;
use std::ops::DerefMut;

use keyplane_core::paging::SortValue;
use sqlx::{Database, Encode, Type};

use crate::StoreError;
use crate::rows::{Bind, Column, Columns, FromRow};

/// An sqlx database whose connections run [`Statement`]s.
pub(crate) trait Engine: Database<Connection: SqlConnection> {
    /// The engine's name, for logs and metrics.
    const NAME: &'static str;
}

/// A store's connections: how it lends them for reads and writes, and what it checks first.
pub(crate) trait Backend: Send + Sync + 'static {
    type Engine: Engine;

    /// A connection on loan; it goes back when dropped.
    type Lent<'a>: DerefMut<Target = <Self::Engine as Database>::Connection> + Send
    where
        Self: 'a;

    fn read(&self) -> impl Future<Output = Result<Self::Lent<'_>, StoreError>> + Send;

    fn write(&self) -> impl Future<Output = Result<Self::Lent<'_>, StoreError>> + Send;

    /// One row by a unique key (in place on SQLite, see [`crate::in_place`]).
    fn read_optional<T: FromRow>(
        &self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send;

    /// Unavailable when the database cannot take writes now, before a write is tried.
    fn check_storage(&self) -> Result<(), StoreError>;

    /// Called after a failed write probe.
    fn write_probe_failed(&self);

    /// Closes every connection.
    fn close_connections(&self) -> impl Future<Output = ()> + Send;
}

/// A connection of an [`Engine`], running statements. Errors come classified.
pub(crate) trait SqlConnection: Send {
    type Row: Columns + Send;

    /// Appends the engine's placeholder for the `n`th value (from 1) of a generated list.
    fn push_placeholder(sql: &mut String, n: usize);

    /// Runs `statement`; the number of rows it changed.
    fn execute(
        &mut self,
        statement: &Statement<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn fetch_all(
        &mut self,
        statement: &Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> + Send;

    /// The first row; an (internal) error when there is none.
    fn fetch_one(
        &mut self,
        statement: &Statement<'_>,
    ) -> impl Future<Output = Result<Self::Row, StoreError>> + Send;
}

/// A value bound to a placeholder: text, a 64-bit integer or bytes, each possibly NULL.
#[derive(Clone, Debug)]
pub(crate) enum Param<'a> {
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    Bytes(Option<&'a [u8]>),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(Some(Cow::Borrowed(text)))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Self {
        Param::Text(Some(Cow::Borrowed(text)))
    }
}

impl From<String> for Param<'_> {
    fn from(text: String) -> Self {
        Param::Text(Some(Cow::Owned(text)))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Param::Text(text.map(Cow::Borrowed))
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(text: &'a Option<String>) -> Self {
        Param::Text(text.as_deref().map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Param<'_> {
    fn from(text: Option<String>) -> Self {
        Param::Text(text.map(Cow::Owned))
    }
}

impl From<i64> for Param<'_> {
    fn from(int: i64) -> Self {
        Param::Int(Some(int))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(int: Option<i64>) -> Self {
        Param::Int(int)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Param::Bytes(Some(bytes))
    }
}

impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Param::Bytes(Some(bytes))
    }
}

impl<'a> From<Option<&'a [u8]>> for Param<'a> {
    fn from(bytes: Option<&'a [u8]>) -> Self {
        Param::Bytes(bytes)
    }
}

impl<'a> From<&'a SortValue> for Param<'a> {
    fn from(value: &'a SortValue) -> Self {
        match value {
            SortValue::Null => Param::Text(None),
            SortValue::Int(int) => Param::Int(Some(*int)),
            SortValue::Text(text) => Param::Text(Some(Cow::Borrowed(text))),
        }
    }
}

impl<'a> From<Bind<'a>> for Param<'a> {
    fn from(bind: Bind<'a>) -> Self {
        match bind {
            Bind::Text(text) => text.into(),
            Bind::Bytes(bytes) => bytes.into(),
        }
    }
}

/// One SQL statement and the values bound to its placeholders, in order.
#[derive(Debug)]
pub(crate) struct Statement<'a> {
    sql: Cow<'a, str>,
    params: Vec<Param<'a>>,
}

/// A statement of `sql`, with nothing bound yet.
pub(crate) fn query<'a>(sql: impl Into<Cow<'a, str>>) -> Statement<'a> {
    Statement {
        sql: sql.into(),
        params: Vec::new(),
    }
}

impl<'a> Statement<'a> {
    /// Binds the next placeholder.
    pub(crate) fn bind(mut self, value: impl Into<Param<'a>>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Binds the next placeholders, in order.
    pub(crate) fn bind_all(mut self, values: impl IntoIterator<Item = Param<'a>>) -> Self {
        self.params.extend(values);
        self
    }

    /// Appends `VALUES (…), (…)`: one parenthesised list per row, holding a placeholder (in
    /// `C`'s style) for each value `push` binds for it.
    pub(crate) fn push_values<C: SqlConnection, T>(
        &mut self,
        rows: impl IntoIterator<Item = T>,
        mut push: impl FnMut(&mut Values<'_, 'a, C>, T),
    ) {
        self.sql.to_mut().push_str("VALUES ");
        for (index, row) in rows.into_iter().enumerate() {
            if index > 0 {
                self.sql.to_mut().push_str(", ");
            }
            self.sql.to_mut().push('(');
            let mut values = Values {
                statement: self,
                first: true,
                connection: std::marker::PhantomData,
            };
            push(&mut values, row);
            self.sql.to_mut().push(')');
        }
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute(self, conn: &mut impl SqlConnection) -> Result<u64, StoreError> {
        conn.execute(&self).await
    }

    pub(crate) async fn fetch_all<C: SqlConnection>(
        self,
        conn: &mut C,
    ) -> Result<Vec<C::Row>, StoreError> {
        conn.fetch_all(&self).await
    }

    pub(crate) async fn fetch_optional<C: SqlConnection>(
        self,
        conn: &mut C,
    ) -> Result<Option<C::Row>, StoreError> {
        conn.fetch_optional(&self).await
    }

    pub(crate) async fn fetch_one<C: SqlConnection>(
        self,
        conn: &mut C,
    ) -> Result<C::Row, StoreError> {
        conn.fetch_one(&self).await
    }

    /// Every row, as records.
    pub(crate) async fn fetch_records<T: FromRow>(
        self,
        conn: &mut impl SqlConnection,
    ) -> Result<Vec<T>, StoreError> {
        conn.fetch_all(&self)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// The first column of the first row (e.g. a count); an error when there is no row.
    pub(crate) async fn fetch_scalar<T: Column>(
        self,
        conn: &mut impl SqlConnection,
    ) -> Result<T, StoreError> {
        conn.fetch_one(&self).await?.first()
    }

    /// The first column of the first row, if there is one.
    pub(crate) async fn fetch_optional_scalar<T: Column>(
        self,
        conn: &mut impl SqlConnection,
    ) -> Result<Option<T>, StoreError> {
        conn.fetch_optional(&self)
            .await?
            .map(|row| row.first())
            .transpose()
    }

    /// The first column of every row.
    pub(crate) async fn fetch_scalars<T: Column>(
        self,
        conn: &mut impl SqlConnection,
    ) -> Result<Vec<T>, StoreError> {
        conn.fetch_all(&self)
            .await?
            .iter()
            .map(Columns::first)
            .collect()
    }
}

/// The values of one row of [`Statement::push_values`].
pub(crate) struct Values<'s, 'a, C> {
    statement: &'s mut Statement<'a>,
    first: bool,
    connection: std::marker::PhantomData<C>,
}

impl<'a, C: SqlConnection> Values<'_, 'a, C> {
    /// Binds the row's next value.
    pub(crate) fn bind(&mut self, value: impl Into<Param<'a>>) -> &mut Self {
        self.statement.params.push(value.into());
        let sql = self.statement.sql.to_mut();
        if !self.first {
            sql.push_str(", ");
        }
        self.first = false;
        C::push_placeholder(sql, self.statement.params.len());
        self
    }
}

/// sqlx's query for `statement`, its values bound with the types both engines agree on: TEXT,
/// BIGINT and bytes (BYTEA, BLOB), each possibly NULL.
pub(crate) fn sqlx_query<'q, DB: Database>(
    statement: &'q Statement<'_>,
) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
where
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query(&statement.sql);
    for param in &statement.params {
        query = match param {
            Param::Text(text) => query.bind(text.as_deref()),
            Param::Int(int) => query.bind(*int),
            Param::Bytes(bytes) => query.bind(*bytes),
        };
    }
    query
}

/// Begins a transaction on a lent connection.
pub(crate) async fn begin<C: sqlx::Connection>(
    conn: &mut C,
) -> Result<sqlx::Transaction<'_, C::Database>, StoreError> {
    conn.begin().await.map_err(StoreError::sqlx)
}

pub(crate) async fn commit<DB: Database>(tx: sqlx::Transaction<'_, DB>) -> Result<(), StoreError> {
    tx.commit().await.map_err(StoreError::sqlx)
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

/// The comparison that starts a page after a position in a list sorted by `columns`: `>` when
/// ascending, `<` when descending (a row-value comparison, which both engines answer from an
/// index on those columns).
pub(crate) fn after(descending: bool) -> &'static str {
    if descending { "<" } else { ">" }
}
