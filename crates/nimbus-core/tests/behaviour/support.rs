//! Helpers shared by the behaviour tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use nimbus_core::{init_fn, Context, Function, FunctionError, InitContext, Runtime, RuntimeConfig};
use tokio::sync::Semaphore;

/// A runtime with a given concurrency limit and no minimum unreserved capacity.
pub(crate) fn runtime(limit: u32) -> Runtime {
    Runtime::new(
        RuntimeConfig::default()
            .with_concurrency_limit(limit)
            .with_min_unreserved(0),
    )
    .expect("valid runtime config")
}

/// Lets a test hold handlers inside their invocation and release them one by one.
#[derive(Clone)]
pub(crate) struct Hold {
    pub(crate) release: Arc<Semaphore>,
    pub(crate) entered: Arc<AtomicUsize>,
    pub(crate) entered_signal: Arc<tokio::sync::Notify>,
}

impl Hold {
    pub(crate) fn new() -> Self {
        Self {
            release: Arc::new(Semaphore::new(0)),
            entered: Arc::default(),
            entered_signal: Arc::default(),
        }
    }

    /// Waits inside a handler until released.
    pub(crate) async fn inside(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.entered_signal.notify_waiters();
        self.release
            .acquire()
            .await
            .expect("semaphore open")
            .forget();
    }

    /// Waits until `n` handlers are inside.
    pub(crate) async fn until_inside(&self, n: usize) {
        loop {
            let notified = self.entered_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.entered.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn let_go(&self, n: usize) {
        self.release.add_permits(n);
    }
}

/// A function whose instances record their init number in the output, so tests can see which
/// instance served an invocation. Events: `true` holds the invocation on `hold`.
pub(crate) fn numbered(name: &str, hold: Hold, inits: Arc<AtomicU64>) -> Function<bool, u64> {
    Function::with_factory(
        name,
        init_fn(move |init: InitContext| {
            let hold = hold.clone();
            inits.fetch_add(1, Ordering::SeqCst);
            async move {
                let id = init.instance_number();
                Ok::<_, FunctionError>(nimbus_core::handler_fn(move |wait: bool, _ctx: Context| {
                    let hold = hold.clone();
                    async move {
                        if wait {
                            hold.inside().await;
                        }
                        Ok::<_, FunctionError>(id)
                    }
                }))
            }
        }),
    )
}

/// A function named `busy` whose event 0 waits on `hold` and whose other events return at
/// once: one invocation at a time, a 600 s timeout and a 60 s maximum event age, so that
/// events queue behind a held invocation until they expire.
pub(crate) fn busy(hold: &Hold) -> Function<u32, u32> {
    Function::new(
        "busy",
        nimbus_core::handler_fn({
            let hold = hold.clone();
            move |event: u32, _ctx: Context| {
                let hold = hold.clone();
                async move {
                    if event == 0 {
                        hold.inside().await;
                    }
                    Ok::<_, FunctionError>(event)
                }
            }
        }),
    )
    .with_max_concurrency(1)
    .with_timeout(std::time::Duration::from_secs(600))
    .with_max_event_age(std::time::Duration::from_secs(60))
}

/// Starts a sync invocation of event 0, which waits on `hold` (as [`busy`]'s does), and waits
/// until it is inside: the function's only permit is taken until `hold` lets it go.
pub(crate) async fn occupy<O: Send + 'static>(
    handle: &nimbus_core::FunctionHandle<u32, O>,
    hold: &Hold,
) -> tokio::task::JoinHandle<Result<O, nimbus_core::InvokeError>> {
    let blocker = tokio::spawn({
        let h = handle.clone();
        async move { h.invoke(0).await }
    });
    hold.until_inside(1).await;
    blocker
}
