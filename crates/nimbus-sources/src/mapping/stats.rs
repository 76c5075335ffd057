//! The queue's counts as a mapping sees them: asked of the source off the polling path,
//! bounded by a timeout and guarded against panics, and kept for [`QueueMapping::metrics`].
//!
//! A source whose `stats` answers at once (the in-memory queue) is asked on every read; one
//! that must ask its broker is asked in the background, on the runtime the mapping started
//! on (so that metrics may be read from any thread), at most once a second, and reads return
//! the latest answer meanwhile. Pollers never wait for stats. Every poll of a stats call
//! happens under the lock of the latest stats and only while the mapping runs, so once its
//! stop has returned (which takes that lock) the source is asked nothing.
//!
//! [`QueueMapping::metrics`]: super::QueueMapping::metrics

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;

use super::Shared;
use crate::error::SourceError;
use crate::queue::QueueStats;
use crate::status::guarded;

/// How long a mapping waits for its source's stats before giving up on that answer.
pub(super) const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// How old the kept stats of a broker source may be before a read asks again.
const STATS_MAX_AGE: Duration = Duration::from_secs(1);

/// A stats call that owns what it borrows.
type Asking = Pin<Box<dyn Future<Output = Result<Option<QueueStats>, SourceError>> + Send>>;

/// Clears `asking` when a background ask ends or is dropped.
struct Asked(Arc<Shared>);

impl Drop for Asked {
    fn drop(&mut self) {
        self.0.latest.lock().asking = false;
    }
}

/// The latest stats, and how they are being asked for.
#[derive(Debug)]
pub(super) struct Latest {
    stats: Option<QueueStats>,
    taken: Option<Instant>,
    /// A background ask is running.
    asking: bool,
    /// The source answered at once last time: ask it on every read.
    immediate: bool,
}

impl Default for Latest {
    fn default() -> Self {
        Self {
            stats: None,
            taken: None,
            asking: false,
            immediate: true,
        }
    }
}

impl Shared {
    fn asking(&self) -> Asking {
        let source = Arc::clone(&self.source);
        Box::pin(async move { guarded("stats", source.stats()).await })
    }

    /// Keeps an answer; an error keeps the previous counts.
    fn keep(&self, answer: Result<Option<QueueStats>, SourceError>) -> Option<QueueStats> {
        self.keep_in(&mut self.latest.lock(), answer)
    }

    fn keep_in(
        &self,
        latest: &mut Latest,
        answer: Result<Option<QueueStats>, SourceError>,
    ) -> Option<QueueStats> {
        match answer {
            Ok(stats) => {
                latest.stats = stats;
                latest.taken = Some(Instant::now());
                stats
            }
            Err(error) => {
                tracing::debug!(mapping = %self.name, %error, "queue stats failed");
                None
            }
        }
    }

    /// Polls a stats call once, in the mapping's runtime (a broker's stats need its timers
    /// and I/O, whichever thread reads the metrics).
    fn poll_once(&self, asking: &mut Asking) -> Option<Result<Option<QueueStats>, SourceError>> {
        let _entered = self.runtime.enter();
        asking.now_or_never()
    }

    /// The stats for a metrics snapshot: fresh from a source that answers at once, else the
    /// latest kept, asking again in the background (on the mapping's runtime) when they are
    /// old. Never waits.
    ///
    /// The source is polled only under the lock of the latest stats, after a look at the
    /// cancel token (the background ask through [`Shared::gated`]): the stop takes that lock
    /// after cancelling, so once it has returned no read calls the source.
    pub(super) fn stats_for_metrics(self: &Arc<Self>) -> Option<QueueStats> {
        let mut latest = self.latest.lock();
        let fresh = latest.taken.is_some_and(|t| t.elapsed() < STATS_MAX_AGE);
        if latest.asking || self.cancel.is_cancelled() || (!latest.immediate && fresh) {
            return latest.stats;
        }
        let mut asking = self.asking();
        if let Some(answer) = self.poll_once(&mut asking) {
            latest.immediate = true;
            self.keep_in(&mut latest, answer);
            return latest.stats;
        }
        // A broker to ask: in the background, bounded, and never past the mapping's stop.
        latest.immediate = false;
        latest.asking = true;
        let stats = latest.stats;
        // Spawned outside the lock: a runtime that has shut down drops the task at once, and
        // its guard takes the lock.
        drop(latest);
        // However the ask ends, finished or dropped (its runtime shut down), reads ask again.
        let asked = Asked(Arc::clone(self));
        let ask = async move {
            let this = &asked.0;
            let answer = tokio::select! {
                biased;
                () = this.cancel.cancelled() => None,
                answer = tokio::time::timeout(STATS_TIMEOUT, this.gated(asking)) => {
                    answer.ok().flatten()
                }
            };
            if let Some(answer) = answer {
                this.keep(answer);
            }
        };
        self.tasks.spawn_on(ask, &self.runtime);
        stats
    }

    /// As the mapping stops: keeps the stats of a source that answers at once, so that
    /// metrics read after the stop (which asks the source nothing more) show the end state.
    pub(super) fn last_stats(&self) {
        let mut latest = self.latest.lock();
        if !latest.immediate {
            return;
        }
        if let Some(answer) = self.poll_once(&mut self.asking()) {
            self.keep_in(&mut latest, answer);
        }
    }

    /// Asks the source for its stats now, bounded by [`STATS_TIMEOUT`]; `None` when it keeps
    /// none, fails, stalls, or the mapping stops meanwhile.
    pub(super) async fn stats_now(&self) -> Option<QueueStats> {
        let answer = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            answer = tokio::time::timeout(STATS_TIMEOUT, self.gated(self.asking())) => answer,
        };
        match answer {
            Ok(Some(answer)) => self.keep(answer),
            Ok(None) => None,
            Err(_elapsed) => {
                tracing::debug!(mapping = %self.name, "queue stats did not answer in time");
                None
            }
        }
    }

    /// A stats call polled only under the lock of the latest stats and while the mapping
    /// runs (`None` once it stops): the stop takes that lock after cancelling, so no poll of
    /// the source is under way once the stop has returned, whichever thread polls.
    fn gated(
        &self,
        mut asking: Asking,
    ) -> impl Future<Output = Option<Result<Option<QueueStats>, SourceError>>> + Send + '_ {
        std::future::poll_fn(move |cx| {
            let _latest = self.latest.lock();
            if self.cancel.is_cancelled() {
                return Poll::Ready(None);
            }
            asking.as_mut().poll(cx).map(Some)
        })
    }
}
