//! Instances (Lambda's execution environments): the [`Backend`] trait that creates them, the
//! [`Instance`] trait that runs one invocation at a time on one, and each function's warm pool.
//!
//! What an instance *is* belongs to its backend: an in-process [`Handler`](crate::Handler)
//! (the [`InstanceFactory`](crate::InstanceFactory) is that backend), or a child process
//! speaking the Lambda Runtime API (the `nimbus-process` crate). Everything else is the executor's and the same for every
//! backend: cold starts under the init timeout, warm reuse (most recently used first, per thread), reaping
//! idle instances, discarding an instance after a panic, a timeout or a crash, and metering.

mod backend;
mod pool;

pub(crate) use backend::InProcess;
pub use backend::{Backend, Fault, Instance, DISPOSE_LIMIT};
pub(crate) use pool::{Lease, Pool};
