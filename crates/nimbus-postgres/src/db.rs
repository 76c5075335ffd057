//! Connections that come back: a client made on demand and made again once it has closed,
//! with the statements prepared on it, and the embedded migrations.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::error::PostgresError;

/// A client that reconnects on the next use after its connection is lost.
pub(crate) struct Db {
    url: String,
    client: tokio::sync::Mutex<Option<Conn>>,
}

/// A connected client and the statements prepared on it (they die with the connection).
#[derive(Clone)]
pub(crate) struct Conn {
    client: Arc<Client>,
    statements: Arc<parking_lot::Mutex<HashMap<String, Statement>>>,
}

impl Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Conn {
    /// Runs `sql` as a statement prepared on this connection the first time, then reused.
    /// Sent as text, a statement is parsed and planned by the server every time, after a
    /// round trip of its own: the hot statements (claims, acks) take this way instead.
    ///
    /// A prepared statement the server no longer runs (a column it returns changed type
    /// since: "cached plan must not change result type") is prepared again, once, as the
    /// text would have been.
    pub(crate) async fn query_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepared(sql).await?;
        match self.client.query(&statement, params).await {
            Err(error) if outdated(&error) => {
                self.statements.lock().remove(sql);
                let statement = self.prepared(sql).await?;
                self.client.query(&statement, params).await
            }
            ran => ran,
        }
    }

    async fn prepared(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// The server refused a statement as prepared, where the same text prepared anew may run.
fn outdated(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

impl Db {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The client, connecting (again) if needed.
    pub(crate) async fn client(&self) -> Result<Conn, PostgresError> {
        let mut slot = self.client.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "postgres connection ended");
            }
        });
        let conn = Conn {
            client: Arc::new(client),
            statements: Arc::default(),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Creates the tables of a queue named `name` (and its insert trigger) and the shared
/// checkpoint and lease tables, under an advisory lock so that concurrent processes do not
/// race. Idempotent: a table made by an older version gets what it lacks (the trigger, the
/// `hops` column).
pub(crate) async fn migrate(client: &Client, name: Option<&str>) -> Result<(), PostgresError> {
    let mut sql = String::from(
        "BEGIN;
         SELECT pg_advisory_xact_lock(7274696);
         CREATE TABLE IF NOT EXISTS nimbus_checkpoints (
             mapping TEXT NOT NULL, shard TEXT NOT NULL, value TEXT NOT NULL,
             PRIMARY KEY (mapping, shard));
         CREATE TABLE IF NOT EXISTS nimbus_leases (
             key TEXT PRIMARY KEY, owner TEXT NOT NULL,
             expires TIMESTAMPTZ NOT NULL, counter BIGINT NOT NULL);",
    );
    if let Some(name) = name {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {name}_queue (
                 id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL,
                 receive_count INT NOT NULL DEFAULT 0,
                 sent_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 visible_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 receipt BIGINT NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS {name}_queue_visible ON {name}_queue (visible_at, id);
             CREATE TABLE IF NOT EXISTS {name}_dead (
                 id BIGINT PRIMARY KEY, body BYTEA NOT NULL, receive_count INT NOT NULL,
                 sent_at TIMESTAMPTZ NOT NULL, dead_at TIMESTAMPTZ NOT NULL DEFAULT now());
             DO $h$ BEGIN
                 -- Checked first: ALTER TABLE locks the table even when the column exists.
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{name}_queue'::regclass
                                AND attname = 'hops' AND NOT attisdropped) THEN
                     ALTER TABLE {name}_queue ADD COLUMN hops INT;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{name}_dead'::regclass
                                AND attname = 'hops' AND NOT attisdropped) THEN
                     ALTER TABLE {name}_dead ADD COLUMN hops INT;
                 END IF;
             END $h$;
             CREATE OR REPLACE FUNCTION {name}_queue_notify() RETURNS trigger LANGUAGE plpgsql
                 AS $f$ BEGIN PERFORM pg_notify('{name}_queue', ''); RETURN NULL; END $f$;
             DO $d$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_trigger
                                WHERE tgrelid = '{name}_queue'::regclass
                                AND tgname = '{name}_queue_notify') THEN
                     CREATE TRIGGER {name}_queue_notify AFTER INSERT ON {name}_queue
                         FOR EACH STATEMENT EXECUTE FUNCTION {name}_queue_notify();
                 END IF;
             END $d$;"
        ));
    }
    sql.push_str("COMMIT;");
    if let Err(error) = client.batch_execute(&sql).await {
        // A statement failed inside the explicit transaction: end it, so that the shared
        // connection is not left in an aborted transaction.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(error.into());
    }
    Ok(())
}
