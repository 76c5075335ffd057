//! Configuration: a function's settings and Lambda's limits for them, the runtime's settings,
//! billing granularity and prices. Every value is checked when the configuration is built
//! (`validate`), naming the field and the allowed range.

mod function;
mod payload;
mod prices;
mod runtime;

pub use function::{
    limits, AsyncConfig, BillingGranularity, FunctionConfig, ScaleRate, UnroutedFailures,
};
pub use payload::{PayloadLimits, ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT};
pub use prices::Prices;
pub use runtime::RuntimeConfig;
