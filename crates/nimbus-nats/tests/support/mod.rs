//! Shared by the NATS test binaries: the server's URL, and unique stream and subject names per
//! test that skip (or fail under `NIMBUS_REQUIRE_SERVICES=1`) when the server is unreachable.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use nimbus_nats::NatsConfig;

pub(crate) fn url() -> String {
    std::env::var("NIMBUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A unique prefix of stream names and subjects; the streams under it are deleted when dropped.
pub(crate) struct Names {
    /// Prefix of stream names: `T<pid>_<random>`.
    pub(crate) stream: String,
    /// Prefix of subjects: `nimbus-test.<pid>.<random>`.
    pub(crate) subject: String,
}

impl Names {
    /// Checks the server (and that JetStream is on) first: `None`, after saying so, to skip.
    pub(crate) async fn new() -> Option<Self> {
        let reachable = async {
            let client = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url()))
                .await
                .ok()?
                .ok()?;
            // JetStream answers its API; without it, nobody does. (A raw request: the client's
            // account-info type does not decode a 2.9 server's answer.)
            client.request("$JS.API.INFO", "".into()).await.ok()
        };
        if reachable.await.is_none() {
            if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "NATS with JetStream is unreachable at {} and NIMBUS_REQUIRE_SERVICES=1",
                    url()
                );
            }
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: NATS with JetStream is unreachable at {} (set NIMBUS_REQUIRE_SERVICES=1 to fail instead)",
                url()
            );
            return None;
        }
        let (pid, tag) = (std::process::id(), fastrand::u32(..));
        Some(Self {
            stream: format!("T{pid}_{tag:08x}"),
            subject: format!("nimbus-test.{pid}.{tag:08x}"),
        })
    }

    /// A queue config with its own stream `<prefix>_<name>` and subject `<prefix>.<name>`.
    pub(crate) fn config(&self, name: &str) -> NatsConfig {
        NatsConfig::new(url(), format!("{}_{name}", self.stream))
            .with_subject(format!("{}.{name}", self.subject))
    }

    /// A JetStream context of its own, for looking behind the adapter's back.
    pub(crate) async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(url()).await.unwrap())
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let prefix = self.stream.clone();
        // A fresh thread with its own runtime: this may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let js = jetstream::new(async_nats::connect(url()).await.ok()?);
                let names: Vec<String> = js
                    .stream_names()
                    .filter_map(|name| async move { name.ok() })
                    .collect()
                    .await;
                for name in names.iter().filter(|n| n.starts_with(&prefix)) {
                    let _ = js.delete_stream(name).await;
                }
                Some(())
            })
        })
        .join();
    }
}
