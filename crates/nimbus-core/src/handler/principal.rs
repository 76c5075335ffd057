//! [`Principal`]: who an invocation is for, set by the runtime from the path it came by.

use std::fmt;
use std::sync::Arc;

/// Who invoked a function. The runtime sets it from the path an invocation took, never from
/// an option a caller passes: a [`FunctionHandle`](crate::FunctionHandle) or
/// [`Runtime`](crate::Runtime) call is the host's, a call through a handler's
/// [`Context`](super::Context) is its function's, and a mapping engine invokes through a
/// handle made with
/// [`FunctionHandle::for_event_source`](crate::FunctionHandle::for_event_source).
/// An asynchronous invocation keeps the principal of the call that queued it through all its
/// attempts.
///
/// Permission checks and loop detection hook in here (see
/// [`RuntimeServices`](super::RuntimeServices)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Principal {
    /// The host application, directly.
    #[default]
    Host,
    /// Another function (by name), invoking through its [`Context`](super::Context).
    Function(Arc<str>),
    /// An event source mapping (by name).
    EventSource(Arc<str>),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Function(name) => write!(f, "function:{name}"),
            Self::EventSource(name) => write!(f, "event-source:{name}"),
        }
    }
}

/// The host, for callers that carry no principal of their own.
static HOST: Principal = Principal::Host;

/// A principal as the hot paths carry it: the host is no allocation and one word, any other
/// principal one shared allocation; queued events and contexts stay small.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller(Option<Arc<Principal>>);

impl Caller {
    /// The principal.
    pub(crate) fn get(&self) -> &Principal {
        self.0.as_deref().unwrap_or(&HOST)
    }
}

impl From<Principal> for Caller {
    fn from(principal: Principal) -> Self {
        match principal {
            Principal::Host => Self(None),
            other => Self(Some(Arc::new(other))),
        }
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}
