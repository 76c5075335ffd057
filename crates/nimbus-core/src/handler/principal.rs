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
    /// An AWS service pushing an event about one of its resources (an object notification's
    /// `s3.amazonaws.com`), with the condition keys `AWS:SourceArn` and `AWS:SourceAccount`.
    Service {
        /// The service principal, as `s3.amazonaws.com`.
        service: Arc<str>,
        /// The resource the event is about.
        source_arn: Option<Arc<str>>,
        /// The account owning that resource.
        source_account: Option<Arc<str>>,
    },
    /// A caller identified by AWS credentials (an HTTP request signed with SigV4).
    Identity {
        /// Its IAM ARN (a user or role).
        arn: Arc<str>,
        /// Its account.
        account: Arc<str>,
        /// Its organization (`aws:PrincipalOrgID`), if the host said.
        org_id: Option<Arc<str>>,
    },
    /// A caller without credentials, where a route or function URL lets one in.
    Anonymous,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Function(name) => write!(f, "function:{name}"),
            Self::EventSource(name) => write!(f, "event-source:{name}"),
            Self::Service { service, .. } => write!(f, "service:{service}"),
            Self::Identity { arn, .. } => f.write_str(arn),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The host, for callers that carry no principal of their own.
static HOST: Principal = Principal::Host;

/// Who asks for an invocation through [`RuntimeServices`](super::RuntimeServices): the
/// principal the runtime set, and the hop count the work carries (see [`hops`](super::hops)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOrigin<'a> {
    /// The principal.
    pub principal: &'a Principal,
    /// The hop count of the invocation asked for.
    pub hops: u32,
}

impl<'a> CallOrigin<'a> {
    /// An origin: `principal`, asking for an invocation with hop count `hops`.
    pub fn new(principal: &'a Principal, hops: u32) -> Self {
        Self { principal, hops }
    }
}

/// A principal as the hot paths carry it, with the hop count of the work: the host is no
/// allocation, any other principal one shared allocation; queued events and contexts stay
/// small.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    principal: Option<Arc<Principal>>,
    hops: u32,
    /// A function principal whose role the runtime's registry checked (it knows the caller's
    /// role; a function's executor does not): only such a caller gets past the executor.
    vouched: bool,
}

impl Caller {
    /// The principal.
    pub(crate) fn get(&self) -> &Principal {
        self.principal.as_deref().unwrap_or(&HOST)
    }

    /// The same caller, its role checked by the registry.
    #[must_use]
    pub(crate) fn vouched(mut self) -> Self {
        self.vouched = true;
        self
    }

    /// Whether the registry checked this caller's role.
    pub(crate) fn is_vouched(&self) -> bool {
        self.vouched
    }

    /// The principal as it is shared, `None` for the host.
    pub(crate) fn shared(&self) -> Option<&Arc<Principal>> {
        self.principal.as_ref()
    }

    /// The hop count of the work.
    pub(crate) fn hops(&self) -> u32 {
        self.hops
    }

    /// The same principal, for work with hop count `hops`.
    #[must_use]
    pub(crate) fn with_hops(mut self, hops: u32) -> Self {
        self.hops = hops;
        self
    }

    /// The same principal, for work started now: the hop count passed on by the invocation
    /// running on this task, if it is higher than the one already carried.
    #[must_use]
    pub(crate) fn inheriting(mut self) -> Self {
        if let Some(hops) = super::hops::outgoing() {
            self.hops = self.hops.max(hops);
        }
        self
    }
}

impl From<Principal> for Caller {
    fn from(principal: Principal) -> Self {
        match principal {
            Principal::Host => Self::default(),
            other => Self {
                principal: Some(Arc::new(other)),
                hops: 0,
                vouched: false,
            },
        }
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (hops {})", self.get(), self.hops)
    }
}
