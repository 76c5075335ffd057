//! Property: for random outcome sequences (ok, error, panic, timeout, with throttles from
//! competing sync invocations) and a random shutdown, every accepted async event ends in
//! exactly one of {succeeded, on-failure, handed back at shutdown}; none is lost, none
//! finished twice, and attempts are counted without gaps (throttles never count).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, Backoff, Condition, Context, Function, FunctionError, InvocationRecord, RequestId,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Ok,
    Error,
    Panic,
    Timeout,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Ok),
        2 => Just(Step::Error),
        1 => Just(Step::Panic),
        1 => Just(Step::Timeout),
    ]
}

/// Sync invocations that hold the function's only permit: (start ms, hold ms).
const HOG: u32 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_event_ends_exactly_once(
        max_retries in 0u32..=2,
        scripts in prop::collection::vec((0u64..2_000, prop::collection::vec(step(), 3)), 1..25),
        hogs in prop::collection::vec((0u64..2_000, 1u64..400), 0..6),
        shutdown_at_ms in 0u64..4_000,
        grace_ms in 0u64..600,
    ) {
        let tokio_rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tokio_rt.block_on(run_case(max_retries, scripts, hogs, shutdown_at_ms, grace_ms));
    }
}

async fn run_case(
    max_retries: u32,
    scripts: Vec<(u64, Vec<Step>)>,
    hogs: Vec<(u64, u64)>,
    shutdown_at_ms: u64,
    grace_ms: u64,
) {
    let rt = crate::support::runtime(10);
    let script: Arc<HashMap<u32, Vec<Step>>> = Arc::new(
        scripts
            .iter()
            .enumerate()
            .map(|(i, (_, steps))| (i as u32, steps.clone()))
            .collect(),
    );
    let seen: Arc<Mutex<HashMap<u32, Vec<u32>>>> = Arc::default();
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    let handle = rt
        .register(
            Function::new(
                "scripted",
                handler_fn({
                    let (script, seen) = (script.clone(), seen.clone());
                    move |event: u32, ctx: Context| {
                        let (script, seen) = (script.clone(), seen.clone());
                        async move {
                            if event >= HOG {
                                tokio::time::sleep(Duration::from_millis(u64::from(event - HOG)))
                                    .await;
                                return Ok(0);
                            }
                            seen.lock().entry(event).or_default().push(ctx.attempt());
                            let step = script[&event][ctx.attempt() as usize - 1];
                            match step {
                                Step::Ok => Ok::<_, FunctionError>(event),
                                Step::Error => Err(FunctionError::msg("scripted")),
                                Step::Panic => panic!("scripted panic"),
                                Step::Timeout => {
                                    tokio::time::sleep(Duration::from_secs(10)).await;
                                    Ok(event)
                                }
                            }
                        }
                    }
                }),
            )
            .with_max_concurrency(1)
            .with_timeout(Duration::from_secs(1))
            .with_max_retries(max_retries)
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(100)).unwrap())
            .with_throttle_backoff(Backoff::fixed(Duration::from_millis(50)).unwrap())
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for (id, (start_ms, _)) in scripts.iter().enumerate() {
        let (handle, start_ms) = (handle.clone(), *start_ms);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(start_ms)).await;
            handle
                .invoke_async(id as u32)
                .ok()
                .map(|rid| (id as u32, rid))
        }));
    }
    for (start_ms, hold_ms) in hogs {
        let handle = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(start_ms)).await;
            let _ = handle.invoke(HOG + hold_ms as u32).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(shutdown_at_ms)).await;
    let report = rt.shutdown(Duration::from_millis(grace_ms)).await;

    let mut accepted: HashMap<RequestId, u32> = HashMap::new();
    for task in tasks {
        if let Some((id, rid)) = task.await.unwrap() {
            accepted.insert(rid, id);
        }
    }
    let mut ended: HashMap<RequestId, &'static str> = HashMap::new();
    let mut finish = |rid: RequestId, how: &'static str| {
        let before = ended.insert(rid, how);
        assert!(
            before.is_none(),
            "{rid} finished twice: {before:?} and {how}"
        );
        assert!(
            accepted.contains_key(&rid),
            "{rid} finished but was never accepted"
        );
    };
    let seen = seen.lock().clone();
    let attempts_seen = |id: u32| seen.get(&id).cloned().unwrap_or_default();

    while let Ok(record) = ok_rx.try_recv() {
        finish(record.request_id, "succeeded");
        let id = record.request;
        let steps = &script[&id];
        let k = record.approximate_invoke_count as usize;
        assert!(k >= 1 && k <= max_retries as usize + 1);
        assert_eq!(
            steps[k - 1],
            Step::Ok,
            "event {id} succeeded on attempt {k}"
        );
        assert!(steps[..k - 1].iter().all(|s| *s != Step::Ok));
        assert_eq!(attempts_seen(id), (1..=k as u32).collect::<Vec<_>>());
    }
    while let Ok(record) = fail_rx.try_recv() {
        finish(record.request_id, "failed");
        let id = record.request;
        assert_eq!(record.condition, Condition::RetriesExhausted);
        let k = record.approximate_invoke_count as usize;
        assert_eq!(k, max_retries as usize + 1);
        assert!(script[&id][..k].iter().all(|s| *s != Step::Ok));
        assert_eq!(attempts_seen(id), (1..=k as u32).collect::<Vec<_>>());
        assert!(record.error.is_some());
    }
    for back in report.handed_back {
        finish(back.request_id, "handed back");
        let made = back.attempts;
        let id = back.downcast::<u32>().expect("u32 events");
        let seen = attempts_seen(id);
        // An attempt cut short by the end of shutdown ran but does not count.
        assert!(
            seen == (1..=made).collect::<Vec<_>>() || seen == (1..=made + 1).collect::<Vec<_>>(),
            "event {id}: handed back after {made} attempts, handler saw {seen:?}"
        );
    }
    assert_eq!(
        ended.len(),
        accepted.len(),
        "every accepted event ended somewhere"
    );
    assert_eq!(handle.async_metrics().pending, 0);
}
