//! PostgreSQL, for deployments of several nodes sharing one database.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Executor, PgPool, Postgres};

use crate::StoreError;
use crate::engine::{Backend, Engine, SqlConnection, Statement, query, sqlx_query};
use crate::rows::{Bind, FromRow};

/// How to reach PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
}

impl PostgresStore {
    /// Connects and brings the schema up to date. sqlx serialises migrations with an advisory
    /// lock, so several nodes may start at once.
    pub async fn connect(options: &PostgresOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = options.url.parse().map_err(StoreError::sqlx)?;
        // The server ends a statement, or a transaction left idle, that outlasts the timeout, so
        // a request waits about that long for its 503 rather than for as long as it hangs.
        let millis = options.acquire_timeout.as_millis().max(1);
        let connect = connect.options([
            ("statement_timeout", format!("{millis}ms")),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", millis * 2),
            ),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.application_name("keyplane"))
            .await
            .map_err(StoreError::sqlx)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::migration)?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }
}

impl Engine for Postgres {
    const NAME: &'static str = "postgres";
}

impl Backend for PostgresStore {
    type Engine = Postgres;
    type Lent<'a> = PoolConnection<Postgres>;

    async fn read(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.reader.acquire().await.map_err(StoreError::sqlx)
    }

    async fn write(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.writer.acquire().await.map_err(StoreError::sqlx)
    }

    /// One row by a unique key.
    async fn read_optional<T: FromRow>(
        &self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> Result<Option<T>, StoreError> {
        query(sql)
            .bind_all(binds.iter().map(|bind| (*bind).into()))
            .fetch_optional(&mut *self.read().await?)
            .await?
            .as_ref()
            .map(T::from_row)
            .transpose()
    }

    /// The database server watches its own disk; a write that does not fit fails with 53100.
    fn check_storage(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Pool connections are tested and replaced by the pool itself.
    fn write_probe_failed(&self) {}

    async fn close_connections(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Generated lists of values use numbered placeholders, as sqlx's query builder does.
impl SqlConnection for PgConnection {
    type Row = PgRow;

    fn push_placeholder(sql: &mut String, n: usize) {
        sql.push('$');
        sql.push_str(&n.to_string());
    }

    async fn execute(&mut self, statement: &Statement<'_>) -> Result<u64, StoreError> {
        let done = Executor::execute(self, sqlx_query(statement)).await;
        Ok(done.map_err(StoreError::sqlx)?.rows_affected())
    }

    async fn fetch_all(&mut self, statement: &Statement<'_>) -> Result<Vec<PgRow>, StoreError> {
        Executor::fetch_all(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }

    async fn fetch_optional(
        &mut self,
        statement: &Statement<'_>,
    ) -> Result<Option<PgRow>, StoreError> {
        Executor::fetch_optional(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }

    async fn fetch_one(&mut self, statement: &Statement<'_>) -> Result<PgRow, StoreError> {
        Executor::fetch_one(self, sqlx_query(statement))
            .await
            .map_err(StoreError::sqlx)
    }
}
