//! Shared by the PostgreSQL test binaries: the database's URL, and unique table names per test
//! that skip (or fail under `NIMBUS_REQUIRE_SERVICES=1`) when the database is unreachable.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::time::Duration;

use nimbus_postgres::PostgresConfig;

pub(crate) fn url() -> String {
    std::env::var("NIMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

/// A unique name prefix; the tables under it are dropped when it is.
pub(crate) struct Names(pub(crate) String);

impl Names {
    pub(crate) async fn new() -> Option<Self> {
        let reachable = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&url(), tokio_postgres::NoTls),
        )
        .await;
        if !matches!(reachable, Ok(Ok(_))) {
            if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "PostgreSQL is unreachable at {} and NIMBUS_REQUIRE_SERVICES=1",
                    url()
                );
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: PostgreSQL is unreachable at {} (set NIMBUS_REQUIRE_SERVICES=1 to fail instead)", url());
            return None;
        }
        Some(Self(format!(
            "t{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        )))
    }

    pub(crate) fn queue(&self, name: &str) -> PostgresConfig {
        PostgresConfig::new(url(), format!("{}_{name}", self.0))
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let url = url();
        // A fresh thread with its own runtime: this may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                let rows = client
                    .query(
                        "SELECT tablename FROM pg_tables WHERE tablename LIKE $1",
                        &[&format!("{prefix}%")],
                    )
                    .await
                    .ok()?;
                for row in rows {
                    let table: String = row.get(0);
                    let _ = client
                        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                        .await;
                }
                let like = format!("{prefix}%");
                // The queues' notify functions (their triggers went with the tables).
                if let Ok(rows) = client
                    .query(
                        "SELECT proname FROM pg_proc WHERE proname LIKE $1",
                        &[&like],
                    )
                    .await
                {
                    for row in rows {
                        let function: String = row.get(0);
                        let _ = client
                            .batch_execute(&format!("DROP FUNCTION IF EXISTS {function}()"))
                            .await;
                    }
                }
                let _ = client
                    .execute(
                        "DELETE FROM nimbus_checkpoints WHERE mapping LIKE $1",
                        &[&like],
                    )
                    .await;
                let _ = client
                    .execute("DELETE FROM nimbus_leases WHERE key LIKE $1", &[&like])
                    .await;
                Some(())
            })
        })
        .join();
    }
}

/// Runs `psql -c <sql>` against the test database: its output, or its error text.
pub(crate) fn psql(sql: &str) -> Result<String, String> {
    let output = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url())
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql runs (install postgresql-client)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
