//! A function's resource policy: its statements, the `AddPermission` request that adds one
//! ([`Permission`]), and the JSON document `GetPolicy` returns.

use serde_json::{json, Value};

use super::statement::{ConditionEntry, Effect, Operator, PrincipalSpec, Statement};
use crate::error::ConfigError;
use crate::util::aws;

/// The actions a function policy may name (with `lambda:*` and `*` for all of them).
pub const FUNCTION_ACTIONS: [&str; 3] = [
    "lambda:InvokeFunction",
    "lambda:InvokeFunctionUrl",
    "lambda:GetFunction",
];

/// The fields of Lambda's `AddPermission`: one statement granting `action` on a function to
/// `principal`, under optional conditions.
///
/// `principal` is `*` (anyone), a service (`s3.amazonaws.com`), an account id
/// (`123456789012`, stored as `arn:aws:iam::123456789012:root`, as Lambda stores it) or an IAM
/// ARN (a role or user).
///
/// # Example
///
/// ```
/// use nimbus_core::permission::Permission;
///
/// let grant = Permission::new("s3-invoke", "lambda:InvokeFunction", "s3.amazonaws.com")
///     .with_source_arn("arn:aws:s3:::photos")
///     .with_source_account("123456789012");
/// # let _ = grant;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permission {
    /// `StatementId`.
    pub sid: String,
    /// `Action`.
    pub action: String,
    /// `Principal`.
    pub principal: String,
    /// `SourceArn`: an `ArnLike` condition on `AWS:SourceArn`.
    pub source_arn: Option<String>,
    /// `SourceAccount`: a `StringEquals` condition on `AWS:SourceAccount`.
    pub source_account: Option<String>,
    /// `PrincipalOrgID`: a `StringEquals` condition on `aws:PrincipalOrgID`.
    pub principal_org_id: Option<String>,
    /// `FunctionUrlAuthType` (`NONE` or `AWS_IAM`): a `StringEquals` condition on
    /// `lambda:FunctionUrlAuthType`.
    pub function_url_auth_type: Option<String>,
}

impl Permission {
    /// A grant of `action` to `principal`, under the statement id `sid`.
    pub fn new(
        sid: impl Into<String>,
        action: impl Into<String>,
        principal: impl Into<String>,
    ) -> Self {
        Self {
            sid: sid.into(),
            action: action.into(),
            principal: principal.into(),
            source_arn: None,
            source_account: None,
            principal_org_id: None,
            function_url_auth_type: None,
        }
    }

    /// Only for events about this resource (wildcards `*` and `?` allowed).
    #[must_use]
    pub fn with_source_arn(mut self, arn: impl Into<String>) -> Self {
        self.source_arn = Some(arn.into());
        self
    }

    /// Only for resources owned by this account.
    #[must_use]
    pub fn with_source_account(mut self, account: impl Into<String>) -> Self {
        self.source_account = Some(account.into());
        self
    }

    /// Only for principals in this AWS organization.
    #[must_use]
    pub fn with_principal_org_id(mut self, org: impl Into<String>) -> Self {
        self.principal_org_id = Some(org.into());
        self
    }

    /// Only for function-URL calls of this auth type (`NONE` or `AWS_IAM`).
    #[must_use]
    pub fn with_function_url_auth_type(mut self, auth_type: impl Into<String>) -> Self {
        self.function_url_auth_type = Some(auth_type.into());
        self
    }

    /// The statement this grant adds to the policy of the function `function_arn`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field that is invalid.
    pub fn to_statement(&self, function_arn: &str) -> Result<Statement, ConfigError> {
        let invalid = |field, value: &str, allowed: &str| {
            ConfigError::new("permission", field, value, allowed)
        };
        if !valid_sid(&self.sid) {
            return Err(invalid(
                "sid",
                &self.sid,
                "1 to 100 characters of A-Z, a-z, 0-9, - and _",
            ));
        }
        let action_known = self.action == "*"
            || self.action == "lambda:*"
            || FUNCTION_ACTIONS.contains(&self.action.as_str());
        if !action_known {
            return Err(invalid(
                "action",
                &self.action,
                "lambda:InvokeFunction, lambda:InvokeFunctionUrl, lambda:GetFunction, lambda:* or *",
            ));
        }
        let principal = principal_spec(&self.principal).ok_or_else(|| {
            invalid(
                "principal",
                &self.principal,
                "*, a service (s3.amazonaws.com), an account id or an IAM ARN",
            )
        })?;
        if let Some(account) = &self.source_account {
            if !aws::is_account_id(account) {
                return Err(invalid("source_account", account, "twelve digits"));
            }
        }
        if let Some(auth) = &self.function_url_auth_type {
            if auth != "NONE" && auth != "AWS_IAM" {
                return Err(invalid("function_url_auth_type", auth, "NONE or AWS_IAM"));
            }
        }
        let mut conditions = Vec::new();
        let mut condition = |operator, key: &str, value: &Option<String>| {
            if let Some(value) = value {
                conditions.push(ConditionEntry {
                    operator,
                    key: key.to_owned(),
                    values: vec![value.clone()],
                });
            }
        };
        condition(
            Operator::StringEquals,
            "AWS:SourceAccount",
            &self.source_account,
        );
        condition(Operator::ArnLike, "AWS:SourceArn", &self.source_arn);
        condition(
            Operator::StringEquals,
            "aws:PrincipalOrgID",
            &self.principal_org_id,
        );
        condition(
            Operator::StringEquals,
            "lambda:FunctionUrlAuthType",
            &self.function_url_auth_type,
        );
        Ok(Statement {
            sid: self.sid.clone(),
            effect: Effect::Allow,
            principal: Some(principal),
            actions: vec![self.action.clone()],
            resources: vec![function_arn.to_owned()],
            conditions,
        })
    }
}

/// Whether `sid` is a statement id Lambda accepts.
fn valid_sid(sid: &str) -> bool {
    (1..=100).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `AddPermission`'s principal as a statement's.
fn principal_spec(principal: &str) -> Option<PrincipalSpec> {
    if principal == "*" {
        Some(PrincipalSpec::Any)
    } else if aws::is_account_id(principal) {
        Some(PrincipalSpec::Aws(vec![format!(
            "arn:aws:iam::{principal}:root"
        )]))
    } else if (principal.starts_with("arn:aws:iam::") || principal.starts_with("arn:aws:sts::"))
        && principal.splitn(6, ':').count() == 6
    {
        Some(PrincipalSpec::Aws(vec![principal.to_owned()]))
    } else if principal.contains('.')
        && principal
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        Some(PrincipalSpec::Service(vec![principal.to_owned()]))
    } else {
        None
    }
}

/// The JSON document of a policy, as `GetPolicy` returns it (a string in its `Policy` field).
pub fn policy_document(statements: &[Statement]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Id": "default",
        "Statement": statements,
    })
}

/// The statements of a policy document (`{"Statement": [...]}`), as a serve file or a host
/// loads them.
///
/// # Errors
///
/// A [`ConfigError`] on `policy` naming what does not parse.
pub fn parse_policy_document(document: &Value) -> Result<Vec<Statement>, ConfigError> {
    let statements = document.get("Statement").cloned().unwrap_or(Value::Null);
    let statements = match statements {
        Value::Array(_) => statements,
        Value::Object(_) => Value::Array(vec![statements]),
        _ => {
            return Err(ConfigError::new(
                "permission",
                "policy",
                document,
                "a document with a Statement list",
            ))
        }
    };
    let statements: Vec<Statement> = serde_json::from_value(statements).map_err(|error| {
        ConfigError::new("permission", "policy", error.to_string(), "IAM statements")
    })?;
    super::statement::validate_statements(&statements)?;
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:lambda:us-east-2:123456789012:function:my-function";

    #[test]
    fn an_s3_grant_reads_as_get_policy_shows_it() {
        let statement = Permission::new(
            "lambda-allow-s3",
            "lambda:InvokeFunction",
            "s3.amazonaws.com",
        )
        .with_source_account("123456789012")
        .with_source_arn("arn:aws:s3:::amzn-s3-demo-bucket")
        .to_statement(ARN)
        .unwrap();
        let document = policy_document(std::slice::from_ref(&statement));
        assert_eq!(
            document,
            json!({"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"lambda-allow-s3","Effect":"Allow",
                "Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction",
                "Resource":ARN,
                "Condition":{"StringEquals":{"AWS:SourceAccount":"123456789012"},
                             "ArnLike":{"AWS:SourceArn":"arn:aws:s3:::amzn-s3-demo-bucket"}}}]})
        );
        assert_eq!(parse_policy_document(&document).unwrap(), vec![statement]);
    }

    #[test]
    fn an_account_principal_is_stored_as_its_root_arn() {
        let statement = Permission::new("acct", "lambda:*", "111122223333")
            .to_statement(ARN)
            .unwrap();
        assert_eq!(
            statement.principal,
            Some(PrincipalSpec::Aws(vec![
                "arn:aws:iam::111122223333:root".into()
            ]))
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |p: Permission| p.to_statement(ARN).unwrap_err().field;
        assert_eq!(
            bad(Permission::new("", "lambda:InvokeFunction", "*")),
            "sid"
        );
        assert_eq!(
            bad(Permission::new("a b", "lambda:InvokeFunction", "*")),
            "sid"
        );
        assert_eq!(bad(Permission::new("s", "sqs:SendMessage", "*")), "action");
        assert_eq!(
            bad(Permission::new("s", "lambda:InvokeFunction", "who?")),
            "principal"
        );
        assert_eq!(
            bad(Permission::new("s", "lambda:InvokeFunction", "*").with_source_account("12")),
            "source_account"
        );
        assert_eq!(
            bad(Permission::new("s", "lambda:InvokeFunction", "*")
                .with_function_url_auth_type("KEY")),
            "function_url_auth_type"
        );
    }
}
