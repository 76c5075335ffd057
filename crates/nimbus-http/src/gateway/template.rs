//! Path templates (`/orders/{id}`, `/files/{proxy+}`): parsing, matching a request path, and
//! how specific a template is, for API Gateway's choice between routes that all match.

use nimbus_core::ConfigError;

use super::decode::percent_decode;

/// What the `path` of a route may be.
const ALLOWED: &str = "a path starting with / whose segments are literals, {name} or, last, \
                       {name+} (names of letters, digits, _ . -, each once), no empty segment";

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this text (after percent-decoding the request's segment).
    Literal(String),
    /// `{name}`: matches one non-empty segment.
    Param(String),
    /// `{name+}`: matches the rest of the path, one segment or more.
    Greedy(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    /// Per segment: 0 literal, 1 `{param}`, 2 `{proxy+}` (see [`Specificity`]).
    specificity: Vec<u8>,
}

/// How specific a matching template is: smaller is more specific. Compared segment by
/// segment from the left, a literal beats `{param}`, which beats `{proxy+}`.
pub(crate) type Specificity<'a> = &'a [u8];

impl Template {
    /// Parses `path`; an error names the field `path` and what is allowed.
    pub(crate) fn parse(path: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::new("route", "path", path, ALLOWED);
        let rest = path.strip_prefix('/').ok_or_else(invalid)?;
        if rest.is_empty() {
            return Ok(Self::of(Vec::new()));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let segment = parse_segment(part).ok_or_else(invalid)?;
            let last = index + 1 == parts.len();
            if matches!(segment, Segment::Greedy(_)) && !last {
                return Err(invalid());
            }
            segments.push(segment);
        }
        let mut names: Vec<&str> = segments.iter().filter_map(Segment::name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        if names.len() != count {
            return Err(invalid());
        }
        Ok(Self::of(segments))
    }

    fn of(segments: Vec<Segment>) -> Self {
        let specificity = segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Greedy(_) => 2,
            })
            .collect();
        Self {
            segments,
            specificity,
        }
    }

    /// The path parameters if `raw_path` (as sent, still percent-encoded) matches, decoded.
    pub(crate) fn matches(&self, raw_path: &str) -> Option<Vec<(String, String)>> {
        let rest = raw_path.strip_prefix('/').unwrap_or(raw_path);
        // The segments not matched yet, unsplit; `None` when there are none left. Walking
        // the path rather than collecting its segments keeps a miss free of allocations.
        let mut remaining = (!rest.is_empty()).then_some(rest);
        let mut params = Vec::new();
        for segment in &self.segments {
            let current = remaining?;
            let (part, next) = match current.split_once('/') {
                Some((part, next)) => (part, Some(next)),
                None => (current, None),
            };
            match segment {
                Segment::Literal(text) => {
                    let same = if part.contains('%') {
                        percent_decode(part, false) == *text
                    } else {
                        part == text
                    };
                    if !same {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    if part.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), percent_decode(part, false)));
                }
                Segment::Greedy(name) => {
                    // The rest of the path, this segment and all after it.
                    if current.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), percent_decode(current, false)));
                    return Some(params);
                }
            }
            remaining = next;
        }
        remaining.is_none().then_some(params)
    }

    /// How specific the template is (see [`Specificity`]).
    pub(crate) fn specificity(&self) -> Specificity<'_> {
        &self.specificity
    }

    /// Whether both templates match exactly the same paths (`/a/{x}` and `/a/{y}` do).
    pub(crate) fn same_paths(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_))
                    | (Segment::Greedy(_), Segment::Greedy(_)) => true,
                    _ => false,
                })
    }
}

impl Segment {
    fn name(&self) -> Option<&str> {
        match self {
            Self::Literal(_) => None,
            Self::Param(name) | Self::Greedy(name) => Some(name),
        }
    }
}

fn parse_segment(part: &str) -> Option<Segment> {
    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        let (name, greedy) = match inner.strip_suffix('+') {
            Some(name) => (name, true),
            None => (inner, false),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        return valid_name.then(|| {
            if greedy {
                Segment::Greedy(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        });
    }
    let valid_literal = !part.is_empty()
        && !part
            .chars()
            .any(|c| matches!(c, '{' | '}' | '?' | '#' | '%') || c.is_whitespace());
    valid_literal.then(|| Segment::Literal(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).unwrap().matches(path)
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn parses_valid_templates() {
        for ok in [
            "/",
            "/orders",
            "/orders/{id}",
            "/a/{b}/c/{proxy+}",
            "/{proxy+}",
        ] {
            assert!(Template::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_templates_naming_the_path() {
        for bad in [
            "",
            "orders",
            "/orders/",
            "//x",
            "/{proxy+}/x",
            "/{}",
            "/{id",
            "/a{id}",
            "/{a}/{a}",
            "/a b",
            "/a?x=1",
            "/{a b}",
        ] {
            let error = Template::parse(bad).unwrap_err();
            assert_eq!((error.scope, error.field), ("route", "path"), "{bad}");
            assert!(error.allowed.contains("{name+}"));
        }
    }

    #[test]
    fn matches_literals_params_and_greedy_rest() {
        assert_eq!(params("/", "/"), Some(vec![]));
        assert_eq!(params("/", "/x"), None);
        assert_eq!(params("/orders", "/orders"), Some(vec![]));
        assert_eq!(params("/orders", "/orders/"), None);
        assert_eq!(
            params("/orders/{id}", "/orders/42"),
            Some(vec![pair("id", "42")])
        );
        assert_eq!(params("/orders/{id}", "/orders/"), None);
        assert_eq!(params("/orders/{id}", "/orders/1/2"), None);
        assert_eq!(
            params("/files/{proxy+}", "/files/a/b/c.txt"),
            Some(vec![pair("proxy", "a/b/c.txt")])
        );
        assert_eq!(params("/files/{proxy+}", "/files"), None);
        assert_eq!(params("/files/{proxy+}", "/files/"), None);
        // The greedy rest is the path as sent after the segments before it, empty ones kept.
        assert_eq!(
            params("/files/{proxy+}", "/files/a//b/"),
            Some(vec![pair("proxy", "a//b/")])
        );
        assert_eq!(
            params("/files/{proxy+}", "/files//"),
            Some(vec![pair("proxy", "/")])
        );
        assert_eq!(params("/a/{x}/c", "/a/b"), None);
    }

    #[test]
    fn path_parameters_are_percent_decoded() {
        assert_eq!(
            params("/users/{name}", "/users/J%C3%BCrgen%20X"),
            Some(vec![pair("name", "Jürgen X")])
        );
        assert_eq!(
            params("/a/{proxy+}", "/a/x%2Fy/z"),
            Some(vec![pair("proxy", "x/y/z")])
        );
        assert_eq!(params("/caf\u{e9}", "/caf%C3%A9"), Some(vec![]));
    }

    #[test]
    fn literals_are_more_specific_than_params_than_greedy() {
        let literal = Template::parse("/a/b").unwrap().specificity().to_vec();
        let param = Template::parse("/a/{x}").unwrap().specificity().to_vec();
        let greedy = Template::parse("/a/{proxy+}")
            .unwrap()
            .specificity()
            .to_vec();
        let root_greedy = Template::parse("/{proxy+}").unwrap().specificity().to_vec();
        assert!(literal < param && param < greedy && greedy < root_greedy);
        // Left to right: a literal first segment wins over a later one.
        let left = Template::parse("/a/{x}").unwrap().specificity().to_vec();
        let right = Template::parse("/{x}/b").unwrap().specificity().to_vec();
        assert!(left < right);
    }

    #[test]
    fn templates_differing_in_names_only_are_the_same_paths() {
        let a = Template::parse("/a/{x}").unwrap();
        assert!(a.same_paths(&Template::parse("/a/{y}").unwrap()));
        assert!(!a.same_paths(&Template::parse("/a/b").unwrap()));
        assert!(!a.same_paths(&Template::parse("/a/{y+}").unwrap()));
    }
}
