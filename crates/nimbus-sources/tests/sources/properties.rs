//! Property: with random handler outcomes over random batches, every message is deleted after
//! a successful handling or ends in the dead-letter queue; none is lost or both.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError};
use nimbus_sources::{
    BatchResponse, Outgoing, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource,
};
use parking_lot::Mutex;
use proptest::prelude::*;

use crate::support::{eventually, queue, runtime};

/// What the handler does with a record on a given receive.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Ok,
    ItemFailure,
    BatchError,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![4 => Just(Fate::Ok), 2 => Just(Fate::ItemFailure), 1 => Just(Fate::BatchError)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_message_is_deleted_after_success_or_dead_lettered(
        // For each message, its fate on receives 1, 2, 3.
        fates in prop::collection::vec(prop::collection::vec(fate(), 3), 1..60),
        batch_size in 1usize..=10,
        bisect in any::<bool>(),
        fifo in any::<bool>(),
    ) {
        let tokio_rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tokio_rt.block_on(run_case(fates, batch_size, bisect, fifo));
    }
}

async fn run_case(fates: Vec<Vec<Fate>>, batch_size: usize, bisect: bool, fifo: bool) {
    let rt = runtime();
    let fates: Arc<HashMap<String, Vec<Fate>>> = Arc::new(
        fates
            .into_iter()
            .enumerate()
            .map(|(i, f)| (format!("m{i}"), f))
            .collect(),
    );
    // Bodies the handler reported successful, per invocation that returned Ok.
    let succeeded: Arc<Mutex<HashSet<String>>> = Arc::default();
    let function = rt
        .register(
            Function::new(
                "random",
                handler_fn({
                    let (fates, succeeded) = (fates.clone(), succeeded.clone());
                    move |batch: QueueBatch, _ctx: Context| {
                        let (fates, succeeded) = (fates.clone(), succeeded.clone());
                        async move {
                            let fate_of = |r: &nimbus_sources::QueueRecord| {
                                let body = r.body_str().unwrap();
                                fates[body][(r.receive_count as usize - 1).min(2)]
                            };
                            if batch
                                .records
                                .iter()
                                .any(|r| matches!(fate_of(r), Fate::BatchError))
                            {
                                return Err(FunctionError::msg("batch error"));
                            }
                            let mut failures = Vec::new();
                            for r in &batch.records {
                                match fate_of(r) {
                                    Fate::ItemFailure => failures.push(r.message_id.clone()),
                                    _ => {
                                        succeeded.lock().insert(r.body_str().unwrap().to_owned());
                                    }
                                }
                            }
                            Ok::<_, FunctionError>(BatchResponse::failures(failures))
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let dlq = queue(QueueConfig::default());
    let mut config = QueueConfig::default()
        .with_visibility_timeout(Duration::from_secs(2))
        .with_redrive(dlq.clone(), 3);
    if fifo {
        config = config.fifo();
    }
    let q = queue(config);
    let n = fates.len();
    for i in 0..n {
        let mut out = Outgoing::new(format!("m{i}"));
        if fifo {
            out = out.with_group(format!("g{}", i % 3));
        }
        q.send_message(out).unwrap();
    }
    let mut mapping_config = QueueMappingConfig::new("random")
        .with_bisect_on_error(bisect)
        .with_poll_wait(Duration::from_secs(1));
    if batch_size > 1 {
        mapping_config = mapping_config.with_batch_size(batch_size);
    } else {
        mapping_config = mapping_config.with_batch_size(1);
    }
    let mapping = QueueMapping::start(q.clone(), function, mapping_config).unwrap();
    eventually(Duration::from_secs(3_600), || q.is_empty()).await;
    mapping.stop(Duration::from_secs(5)).await;

    let mut dead = HashSet::new();
    loop {
        let got = dlq.receive(100, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            assert!(
                dead.insert(String::from_utf8(m.body.to_vec()).unwrap()),
                "dead-lettered twice"
            );
        }
    }
    let deleted = mapping.metrics().deleted as usize;
    assert_eq!(
        deleted + dead.len(),
        n,
        "every message deleted or dead-lettered, once"
    );
    let succeeded = succeeded.lock();
    for i in 0..n {
        let body = format!("m{i}");
        if !dead.contains(&body) {
            assert!(
                succeeded.contains(&body),
                "{body} deleted without a successful handling"
            );
        }
    }
}
