//! The shard reader: reads a leased shard from its checkpoint in rounds (long polls, the
//! batching window), hands rounds to processing, settles checkpoints between rounds, marks the
//! shard's end; and its start and lease release.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::Backoff;
use tokio_util::sync::CancellationToken;

use super::window::Window;
use super::{Done, Reader, Shared};
use crate::status::{delay_of, guarded};
use crate::stream::{stream_now, Checkpoint, Lease, Position, Sequence, ShardId};

impl Shared {
    /// Between rounds, where everything read is finished: records the position reached as the
    /// checkpoint if it is past the last one (an empty read moves the position without a
    /// checkpoint). Not when the lease was lost (the shard is someone else's now).
    pub(super) async fn settle(&self, shard: &ShardId, position: Position) {
        let lease_lost = !self.cancel.is_cancelled()
            && self
                .running
                .lock()
                .get(shard)
                .is_some_and(|r| r.cancel.is_cancelled());
        let sequence = match position {
            Position::After(sequence) => sequence,
            // Read from the start of a shard that had nothing yet (`Latest` on an empty shard).
            Position::TrimHorizon => Sequence::new(0),
            Position::Latest | Position::AtTimestamp(_) => return,
        };
        let last = self
            .metrics
            .lock()
            .get(shard)
            .and_then(|m| m.checkpoint.clone());
        let unchanged = last.is_some_and(|last| last >= sequence);
        if lease_lost || unchanged {
            return;
        }
        if self
            .put_checkpoint(shard, Checkpoint::At(sequence.clone()))
            .await
            .is_ok()
        {
            self.shard_metrics(shard, |m| m.checkpoint = Some(sequence));
        }
    }

    pub(super) async fn read_shard(
        self: &Arc<Self>,
        shard: ShardId,
        checkpoint: Option<Checkpoint>,
        cancel: &CancellationToken,
        hand_off: &CancellationToken,
    ) {
        let mut position = match checkpoint {
            Some(Checkpoint::At(sequence)) => Position::After(sequence),
            // Finished already (balancing does not start such a reader): never read it again.
            Some(Checkpoint::ShardEnd) => return,
            None => self.config.starting_position.clone(),
        };
        if position == Position::Latest {
            // Pin `Latest` to a place now and checkpoint it, so that a later owner of the shard
            // (after a hand-off or a crash) reads on from here instead of from its own Latest,
            // which would skip what arrived in between.
            if let Ok(now) = guarded(
                "reading a shard",
                self.source
                    .read(&shard, Position::Latest, 1, Duration::ZERO),
            )
            .await
            {
                if now.records.is_empty() {
                    position = now.next;
                    self.settle(&shard, position.clone()).await;
                }
            }
        }
        let mut window = Window {
            bounds: None,
            state: serde_json::Value::Null,
        };
        let round = self.config.batch_size * self.config.parallelization_factor as usize;
        let mut failures = 0u32;
        let mut drain_requests = self.drain.requests.subscribe();
        // The drain request current at the last empty read (`None` after a read with records):
        // a read that does not wait, made after records or a new request, tells whether the
        // shard has caught up; after it, reads long-poll.
        let mut idle_at: Option<u64> = None;
        // The drain request the shard was last said to be caught up at.
        let mut caught_up: Option<u64> = None;
        loop {
            // An open tumbling window is finished before the shard is handed off, so that its
            // state is not lost with it; windows close on time even without records.
            let handing_off = (hand_off.is_cancelled() || self.stopping.is_cancelled())
                && window.bounds.is_none();
            if cancel.is_cancelled() || handing_off {
                self.settle(&shard, position.clone()).await;
                return;
            }
            let request = *drain_requests.borrow_and_update();
            let probe = idle_at != Some(request);
            let mut wait = if probe {
                Duration::ZERO
            } else {
                self.config.poll_wait
            };
            if let Some((_, end)) = window.bounds {
                wait = wait.min(end.duration_since(stream_now()).unwrap_or_default());
            }
            let read = tokio::select! {
                read = guarded("reading a shard", self.source.read(&shard, position.clone(), round, wait)) => read,
                () = cancel.cancelled() => continue,
                () = hand_off.cancelled(), if window.bounds.is_none() => continue,
                () = self.stopping.cancelled(), if window.bounds.is_none() => continue,
                // A drain request: look again without waiting.
                Ok(()) = drain_requests.changed(), if !probe => continue,
            };
            let mut read = match read {
                Ok(read) => {
                    failures = 0;
                    read
                }
                Err(error) if error.is_permanent() => {
                    self.fail(error);
                    return;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(mapping = %self.name, %shard, %error, "reading a shard failed");
                    let delay =
                        delay_of(&Backoff::throttles(), failures).min(Duration::from_secs(30));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = cancel.cancelled() => return,
                    }
                }
            };
            if read.trimmed {
                self.shard_metrics(&shard, |m| m.trimmed_reads += 1);
            }
            if read.records.is_empty() {
                idle_at = Some(request);
            } else {
                idle_at = None;
                if caught_up.take().is_some() {
                    self.set_caught_up(&shard, None);
                }
            }
            // Batching window: gather more until a round is full or the window ends.
            if !read.records.is_empty() && !self.config.batching_window.is_zero() {
                let until = tokio::time::Instant::now() + self.config.batching_window;
                while read.records.len() < round && !read.shard_ended {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let more = tokio::select! {
                        more = guarded("reading a shard", self.source.read(&shard, read.next.clone(), round - read.records.len(), left)) => more,
                        () = cancel.cancelled() => break,
                    };
                    match more {
                        Ok(more) => {
                            read.records.extend(more.records);
                            read.next = more.next;
                            read.shard_ended = more.shard_ended;
                        }
                        Err(_) => break,
                    }
                }
            }
            if !read.records.is_empty() {
                let count = read.records.len() as u64;
                self.shard_metrics(&shard, |m| m.checkpoint_lag = count);
                let done = if self.config.tumbling_window.is_zero() {
                    self.process_round(&shard, read.records, cancel).await
                } else {
                    self.process_windowed(&shard, read.records, &mut window, cancel)
                        .await
                };
                if matches!(done, Done::Stopped) {
                    self.stopped_rounds.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            position = read.next;
            // A window whose time is up closes even when no record arrives.
            if let Some((_, end)) = window.bounds {
                if read.shard_ended || stream_now() >= end {
                    if matches!(
                        self.close_window(&shard, &mut window, cancel).await,
                        Done::Stopped
                    ) {
                        return;
                    }
                    // Closed: the next read tells whether the shard has caught up.
                    idle_at = None;
                }
            }
            if read.shard_ended {
                // Finished only once the store says so: a fenced or failed write leaves the shard
                // to be read to its end again by whoever holds it next.
                if self
                    .put_checkpoint(&shard, Checkpoint::ShardEnd)
                    .await
                    .is_ok()
                {
                    self.shard_metrics(&shard, |m| m.finished = true);
                }
                return;
            }
            if idle_at == Some(request)
                && caught_up != Some(request)
                && window.bounds.is_none()
                && self.checkpointed(&shard, &position).await
            {
                caught_up = Some(request);
                self.set_caught_up(&shard, Some(request));
            }
        }
    }

    /// Starts the reader of a shard leased under `lease`; when it ends, its lease is given back.
    pub(super) fn start_reader(
        self: &Arc<Self>,
        id: ShardId,
        checkpoint: Option<Checkpoint>,
        renewed: tokio::time::Instant,
        lease: Lease,
    ) {
        let cancel = self.cancel.child_token();
        let hand_off = CancellationToken::new();
        let reader = Reader {
            cancel: cancel.clone(),
            hand_off: hand_off.clone(),
            renewed,
            lease: Arc::new(lease),
            ending: false,
            caught_up: None,
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
