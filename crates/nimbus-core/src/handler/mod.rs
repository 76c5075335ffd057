//! User code: the [`Handler`] trait, closure adapters, the init-phase [`InstanceFactory`], and
//! what a handler sees: its [`Context`], its [`Principal`], and the [`RuntimeServices`] it acts
//! through.
//!
//! A handler is `async fn(event, ctx) -> Result<out, FunctionError>`. It runs on an *instance*
//! (Lambda's execution environment), which serves one invocation at a time; that is why
//! [`Handler::call`] takes `&mut self`: per-instance state needs no lock. A factory builds
//! instances in the init phase, so expensive set-up (clients, caches) is done once per instance
//! and reused warm.

mod client;
mod context;
mod credentials;
pub mod hops;
mod principal;
mod scope;
mod services;

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

pub(crate) use client::Extras;
pub use client::{ClientApplication, ClientContext, CognitoIdentity};
pub use context::{Context, InitContext, RequestId};
pub use credentials::AwsCredentials;
pub use hops::RecursiveLoop;
pub(crate) use principal::Caller;
pub use principal::{CallOrigin, Principal};
pub(crate) use scope::{FunctionScope, InstanceScope};
pub use services::RuntimeServices;

use crate::error::FunctionError;

/// The code of a function, running on one instance.
///
/// # Example
///
/// ```
/// use nimbus_core::async_trait;
/// use nimbus_core::{Context, FunctionError, Handler};
///
/// /// Counts the events this instance has seen (state per instance, no lock needed).
/// struct Counter { seen: u64 }
///
/// #[async_trait]
/// impl Handler<String, u64> for Counter {
///     async fn call(&mut self, _event: String, _ctx: Context) -> Result<u64, FunctionError> {
///         self.seen += 1;
///         Ok(self.seen)
///     }
/// }
/// ```
#[async_trait]
pub trait Handler<E, O>: Send + 'static {
    /// Handles one event. An `Err` is a function error: an outcome, not a crash.
    async fn call(&mut self, event: E, ctx: Context) -> Result<O, FunctionError>;
}

#[async_trait]
impl<E, O> Handler<E, O> for Box<dyn Handler<E, O>>
where
    E: Send + 'static,
    O: 'static,
{
    async fn call(&mut self, event: E, ctx: Context) -> Result<O, FunctionError> {
        (**self).call(event, ctx).await
    }
}

/// A handler made from an async closure; see [`handler_fn`].
pub struct HandlerFn<F, E, O, Err> {
    f: Arc<F>,
    _types: PhantomData<fn(E) -> (O, Err)>,
}

impl<F, E, O, Err> Clone for HandlerFn<F, E, O, Err> {
    fn clone(&self) -> Self {
        Self {
            f: Arc::clone(&self.f),
            _types: PhantomData,
        }
    }
}

impl<F, E, O, Err> std::fmt::Debug for HandlerFn<F, E, O, Err> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerFn")
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

/// Turns `async fn(event, ctx) -> Result<out, err>` into a [`Handler`]. The closure is shared by
/// all instances (cloning a `HandlerFn` clones an `Arc`), so it suits stateless handlers.
///
/// Any error type that converts into [`FunctionError`] works, which includes every
/// `std::error::Error + Send + Sync`.
///
/// # Example
///
/// ```
/// use nimbus_core::{handler_fn, Context, FunctionError};
///
/// let double = handler_fn(|n: u64, _ctx: Context| async move { Ok::<_, FunctionError>(n * 2) });
/// # let _ = double;
/// ```
pub fn handler_fn<F, Fut, E, O, Err>(f: F) -> HandlerFn<F, E, O, Err>
where
    F: Fn(E, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, Err>> + Send + 'static,
    Err: Into<FunctionError>,
{
    HandlerFn {
        f: Arc::new(f),
        _types: PhantomData,
    }
}

#[async_trait]
impl<F, Fut, E, O, Err> Handler<E, O> for HandlerFn<F, E, O, Err>
where
    F: Fn(E, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, Err>> + Send + 'static,
    E: Send + 'static,
    O: 'static,
    Err: Into<FunctionError> + 'static,
{
    async fn call(&mut self, event: E, ctx: Context) -> Result<O, FunctionError> {
        (self.f)(event, ctx).await.map_err(Into::into)
    }
}

/// The init phase: builds one instance of a function. Called for every cold start and for
/// each provisioned instance, under the function's init timeout.
///
/// # Example
///
/// ```
/// use nimbus_core::async_trait;
/// use nimbus_core::{handler_fn, Context, FunctionError, HandlerFn, InitContext, InstanceFactory};
///
/// struct Connect;
///
/// #[async_trait]
/// impl InstanceFactory<String, usize> for Connect {
///     async fn init(&self, ctx: InitContext) -> Result<Box<dyn nimbus_core::Handler<String, usize>>, FunctionError> {
///         // Open clients here; they live as long as the instance.
///         let prefix = format!("{}:", ctx.function_name());
///         Ok(Box::new(handler_fn(move |s: String, _ctx: Context| {
///             let n = prefix.len() + s.len();
///             async move { Ok::<_, FunctionError>(n) }
///         })))
///     }
/// }
/// ```
#[async_trait]
pub trait InstanceFactory<E, O>: Send + Sync + 'static {
    /// Builds a new instance. An error, a panic or exceeding the init timeout is an init failure.
    async fn init(&self, ctx: InitContext) -> Result<Box<dyn Handler<E, O>>, FunctionError>;
}

/// A factory that clones one shared handler for every instance: the stateless convenience.
#[derive(Debug)]
pub(crate) struct CloneFactory<H>(pub(crate) H);

#[async_trait]
impl<H, E, O> InstanceFactory<E, O> for CloneFactory<H>
where
    H: Handler<E, O> + Clone + Sync,
    E: Send + 'static,
    O: 'static,
{
    async fn init(&self, _ctx: InitContext) -> Result<Box<dyn Handler<E, O>>, FunctionError> {
        Ok(Box::new(self.0.clone()))
    }
}

/// A factory made from an async closure; see [`init_fn`].
pub struct InitFn<F, E, O> {
    f: F,
    _types: PhantomData<fn(E) -> O>,
}

impl<F, E, O> std::fmt::Debug for InitFn<F, E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitFn").finish_non_exhaustive()
    }
}

/// Turns `async fn(InitContext) -> Result<impl Handler, err>` into an [`InstanceFactory`].
///
/// # Example
///
/// ```
/// use nimbus_core::{handler_fn, init_fn, Context, FunctionError, InitContext};
///
/// let factory = init_fn(|ctx: InitContext| async move {
///     let greeting = format!("hello from {}", ctx.function_name()); // expensive set-up goes here
///     Ok::<_, FunctionError>(handler_fn(move |name: String, _ctx: Context| {
///         let out = format!("{greeting}, {name}");
///         async move { Ok::<_, FunctionError>(out) }
///     }))
/// });
/// # let _ = factory;
/// ```
pub fn init_fn<F, Fut, H, E, O, Err>(f: F) -> InitFn<F, E, O>
where
    F: Fn(InitContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<H, Err>> + Send + 'static,
    H: Handler<E, O>,
    Err: Into<FunctionError>,
{
    InitFn {
        f,
        _types: PhantomData,
    }
}

#[async_trait]
impl<F, Fut, H, E, O, Err> InstanceFactory<E, O> for InitFn<F, E, O>
where
    F: Fn(InitContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<H, Err>> + Send + 'static,
    H: Handler<E, O>,
    E: 'static,
    O: 'static,
    Err: Into<FunctionError> + 'static,
{
    async fn init(&self, ctx: InitContext) -> Result<Box<dyn Handler<E, O>>, FunctionError> {
        match (self.f)(ctx).await {
            Ok(handler) => Ok(Box::new(handler)),
            Err(e) => Err(e.into()),
        }
    }
}
