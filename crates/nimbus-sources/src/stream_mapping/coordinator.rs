//! The coordinator: lists shards and balances them on a heartbeat; stops readers whose lease
//! was not renewed in time; stops the mapping on a permanent error; and the guard around
//! every store and source call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::Backoff;

use super::Shared;
use crate::error::SourceError;
use crate::status::{delay_of, guarded, settle_status, MappingStatus};

impl Shared {
    /// Lists shards and balances them on a heartbeat, and sooner when shards change, a reader
    /// ends, a lease it waits for expires, or a drain request wants a fresh listing. When the
    /// mapping stops it takes no more shards but keeps renewing the leases of readers finishing
    /// their round, until they end (or the deadline stops them); then it gives its worker lease
    /// back. Readers give back theirs as they end.
    pub(super) async fn coordinate(self: Arc<Self>) {
        let heartbeat = self.config.lease_ttl / 3;
        let mut failures = 0u32;
        let mut drain_requests = self.drain.requests.subscribe();
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            if self.stopping.is_cancelled() {
                if self.running.lock().is_empty() {
                    break;
                }
                self.renew_while_stopping(heartbeat).await;
                continue;
            }
            // Before listing, so that a listing counts for the drain requests made before it.
            let request = *drain_requests.borrow_and_update();
            // Bounded, so that a hung store cannot keep readers going past their leases.
            let balanced = tokio::time::timeout(heartbeat, async {
                let shards = guarded("listing shards", self.source.shards()).await?;
                self.balance(&shards).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(crate::error::SourceError::transient(
                    "balancing took longer than a heartbeat".to_owned(),
                ))
            });
            self.stop_unrenewed();
            let mut wait = heartbeat;
            match balanced {
                Ok(next_expiry) => {
                    failures = 0;
                    self.drain.publish(request);
                    if let Some(next) = next_expiry {
                        // A little past the expiry, so the store agrees it is over.
                        wait = wait.min(next + Duration::from_millis(20));
                    }
                }
                Err(error) if error.is_permanent() => {
                    self.fail(error);
                    break;
                }
                Err(error) => {
                    failures += 1;
                    wait = delay_of(&Backoff::throttles(), failures).min(heartbeat);
                    tracing::warn!(mapping = %self.name, %error, "balancing shards failed");
                }
            }
            tokio::select! {
                () = self.source.shards_changed() => {}
                () = self.shard_done.notified() => {}
                () = tokio::time::sleep(wait) => {}
                Ok(()) = drain_requests.changed() => {}
                () = self.cancel.cancelled() => break,
                // Stopping: renew the leases of readers finishing their round.
                () = self.stopping.cancelled() => {}
            }
        }
        self.store_call(
            "lease store release",
            self.leases.release(&self.worker_key(), &self.config.owner),
        )
        .await
        .ok();
    }

    /// One heartbeat of a stopping mapping: renews the leases of readers still finishing their
    /// round (a round longer than the lease must not be fenced out of its last checkpoint),
    /// then waits for a reader to end or the next heartbeat.
    async fn renew_while_stopping(&self, heartbeat: Duration) {
        let renewed = tokio::time::timeout(heartbeat, async {
            // Says this worker is alive too, so that others do not count its shards as free.
            self.store_call(
                "lease store acquire",
                self.leases.acquire(
                    &self.worker_key(),
                    &self.config.owner,
                    self.config.lease_ttl,
                ),
            )
            .await?;
            self.renew_running(tokio::time::Instant::now()).await;
            Ok::<(), SourceError>(())
        })
        .await;
        if let Ok(Err(error)) = renewed {
            tracing::warn!(mapping = %self.name, %error, "renewing leases while stopping failed");
        }
        self.stop_unrenewed();
        tokio::select! {
            () = self.shard_done.notified() => {}
            () = tokio::time::sleep(heartbeat) => {}
            () = self.cancel.cancelled() => {}
        }
    }

    /// Stops the mapping on a permanent error.
    pub(super) fn fail(&self, error: SourceError) {
        self.permanent_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(mapping = %self.name, %error, "permanent error; stopping the mapping");
        self.halt(MappingStatus::Failed { error });
    }

    /// Stops every reader and the coordinator with this status.
    pub(super) fn halt(&self, status: MappingStatus) {
        settle_status(&self.status, status);
        self.stopping.cancel();
        self.cancel.cancel();
        self.drain.changed.notify_waiters();
    }

    /// A call into a store or the source: guarded against panics, and given up on once the
    /// mapping abandons its stores after the stop deadline. Biased towards the call: a
    /// checkpoint or lease release that the store answers at once goes through even after.
    pub(super) async fn store_call<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        tokio::select! {
            biased;
            result = guarded(what, call) => result,
            () = self.abandon.cancelled() => Err(SourceError::transient(format!(
                "{what} did not answer before the stop deadline"
            ))),
        }
    }

    /// Stops readers whose lease was not renewed for nine tenths of its TTL (the store is
    /// unreachable, or balancing keeps failing): another worker may take the shard soon.
    pub(super) fn stop_unrenewed(&self) {
        let ttl = self.config.lease_ttl;
        let Some(deadline) = tokio::time::Instant::now().checked_sub(ttl - ttl / 10) else {
            return;
        };
        for (id, reader) in self.running.lock().iter() {
            if reader.renewed <= deadline && !reader.cancel.is_cancelled() {
                tracing::warn!(mapping = %self.name, shard = %id, "lease not renewed in time; stopping the reader");
                reader.cancel.cancel();
            }
        }
    }
}
