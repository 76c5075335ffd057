//! Gateway routes from the file: method, path, function, payload format and throttle.

use toml::Spanned;

use super::error::{Locator, ServeError};
use super::format::RouteSpec;
use super::functions::config_message;
use crate::http::{PayloadVersion, Route};

/// A route of the file, checked by [`Route::new`].
pub(crate) fn prepare_route(
    route: &Spanned<RouteSpec>,
    locator: &Locator,
) -> Result<Route, ServeError> {
    let spec = route.get_ref();
    let span = route.span();
    let made = Route::new(&spec.method, &spec.path, spec.function.get_ref())
        .map_err(|e| locator.in_table(span.clone(), e.field, config_message(&e)))?;
    let payload = match spec
        .payload
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("2.0", _)) => PayloadVersion::V2,
        Some(("1.0", _)) => PayloadVersion::V1,
        Some((other, span)) => {
            return Err(locator.at(
                span,
                "payload",
                format!("`{other}` is not \"1.0\" or \"2.0\""),
            ))
        }
    };
    let mut made = made.with_payload(payload);
    if let Some(throttle) = spec.throttle {
        if throttle.rate == 0 || throttle.burst == 0 {
            return Err(locator.in_table(span, "throttle", "rate and burst are at least 1"));
        }
        made = made.with_throttle(throttle.rate, throttle.burst);
    }
    Ok(made)
}
