//! The route table: every route checked once, and the best match for each request, as API
//! Gateway picks it (the most specific path, then a specific method over `ANY`).

use nimbus_core::ConfigError;

use super::route::{PayloadVersion, Route};
use super::throttle::Throttle;

/// The routes, matched per request.
#[derive(Debug)]
pub(crate) struct Gateway {
    routes: Vec<(Route, Option<Throttle>)>,
    max_request_bytes: usize,
    rest_only: bool,
}

/// The route that takes a request, with its decoded path parameters.
#[derive(Debug)]
pub(crate) struct Matched<'a> {
    pub(crate) route: &'a Route,
    pub(crate) throttle: Option<&'a Throttle>,
    pub(crate) params: Vec<(String, String)>,
}

impl Gateway {
    /// The table of `routes`.
    ///
    /// # Errors
    ///
    /// A route with an invalid throttle, or two routes with the same method and path.
    pub(crate) fn new(routes: Vec<Route>, max_request_bytes: usize) -> Result<Self, ConfigError> {
        for (index, route) in routes.iter().enumerate() {
            route.validate()?;
            if routes[..index].iter().any(|r| r.conflicts_with(route)) {
                return Err(ConfigError::new(
                    "route",
                    "path",
                    route.route_key(),
                    "a method and path that no other route has",
                ));
            }
        }
        let rest_only =
            !routes.is_empty() && routes.iter().all(|r| r.payload() == PayloadVersion::V1);
        Ok(Self {
            routes: routes
                .into_iter()
                .map(|route| {
                    let throttle = route.throttle().map(Throttle::new);
                    (route, throttle)
                })
                .collect(),
            max_request_bytes,
            rest_only,
        })
    }

    /// The largest request body accepted.
    pub(crate) fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Whether every route is payload 1.0: the gateway is a REST API, which answers an
    /// unknown route with 403 rather than 404.
    pub(crate) fn is_rest_api(&self) -> bool {
        self.rest_only
    }

    /// The route that takes `method` on `raw_path` (still percent-encoded), if any.
    pub(crate) fn find(&self, method: &http::Method, raw_path: &str) -> Option<Matched<'_>> {
        self.routes
            .iter()
            .filter_map(|(route, throttle)| {
                let (params, rank) = route.matches(method, raw_path)?;
                Some((rank, route, throttle, params))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, route, throttle, params)| Matched {
                route,
                throttle: throttle.as_ref(),
                params,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(routes: &[(&str, &str, &str)]) -> Gateway {
        let routes = routes
            .iter()
            .map(|(m, p, f)| Route::new(m, p, *f).unwrap())
            .collect();
        Gateway::new(routes, 1024).unwrap()
    }

    fn pick(gateway: &Gateway, method: &str, path: &str) -> Option<String> {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        gateway
            .find(&method, path)
            .map(|m| m.route.function().to_owned())
    }

    #[test]
    fn the_most_specific_path_wins() {
        let gateway = gateway(&[
            ("ANY", "/{proxy+}", "catch_all"),
            ("GET", "/pets/{proxy+}", "pets_greedy"),
            ("GET", "/pets/{id}", "pet"),
            ("GET", "/pets/dog", "dog"),
            ("GET", "/{kind}/cat", "any_cat"),
        ]);
        assert_eq!(pick(&gateway, "GET", "/pets/dog").as_deref(), Some("dog"));
        assert_eq!(pick(&gateway, "GET", "/pets/7").as_deref(), Some("pet"));
        assert_eq!(
            pick(&gateway, "GET", "/pets/7/toys").as_deref(),
            Some("pets_greedy")
        );
        // Left to right: the literal first segment of /pets/{id} beats /{kind}/cat.
        assert_eq!(pick(&gateway, "GET", "/pets/cat").as_deref(), Some("pet"));
        assert_eq!(
            pick(&gateway, "GET", "/cows/cat").as_deref(),
            Some("any_cat")
        );
        assert_eq!(
            pick(&gateway, "DELETE", "/pets/dog").as_deref(),
            Some("catch_all")
        );
        assert_eq!(pick(&gateway, "GET", "/").as_deref(), None);
    }

    #[test]
    fn a_specific_method_beats_any() {
        let gateway = gateway(&[("ANY", "/orders", "any"), ("POST", "/orders", "post")]);
        assert_eq!(pick(&gateway, "POST", "/orders").as_deref(), Some("post"));
        assert_eq!(pick(&gateway, "GET", "/orders").as_deref(), Some("any"));
    }

    #[test]
    fn a_path_with_no_route_for_the_method_is_unmatched() {
        let gateway = gateway(&[("GET", "/orders", "get")]);
        assert_eq!(pick(&gateway, "POST", "/orders"), None);
    }

    #[test]
    fn path_parameters_come_with_the_match() {
        let gateway = gateway(&[("GET", "/orders/{id}/items/{item}", "items")]);
        let method = http::Method::GET;
        let matched = gateway.find(&method, "/orders/a%20b/items/3").unwrap();
        assert_eq!(
            matched.params,
            vec![
                ("id".to_owned(), "a b".to_owned()),
                ("item".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn duplicate_method_and_path_is_an_error() {
        let routes = vec![
            Route::new("GET", "/orders/{id}", "a").unwrap(),
            Route::new("get", "/orders/{order}", "b").unwrap(),
        ];
        let error = Gateway::new(routes, 1024).unwrap_err();
        assert_eq!(error.field, "path");
        assert!(error.value.contains("GET /orders/{order}"));
        // The same path with another method, or ANY, is fine.
        let routes = vec![
            Route::new("GET", "/orders/{id}", "a").unwrap(),
            Route::new("ANY", "/orders/{id}", "b").unwrap(),
            Route::new("POST", "/orders/{id}", "c").unwrap(),
        ];
        assert!(Gateway::new(routes, 1024).is_ok());
    }

    #[test]
    fn throttle_settings_are_checked() {
        let route = Route::new("GET", "/x", "f").unwrap().with_throttle(0, 5);
        let error = Gateway::new(vec![route], 1024).unwrap_err();
        assert_eq!(error.field, "rate_per_second");
        let route = Route::new("GET", "/x", "f").unwrap().with_throttle(5, 0);
        assert_eq!(Gateway::new(vec![route], 1024).unwrap_err().field, "burst");
    }

    #[test]
    fn invalid_methods_name_the_method_field() {
        let error = Route::new("GE T", "/x", "f").unwrap_err();
        assert_eq!(error.field, "method");
        assert!(error.allowed.contains("ANY"));
    }

    #[test]
    fn only_payload_one_routes_make_a_rest_api() {
        let v1 = Route::new("GET", "/a", "f")
            .unwrap()
            .with_payload(PayloadVersion::V1);
        let v2 = Route::new("GET", "/b", "f").unwrap();
        assert!(Gateway::new(vec![v1.clone()], 1).unwrap().is_rest_api());
        assert!(!Gateway::new(vec![v1, v2], 1).unwrap().is_rest_api());
        assert!(!Gateway::new(vec![], 1).unwrap().is_rest_api());
    }
}
