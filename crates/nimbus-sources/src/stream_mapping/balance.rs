//! Balancing: shard leases spread fairly across live workers (ready shards ÷ workers, rounded
//! up), renewed while readers run, handed off above the fair share; parents before children.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Shared, WORKERS};
use crate::stream::{Checkpoint, Lease, ShardId, ShardInfo};

impl Shared {
    pub(super) fn lease_key(&self, shard: &str) -> String {
        format!("{}/{}", self.name, shard)
    }

    /// The key under which this worker says it is alive.
    pub(super) fn worker_key(&self) -> String {
        format!("{}/{WORKERS}{}", self.name, self.config.owner)
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

        let (ready, complete) = self.ready_shards(shards).await;
        let fair = ready.len().div_ceil(workers);
        // A listing that could not read every checkpoint may miss a shard this worker must
        // drain: it is not published. Shards with a local reader always count.
        self.drain.stage(complete.then(|| {
            let mut pending: Vec<ShardId> = ready
                .iter()
                .filter(|s| !held_elsewhere.contains_key(self.lease_key(&s.id).as_str()))
                .map(|s| Arc::clone(&s.id))
                .collect();
            for (id, reader) in self.running.lock().iter() {
                if !reader.ending && !pending.contains(id) {
                    pending.push(Arc::clone(id));
                }
            }
            pending
        }));

        let kept = self.renew_running(now).await;
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
            if let Ok(Some(lease)) = self
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
                    // Finished by another worker since the listing: nothing to read, and its
                    // children's turn.
                    Ok(Some(Checkpoint::ShardEnd)) => {
                        self.shard_metrics(&shard.id, |m| m.finished = true);
                        let _ = self
                            .store_call("lease store release", self.leases.release(&key, owner))
                            .await;
                    }
                    Ok(checkpoint) => {
                        held += 1;
                        self.start_reader(Arc::clone(&shard.id), checkpoint, now, lease);
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

    /// Renews the leases of running readers (stopping a reader whose lease is lost or came
    /// back under another counter); returns the hand-off tokens of those that keep theirs.
    /// Also called while the mapping stops, so that a reader finishing a long final round is
    /// not fenced out of its last checkpoint.
    pub(super) async fn renew_running(&self, now: tokio::time::Instant) -> Vec<CancellationToken> {
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
        let (owner, ttl) = (&self.config.owner, self.config.lease_ttl);
        let mut kept = Vec::new();
        for (id, cancel, hand_off, renewed) in running {
            match self
                .store_call(
                    "lease store acquire",
                    self.leases.acquire(&self.lease_key(&id), owner, ttl),
                )
                .await
            {
                Ok(Some(lease)) => {
                    let (live, moved) = match self.running.lock().get_mut(&id) {
                        // The lease lapsed and was taken again (by another worker meanwhile,
                        // perhaps): the reader's position in memory may be stale.
                        Some(reader) if !reader.ending && reader.lease.counter != lease.counter => {
                            (true, true)
                        }
                        Some(reader) if !reader.ending => {
                            reader.renewed = now;
                            // Checkpoint writes carry the latest renewal.
                            reader.lease = Arc::new(lease);
                            (true, false)
                        }
                        _ => (false, false),
                    };
                    if moved {
                        tracing::warn!(mapping = %self.name, shard = %id, "lease taken again under a new counter; restarting the reader from the checkpoint");
                        cancel.cancel();
                        continue;
                    }
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
        kept
    }

    /// Shards that may be read now: not finished, and every parent the source still knows of
    /// finished. A shard whose checkpoints cannot be read now is left for a later round; the
    /// flag says whether every checkpoint could be read.
    pub(super) async fn ready_shards<'a>(
        &self,
        shards: &'a [ShardInfo],
    ) -> (Vec<&'a ShardInfo>, bool) {
        let known: HashSet<&str> = shards.iter().map(|s| &*s.id).collect();
        let mut ready = Vec::new();
        let mut complete = true;
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
                    complete = false;
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
                    Ok(_) => continue 'shards,
                    Err(_) => {
                        complete = false;
                        continue 'shards;
                    }
                }
            }
            ready.push(shard);
        }
        (ready, complete)
    }
}
