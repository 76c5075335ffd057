//! Function policies compiled for the hot path: each statement's principal, action bits,
//! resource and conditions are resolved once, when the policy changes, so that a decision is a
//! scan over a few small structs with no allocation.

use std::sync::Arc;

use super::glob::{arn_like, like};
use super::policy::FUNCTION_ACTIONS;
use super::statement::{Effect, Operator, PrincipalSpec, Statement};

/// An action on a function that a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// `lambda:InvokeFunction`.
    InvokeFunction,
    /// `lambda:InvokeFunctionUrl`.
    InvokeFunctionUrl,
    /// `lambda:GetFunction`.
    GetFunction,
}

impl Action {
    /// The action's IAM name.
    pub fn name(self) -> &'static str {
        FUNCTION_ACTIONS[self.index()]
    }

    fn index(self) -> usize {
        match self {
            Self::InvokeFunction => 0,
            Self::InvokeFunctionUrl => 1,
            Self::GetFunction => 2,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

/// Who asks, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester<'a> {
    /// An AWS service (`s3.amazonaws.com`).
    Service(&'a str),
    /// An IAM principal: its ARN and its account.
    Aws {
        /// The role or user ARN.
        arn: &'a str,
        /// The account id.
        account: &'a str,
    },
    /// A caller with no credentials.
    Anonymous,
}

impl Requester<'_> {
    /// 0 for a service, 1 for an IAM principal, 2 for an anonymous caller.
    fn kind(self) -> usize {
        match self {
            Self::Service(_) => 0,
            Self::Aws { .. } => 1,
            Self::Anonymous => 2,
        }
    }
}

/// One request to evaluate: who asks for which action, with the request's condition keys
/// (`None`: the request does not carry the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// Who asks.
    pub requester: Requester<'a>,
    /// For what.
    pub action: Action,
    /// `AWS:SourceArn`: the resource an event is about (a bucket, a queue).
    pub source_arn: Option<&'a str>,
    /// `AWS:SourceAccount`: the account owning that resource.
    pub source_account: Option<&'a str>,
    /// `aws:PrincipalOrgID`: the requester's organization.
    pub principal_org_id: Option<&'a str>,
    /// `lambda:FunctionUrlAuthType`: `NONE` or `AWS_IAM` for a function-URL call.
    pub function_url_auth_type: Option<&'a str>,
    /// `lambda:InvokedViaFunctionUrl`.
    pub invoked_via_function_url: Option<bool>,
}

impl<'a> AccessRequest<'a> {
    /// A request by `requester` for `action`, carrying no condition key.
    pub fn new(requester: Requester<'a>, action: Action) -> Self {
        Self {
            requester,
            action,
            source_arn: None,
            source_account: None,
            principal_org_id: None,
            function_url_auth_type: None,
            invoked_via_function_url: None,
        }
    }
}

/// What a policy says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows it (its sid) and none denies it.
    Allow(Arc<str>),
    /// A statement denies it (its sid): explicit deny wins.
    Deny(Arc<str>),
    /// No statement applies.
    NoStatement,
}

/// A decision naming its statement by position in the compiled policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(usize),
    Deny(usize),
    NoStatement,
}

/// A condition key nimbus knows; any other never matches (the request cannot carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    SourceArn,
    SourceAccount,
    PrincipalOrgId,
    FunctionUrlAuthType,
    InvokedViaFunctionUrl,
    Unknown,
}

impl Key {
    fn of(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "aws:sourcearn" => Self::SourceArn,
            "aws:sourceaccount" => Self::SourceAccount,
            "aws:principalorgid" => Self::PrincipalOrgId,
            "lambda:functionurlauthtype" => Self::FunctionUrlAuthType,
            "lambda:invokedviafunctionurl" => Self::InvokedViaFunctionUrl,
            _ => Self::Unknown,
        }
    }
}

#[derive(Debug)]
struct CompiledCondition {
    operator: Operator,
    key: Key,
    values: Box<[Box<str>]>,
}

impl CompiledCondition {
    #[inline]
    fn holds(&self, request: &AccessRequest<'_>) -> bool {
        let value = match self.key {
            Key::SourceArn => request.source_arn,
            Key::SourceAccount => request.source_account,
            Key::PrincipalOrgId => request.principal_org_id,
            Key::FunctionUrlAuthType => request.function_url_auth_type,
            Key::InvokedViaFunctionUrl => {
                request
                    .invoked_via_function_url
                    .map(|b| if b { "true" } else { "false" })
            }
            Key::Unknown => None,
        };
        // A key the request does not carry makes a condition false, and a negated one true,
        // as in IAM.
        let negated = self.operator.is_negated();
        let Some(value) = value else {
            return negated;
        };
        let any = self.values.iter().any(|expected| match self.operator {
            Operator::StringEquals | Operator::StringNotEquals => **expected == *value,
            Operator::StringEqualsIgnoreCase => expected.eq_ignore_ascii_case(value),
            Operator::StringLike | Operator::StringNotLike => like(expected, value),
            Operator::ArnLike | Operator::ArnEquals | Operator::ArnNotLike => {
                arn_like(expected, value)
            }
            Operator::Bool => expected.eq_ignore_ascii_case(value),
        });
        any != negated
    }
}

#[derive(Debug)]
enum CompiledPrincipal {
    Anyone,
    Services(Box<[Box<str>]>),
    Aws {
        accounts: Box<[Box<str>]>,
        arns: Box<[Box<str>]>,
    },
}

impl CompiledPrincipal {
    fn of(spec: &PrincipalSpec) -> Self {
        match spec {
            PrincipalSpec::Any => Self::Anyone,
            PrincipalSpec::Service(names) => Self::Services(boxed(names.iter())),
            PrincipalSpec::Aws(names) if names.iter().any(|n| n == "*") => Self::Anyone,
            PrincipalSpec::Aws(names) => {
                let account_of = |name: &String| -> Option<String> {
                    if name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()) {
                        return Some(name.clone());
                    }
                    let account = name.strip_prefix("arn:aws:iam::")?.strip_suffix(":root")?;
                    Some(account.to_owned())
                };
                let accounts: Vec<String> = names.iter().filter_map(account_of).collect();
                let arns = names.iter().filter(|n| account_of(n).is_none());
                Self::Aws {
                    accounts: boxed(accounts.iter()),
                    arns: boxed(arns),
                }
            }
        }
    }

    /// Whether the statement can name requesters of `kind` (see [`Requester::kind`]).
    fn names_kind(&self, kind: usize) -> bool {
        match self {
            Self::Anyone => true,
            Self::Services(_) => kind == 0,
            Self::Aws { .. } => kind == 1,
        }
    }

    #[inline]
    fn matches(&self, requester: Requester<'_>) -> bool {
        match (self, requester) {
            (Self::Anyone, _) => true,
            (Self::Services(names), Requester::Service(service)) => {
                names.iter().any(|n| **n == *service)
            }
            (Self::Aws { accounts, arns }, Requester::Aws { arn, account }) => {
                accounts.iter().any(|a| **a == *account) || arns.iter().any(|a| **a == *arn)
            }
            _ => false,
        }
    }
}

fn boxed<'s>(names: impl Iterator<Item = &'s String>) -> Box<[Box<str>]> {
    names.map(|n| n.as_str().into()).collect()
}

#[derive(Debug)]
struct CompiledStatement {
    sid: Arc<str>,
    deny: bool,
    principal: CompiledPrincipal,
    actions: u8,
    conditions: Box<[CompiledCondition]>,
}

/// A function policy compiled for one function ARN: statements whose resource does not name
/// the function, or whose actions name no function action, are dropped here.
#[derive(Debug, Default)]
pub struct CompiledPolicy {
    statements: Box<[CompiledStatement]>,
    /// The positions of the statements that can name each kind of requester (services, IAM
    /// principals, anonymous callers; `*` statements in all three): a decision looks at those
    /// only.
    by_kind: [Box<[u32]>; 3],
}

impl CompiledPolicy {
    /// Compiles `statements` for the function `function_arn`.
    pub fn compile(statements: &[Statement], function_arn: &str) -> Self {
        let statements = statements
            .iter()
            .filter(|s| s.resources.iter().any(|r| arn_like(r, function_arn)))
            .filter_map(|s| {
                let actions = FUNCTION_ACTIONS
                    .iter()
                    .enumerate()
                    .filter(|(_, name)| {
                        s.actions.iter().any(|pattern| {
                            like(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase())
                        })
                    })
                    .fold(0u8, |bits, (i, _)| bits | 1 << i);
                // A statement with no principal cannot be part of a resource policy.
                let principal = CompiledPrincipal::of(s.principal.as_ref()?);
                (actions != 0).then(|| CompiledStatement {
                    sid: s.sid.as_str().into(),
                    deny: s.effect == Effect::Deny,
                    principal,
                    actions,
                    conditions: s
                        .conditions
                        .iter()
                        .map(|c| CompiledCondition {
                            operator: c.operator,
                            key: Key::of(&c.key),
                            values: boxed(c.values.iter()),
                        })
                        .collect(),
                })
            })
            .collect::<Box<[CompiledStatement]>>();
        let for_kind = |kind: usize| -> Box<[u32]> {
            (0..statements.len())
                .filter(|&i| statements[i].principal.names_kind(kind))
                .filter_map(|i| u32::try_from(i).ok())
                .collect()
        };
        let by_kind = [for_kind(0), for_kind(1), for_kind(2)];
        Self {
            statements,
            by_kind,
        }
    }

    /// Whether the policy has no statement that applies to its function.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// What the policy says of `request`: an explicit deny wins over any allow.
    pub fn evaluate(&self, request: &AccessRequest<'_>) -> Decision {
        match self.decide(request) {
            Verdict::Allow(i) => Decision::Allow(Arc::clone(&self.statements[i].sid)),
            Verdict::Deny(i) => Decision::Deny(Arc::clone(&self.statements[i].sid)),
            Verdict::NoStatement => Decision::NoStatement,
        }
    }

    /// As [`evaluate`](Self::evaluate), naming the deciding statement by its position: no
    /// reference count touched on the hot path.
    #[inline]
    pub(crate) fn decide(&self, request: &AccessRequest<'_>) -> Verdict {
        let mut allowed = None;
        for &i in self.by_kind[request.requester.kind()].iter() {
            let i = i as usize;
            let statement = &self.statements[i];
            let applies = statement.actions & request.action.bit() != 0
                && statement.principal.matches(request.requester)
                && statement.conditions.iter().all(|c| c.holds(request));
            if !applies {
                continue;
            }
            if statement.deny {
                return Verdict::Deny(i);
            }
            allowed.get_or_insert(i);
        }
        allowed.map_or(Verdict::NoStatement, Verdict::Allow)
    }
}
