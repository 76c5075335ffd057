//! [`ExecutionRole`]: what a function itself may do — the statements checked when its handler
//! asks the runtime to act (invoke another function, read a queue a mapping feeds it from,
//! send to a destination).

use std::sync::Arc;

use super::evaluate::Decision;
use super::glob::{arn_like, like};
use super::policy::parse_policy_document;
use super::statement::{Effect, Statement};
use crate::error::ConfigError;
use crate::util::aws;

#[derive(Debug, Clone)]
struct RoleStatement {
    sid: Arc<str>,
    deny: bool,
    /// Lower-cased: IAM compares actions case-insensitively.
    actions: Box<[Box<str>]>,
    resources: Box<[Box<str>]>,
}

/// A function's execution role: an IAM role ARN and the statements of its policies, without
/// principals (the principal is the function). Cheap to clone.
///
/// # Example
///
/// ```
/// use nimbus_core::permission::ExecutionRole;
///
/// let role = ExecutionRole::new("arn:aws:iam::000000000000:role/orders")?
///     .allow(["lambda:InvokeFunction"], ["arn:aws:lambda:us-east-1:000000000000:function:billing"])
///     .allow(["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], ["*"]);
/// # let _ = role;
/// # Ok::<(), nimbus_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ExecutionRole {
    arn: Arc<str>,
    account: Arc<str>,
    statements: Arc<[RoleStatement]>,
    source: Arc<[Statement]>,
}

impl PartialEq for ExecutionRole {
    fn eq(&self, other: &Self) -> bool {
        self.arn == other.arn && self.source == other.source
    }
}

impl ExecutionRole {
    /// A role with no statement (it may do nothing) named by `arn`
    /// (`arn:aws:iam::<account>:role/<name>`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `role` if `arn` is not a role ARN.
    pub fn new(arn: impl Into<String>) -> Result<Self, ConfigError> {
        let arn = arn.into();
        let account = arn
            .strip_prefix("arn:aws:iam::")
            .and_then(|rest| rest.split_once(":role/"))
            .filter(|(account, name)| aws::is_account_id(account) && !name.is_empty())
            .map(|(account, _)| account.to_owned())
            .ok_or_else(|| {
                ConfigError::new(
                    "function",
                    "role",
                    &arn,
                    "arn:aws:iam::<account>:role/<name>",
                )
            })?;
        Ok(Self {
            arn: arn.into(),
            account: account.into(),
            statements: Arc::new([]),
            source: Arc::new([]),
        })
    }

    /// A role named by `arn` with the statements of an IAM policy document
    /// (`{"Version": ..., "Statement": [...]}`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the ARN is not a role's or the document does not parse.
    pub fn from_policy(
        arn: impl Into<String>,
        document: &serde_json::Value,
    ) -> Result<Self, ConfigError> {
        parse_policy_document(document)?
            .into_iter()
            .try_fold(Self::new(arn)?, Self::with_statement)
    }

    /// The role with `actions` allowed on `resources` (wildcards `*` and `?` in both).
    #[must_use]
    pub fn allow<A, R>(self, actions: A, resources: R) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        self.with(Effect::Allow, actions, resources)
    }

    /// The role with `actions` denied on `resources`; a deny wins over any allow.
    #[must_use]
    pub fn deny<A, R>(self, actions: A, resources: R) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        self.with(Effect::Deny, actions, resources)
    }

    fn with<A, R>(self, effect: Effect, actions: A, resources: R) -> Self
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        let sid = format!("statement-{}", self.source.len() + 1);
        self.push(Statement {
            sid,
            effect,
            principal: None,
            actions: actions.into_iter().map(Into::into).collect(),
            resources: resources.into_iter().map(Into::into).collect(),
            conditions: Vec::new(),
        })
    }

    /// The role with one more statement.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `role` for a statement with a principal (a role's principal is its
    /// function) or conditions (nimbus evaluates none on roles: ignoring them would widen
    /// the statement).
    pub fn with_statement(self, statement: Statement) -> Result<Self, ConfigError> {
        if statement.principal.is_some() || !statement.conditions.is_empty() {
            return Err(ConfigError::new(
                "function",
                "role",
                &statement.sid,
                "role statements without Principal or Condition",
            ));
        }
        Ok(self.push(statement))
    }

    fn push(mut self, statement: Statement) -> Self {
        let lower = |v: &Vec<String>| -> Box<[Box<str>]> {
            v.iter().map(|s| s.to_ascii_lowercase().into()).collect()
        };
        let compiled = RoleStatement {
            sid: statement.sid.as_str().into(),
            deny: statement.effect == Effect::Deny,
            actions: lower(&statement.actions),
            resources: statement
                .resources
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
        };
        let mut statements = self.statements.to_vec();
        statements.push(compiled);
        let mut source = self.source.to_vec();
        source.push(statement);
        self.statements = statements.into();
        self.source = source.into();
        self
    }

    /// The role's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The account the role belongs to.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The role's statements, as given.
    pub fn statements(&self) -> &[Statement] {
        &self.source
    }

    /// What the role says of `action` (as `sqs:ReceiveMessage`) on the resource `arn`.
    pub fn evaluate(&self, action: &str, arn: &str) -> Decision {
        let action = action.to_ascii_lowercase();
        let mut allowed = None;
        for statement in self.statements.iter() {
            let applies = statement.actions.iter().any(|a| like(a, &action))
                && statement.resources.iter().any(|r| arn_like(r, arn));
            if !applies {
                continue;
            }
            if statement.deny {
                return Decision::Deny(Arc::clone(&statement.sid));
            }
            allowed.get_or_insert(&statement.sid);
        }
        allowed.map_or(Decision::NoStatement, |sid| {
            Decision::Allow(Arc::clone(sid))
        })
    }

    /// Whether the role allows every one of `actions` on `arn`; the first one it does not.
    ///
    /// # Errors
    ///
    /// The first action not allowed.
    pub fn allows_all<'a>(&self, actions: &[&'a str], arn: &str) -> Result<(), &'a str> {
        for action in actions {
            if !matches!(self.evaluate(action, arn), Decision::Allow(_)) {
                return Err(action);
            }
        }
        Ok(())
    }
}
