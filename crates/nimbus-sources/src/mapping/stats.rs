//! The queue's counts as a mapping sees them: asked of the source off the polling path,
//! bounded by a timeout and guarded against panics, and kept for [`QueueMapping::metrics`].
//!
//! A source whose `stats` answers at once (the in-memory queue) is asked on every read; one
//! that must ask its broker is asked in the background, at most once a second, and reads
//! return the latest answer meanwhile. Pollers never wait for stats.
//!
//! [`QueueMapping::metrics`]: super::QueueMapping::metrics

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
        let mut latest = self.latest.lock();
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

    /// The stats for a metrics snapshot: fresh from a source that answers at once, else the
    /// latest kept, asking again in the background when they are old. Never waits.
    pub(super) fn stats_for_metrics(self: &Arc<Self>) -> Option<QueueStats> {
        {
            let latest = self.latest.lock();
            let fresh = latest.taken.is_some_and(|t| t.elapsed() < STATS_MAX_AGE);
            if latest.asking || self.cancel.is_cancelled() || (!latest.immediate && fresh) {
                return latest.stats;
            }
        }
        let mut asking = self.asking();
        if let Some(answer) = (&mut asking).now_or_never() {
            self.latest.lock().immediate = true;
            self.keep(answer);
            return self.latest.lock().stats;
        }
        // A broker to ask: in the background, bounded, and never past the mapping's stop.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.latest.lock().stats;
        };
        let stats = {
            let mut latest = self.latest.lock();
            latest.immediate = false;
            latest.asking = true;
            latest.stats
        };
        let this = Arc::clone(self);
        let ask = async move {
            let answer = tokio::select! {
                biased;
                () = this.cancel.cancelled() => None,
                answer = tokio::time::timeout(STATS_TIMEOUT, asking) => answer.ok(),
            };
            if let Some(answer) = answer {
                this.keep(answer);
            }
            this.latest.lock().asking = false;
        };
        self.tasks.spawn_on(ask, &runtime);
        stats
    }

    /// As the mapping stops: keeps the stats of a source that answers at once, so that
    /// metrics read after the stop (which asks the source nothing more) show the end state.
    pub(super) fn last_stats(&self) {
        if !self.latest.lock().immediate {
            return;
        }
        if let Some(answer) = self.asking().now_or_never() {
            self.keep(answer);
        }
    }

    /// Asks the source for its stats now, bounded by [`STATS_TIMEOUT`]; `None` when it keeps
    /// none, fails, stalls, or the mapping stops meanwhile.
    pub(super) async fn stats_now(&self) -> Option<QueueStats> {
        let answer = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            answer = tokio::time::timeout(STATS_TIMEOUT, self.asking()) => answer,
        };
        match answer {
            Ok(answer) => self.keep(answer),
            Err(_elapsed) => {
                tracing::debug!(mapping = %self.name, "queue stats did not answer in time");
                None
            }
        }
    }
}
