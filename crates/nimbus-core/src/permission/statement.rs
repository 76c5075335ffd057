//! A policy [`Statement`] in IAM's JSON shape: `Sid`, `Effect`, `Principal`, `Action`,
//! `Resource` and `Condition`, read and written as `GetPolicy` returns them (a single value as a
//! string, several as an array).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a statement allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    /// The statement allows what it matches.
    Allow,
    /// The statement denies what it matches; an explicit deny wins over any allow.
    Deny,
}

/// Who a function policy's statement applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrincipalSpec {
    /// `"*"`: anyone, signed or not.
    Any,
    /// `{"Service": ...}`: AWS services, as `s3.amazonaws.com`.
    Service(Vec<String>),
    /// `{"AWS": ...}`: accounts (`123456789012` or `arn:aws:iam::123456789012:root`) and
    /// roles or users by ARN; `"*"` among them is anyone.
    Aws(Vec<String>),
}

/// A condition operator nimbus evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Operator {
    /// Exact, case-sensitive.
    StringEquals,
    /// With `*` and `?` wildcards.
    StringLike,
    /// ARN components matched one by one, with wildcards.
    ArnLike,
    /// `true` or `false`.
    Bool,
    /// Exact, ignoring ASCII case.
    StringEqualsIgnoreCase,
    /// None of the values, exactly; true when the request does not carry the key.
    StringNotEquals,
    /// None of the patterns; true when the request does not carry the key.
    StringNotLike,
    /// As `ArnLike` (IAM matches both the same way).
    ArnEquals,
    /// None of the ARN patterns; true when the request does not carry the key.
    ArnNotLike,
}

impl Operator {
    /// Whether the operator is a negation, which holds when the request lacks the key.
    pub fn is_negated(self) -> bool {
        matches!(
            self,
            Self::StringNotEquals | Self::StringNotLike | Self::ArnNotLike
        )
    }
}

/// One condition: `operator` applied to the request's value of `key` against any of `values`.
/// A key the request does not carry makes the condition false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEntry {
    /// The operator.
    pub operator: Operator,
    /// The condition key as written (`AWS:SourceArn`); keys compare case-insensitively.
    pub key: String,
    /// The values, any of which may match.
    pub values: Vec<String>,
}

/// One statement of a function policy or of an execution role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement id (`StatementId` of `AddPermission`); unique within a policy.
    pub sid: String,
    /// Allow or deny.
    pub effect: Effect,
    /// Who it applies to; `None` in an execution role, whose principal is the function.
    pub principal: Option<PrincipalSpec>,
    /// Actions, with `*` wildcards (`lambda:InvokeFunction`, `lambda:*`, `sqs:*`).
    pub actions: Vec<String>,
    /// Resources by ARN, with wildcards; `*` is any.
    pub resources: Vec<String>,
    /// Conditions, all of which must hold.
    pub conditions: Vec<ConditionEntry>,
}

/// A value IAM writes as a string when single and as an array when several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn of(values: &[String]) -> Self {
        match values {
            [one] => Self::One(one.clone()),
            many => Self::Many(many.to_vec()),
        }
    }

    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum PrincipalJson {
    Star(String),
    Map(BTreeMap<String, OneOrMany>),
}

/// The JSON shape of a statement. Unknown fields (`NotResource`, `NotPrincipal`,
/// `NotAction`) are errors: ignoring one would widen the statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StatementJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sid: String,
    effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<PrincipalJson>,
    action: OneOrMany,
    #[serde(default = "any_resource")]
    resource: OneOrMany,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    condition: BTreeMap<Operator, BTreeMap<String, OneOrMany>>,
}

fn any_resource() -> OneOrMany {
    OneOrMany::One("*".to_owned())
}

impl Serialize for Statement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let principal = self.principal.as_ref().map(|p| match p {
            PrincipalSpec::Any => PrincipalJson::Star("*".to_owned()),
            PrincipalSpec::Service(names) => {
                PrincipalJson::Map([("Service".to_owned(), OneOrMany::of(names))].into())
            }
            PrincipalSpec::Aws(names) => {
                PrincipalJson::Map([("AWS".to_owned(), OneOrMany::of(names))].into())
            }
        });
        let mut condition: BTreeMap<Operator, BTreeMap<String, OneOrMany>> = BTreeMap::new();
        for entry in &self.conditions {
            condition
                .entry(entry.operator)
                .or_default()
                .insert(entry.key.clone(), OneOrMany::of(&entry.values));
        }
        StatementJson {
            sid: self.sid.clone(),
            effect: self.effect,
            principal,
            action: OneOrMany::of(&self.actions),
            resource: OneOrMany::of(&self.resources),
            condition,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Statement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let json = StatementJson::deserialize(d)?;
        let principal = match json.principal {
            None => None,
            Some(PrincipalJson::Star(star)) if star == "*" => Some(PrincipalSpec::Any),
            Some(PrincipalJson::Star(other)) => {
                return Err(D::Error::custom(format!(
                    "Principal must be \"*\" or an object with Service or AWS, not {other:?}"
                )))
            }
            Some(PrincipalJson::Map(map)) => {
                let mut map = map.into_iter();
                match (map.next(), map.next()) {
                    (Some((kind, names)), None) if kind == "Service" => {
                        Some(PrincipalSpec::Service(names.into_vec()))
                    }
                    (Some((kind, names)), None) if kind == "AWS" => {
                        Some(PrincipalSpec::Aws(names.into_vec()))
                    }
                    _ => {
                        return Err(D::Error::custom(
                            "Principal must name exactly one of Service or AWS",
                        ))
                    }
                }
            }
        };
        let conditions = json
            .condition
            .into_iter()
            .flat_map(|(operator, keys)| {
                keys.into_iter().map(move |(key, values)| ConditionEntry {
                    operator,
                    key,
                    values: values.into_vec(),
                })
            })
            .collect();
        Ok(Self {
            sid: json.sid,
            effect: json.effect,
            principal,
            actions: json.action.into_vec(),
            resources: json.resource.into_vec(),
            conditions,
        })
    }
}

/// The condition keys nimbus evaluates. A statement naming another is refused: evaluated as
/// absent, a `Deny` on it would never apply.
pub const KNOWN_KEYS: [&str; 5] = [
    "AWS:SourceArn",
    "AWS:SourceAccount",
    "aws:PrincipalOrgID",
    "lambda:FunctionUrlAuthType",
    "lambda:InvokedViaFunctionUrl",
];

/// Checks statements a host hands over whole (a function's initial policy, a policy document):
/// ids unique, only condition keys nimbus evaluates, and no condition key twice under one
/// operator (IAM's JSON could not say it).
///
/// # Errors
///
/// A [`ConfigError`](crate::error::ConfigError) on `policy` naming the statement.
pub fn validate_statements(statements: &[Statement]) -> Result<(), crate::error::ConfigError> {
    let invalid = |value: &str, allowed: &str| {
        crate::error::ConfigError::new("function", "policy", value, allowed)
    };
    let mut sids = std::collections::HashSet::new();
    for statement in statements {
        if !statement.sid.is_empty() && !sids.insert(statement.sid.as_str()) {
            return Err(invalid(&statement.sid, "statements with distinct Sids"));
        }
        let mut keys = std::collections::HashSet::new();
        for condition in &statement.conditions {
            if !KNOWN_KEYS
                .iter()
                .any(|known| known.eq_ignore_ascii_case(&condition.key))
            {
                return Err(invalid(
                    &format!("{} {}", statement.sid, condition.key),
                    &format!("condition keys nimbus evaluates: {}", KNOWN_KEYS.join(", ")),
                ));
            }
            if !keys.insert((condition.operator, condition.key.to_ascii_lowercase())) {
                return Err(invalid(
                    &format!(
                        "{} {:?} {}",
                        statement.sid, condition.operator, condition.key
                    ),
                    "each condition key once per operator (list its values instead)",
                ));
            }
        }
    }
    Ok(())
}

/// As [`validate_statements`], for a function policy: every statement names its principal
/// (IAM refuses a resource policy's statement without one; ignored, a `Deny` would never
/// apply).
///
/// # Errors
///
/// A [`ConfigError`](crate::error::ConfigError) on `policy` naming the statement.
pub fn validate_function_policy(statements: &[Statement]) -> Result<(), crate::error::ConfigError> {
    validate_statements(statements)?;
    match statements.iter().find(|s| s.principal.is_none()) {
        Some(statement) => Err(crate::error::ConfigError::new(
            "function",
            "policy",
            &statement.sid,
            "statements that name a Principal",
        )),
        None => Ok(()),
    }
}
