//! The executor's invariants, checked on the executor itself: permits come back on every path,
//! the pool never holds more instances than permits allow, reaping keeps `min_instances`, and
//! a closed function refuses work and returns its reservation with its last permit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Executor, InvokeOptions, Shared};
use crate::config::{FunctionConfig, RuntimeConfig};
use crate::error::{FunctionError, InvokeError, ThrottleReason};
use crate::handler::{handler_fn, init_fn, Caller, CloneFactory, Context, InitContext};
use crate::instance::InProcess;

/// What a test invocation does.
#[derive(Clone, Copy, Debug)]
enum Step {
    Answer,
    Fail,
    Panic,
    /// Waits for a permit of the test's gate.
    Wait,
    Sleep(Duration),
}

fn shared(limit: u32) -> Arc<Shared> {
    let config = RuntimeConfig::default()
        .with_concurrency_limit(limit)
        .with_min_unreserved(0);
    Arc::new(Shared::new(config))
}

/// An executor whose handler follows the step it is given; `gate` releases `Wait` steps.
fn executor(
    shared: &Arc<Shared>,
    config: FunctionConfig,
    gate: Arc<Semaphore>,
) -> Arc<Executor<Step, u32>> {
    let handler = handler_fn(move |step: Step, _ctx: Context| {
        let gate = Arc::clone(&gate);
        async move {
            match step {
                Step::Answer => Ok(1),
                Step::Fail => Err(FunctionError::msg("failed")),
                Step::Panic => panic!("panicked"),
                Step::Wait => {
                    gate.acquire().await.expect("open").forget();
                    Ok(2)
                }
                Step::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(3)
                }
            }
        }
    });
    let backend = Arc::new(InProcess(Arc::new(CloneFactory(handler))));
    if let Some(amount) = config.reserved_concurrency() {
        shared
            .reserve(amount, "max_concurrency")
            .expect("room to reserve")
            .keep();
    }
    Arc::new(Executor::new("f", config, backend, Arc::clone(shared)))
}

async fn invoke(exec: &Executor<Step, u32>, step: Step) -> Result<u32, InvokeError> {
    exec.invoke(step, Caller::default(), InvokeOptions::default())
        .await
        .result
}

/// Nothing is held: no permit out, nothing counted busy.
fn assert_books_clear(shared: &Shared, exec: &Executor<Step, u32>, after: &str) {
    assert_eq!(
        shared.unreserved.in_use(),
        0,
        "unreserved permit kept after {after}"
    );
    if let Some(reserved) = &exec.reserved {
        assert_eq!(reserved.in_use(), 0, "reserved permit kept after {after}");
    }
    assert_eq!(exec.counters.busy(), 0, "still counted busy after {after}");
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_on_every_path() {
    for reserved in [None, Some(2)] {
        let shared = shared(4);
        let gate = Arc::new(Semaphore::new(0));
        let mut config = FunctionConfig::default().with_timeout(Duration::from_secs(1));
        config.max_concurrency = reserved;
        let exec = executor(&shared, config, Arc::clone(&gate));

        assert_eq!(invoke(&exec, Step::Answer).await.unwrap(), 1);
        assert_books_clear(&shared, &exec, "an answer");
        assert!(matches!(
            invoke(&exec, Step::Fail).await,
            Err(InvokeError::Function(_))
        ));
        assert_books_clear(&shared, &exec, "a function error");
        assert!(matches!(
            invoke(&exec, Step::Panic).await,
            Err(InvokeError::Panic(_))
        ));
        assert_books_clear(&shared, &exec, "a panic");
        let slow = Step::Sleep(Duration::from_secs(5));
        assert!(matches!(
            invoke(&exec, slow).await,
            Err(InvokeError::Timeout(_))
        ));
        assert_books_clear(&shared, &exec, "a timeout");

        // A caller that gives up mid-run drops its invocation.
        let abandoned = tokio::time::timeout(Duration::from_millis(10), invoke(&exec, Step::Wait));
        assert!(abandoned.await.is_err());
        assert_books_clear(&shared, &exec, "a dropped caller");

        // The end of the grace period cancels what runs.
        let running = {
            let exec = Arc::clone(&exec);
            tokio::spawn(async move { invoke(&exec, Step::Wait).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(exec.counters.busy(), 1);
        exec.halt();
        assert!(matches!(
            running.await.unwrap(),
            Err(InvokeError::Cancelled)
        ));
        assert_books_clear(&shared, &exec, "a hard stop");
    }
}

#[tokio::test(start_paused = true)]
async fn permits_come_back_after_an_init_failure_and_a_scale_throttle() {
    let shared = shared(4);
    let factory = init_fn(|init: InitContext| async move {
        if init.instance_number() == 1 {
            return Err(FunctionError::msg("first init fails"));
        }
        Ok(handler_fn(|_: Step, _: Context| async {
            Ok::<_, FunctionError>(1)
        }))
    });
    let config = FunctionConfig::default().with_scale_rate(1, Duration::from_secs(60));
    let backend = Arc::new(InProcess(Arc::new(factory)));
    let exec = Executor::new("f", config, backend, Arc::clone(&shared));
    assert!(matches!(invoke_on(&exec).await, Err(InvokeError::Init(_))));
    assert_books_clear(&shared, &exec, "an init failure");
    // The one new instance this minute was spent on the failed init.
    assert!(matches!(
        invoke_on(&exec).await,
        Err(InvokeError::Throttled(ThrottleReason::ScaleRate))
    ));
    assert_books_clear(&shared, &exec, "a scale-rate throttle");
}

async fn invoke_on(exec: &Executor<Step, u32>) -> Result<u32, InvokeError> {
    invoke(exec, Step::Answer).await
}

#[tokio::test(start_paused = true)]
async fn the_pool_never_holds_more_instances_than_the_concurrency() {
    let shared = shared(10);
    let gate = Arc::new(Semaphore::new(0));
    let exec = executor(
        &shared,
        FunctionConfig::default().with_max_concurrency(3),
        Arc::clone(&gate),
    );
    let running: Vec<_> = (0..3)
        .map(|_| {
            let exec = Arc::clone(&exec);
            tokio::spawn(async move { invoke(&exec, Step::Wait).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(exec.pool.live(), 3);
    assert!(matches!(
        invoke(&exec, Step::Answer).await,
        Err(InvokeError::Throttled(ThrottleReason::FunctionLimit))
    ));
    gate.add_permits(3);
    for run in running {
        assert_eq!(run.await.unwrap().unwrap(), 2);
    }
    assert_eq!((exec.pool.live(), exec.pool.idle()), (3, 3));
    for _ in 0..10 {
        invoke(&exec, Step::Answer).await.unwrap();
    }
    assert_eq!(exec.pool.live(), 3, "sequential work reuses warm instances");
    assert_books_clear(&shared, &exec, "the burst");
}

#[tokio::test(start_paused = true)]
async fn reaping_keeps_min_instances() {
    let shared = shared(10);
    let gate = Arc::new(Semaphore::new(0));
    let config = FunctionConfig::default()
        .with_min_instances(2)
        .with_idle_timeout(Duration::from_secs(10));
    let exec = executor(&shared, config, Arc::clone(&gate));
    exec.provision().await.unwrap();
    exec.start_reaper();
    assert_eq!(exec.pool.live(), 2);
    let running: Vec<_> = (0..4)
        .map(|_| {
            let exec = Arc::clone(&exec);
            tokio::spawn(async move { invoke(&exec, Step::Wait).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(exec.pool.live(), 4);
    gate.add_permits(4);
    for run in running {
        run.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!((exec.pool.live(), exec.pool.idle()), (2, 2));
    assert_eq!(exec.stop_instances(), 2);
    assert_eq!(exec.pool.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_closed_function_refuses_work_and_returns_its_reservation_with_the_last_permit() {
    let shared = shared(10);
    let gate = Arc::new(Semaphore::new(0));
    let exec = executor(
        &shared,
        FunctionConfig::default().with_max_concurrency(4),
        Arc::clone(&gate),
    );
    assert_eq!(shared.unreserved.limit(), 6);
    let running = {
        let exec = Arc::clone(&exec);
        tokio::spawn(async move { invoke(&exec, Step::Wait).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(exec.close(), 1);
    assert!(matches!(
        invoke(&exec, Step::Answer).await,
        Err(InvokeError::Unregistered(_))
    ));
    exec.halt();
    // Still held by the running invocation, whose task has not seen the stop yet.
    assert!(!exec.reservation_returned());
    assert!(matches!(
        running.await.unwrap(),
        Err(InvokeError::Cancelled)
    ));
    assert!(exec.reservation_returned());
    assert_eq!(shared.unreserved.limit(), 10);
    assert_books_clear(&shared, &exec, "unregister");
}

/// The governor off reads no clock: the handler's future is not wrapped. On, it reads the
/// thread CPU clock twice per poll.
#[tokio::test(start_paused = true)]
async fn the_governor_reads_the_cpu_clock_only_when_on() {
    use super::governor::reads;

    let shared = shared(4);
    let gate = Arc::new(Semaphore::new(0));
    let off = executor(&shared, FunctionConfig::default(), Arc::clone(&gate));
    let before = reads::so_far();
    assert_eq!(invoke(&off, Step::Answer).await.unwrap(), 1);
    assert_eq!(
        invoke(&off, Step::Sleep(Duration::from_millis(5)))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        reads::so_far(),
        before,
        "the governor off read the CPU clock"
    );

    let on = executor(
        &shared,
        FunctionConfig::default().with_cpu_governor(true),
        gate,
    );
    let before = reads::so_far();
    assert_eq!(invoke(&on, Step::Answer).await.unwrap(), 1);
    assert_eq!(reads::so_far() - before, 2, "one poll, two reads");
    let before = reads::so_far();
    assert_eq!(
        invoke(&on, Step::Sleep(Duration::from_millis(5)))
            .await
            .unwrap(),
        3
    );
    assert!(
        reads::so_far() - before >= 4,
        "two polls or more, two reads each"
    );
}

/// Invokes `step` from a thread of its own, on a runtime of that thread: the instance goes
/// back to that thread's idle stack.
fn invoke_on_a_thread<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    exec: &'s Executor<Step, u32>,
    step: Step,
) -> std::thread::ScopedJoinHandle<'s, Result<u32, InvokeError>> {
    scope.spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(invoke(exec, step))
    })
}

/// Leaves two instances idle, each on the stack of a different thread: two invocations run at
/// once on two threads, so each needs an instance of its own.
fn idle_on_two_threads(exec: &Executor<Step, u32>, gate: &Semaphore) {
    std::thread::scope(|s| {
        let running = [
            invoke_on_a_thread(s, exec, Step::Wait),
            invoke_on_a_thread(s, exec, Step::Wait),
        ];
        while exec.counters.busy() < 2 {
            std::thread::yield_now();
        }
        gate.add_permits(2);
        for run in running {
            assert_eq!(run.join().expect("the thread ran").unwrap(), 2);
        }
    });
    assert_eq!((exec.pool.live(), exec.pool.idle()), (2, 2));
}

#[tokio::test]
async fn a_thread_without_an_idle_instance_reuses_another_threads() {
    let shared = shared(10);
    let exec = executor(
        &shared,
        FunctionConfig::default(),
        Arc::new(Semaphore::new(0)),
    );
    std::thread::scope(|s| {
        for _ in 0..3 {
            let answer = invoke_on_a_thread(s, &exec, Step::Answer).join();
            assert_eq!(answer.expect("the thread ran").unwrap(), 1);
        }
    });
    assert_eq!(
        (exec.pool.live(), exec.pool.idle()),
        (1, 1),
        "one instance served every thread in turn"
    );
    invoke(&exec, Step::Answer).await.unwrap();
    assert_eq!((exec.pool.live(), exec.pool.idle()), (1, 1));
    assert_books_clear(&shared, &exec, "invocations from several threads");
}

#[tokio::test(start_paused = true)]
async fn instances_idle_on_other_threads_are_reaped() {
    let shared = shared(10);
    let gate = Arc::new(Semaphore::new(0));
    let config = FunctionConfig::default().with_idle_timeout(Duration::from_secs(10));
    let exec = executor(&shared, config, Arc::clone(&gate));
    exec.start_reaper();
    // The reaper finds nothing idle and parks; instances given back on other threads wake it.
    tokio::task::yield_now().await;
    idle_on_two_threads(&exec, &gate);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        (exec.pool.live(), exec.pool.idle()),
        (0, 0),
        "both idle instances reaped"
    );
}

#[tokio::test]
async fn stopping_discards_instances_idle_on_other_threads() {
    let shared = shared(10);
    let gate = Arc::new(Semaphore::new(0));
    let exec = executor(&shared, FunctionConfig::default(), Arc::clone(&gate));
    idle_on_two_threads(&exec, &gate);
    assert_eq!(exec.stop_instances(), 2);
    assert_eq!(exec.pool.live(), 0);
}
