//! The in-memory sources pass the conformance kit that every adapter must pass, and the kit
//! catches adapters that break each rule (see [`broken`]), tearing down every queue it made
//! whether a check passed or not.

mod broken;
mod stalling;

use std::sync::Arc;
use std::time::Duration;

use nimbus_sources::conformance::{self, InMemoryHarness, QueueHarness, QueueSpec};
use nimbus_sources::{InMemoryStream, InMemoryStreamStore, StreamConfig};

use broken::{Broken, BrokenHarness, Flaw};
use stalling::StallingHarness;

#[tokio::test]
async fn in_memory_queue() {
    conformance::queue(&InMemoryHarness).await.unwrap();
}

#[tokio::test]
async fn in_memory_stream() {
    conformance::stream(|| async {
        InMemoryStream::new(StreamConfig::default().with_shards(3)).unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn in_memory_checkpoints_and_leases() {
    conformance::checkpoints(&InMemoryStreamStore::new(), "kit")
        .await
        .unwrap();
    conformance::leases(&InMemoryStreamStore::new(), "kit/shard")
        .await
        .unwrap();
}

/// A correct adapter whose first call with a receipt on every other queue comes after a stall
/// longer than the visibility timeout (its receipts expired meanwhile): each check so upset
/// is run again on a fresh queue, and the adapter passes.
#[tokio::test]
async fn a_stall_of_the_machine_makes_a_check_run_again_not_fail() {
    let harness = StallingHarness::default();
    conformance::queue(&harness).await.unwrap();
    let (made, torn_down) = harness.counts();
    assert_eq!(made, torn_down, "every queue the kit made is torn down");
    // Twelve checks, ten of which call with a receipt before they end.
    assert!(made >= 20, "{made} queues: the stalled checks ran again");
}

/// Runs the whole queue suite on an adapter with `flaw`; returns the check that failed, after
/// making sure every queue the kit made was torn down.
async fn caught(flaw: Flaw) -> &'static str {
    let harness = BrokenHarness::new(flaw);
    let violation = conformance::queue(&harness).await.unwrap_err();
    eprintln!("{flaw:?}: {violation}");
    let (made, torn_down) = harness.counts();
    assert!(made > 0);
    assert_eq!(made, torn_down, "every queue the kit made is torn down");
    violation.check
}

#[tokio::test]
async fn the_kit_catches_a_queue_that_loses_messages() {
    assert_eq!(caught(Flaw::Lossy).await, "visibility");
}

#[tokio::test]
async fn the_kit_catches_a_release_that_counts_the_receive() {
    assert_eq!(caught(Flaw::CountingRelease).await, "release");
}

#[tokio::test]
async fn the_kit_catches_a_released_receipt_that_acknowledges_the_next_delivery() {
    assert_eq!(caught(Flaw::ReleaseReusesReceipt).await, "released receipt");
}

#[tokio::test]
async fn the_kit_catches_an_ack_that_gives_up_at_the_first_stale_receipt() {
    assert_eq!(caught(Flaw::AllOrNothingAck).await, "partial ack");
}

#[tokio::test]
async fn the_kit_catches_a_stale_receipt_that_disturbs_a_newer_delivery() {
    assert_eq!(caught(Flaw::StaleAckUndoes).await, "stale receipt");
}

#[tokio::test]
async fn the_kit_catches_a_queue_that_drops_the_hop_count() {
    assert_eq!(caught(Flaw::DropsHopCount).await, "hop count");
}

#[tokio::test]
async fn the_kit_catches_an_ack_that_reports_success_for_an_expired_receipt() {
    assert_eq!(caught(Flaw::ExpiredAckOk).await, "expired receipt");
}

#[tokio::test]
async fn the_kit_catches_a_retry_later_that_ignores_its_delay() {
    assert_eq!(caught(Flaw::IgnoresDelay).await, "retry later delay");
}

#[tokio::test]
async fn the_kit_catches_an_ack_that_acknowledges_another_batch() {
    assert_eq!(caught(Flaw::AckMultiple).await, "separate batches");
}

#[tokio::test]
async fn the_kit_catches_a_queue_that_never_redrives_what_a_mapping_fails() {
    // It redrives what `retry_later` fails, so the plain redrive check passes.
    let harness = BrokenHarness::new(Flaw::RedrivesOnlyRetried);
    conformance::redrive(&harness).await.unwrap();
    assert_eq!(caught(Flaw::RedrivesOnlyRetried).await, "handler failures");
}

#[tokio::test]
async fn the_kit_catches_a_queue_that_redrives_late_or_never() {
    for flaw in [Flaw::RedrivesLate, Flaw::NeverRedrives] {
        let harness = BrokenHarness::new(flaw);
        let violation = conformance::handler_failures(&harness).await.unwrap_err();
        eprintln!("{flaw:?}: {violation}");
        assert_eq!(violation.check, "handler failures", "{flaw:?}: {violation}");
        assert_eq!(harness.counts(), (1, 1));
        assert_eq!(caught(flaw).await, "redrive", "{flaw:?}");
    }
}

#[tokio::test]
async fn the_kit_bounds_the_duplicates_of_a_mapping() {
    let queue = Arc::new(Broken::new(
        InMemoryHarness
            .make(QueueSpec::new(Duration::from_secs(1)))
            .await
            .unwrap(),
        Flaw::AckFirstOnly,
    ));
    let violation = conformance::mapping_survives(queue, 300, || async {})
        .await
        .unwrap_err();
    assert_eq!(violation.check, "mapping survives");
    assert!(violation.detail.contains("duplicate"), "{violation}");
}

/// With nothing disrupted, a mapping over the in-memory queue handles each message once. A
/// duplicate can only come from an acknowledgement that missed its one-second visibility
/// timeout, which a stalled machine may cause: a run with duplicates is run again, and one
/// run of three must have none.
#[tokio::test]
async fn a_mapping_over_the_in_memory_queue_survives_without_duplicates() {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let queue = Arc::new(
            InMemoryHarness
                .make(QueueSpec::new(Duration::from_secs(1)))
                .await
                .unwrap(),
        );
        let duplicates = conformance::mapping_survives(queue, 300, || async {})
            .await
            .unwrap();
        runs.push(duplicates);
        if duplicates == 0 {
            return;
        }
    }
    panic!("duplicates in every run: {runs:?}");
}

/// The kit notices a checkpoint store that does not fence: one that writes whatever lease the
/// writer holds fails the fencing check.
#[tokio::test]
async fn the_kit_catches_a_checkpoint_store_that_ignores_leases() {
    use std::collections::HashMap;

    use nimbus_sources::{
        async_trait, Checkpoint, CheckpointStore, Lease, LeaseStore, SourceError,
    };
    use parking_lot::Mutex;

    /// Leases in an in-memory store; checkpoints beside them, forward only, lease unchecked.
    #[derive(Debug, Default)]
    struct Unfenced {
        leases: InMemoryStreamStore,
        checkpoints: Mutex<HashMap<(String, String), Checkpoint>>,
    }

    #[async_trait]
    impl LeaseStore for Unfenced {
        async fn acquire(
            &self,
            key: &str,
            owner: &str,
            ttl: Duration,
        ) -> Result<Option<Lease>, SourceError> {
            self.leases.acquire(key, owner, ttl).await
        }
        async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
            self.leases.release(key, owner).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
            self.leases.list(prefix).await
        }
    }

    #[async_trait]
    impl CheckpointStore for Unfenced {
        async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
            let key = (mapping.to_owned(), shard.to_owned());
            Ok(self.checkpoints.lock().get(&key).cloned())
        }
        async fn put(
            &self,
            mapping: &str,
            shard: &str,
            checkpoint: Checkpoint,
            _lease: &Lease,
        ) -> Result<(), SourceError> {
            let mut checkpoints = self.checkpoints.lock();
            let stored = checkpoints.entry((mapping.to_owned(), shard.to_owned()));
            let stored = stored.or_insert_with(|| checkpoint.clone());
            if checkpoint < *stored {
                return Err(SourceError::Invalid("would move back".into()));
            }
            *stored = checkpoint;
            Ok(())
        }
    }

    let violation = conformance::checkpoints(&Unfenced::default(), "kit")
        .await
        .unwrap_err();
    assert_eq!(violation.check, "fencing", "{violation}");
}
