//! Instance backends: the executor's guarantees (timeouts, panics, crashes, reaping, warm
//! reuse, metering) hold the same for every backend. Each test runs against the in-process
//! backend (handlers from a factory) and against a backend that runs each instance on a task of
//! its own behind a channel, the shape of an instance in another thread or process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_core::util::BoxFuture;
use nimbus_core::{
    async_trait, init_fn, Backend, BillingGranularity, Context, Fault, Function, FunctionError,
    Handler, InitContext, Instance, InvokeError, OutcomeKind, Runtime,
};
use tokio::sync::{mpsc, oneshot};

use crate::support::runtime;

/// What an invocation does.
#[derive(Debug, Clone)]
enum Cmd {
    /// Answers the number.
    Echo(u32),
    /// Sleeps, then answers 0.
    Sleep(Duration),
    /// Panics.
    Panic,
    /// The instance dies mid-invocation (in-process: a panic, the only way it can die).
    Crash,
    /// Answers, then the instance dies while idle (channel backend only).
    AnswerThenExit,
}

/// The handler logic both backends run.
async fn behave(cmd: Cmd) -> Result<u32, FunctionError> {
    match cmd {
        Cmd::Echo(n) => Ok(n),
        Cmd::Sleep(d) => {
            tokio::time::sleep(d).await;
            Ok(0)
        }
        Cmd::Panic | Cmd::Crash => panic!("boom"),
        Cmd::AnswerThenExit => Ok(1),
    }
}

/// Instances disposed of, per backend.
#[derive(Clone, Default)]
struct Disposed(Arc<AtomicUsize>);

impl Disposed {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The in-process backend: a handler per instance, counted when dropped.
fn in_process(name: &str, disposed: &Disposed) -> Function<Cmd, u32> {
    struct Counted(Disposed);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
        }
    }
    #[async_trait]
    impl Handler<Cmd, u32> for Counted {
        async fn call(&mut self, cmd: Cmd, _ctx: Context) -> Result<u32, FunctionError> {
            behave(cmd).await
        }
    }
    let disposed = disposed.clone();
    Function::with_factory(
        name,
        init_fn(move |_init: InitContext| {
            let counted = Counted(disposed.clone());
            async move { Ok::<_, FunctionError>(counted) }
        }),
    )
}

type Call = (Cmd, oneshot::Sender<Result<u32, FunctionError>>);

/// The channel backend: each instance is a task serving calls from a channel.
struct Channels {
    disposed: Disposed,
}

struct ChannelInstance {
    calls: mpsc::Sender<Call>,
    fault: Arc<Mutex<Option<Fault>>>,
    task: tokio::task::JoinHandle<()>,
    disposed: Disposed,
}

#[async_trait]
impl Backend<Cmd, u32> for Channels {
    async fn create(
        &self,
        _ctx: InitContext,
    ) -> Result<Box<dyn Instance<Cmd, u32>>, FunctionError> {
        let (calls, mut incoming) = mpsc::channel::<Call>(1);
        let fault = Arc::new(Mutex::new(None));
        let recorded = Arc::clone(&fault);
        let task = tokio::spawn(async move {
            while let Some((cmd, reply)) = incoming.recv().await {
                match cmd {
                    Cmd::Crash => {
                        *recorded.lock().unwrap() = Some(Fault::Exited("killed".into()));
                        return; // the reply is dropped: the caller sees the instance gone
                    }
                    Cmd::AnswerThenExit => {
                        let _ = reply.send(Ok(1));
                        *recorded.lock().unwrap() = Some(Fault::Exited("exited".into()));
                        return;
                    }
                    cmd => {
                        // Run on a task of its own so that a panic is seen, not propagated.
                        match tokio::spawn(behave(cmd)).await {
                            Ok(answer) => {
                                let _ = reply.send(answer);
                            }
                            Err(join) => {
                                let message = panic_text(join.into_panic());
                                *recorded.lock().unwrap() = Some(Fault::Panicked(message));
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Box::new(ChannelInstance {
            calls,
            fault,
            task,
            disposed: self.disposed.clone(),
        }))
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .unwrap_or_default()
}

impl Instance<Cmd, u32> for ChannelInstance {
    fn invoke(&mut self, cmd: Cmd, _ctx: Context) -> BoxFuture<'_, Result<u32, FunctionError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let gone = || FunctionError::msg("the instance is gone");
            self.calls.send((cmd, reply)).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn fault(&mut self) -> Option<Fault> {
        self.fault.lock().unwrap().clone()
    }

    fn dispose(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.task.abort();
        self.disposed.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    InProcess,
    Channel,
}

const BOTH: [Kind; 2] = [Kind::InProcess, Kind::Channel];

/// A runtime with one function of this backend, configured by `configure`.
async fn function(
    kind: Kind,
    configure: impl FnOnce(Function<Cmd, u32>) -> Function<Cmd, u32>,
) -> (Runtime, nimbus_core::FunctionHandle<Cmd, u32>, Disposed) {
    let rt = runtime(10);
    let disposed = Disposed::default();
    let f = match kind {
        Kind::InProcess => in_process("f", &disposed),
        Kind::Channel => Function::with_backend(
            "f",
            Channels {
                disposed: disposed.clone(),
            },
        ),
    };
    let handle = rt.register_native(configure(f)).await.expect("registers");
    (rt, handle, disposed)
}

#[tokio::test(start_paused = true)]
async fn instances_are_reused_warm() {
    for kind in BOTH {
        let (_rt, f, disposed) = function(kind, |f| f).await;
        assert_eq!(f.invoke(Cmd::Echo(1)).await.unwrap(), 1, "{kind:?}");
        assert_eq!(f.invoke(Cmd::Echo(2)).await.unwrap(), 2, "{kind:?}");
        let m = f.metrics();
        assert_eq!(
            (m.cold_starts, m.instances, m.instances_idle),
            (1, 1, 1),
            "{kind:?}"
        );
        assert_eq!(disposed.count(), 0, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_instance_is_discarded_and_the_next_invocation_starts_cold() {
    for kind in BOTH {
        let (_rt, f, disposed) = function(kind, |f| f.with_timeout(Duration::from_secs(1))).await;
        let err = f
            .invoke(Cmd::Sleep(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(err, InvokeError::Timeout(_)), "{kind:?}: {err:?}");
        assert_eq!(disposed.count(), 1, "{kind:?}");
        assert_eq!(f.metrics().instances, 0, "{kind:?}");
        assert_eq!(f.invoke(Cmd::Echo(3)).await.unwrap(), 3, "{kind:?}");
        let m = f.metrics();
        assert_eq!((m.timeouts, m.cold_starts), (1, 2), "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_discards_the_instance() {
    for kind in BOTH {
        let (_rt, f, disposed) = function(kind, |f| f).await;
        match f.invoke(Cmd::Panic).await {
            Err(InvokeError::Panic(message)) => assert!(message.contains("boom"), "{kind:?}"),
            other => panic!("{kind:?}: expected a panic, got {other:?}"),
        }
        assert_eq!(disposed.count(), 1, "{kind:?}");
        assert_eq!(f.invoke(Cmd::Echo(4)).await.unwrap(), 4, "{kind:?}");
        let m = f.metrics();
        assert_eq!(
            (m.panics, m.cold_starts, m.instances),
            (1, 2, 1),
            "{kind:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_discards_the_instance() {
    for kind in BOTH {
        let (_rt, f, disposed) = function(kind, |f| f).await;
        let err = f.invoke(Cmd::Crash).await.unwrap_err();
        assert_eq!(err.kind(), OutcomeKind::Panic, "{kind:?}: {err:?}");
        if let Kind::Channel = kind {
            assert!(
                matches!(&err, InvokeError::Crashed(m) if m == "killed"),
                "{err:?}"
            );
            assert_eq!(err.error_type(), "Runtime.ExitError");
        }
        assert_eq!(disposed.count(), 1, "{kind:?}");
        assert_eq!(f.invoke(Cmd::Echo(5)).await.unwrap(), 5, "{kind:?}");
        assert_eq!(f.metrics().cold_starts, 2, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_died_while_idle_is_not_reused() {
    let (_rt, f, disposed) = function(Kind::Channel, |f| f).await;
    assert_eq!(f.invoke(Cmd::AnswerThenExit).await.unwrap(), 1);
    assert_eq!(f.metrics().instances_idle, 1);
    // The next invocation finds it dead, discards it and starts a new one.
    assert_eq!(f.invoke(Cmd::Echo(6)).await.unwrap(), 6);
    let m = f.metrics();
    assert_eq!((m.cold_starts, m.errors, m.panics), (2, 0, 0));
    assert_eq!(disposed.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_reaped_and_disposed_of() {
    for kind in BOTH {
        let (rt, f, disposed) =
            function(kind, |f| f.with_idle_timeout(Duration::from_secs(10))).await;
        f.invoke(Cmd::Echo(1)).await.unwrap();
        assert_eq!(f.metrics().instances, 1, "{kind:?}");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(f.metrics().instances, 0, "{kind:?}");
        assert_eq!(disposed.count(), 1, "{kind:?}");
        let report = rt.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.instances_dropped, 0, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_disposes_of_idle_instances() {
    for kind in BOTH {
        let (rt, f, disposed) = function(kind, |f| f).await;
        f.invoke(Cmd::Echo(1)).await.unwrap();
        let report = rt.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.instances_dropped, 1, "{kind:?}");
        assert_eq!(disposed.count(), 1, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn invocations_are_metered_the_same() {
    for kind in BOTH {
        let (_rt, f, _disposed) =
            function(kind, |f| f.with_billing(BillingGranularity::Millisecond)).await;
        let cold = f
            .invoke_with(Cmd::Sleep(Duration::from_micros(2_500)), Default::default())
            .await;
        let report = cold.report.expect("a handler ran");
        assert!(report.init_duration.is_some(), "{kind:?}");
        assert!(report.duration >= Duration::from_micros(2_500), "{kind:?}");
        assert_eq!(report.billed_duration, Duration::from_millis(3), "{kind:?}");
        let warm = f.invoke_with(Cmd::Echo(1), Default::default()).await;
        assert!(
            warm.report.expect("ran").init_duration.is_none(),
            "{kind:?}"
        );
        let usage = f.usage();
        assert_eq!(usage.requests, 2, "{kind:?}");
        assert_eq!(f.metrics().successes, 2, "{kind:?}");
    }
}

/// A backend whose create panics, or whose fault report panics, is contained.
#[tokio::test(start_paused = true)]
async fn a_panicking_backend_is_an_init_failure_or_a_crash() {
    struct Panics;
    #[async_trait]
    impl Backend<Cmd, u32> for Panics {
        async fn create(
            &self,
            _: InitContext,
        ) -> Result<Box<dyn Instance<Cmd, u32>>, FunctionError> {
            panic!("create exploded")
        }
    }
    let rt = runtime(10);
    let f = rt
        .register_native(Function::with_backend("p", Panics))
        .await
        .unwrap();
    let err = f.invoke(Cmd::Echo(1)).await.unwrap_err();
    assert!(matches!(err, InvokeError::Init(_)), "{err:?}");

    struct BadFault;
    impl Instance<Cmd, u32> for BadFault {
        fn invoke(&mut self, _: Cmd, _: Context) -> BoxFuture<'_, Result<u32, FunctionError>> {
            Box::pin(async { Err(FunctionError::msg("no")) })
        }
        fn fault(&mut self) -> Option<Fault> {
            panic!("fault exploded")
        }
    }
    struct BadFaults;
    #[async_trait]
    impl Backend<Cmd, u32> for BadFaults {
        async fn create(
            &self,
            _: InitContext,
        ) -> Result<Box<dyn Instance<Cmd, u32>>, FunctionError> {
            Ok(Box::new(BadFault))
        }
    }
    let g = rt
        .register_native(Function::with_backend("bad-fault", BadFaults))
        .await
        .unwrap();
    let err = g.invoke(Cmd::Echo(1)).await.unwrap_err();
    assert!(matches!(err, InvokeError::Crashed(_)), "{err:?}");
    assert_eq!(g.metrics().instances, 0);
}

/// A backend for the disposal tests: each disposal takes `dispose_for` (forever when `None`)
/// and is then counted; the init of instance number `fail_at` fails.
struct Lingering {
    dispose_for: Option<Duration>,
    fail_at: Option<u64>,
    disposed: Disposed,
    tokens: Arc<Mutex<Vec<nimbus_core::CancellationToken>>>,
}

struct LingeringInstance {
    dispose_for: Option<Duration>,
    disposed: Disposed,
    tokens: Arc<Mutex<Vec<nimbus_core::CancellationToken>>>,
}

impl Instance<Cmd, u32> for LingeringInstance {
    fn invoke(&mut self, cmd: Cmd, ctx: Context) -> BoxFuture<'_, Result<u32, FunctionError>> {
        self.tokens.lock().unwrap().push(ctx.cancellation().clone());
        if let Cmd::Panic = cmd {
            panic!("invoke panicked before its future");
        }
        Box::pin(behave(cmd))
    }

    fn dispose(self: Box<Self>) -> BoxFuture<'static, ()> {
        let Self {
            dispose_for,
            disposed,
            ..
        } = *self;
        Box::pin(async move {
            match dispose_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            disposed.0.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[async_trait]
impl Backend<Cmd, u32> for Lingering {
    async fn create(&self, ctx: InitContext) -> Result<Box<dyn Instance<Cmd, u32>>, FunctionError> {
        if self.fail_at == Some(ctx.instance_number()) {
            return Err(FunctionError::msg("this init fails"));
        }
        Ok(Box::new(LingeringInstance {
            dispose_for: self.dispose_for,
            disposed: self.disposed.clone(),
            tokens: Arc::clone(&self.tokens),
        }))
    }
}

fn lingering(dispose_for: Option<Duration>, fail_at: Option<u64>) -> (Lingering, Disposed) {
    let disposed = Disposed::default();
    let backend = Lingering {
        dispose_for,
        fail_at,
        disposed: disposed.clone(),
        tokens: Arc::default(),
    };
    (backend, disposed)
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_disposals_within_its_bound() {
    let (backend, disposed) = lingering(Some(Duration::from_millis(300)), None);
    let rt = runtime(10);
    let f = rt
        .register_native(Function::with_backend("slow-exit", backend))
        .await
        .unwrap();
    f.invoke(Cmd::Echo(1)).await.unwrap();
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.instances_dropped, 1);
    assert_eq!(
        disposed.count(),
        1,
        "the disposal finished before shutdown returned"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disposal_that_never_ends_does_not_hold_shutdown() {
    let (backend, _disposed) = lingering(None, None);
    let rt = runtime(10);
    let f = rt
        .register_native(
            Function::with_backend("never-exits", backend)
                .with_idle_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    f.invoke(Cmd::Echo(1)).await.unwrap();
    // Reaped: its disposal hangs, on a task of the runtime.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(f.metrics().instances, 0);
    let started = tokio::time::Instant::now();
    rt.shutdown(Duration::MAX).await;
    assert!(
        started.elapsed() <= nimbus_core::instance::DISPOSE_LIMIT,
        "shutdown took {:?}",
        started.elapsed()
    );
    // And one that hangs at shutdown is left after the bound.
    let (backend, _disposed) = lingering(None, None);
    let rt = runtime(10);
    let g = rt
        .register_native(Function::with_backend("never-exits", backend))
        .await
        .unwrap();
    g.invoke(Cmd::Echo(1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let grace = Duration::from_millis(100);
    rt.shutdown(grace).await;
    assert!(started.elapsed() <= grace + nimbus_core::SHUTDOWN_SLACK);
}

#[tokio::test(start_paused = true)]
async fn a_failed_registration_disposes_of_the_instances_it_provisioned() {
    let (backend, disposed) = lingering(Some(Duration::ZERO), Some(3));
    let rt = runtime(10);
    let result = rt
        .register_native(Function::with_backend("half", backend).with_min_instances(3))
        .await;
    assert!(result.is_err());
    tokio::task::yield_now().await;
    assert_eq!(disposed.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reaped_instance_cancels_what_it_started_and_a_sync_panic_in_invoke_is_caught() {
    let (backend, _disposed) = lingering(Some(Duration::ZERO), None);
    let tokens = Arc::clone(&backend.tokens);
    let rt = runtime(10);
    let f = rt
        .register_native(
            Function::with_backend("tokens", backend).with_idle_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    f.invoke(Cmd::Echo(1)).await.unwrap();
    let token = tokens.lock().unwrap()[0].clone();
    assert!(!token.is_cancelled());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(token.is_cancelled(), "the reaped instance's token fires");

    let err = f.invoke(Cmd::Panic).await.unwrap_err();
    assert!(
        matches!(&err, InvokeError::Panic(m) if m.contains("before its future")),
        "{err:?}"
    );
    assert_eq!(f.metrics().instances, 0);
}

#[tokio::test(start_paused = true)]
async fn an_async_worker_does_not_reuse_an_instance_that_died_after_answering() {
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel();
    let (_rt, f, disposed) = function(Kind::Channel, |f| f.with_on_success(ok_tx)).await;
    // Both events queued before the worker runs: it takes them as one batch on one instance.
    f.invoke_async(Cmd::AnswerThenExit).unwrap();
    f.invoke_async(Cmd::Echo(9)).unwrap();
    let answers: Vec<Option<u32>> = vec![
        ok_rx.recv().await.unwrap().response,
        ok_rx.recv().await.unwrap().response,
    ];
    assert_eq!(answers, vec![Some(1), Some(9)]);
    let m = f.async_metrics();
    assert_eq!((m.succeeded, m.failed, m.retries), (2, 0, 0));
    assert_eq!(f.metrics().cold_starts, 2);
    assert_eq!(disposed.count(), 1);
}

/// A backend whose instances, after each invocation, are not ready for the next event until
/// `ready` has waited `turnaround` (the shape of a process whose runtime is on its way back to
/// `/next`), and then are alive or, with `dies`, dead. An event handed to an instance that was
/// not waited for fails, as one handed to a runtime that is not listening would be lost.
struct Turnaround {
    turnaround: Duration,
    dies: bool,
    disposed: Disposed,
}

struct TurnaroundInstance {
    turnaround: Duration,
    dies: bool,
    settling: bool,
    dead: bool,
    disposed: Disposed,
}

impl Instance<Cmd, u32> for TurnaroundInstance {
    fn invoke(&mut self, cmd: Cmd, _ctx: Context) -> BoxFuture<'_, Result<u32, FunctionError>> {
        let refused = if self.dead {
            Some("handed to a dead instance")
        } else if self.settling {
            Some("handed over before the instance was ready")
        } else {
            None
        };
        self.settling = true;
        Box::pin(async move {
            match refused {
                Some(reason) => Err(FunctionError::msg(reason)),
                None => behave(cmd).await,
            }
        })
    }

    fn ready(&mut self) -> Option<BoxFuture<'_, bool>> {
        Some(Box::pin(async move {
            tokio::time::sleep(self.turnaround).await;
            self.settling = false;
            self.dead = self.dies;
            !self.dead
        }))
    }

    fn dispose(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.disposed.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

#[async_trait]
impl Backend<Cmd, u32> for Turnaround {
    async fn create(
        &self,
        _ctx: InitContext,
    ) -> Result<Box<dyn Instance<Cmd, u32>>, FunctionError> {
        Ok(Box::new(TurnaroundInstance {
            turnaround: self.turnaround,
            dies: self.dies,
            settling: false,
            dead: false,
            disposed: self.disposed.clone(),
        }))
    }
}

/// A function on a [`Turnaround`] backend, with at most `concurrency` at once, no retries and
/// the default timeout (3 s), which bounds how long an invocation waits for an instance.
async fn turnaround_function(
    rt: &Runtime,
    turnaround: Duration,
    dies: bool,
    concurrency: u32,
) -> (nimbus_core::FunctionHandle<Cmd, u32>, Disposed) {
    let disposed = Disposed::default();
    let backend = Turnaround {
        turnaround,
        dies,
        disposed: disposed.clone(),
    };
    let f = rt
        .register_native(
            Function::with_backend("turnaround", backend)
                .with_max_concurrency(concurrency)
                .with_max_retries(0),
        )
        .await
        .expect("registers");
    (f, disposed)
}

/// Two async events, 10 ms each, through one worker on a backend whose instances take 100 ms
/// to be ready again: (successes, retries, cold starts, disposed, billed duration).
async fn two_events_after_a_turnaround(dies: bool) -> (u64, u64, u64, usize, Duration) {
    let rt = runtime(10);
    // One worker, which runs both events on the instance it holds.
    let (f, disposed) = turnaround_function(&rt, Duration::from_millis(100), dies, 1).await;
    f.invoke_async(Cmd::Sleep(Duration::from_millis(10)))
        .unwrap();
    f.invoke_async(Cmd::Sleep(Duration::from_millis(10)))
        .unwrap();
    f.async_idle().await;
    let m = f.async_metrics();
    let billed = f.usage().billed_duration;
    let cold_starts = f.metrics().cold_starts;
    rt.shutdown(Duration::from_secs(1)).await;
    (
        m.succeeded,
        m.retries,
        cold_starts,
        disposed.count(),
        billed,
    )
}

/// An async worker keeps its instance for the next event only once the backend says it is
/// ready, as a sync invoke does, and the wait is not billed to the next event.
#[tokio::test(start_paused = true)]
async fn an_async_worker_waits_until_its_instance_is_ready_for_the_next_event() {
    let (succeeded, retries, cold_starts, _, billed) = two_events_after_a_turnaround(false).await;
    assert_eq!((succeeded, retries, cold_starts), (2, 0, 1));
    assert_eq!(billed, Duration::from_millis(20));
}

/// An instance found dead when the worker waits for it is discarded, and the next event runs
/// on a new one: no attempt is spent on it.
#[tokio::test(start_paused = true)]
async fn an_async_worker_discards_an_instance_that_died_before_the_next_event() {
    let (succeeded, retries, cold_starts, disposed, _) = two_events_after_a_turnaround(true).await;
    assert_eq!((succeeded, retries, cold_starts), (2, 0, 2));
    assert!(disposed >= 1, "the dead instance is disposed of");
}

/// While an async worker waits for its instance to be ready, the events it took go back, and
/// another worker runs them on another instance instead of waiting out a long turnaround.
#[tokio::test(start_paused = true)]
async fn events_do_not_wait_behind_an_instance_that_is_slow_to_be_ready() {
    let rt = runtime(10);
    let (f, _) = turnaround_function(&rt, Duration::from_secs(2), false, 2).await;
    let started = tokio::time::Instant::now();
    // Taken together by the first worker, which runs the first on its new instance; the
    // first answers at once, so the second is still in the worker's hands when it reuses it.
    f.invoke_async(Cmd::Echo(1)).unwrap();
    f.invoke_async(Cmd::Echo(2)).unwrap();
    f.async_idle().await;
    let took = started.elapsed();
    assert_eq!(f.async_metrics().succeeded, 2);
    assert!(
        took < Duration::from_secs(1),
        "the second event waited {took:?}"
    );
    assert_eq!(
        f.metrics().cold_starts,
        2,
        "the second ran on a second instance"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

/// An async worker with no next event gives its permit and instance back at once rather than
/// wait for the instance to be ready: a sync invoke right after is not throttled, and gets
/// the instance once it is ready.
#[tokio::test(start_paused = true)]
async fn an_async_worker_with_nothing_to_run_does_not_wait_for_its_instance() {
    let rt = runtime(10);
    let (f, _) = turnaround_function(&rt, Duration::from_secs(2), false, 1).await;
    f.invoke_async(Cmd::Sleep(Duration::from_millis(10)))
        .unwrap();
    f.async_idle().await;
    assert_eq!(f.invoke(Cmd::Echo(3)).await.expect("not throttled"), 3);
    assert_eq!(f.metrics().cold_starts, 1, "the same instance, once ready");
    rt.shutdown(Duration::from_secs(1)).await;
}
