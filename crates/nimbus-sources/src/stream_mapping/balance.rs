//! The coordinator: lists shards, keeps this worker's lease alive, balances shard leases
//! fairly across workers, and starts and stops readers; plus the guards around store calls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::Backoff;
use tokio_util::sync::CancellationToken;

use super::{Reader, Shared, WORKERS};
use crate::error::SourceError;
use crate::status::{delay_of, guarded, settle_status, MappingStatus};
use crate::stream::{Checkpoint, Lease, ShardId, ShardInfo};

impl Shared {
    pub(super) fn lease_key(&self, shard: &str) -> String {
        format!("{}/{}", self.name, shard)
    }

    /// The key under which this worker says it is alive.
    pub(super) fn worker_key(&self) -> String {
        format!("{}/{WORKERS}{}", self.name, self.config.owner)
    }

    /// Lists shards and balances them on a heartbeat (a third of the lease TTL), and at once
    /// when shards change, a reader ends, or a lease it waits for expires. Gives its worker
    /// lease back when the mapping stops; readers give back theirs as they end.
    pub(super) async fn coordinate(self: Arc<Self>) {
        let heartbeat = self.config.lease_ttl / 3;
        let mut failures = 0u32;
        loop {
            if self.stopping.is_cancelled() || self.cancel.is_cancelled() {
                break;
            }
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
                () = self.cancel.cancelled() => break,
                () = self.stopping.cancelled() => break,
            }
        }
        self.store_call(
            "lease store release",
            self.leases.release(&self.worker_key(), &self.config.owner),
        )
        .await
        .ok();
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

    /// One round of balancing: says this worker is alive, renews the leases of running shards
    /// (stopping a reader whose lease is lost), gives back shards above the fair share
    /// (ready shards ÷ live workers, rounded up) and takes free ready shards up to it. Returns
    /// how long until the next lease that matters expires: another worker's, or, when this
    /// worker wants more shards, a shard lease held elsewhere.
    pub(super) async fn balance(
        self: &Arc<Self>,
        shards: &[ShardInfo],
    ) -> Result<Option<Duration>, crate::error::SourceError> {
        let (owner, ttl) = (&self.config.owner, self.config.lease_ttl);
        self.store_call(
            "lease store acquire",
            self.leases.acquire(&self.worker_key(), owner, ttl),
        )
        .await?;
        let prefix = format!("{}/", self.name);
        let workers_prefix = format!("{prefix}{WORKERS}");
        let listed = self
            .store_call("lease store list", self.leases.list(&prefix))
            .await?;
        let now = tokio::time::Instant::now();
        let live_workers: Vec<&Lease> = listed
            .iter()
            .filter(|l| l.key.starts_with(&workers_prefix) && l.expires > now)
            .collect();
        let workers = live_workers.len().max(1);
        // When another worker's lease expires (it died), the fair share grows: look again then.
        let mut next_expiry: Option<Duration> = live_workers
            .iter()
            .filter(|l| &l.owner != owner)
            .map(|l| l.expires.saturating_duration_since(now))
            .min();
        let held_elsewhere: HashMap<&str, tokio::time::Instant> = listed
            .iter()
            .filter(|l| &l.owner != owner && l.expires > now)
            .map(|l| (l.key.as_str(), l.expires))
            .collect();

        let ready = self.ready_shards(shards).await;
        let fair = ready.len().div_ceil(workers);

        type Snapshot = (
            ShardId,
            CancellationToken,
            CancellationToken,
            tokio::time::Instant,
        );
        let running: Vec<Snapshot> = self
            .running
            .lock()
            .iter()
            .filter(|(_, r)| !r.cancel.is_cancelled() && !r.ending)
            .map(|(id, r)| {
                (
                    Arc::clone(id),
                    r.cancel.clone(),
                    r.hand_off.clone(),
                    r.renewed,
                )
            })
            .collect();
        let mut kept = Vec::new();
        for (id, cancel, hand_off, renewed) in running {
            match self
                .store_call(
                    "lease store acquire",
                    self.leases.acquire(&self.lease_key(&id), owner, ttl),
                )
                .await
            {
                Ok(Some(_)) => {
                    let live = match self.running.lock().get_mut(&id) {
                        Some(reader) if !reader.ending => {
                            reader.renewed = now;
                            true
                        }
                        _ => false,
                    };
                    if !live {
                        // The reader ended while this renewal was on its way: give it back.
                        let _ = self
                            .store_call(
                                "lease store release",
                                self.leases.release(&self.lease_key(&id), owner),
                            )
                            .await;
                        continue;
                    }
                    // A reader handing off keeps its lease until its round is done.
                    if !hand_off.is_cancelled() {
                        kept.push(hand_off);
                    }
                }
                Ok(None) => {
                    tracing::warn!(mapping = %self.name, shard = %id, "lease lost; stopping the reader");
                    cancel.cancel();
                }
                // Unsure whether the lease still holds: keep reading until it would have expired.
                Err(error) if now < renewed + ttl => {
                    tracing::warn!(mapping = %self.name, shard = %id, %error, "renewing a lease failed");
                    kept.push(hand_off);
                }
                Err(_) => cancel.cancel(),
            }
        }
        // Above the fair share: hand the surplus off; their readers finish the round in hand
        // and give the leases back.
        for hand_off in kept.iter().skip(fair) {
            hand_off.cancel();
        }
        let mut held = kept.len().min(fair);
        let mut next_shard_expiry: Option<Duration> = None;
        for shard in ready {
            if held >= fair || self.cancel.is_cancelled() {
                break;
            }
            if self.running.lock().contains_key(&shard.id) {
                continue;
            }
            let key = self.lease_key(&shard.id);
            if let Some(expires) = held_elsewhere.get(key.as_str()) {
                let left = expires.saturating_duration_since(now);
                next_shard_expiry = Some(next_shard_expiry.map_or(left, |n| n.min(left)));
                continue;
            }
            if let Ok(Some(_)) = self
                .store_call("lease store acquire", self.leases.acquire(&key, owner, ttl))
                .await
            {
                // Read the checkpoint again under the lease: the last owner may have moved it.
                match self
                    .store_call(
                        "checkpoint store get",
                        self.checkpoints.get(&self.name, &shard.id),
                    )
                    .await
                {
                    Ok(checkpoint) => {
                        held += 1;
                        self.start_reader(Arc::clone(&shard.id), checkpoint, now);
                    }
                    Err(error) => {
                        tracing::warn!(mapping = %self.name, shard = %shard.id, %error, "reading a checkpoint failed");
                        let _ = self
                            .store_call("lease store release", self.leases.release(&key, owner))
                            .await;
                    }
                }
            }
        }
        if held < fair {
            next_expiry = match (next_expiry, next_shard_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next_expiry)
    }

    /// Shards that may be read now: not finished, and every parent the source still knows of
    /// finished. A shard whose checkpoints cannot be read now is left for a later round.
    pub(super) async fn ready_shards<'a>(&self, shards: &'a [ShardInfo]) -> Vec<&'a ShardInfo> {
        let known: HashSet<&str> = shards.iter().map(|s| &*s.id).collect();
        let mut ready = Vec::new();
        'shards: for shard in shards {
            match self
                .store_call(
                    "checkpoint store get",
                    self.checkpoints.get(&self.name, &shard.id),
                )
                .await
            {
                Ok(Some(Checkpoint::ShardEnd)) => {
                    self.shard_metrics(&shard.id, |m| m.finished = true);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(mapping = %self.name, shard = %shard.id, %error, "reading a checkpoint failed");
                    continue;
                }
            }
            // A parent gone from the source (expired) has nothing left to read.
            for parent in shard.parents.iter().filter(|p| known.contains(&***p)) {
                match self
                    .store_call(
                        "checkpoint store get",
                        self.checkpoints.get(&self.name, parent),
                    )
                    .await
                {
                    Ok(Some(Checkpoint::ShardEnd)) => {}
                    _ => continue 'shards,
                }
            }
            ready.push(shard);
        }
        ready
    }

    /// Starts the reader of a leased shard; when it ends, its lease is given back.
    pub(super) fn start_reader(
        self: &Arc<Self>,
        id: ShardId,
        checkpoint: Option<Checkpoint>,
        renewed: tokio::time::Instant,
    ) {
        let cancel = self.cancel.child_token();
        let hand_off = CancellationToken::new();
        let reader = Reader {
            cancel: cancel.clone(),
            hand_off: hand_off.clone(),
            renewed,
            ending: false,
        };
        self.running.lock().insert(Arc::clone(&id), reader);
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            this.read_shard(Arc::clone(&id), checkpoint, &cancel, &hand_off)
                .await;
            // Still in `running` (so no new reader starts before the release), but no longer
            // renewed; a renewal already under way notices and releases again.
            if let Some(reader) = this.running.lock().get_mut(&id) {
                reader.ending = true;
            }
            let _ = this
                .store_call(
                    "lease store release",
                    this.leases
                        .release(&this.lease_key(&id), &this.config.owner),
                )
                .await;
            this.running.lock().remove(&id);
            this.shard_done.notify_one();
        });
    }
}
