//! Property: under random concurrent invoke patterns no limit is ever exceeded, and every
//! invocation gets exactly one outcome, counted once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, InvokeError, ThrottleReason};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Call {
    function: usize,
    start_ms: u64,
    hold_ms: u64,
    fail: bool,
}

fn calls() -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec(
        (0usize..3, 0u64..40, 0u64..30, any::<bool>()).prop_map(
            |(function, start_ms, hold_ms, fail)| Call {
                function,
                start_ms,
                hold_ms,
                fail,
            },
        ),
        1..60,
    )
}

/// Tracks how many handlers of one scope run at once, and the most ever seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn limits_hold_and_every_invoke_has_one_outcome(
        runtime_limit in 1u32..8,
        reservations in prop::collection::vec(prop::option::of(0u32..4), 3),
        calls in calls(),
    ) {
        let tokio_rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tokio_rt.block_on(async move {
            let rt = crate::support::runtime(runtime_limit);
            let global = Arc::new(Gauge::default());
            let mut handles = Vec::new();
            let mut gauges = Vec::new();
            let mut reserved_ok = Vec::new();
            for (i, reservation) in reservations.iter().enumerate() {
                let gauge = Arc::new(Gauge::default());
                let (g, all) = (gauge.clone(), global.clone());
                let mut f = Function::new(
                    format!("f{i}"),
                    handler_fn(move |(hold_ms, fail): (u64, bool), _ctx: Context| {
                        let (g, all) = (g.clone(), all.clone());
                        async move {
                            g.enter();
                            all.enter();
                            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                            g.leave();
                            all.leave();
                            if fail { Err(FunctionError::msg("injected")) } else { Ok::<_, FunctionError>(()) }
                        }
                    }),
                );
                if let Some(r) = reservation {
                    f = f.with_max_concurrency(*r);
                }
                // A reservation that does not fit is refused; fall back to unreserved.
                let handle = match rt.register(f).await {
                    Ok(h) => { reserved_ok.push(*reservation); h }
                    Err(_) => {
                        reserved_ok.push(None);
                        rt.register(Function::new(
                            format!("f{i}"),
                            handler_fn(move |(_h, _f): (u64, bool), _ctx: Context| async move {
                                Ok::<_, FunctionError>(())
                            }),
                        )).await.unwrap()
                    }
                };
                handles.push(handle);
                gauges.push(gauge);
            }
            let unreserved_limit = rt.concurrency().unreserved_limit;

            let tasks: Vec<_> = calls.iter().map(|call| {
                let handle = handles[call.function].clone();
                let call = call.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(call.start_ms)).await;
                    handle.invoke((call.hold_ms, call.fail)).await
                })
            }).collect();
            let mut outcomes = vec![[0u64; 4]; handles.len()];
            for (task, call) in tasks.into_iter().zip(&calls) {
                let slot = match task.await.unwrap() {
                    Ok(()) => 0,
                    Err(InvokeError::Function(_)) => 1,
                    Err(InvokeError::Throttled(ThrottleReason::FunctionLimit | ThrottleReason::RuntimeLimit)) => 2,
                    Err(other) => panic!("unexpected outcome {other:?}"),
                };
                outcomes[call.function][slot] += 1;
            }

            // No limit was exceeded.
            for (i, gauge) in gauges.iter().enumerate() {
                let peak = gauge.peak.load(Ordering::SeqCst);
                if let Some(r) = reserved_ok[i] {
                    assert!(peak <= r as usize, "f{i} peak {peak} > reserved {r}");
                } else {
                    assert!(peak <= unreserved_limit, "f{i} peak {peak} > unreserved {unreserved_limit}");
                }
            }
            assert!(global.peak.load(Ordering::SeqCst) <= runtime_limit as usize);
            assert!(unreserved_limit <= runtime_limit as usize);

            // Every invoke was counted exactly once, in the bucket its caller saw.
            for (i, handle) in handles.iter().enumerate() {
                let m = handle.metrics();
                let [ok, err, throttled] = [outcomes[i][0], outcomes[i][1], outcomes[i][2]];
                assert_eq!(m.successes, ok);
                assert_eq!(m.errors, err);
                assert_eq!(m.throttles(), throttled);
                assert_eq!(m.invocations, ok + err);
                assert_eq!(m.concurrency, 0, "every permit returned");
            }
            let total: u64 = outcomes.iter().flatten().sum();
            assert_eq!(total, calls.len() as u64);
            assert_eq!(rt.concurrency().in_flight, 0);
            assert_eq!(rt.concurrency().unreserved_in_use, 0);
        });
    }
}
