//! One instance's side of the Runtime API: the event waiting for `/next`, the invocation the
//! runtime took and has not answered, and the init signal. Nothing here is shared between
//! instances, so an event handed to an instance can only be taken by that instance's process.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};

use super::wire::ErrorReport;

/// An event handed to an instance, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) event: NextEvent,
    pub(crate) answer: oneshot::Sender<Answer>,
}

/// How the runtime answered an invocation.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `/response` with this body.
    Response(Bytes),
    /// `/error` with this report.
    Error(ErrorReport),
    /// `/response` with a body above the limit (its declared length, if it gave one).
    TooLarge(Option<u64>),
}

/// How the init phase ended, as the Runtime API saw it.
#[derive(Debug)]
pub(crate) enum InitSignal {
    /// The runtime asked for its first event.
    Ready,
    /// The runtime reported an init error.
    Failed(ErrorReport),
}

/// One instance's endpoint state.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Events handed to the instance, one at a time; `/next` takes them. Behind an async lock
    /// so that two `/next` requests (on two connections) never race for one event; the
    /// receive is cancel-safe, so a `/next` whose connection drops loses nothing.
    events: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    /// The invocation the runtime took: its request id and where its answer goes.
    current: Mutex<Option<(String, oneshot::Sender<Answer>)>>,
    /// Fires once, on the first `/next` or on `/init/error`.
    init: Mutex<Option<oneshot::Sender<InitSignal>>>,
    /// `/next` requests waiting for an event now.
    waiting: AtomicUsize,
    /// Told when a `/next` starts waiting.
    runtime_waits: Notify,
    /// One request body is read at a time: a runtime posting on many connections at once
    /// cannot make the host buffer many payloads.
    pub(crate) body_reads: tokio::sync::Semaphore,
}

/// The instance's handles on its endpoint.
pub(crate) struct Handles {
    pub(crate) events: mpsc::Sender<Delivery>,
    pub(crate) init: oneshot::Receiver<InitSignal>,
}

impl Endpoint {
    pub(crate) fn new() -> (Self, Handles) {
        let (events_tx, events_rx) = mpsc::channel(1);
        let (init_tx, init_rx) = oneshot::channel();
        let endpoint = Self {
            events: tokio::sync::Mutex::new(events_rx),
            current: Mutex::new(None),
            init: Mutex::new(Some(init_tx)),
            waiting: AtomicUsize::new(0),
            runtime_waits: Notify::new(),
            body_reads: tokio::sync::Semaphore::new(1),
        };
        (
            endpoint,
            Handles {
                events: events_tx,
                init: init_rx,
            },
        )
    }

    /// `/next`: the instance is ready (on the first call), then waits for an event and makes it
    /// the current invocation. `None` when the instance is gone.
    pub(crate) async fn next(&self) -> Option<NextEvent> {
        if let Some(init) = self.init.lock().take() {
            let _ = init.send(InitSignal::Ready);
        }
        let _waiting = Waiting::enter(self);
        let mut events = self.events.lock().await;
        let Delivery { event, answer } = events.recv().await?;
        // Taken and made current in one step, under the receiver's lock.
        *self.current.lock() = Some((event.request_id.clone(), answer));
        drop(events);
        Some(event)
    }

    /// Resolves when the runtime is waiting in `/next`: the moment Lambda would hand it an event.
    pub(crate) async fn runtime_waiting(&self) {
        loop {
            let notified = self.runtime_waits.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a `/next` arriving in between is not missed.
            notified.as_mut().enable();
            if self.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            notified.await;
        }
    }

    /// Answers the current invocation if `request_id` is it; `false` for an unknown id or one
    /// already answered.
    pub(crate) fn answer(&self, request_id: &str, answer: Answer) -> bool {
        let mut current = self.current.lock();
        match current.take() {
            Some((id, sender)) if id == request_id => {
                // The instance may have stopped waiting (timed out): the answer is then moot.
                let _ = sender.send(answer);
                true
            }
            other => {
                *current = other;
                false
            }
        }
    }

    /// Whether `request_id` is the invocation awaiting an answer.
    pub(crate) fn is_current(&self, request_id: &str) -> bool {
        self.current
            .lock()
            .as_ref()
            .is_some_and(|(id, _)| id == request_id)
    }

    /// Whether the init phase is still running (no `/next` and no init error yet).
    pub(crate) fn in_init(&self) -> bool {
        self.init.lock().is_some()
    }

    /// `/init/error`: `false` once init is over (the first `/next` came, or an error was
    /// already reported).
    pub(crate) fn init_failed(&self, report: ErrorReport) -> bool {
        match self.init.lock().take() {
            Some(init) => {
                let _ = init.send(InitSignal::Failed(report));
                true
            }
            None => false,
        }
    }
}

/// Counts a `/next` as waiting for as long as it is (until it returns or its connection drops).
struct Waiting<'a>(&'a Endpoint);

impl<'a> Waiting<'a> {
    fn enter(endpoint: &'a Endpoint) -> Self {
        endpoint.waiting.fetch_add(1, Ordering::AcqRel);
        endpoint.runtime_waits.notify_waiters();
        Self(endpoint)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An event as `/next` sends it to the runtime: the body and the `Lambda-Runtime-*` headers.
#[derive(Debug)]
pub(crate) struct NextEvent {
    pub(crate) request_id: String,
    pub(crate) deadline_ms: u64,
    pub(crate) function_arn: String,
    pub(crate) trace_id: String,
    /// The client context as JSON (the Invoke API's base64, decoded), if the caller set one.
    pub(crate) client_context: Option<String>,
    /// The Cognito identity as JSON, if the caller set one.
    pub(crate) identity: Option<String>,
    pub(crate) body: Bytes,
}
