//! Connections that come back: a client made on demand and made again once it has closed,
//! and the embedded migrations.

use std::sync::Arc;

use tokio_postgres::{Client, NoTls};

use crate::error::PostgresError;

/// A client that reconnects on the next use after its connection is lost.
pub(crate) struct Db {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Db {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The client, connecting (again) if needed.
    pub(crate) async fn client(&self) -> Result<Arc<Client>, PostgresError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "postgres connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

/// Creates the tables of a queue named `name` and the shared checkpoint and lease tables,
/// under an advisory lock so that concurrent processes do not race.
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
                 sent_at TIMESTAMPTZ NOT NULL, dead_at TIMESTAMPTZ NOT NULL DEFAULT now());"
        ));
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await?;
    Ok(())
}
