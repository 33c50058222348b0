//! PostgreSQL, for deployments of several nodes sharing one database.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

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
        let connect: PgConnectOptions = options.url.parse()?;
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
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// Pool connections are tested and replaced by the pool itself.
    fn write_probe_failed(&self) {}

    /// The database server watches its own disk; a write that does not fit fails with 53100.
    fn check_storage(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn read(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.reader.acquire().await?)
    }

    /// One row by a unique key.
    async fn read_optional<T>(
        &self,
        sql: &str,
        binds: &[Bind<'_>],
        map: impl FnOnce(&sqlx::postgres::PgRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = match *bind {
                Bind::Text(text) => query.bind(text),
                Bind::Bytes(bytes) => query.bind(bytes),
            };
        }
        query
            .fetch_optional(&mut *self.read().await?)
            .await?
            .as_ref()
            .map(map)
            .transpose()
    }

    async fn write(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    async fn close_connections(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

crate::shared::impl_store!(PostgresStore, Postgres, "postgres");
