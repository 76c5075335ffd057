//! The permission model: the policy matrix (each principal kind × allow / deny / no statement ×
//! each condition key matching, not matching and absent), the fallbacks when no statement
//! speaks, roles on calls between functions, and the runtime's policy API.

use std::sync::Arc;

use nimbus_core::permission::{
    AccessRequest, AccessSettings, Action, CompiledPolicy, ConditionEntry, Decision, Effect,
    ExecutionRole, FunctionAccess, Operator, Permission, PolicyError, PrincipalSpec, Requester,
    Statement,
};
use nimbus_core::{
    handler_fn, AsyncCallError, CallError, Context, Function, FunctionError, InvokeError,
    InvokeOptions, Principal, RejectReason, Runtime, RuntimeConfig,
};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const OTHER_ACCOUNT: &str = "444455556666";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:target";
const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/caller";
const USER_ARN: &str = "arn:aws:iam::444455556666:user/alice";

/// A principal kind of the matrix: how a request names it, and how a statement does.
struct Kind {
    name: &'static str,
    requester: Requester<'static>,
    spec: fn() -> PrincipalSpec,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "service",
            requester: Requester::Service("s3.amazonaws.com"),
            spec: || PrincipalSpec::Service(vec!["s3.amazonaws.com".into()]),
        },
        Kind {
            name: "account",
            requester: Requester::Aws {
                arn: USER_ARN,
                account: OTHER_ACCOUNT,
            },
            spec: || PrincipalSpec::Aws(vec![format!("arn:aws:iam::{OTHER_ACCOUNT}:root")]),
        },
        Kind {
            name: "role",
            requester: Requester::Aws {
                arn: ROLE_ARN,
                account: ACCOUNT,
            },
            spec: || PrincipalSpec::Aws(vec![ROLE_ARN.into()]),
        },
        Kind {
            name: "anyone",
            requester: Requester::Anonymous,
            spec: || PrincipalSpec::Any,
        },
    ]
}

/// A condition key of the matrix: its operator and pattern, a value that matches, one that
/// does not, and how a request carries it.
struct Key {
    key: &'static str,
    operator: Operator,
    pattern: &'static str,
    matching: &'static str,
    other: &'static str,
    set: fn(&mut AccessRequest<'static>, &'static str),
}

fn keys() -> Vec<Key> {
    vec![
        Key {
            key: "AWS:SourceArn",
            operator: Operator::ArnLike,
            pattern: "arn:aws:s3:::photos-*-202?",
            matching: "arn:aws:s3:::photos-eu-2026",
            other: "arn:aws:s3:::photos-eu-20261",
            set: |r, v| r.source_arn = Some(v),
        },
        Key {
            key: "AWS:SourceArn",
            operator: Operator::ArnLike,
            pattern: "arn:aws:s3:::*",
            matching: "arn:aws:s3:::anything",
            other: "arn:aws:sqs:us-east-1:000000000000:anything",
            set: |r, v| r.source_arn = Some(v),
        },
        Key {
            key: "AWS:SourceAccount",
            operator: Operator::StringEquals,
            pattern: "111122223333",
            matching: "111122223333",
            other: "111122223334",
            set: |r, v| r.source_account = Some(v),
        },
        Key {
            key: "aws:PrincipalOrgID",
            operator: Operator::StringEquals,
            pattern: "o-abc123",
            matching: "o-abc123",
            other: "o-xyz789",
            set: |r, v| r.principal_org_id = Some(v),
        },
        Key {
            key: "lambda:FunctionUrlAuthType",
            operator: Operator::StringEquals,
            pattern: "NONE",
            matching: "NONE",
            other: "AWS_IAM",
            set: |r, v| r.function_url_auth_type = Some(v),
        },
        Key {
            key: "lambda:FunctionUrlAuthType",
            operator: Operator::StringLike,
            pattern: "AWS_?AM",
            matching: "AWS_IAM",
            other: "NONE",
            set: |r, v| r.function_url_auth_type = Some(v),
        },
        Key {
            key: "lambda:InvokedViaFunctionUrl",
            operator: Operator::Bool,
            pattern: "true",
            matching: "true",
            other: "false",
            set: |r, v| r.invoked_via_function_url = Some(v == "true"),
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Matching,
    NotMatching,
    Absent,
}

fn statement(
    sid: &str,
    effect: Effect,
    spec: PrincipalSpec,
    conditions: Vec<ConditionEntry>,
) -> Statement {
    Statement {
        sid: sid.into(),
        effect,
        principal: Some(spec),
        actions: vec!["lambda:InvokeFunction".into()],
        resources: vec![FUNCTION_ARN.into()],
        conditions,
    }
}

fn outcome(decision: &Decision) -> &'static str {
    match decision {
        Decision::Allow(_) => "allow",
        Decision::Deny(_) => "deny",
        Decision::NoStatement => "none",
    }
}

#[test]
fn policy_matrix_of_principals_effects_and_condition_keys() {
    let mut checked = 0;
    for kind in kinds() {
        for effect in [Some(Effect::Allow), Some(Effect::Deny), None] {
            for key in keys() {
                for case in [Case::Matching, Case::NotMatching, Case::Absent] {
                    let condition = ConditionEntry {
                        operator: key.operator,
                        key: key.key.into(),
                        values: vec![key.pattern.into()],
                    };
                    // "No statement": the policy speaks of someone else only.
                    let statements = match effect {
                        Some(effect) => {
                            vec![statement("s", effect, (kind.spec)(), vec![condition])]
                        }
                        None => vec![statement(
                            "other",
                            Effect::Allow,
                            PrincipalSpec::Service(vec!["sns.amazonaws.com".into()]),
                            vec![],
                        )],
                    };
                    let policy = CompiledPolicy::compile(&statements, FUNCTION_ARN);
                    let mut request = AccessRequest::new(kind.requester, Action::InvokeFunction);
                    match case {
                        Case::Matching => (key.set)(&mut request, key.matching),
                        Case::NotMatching => (key.set)(&mut request, key.other),
                        Case::Absent => {}
                    }
                    let expected = match (effect, case) {
                        (Some(Effect::Allow), Case::Matching) => "allow",
                        (Some(Effect::Deny), Case::Matching) => "deny",
                        // A condition that fails, or whose key is absent, leaves the statement
                        // out, whatever its effect.
                        _ => "none",
                    };
                    let got = outcome(&policy.evaluate(&request));
                    assert_eq!(
                        got, expected,
                        "{} / {effect:?} / {} {:?} {} / {case:?}",
                        kind.name, key.key, key.operator, key.pattern
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 4 * 3 * 7 * 3);
}

#[test]
fn a_statement_for_one_principal_does_not_apply_to_another() {
    for named in kinds() {
        let statements = vec![statement("s", Effect::Allow, (named.spec)(), vec![])];
        let policy = CompiledPolicy::compile(&statements, FUNCTION_ARN);
        for asking in kinds() {
            let got = outcome(&policy.evaluate(&AccessRequest::new(
                asking.requester,
                Action::InvokeFunction,
            )));
            // "*" names everyone; any other statement names only its own principal.
            let expected = if named.name == "anyone" || named.name == asking.name {
                "allow"
            } else {
                "none"
            };
            assert_eq!(
                got, expected,
                "statement for {}, asked by {}",
                named.name, asking.name
            );
        }
    }
}

#[test]
fn explicit_deny_overrides_allow_in_either_order() {
    let allow = statement("allow", Effect::Allow, PrincipalSpec::Any, vec![]);
    let deny = statement(
        "deny",
        Effect::Deny,
        PrincipalSpec::Service(vec!["s3.amazonaws.com".into()]),
        vec![ConditionEntry {
            operator: Operator::ArnLike,
            key: "aws:sourcearn".into(), // keys compare case-insensitively
            values: vec!["arn:aws:s3:::private-*".into()],
        }],
    );
    for statements in [vec![allow.clone(), deny.clone()], vec![deny, allow]] {
        let policy = CompiledPolicy::compile(&statements, FUNCTION_ARN);
        let mut request = AccessRequest::new(
            Requester::Service("s3.amazonaws.com"),
            Action::InvokeFunction,
        );
        request.source_arn = Some("arn:aws:s3:::private-data");
        assert_eq!(policy.evaluate(&request), Decision::Deny("deny".into()));
        request.source_arn = Some("arn:aws:s3:::public-data");
        assert_eq!(policy.evaluate(&request), Decision::Allow("allow".into()));
    }
}

#[test]
fn actions_and_resources_select_statements() {
    let mut other_function = statement("other", Effect::Allow, PrincipalSpec::Any, vec![]);
    other_function.resources =
        vec!["arn:aws:lambda:us-east-1:000000000000:function:elsewhere".into()];
    let mut url_only = statement("url", Effect::Allow, PrincipalSpec::Any, vec![]);
    url_only.actions = vec!["lambda:InvokeFunctionUrl".into()];
    let mut wildcard = statement("all", Effect::Allow, PrincipalSpec::Any, vec![]);
    wildcard.actions = vec!["lambda:*".into()];
    wildcard.resources = vec!["arn:aws:lambda:us-east-1:000000000000:function:tar*".into()];
    let anyone = |a| AccessRequest::new(Requester::Anonymous, a);
    let policy = CompiledPolicy::compile(&[other_function, url_only], FUNCTION_ARN);
    assert_eq!(
        policy.evaluate(&anyone(Action::InvokeFunction)),
        Decision::NoStatement
    );
    assert_eq!(
        policy.evaluate(&anyone(Action::InvokeFunctionUrl)),
        Decision::Allow("url".into())
    );
    let policy = CompiledPolicy::compile(&[wildcard], FUNCTION_ARN);
    assert_eq!(
        policy.evaluate(&anyone(Action::GetFunction)),
        Decision::Allow("all".into())
    );
}

/// A row of the fallback table: principal, caller role, policy, settings, allowed?
type Row = (
    Principal,
    Option<ExecutionRole>,
    Vec<Statement>,
    AccessSettings,
    bool,
);

/// Who asks, at the level of the runtime's principals, and what happens with no statement.
#[test]
fn fallbacks_when_no_statement_speaks() {
    let role_allowing = ExecutionRole::new(ROLE_ARN)
        .unwrap()
        .allow(["lambda:InvokeFunction"], [FUNCTION_ARN]);
    let role_silent = ExecutionRole::new(ROLE_ARN).unwrap();
    let role_denying = ExecutionRole::new(ROLE_ARN)
        .unwrap()
        .allow(["lambda:*"], ["*"])
        .deny(["lambda:Invoke*"], [FUNCTION_ARN]);
    let service = Principal::Service {
        service: "s3.amazonaws.com".into(),
        source_arn: Some("arn:aws:s3:::photos".into()),
        source_account: Some(ACCOUNT.into()),
    };
    let identity = |account: &str| Principal::Identity {
        arn: format!("arn:aws:iam::{account}:user/u").into(),
        account: account.into(),
        org_id: None,
    };
    let caller = Principal::Function("caller".into());
    let open = AccessSettings::default();
    let required = AccessSettings::default().with_require(true);
    let untrusting = AccessSettings::default().with_trust_same_account(false);
    let unrelated = vec![statement(
        "sns",
        Effect::Allow,
        PrincipalSpec::Service(vec!["sns.amazonaws.com".into()]),
        vec![],
    )];
    let role_deny_in_policy = vec![statement(
        "no-role",
        Effect::Deny,
        PrincipalSpec::Aws(vec![ROLE_ARN.into()]),
        vec![],
    )];
    // (principal, caller role, policy, settings, allowed?)
    let table: Vec<Row> = vec![
        (Principal::Host, None, unrelated.clone(), required, true),
        (
            Principal::EventSource("m".into()),
            None,
            unrelated.clone(),
            required,
            true,
        ),
        // Services and anonymous callers need a statement, policy or not.
        (service.clone(), None, vec![], open, false),
        (service.clone(), None, vec![], required, false),
        (Principal::Anonymous, None, vec![], open, false),
        (Principal::Anonymous, None, vec![], required, false),
        // A policy that speaks of others: refused.
        (service.clone(), None, unrelated.clone(), open, false),
        (Principal::Anonymous, None, unrelated.clone(), open, false),
        // Same account is trusted unless the host turned that off; another account is not.
        (identity(ACCOUNT), None, unrelated.clone(), open, true),
        (identity(ACCOUNT), None, unrelated.clone(), required, true),
        (
            identity(ACCOUNT),
            None,
            unrelated.clone(),
            untrusting,
            false,
        ),
        (
            identity(OTHER_ACCOUNT),
            None,
            unrelated.clone(),
            open,
            false,
        ),
        (identity(OTHER_ACCOUNT), None, vec![], open, false),
        // A role of another account needs the target's policy too, as across accounts in IAM.
        (
            caller.clone(),
            Some(
                ExecutionRole::new("arn:aws:iam::444455556666:role/abroad")
                    .unwrap()
                    .allow(["lambda:InvokeFunction"], [FUNCTION_ARN]),
            ),
            vec![],
            open,
            false,
        ),
        // A function: its role allows, is silent or denies; without a role it is trusted
        // unless required.
        (
            caller.clone(),
            Some(role_allowing.clone()),
            unrelated.clone(),
            required,
            true,
        ),
        (
            caller.clone(),
            Some(role_silent.clone()),
            vec![],
            open,
            false,
        ),
        (
            caller.clone(),
            Some(role_denying.clone()),
            vec![],
            open,
            false,
        ),
        (caller.clone(), None, unrelated.clone(), open, true),
        (caller.clone(), None, unrelated.clone(), required, false),
        // The target's policy may allow the role the caller's role is silent on, and its
        // explicit deny wins over the role's allow.
        (
            caller.clone(),
            Some(role_silent.clone()),
            vec![statement(
                "r",
                Effect::Allow,
                PrincipalSpec::Aws(vec![ROLE_ARN.into()]),
                vec![],
            )],
            open,
            true,
        ),
        (
            caller.clone(),
            Some(role_allowing.clone()),
            role_deny_in_policy.clone(),
            open,
            false,
        ),
    ];
    for (i, (principal, role, policy, settings, allowed)) in table.into_iter().enumerate() {
        let access = FunctionAccess::new(FUNCTION_ARN, None, policy);
        let got = access.authorize_invoke(&principal, role.as_ref(), ACCOUNT, settings);
        assert_eq!(
            got.is_ok(),
            allowed,
            "row {i}: {principal} with {settings:?}: {got:?}"
        );
        if let Err(denied) = got {
            assert_eq!(denied.principal, principal.to_string());
            assert_eq!(denied.action, "lambda:InvokeFunction");
            assert_eq!(denied.resource, FUNCTION_ARN);
            assert!(
                !denied.to_string().contains("sns"),
                "the policy does not leak: {denied}"
            );
        }
    }
}

async fn echo(runtime: &Runtime, name: &str, role: Option<ExecutionRole>) {
    let mut function = Function::new(
        name,
        handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
    );
    if let Some(role) = role {
        function = function.with_role(role);
    }
    runtime.register(function).await.expect("register");
}

/// A function whose handler calls `target` through its context and answers with the result.
async fn calling(runtime: &Runtime, name: &str, target: &'static str, role: Option<ExecutionRole>) {
    let mut function = Function::new(
        name,
        handler_fn(move |v: Value, ctx: Context| async move {
            match ctx.invoke_json(target, v).await {
                Ok(out) => Ok::<_, FunctionError>(json!({"ok": out})),
                Err(CallError::Invoke(InvokeError::AccessDenied(denied))) => {
                    Ok(json!({"denied": denied.to_string()}))
                }
                Err(other) => Ok(json!({"error": other.to_string()})),
            }
        }),
    );
    if let Some(role) = role {
        function = function.with_role(role);
    }
    runtime.register(function).await.expect("register");
}

#[tokio::test(start_paused = true)]
async fn ctx_invoke_needs_the_role_to_allow_it() {
    let runtime = Runtime::default();
    let target_arn = "arn:aws:lambda:us-east-1:000000000000:function:billing";
    echo(&runtime, "billing", None).await;
    let silent = ExecutionRole::new("arn:aws:iam::000000000000:role/orders").unwrap();
    calling(&runtime, "orders", "billing", Some(silent.clone())).await;
    let out = runtime.invoke_json("orders", json!(7)).await.unwrap();
    assert_eq!(
        out["denied"],
        format!("function:orders is not authorized to perform: lambda:InvokeFunction on resource: {target_arn}")
    );
    assert_eq!(runtime.metrics("billing").unwrap().access_denied, 1);
    assert_eq!(runtime.metrics("billing").unwrap().invocations, 0);

    // With the statement added to the role, it succeeds.
    let allowing = silent.allow(["lambda:InvokeFunction"], [target_arn]);
    calling(&runtime, "orders-allowed", "billing", Some(allowing)).await;
    let out = runtime
        .invoke_json("orders-allowed", json!(7))
        .await
        .unwrap();
    assert_eq!(out, json!({"ok": 7}));

    // Or with a policy statement on the target naming the caller's role.
    calling(
        &runtime,
        "orders-granted",
        "billing",
        Some(ExecutionRole::new("arn:aws:iam::000000000000:role/granted").unwrap()),
    )
    .await;
    assert!(runtime
        .invoke_json("orders-granted", json!(1))
        .await
        .unwrap()["denied"]
        .is_string());
    runtime
        .add_permission(
            "billing",
            &Permission::new(
                "orders",
                "lambda:InvokeFunction",
                "arn:aws:iam::000000000000:role/granted",
            ),
            None,
        )
        .unwrap();
    assert_eq!(
        runtime
            .invoke_json("orders-granted", json!(1))
            .await
            .unwrap(),
        json!({"ok": 1})
    );
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn async_calls_from_a_function_are_checked_when_offered() {
    let runtime = Runtime::default();
    echo(&runtime, "sink", None).await;
    let role = ExecutionRole::new("arn:aws:iam::000000000000:role/src").unwrap();
    runtime
        .register(
            Function::new(
                "src",
                handler_fn(|v: Value, ctx: Context| async move {
                    match ctx.invoke_async_json("sink", v) {
                        Ok(_) => Ok::<_, FunctionError>(json!("queued")),
                        Err(AsyncCallError::Rejected(r)) => match r.reason {
                            RejectReason::AccessDenied(_) => Ok(json!("denied")),
                            other => Ok(json!(format!("{other:?}"))),
                        },
                        Err(other) => Ok(json!(other.to_string())),
                    }
                }),
            )
            .with_role(role),
        )
        .await
        .unwrap();
    assert_eq!(
        runtime.invoke_json("src", json!(1)).await.unwrap(),
        json!("denied")
    );
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn pushing_callers_are_checked_on_every_invoke_and_once_per_async_event() {
    let runtime = Runtime::new(RuntimeConfig::default().with_permissions_required(true)).unwrap();
    echo(&runtime, "thumbs", None).await;
    let s3 = |bucket: &str| Principal::Service {
        service: "s3.amazonaws.com".into(),
        source_arn: Some(format!("arn:aws:s3:::{bucket}").into()),
        source_account: Some(ACCOUNT.into()),
    };
    let sync = |p: Principal| {
        let runtime = runtime.clone();
        async move {
            runtime
                .invoke_json_as(p, "thumbs", json!(1), InvokeOptions::default())
                .await
                .result
        }
    };
    // Required, and no policy: refused, and the handler never ran.
    assert!(matches!(
        sync(s3("photos")).await,
        Err(CallError::Invoke(InvokeError::AccessDenied(_)))
    ));
    runtime
        .add_permission(
            "thumbs",
            &Permission::new("s3", "lambda:InvokeFunction", "s3.amazonaws.com")
                .with_source_arn("arn:aws:s3:::photo?")
                .with_source_account(ACCOUNT),
            None,
        )
        .unwrap();
    assert_eq!(sync(s3("photos")).await.unwrap(), json!(1));
    assert!(matches!(
        sync(s3("videos")).await,
        Err(CallError::Invoke(InvokeError::AccessDenied(_)))
    ));
    let rejected = runtime
        .invoke_async_json_as(s3("videos"), "thumbs", json!(2))
        .unwrap_err();
    match rejected {
        AsyncCallError::Rejected(r) => {
            assert!(matches!(r.reason, RejectReason::AccessDenied(_)));
            assert_eq!(r.event, json!(2), "the event is handed back");
        }
        other => panic!("{other:?}"),
    }
    runtime
        .invoke_async_json_as(s3("photos"), "thumbs", json!(3))
        .unwrap();
    let metrics = runtime.metrics("thumbs").unwrap();
    assert_eq!(metrics.access_denied, 3);
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
    assert_eq!(runtime.metrics("thumbs").map(|m| m.successes), Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_policy_api_round_trips() {
    let runtime = Runtime::default();
    echo(&runtime, "api", None).await;
    assert!(matches!(
        runtime.get_policy("api"),
        Err(PolicyError::NoPolicy(_))
    ));
    assert!(matches!(
        runtime.get_policy("nope"),
        Err(PolicyError::NotFound(_))
    ));
    let added = runtime
        .add_permission(
            "api",
            &Permission::new("a", "lambda:InvokeFunction", "111122223333"),
            None,
        )
        .unwrap();
    assert_eq!(
        added.statement.principal,
        Some(PrincipalSpec::Aws(vec![
            "arn:aws:iam::111122223333:root".into()
        ]))
    );
    let policy = runtime.get_policy("api").unwrap();
    assert_eq!(policy.revision_id, added.revision_id);
    assert_eq!(policy.document["Statement"][0]["Sid"], "a");
    assert_eq!(
        policy.document["Statement"][0]["Principal"],
        json!({"AWS": "arn:aws:iam::111122223333:root"})
    );
    assert!(matches!(
        runtime.add_permission(
            "api",
            &Permission::new("a", "lambda:InvokeFunction", "*"),
            None
        ),
        Err(PolicyError::DuplicateSid(_))
    ));
    assert!(matches!(
        runtime.add_permission(
            "api",
            &Permission::new("b", "lambda:InvokeFunction", "*"),
            Some("stale")
        ),
        Err(PolicyError::RevisionMismatch)
    ));
    let invalid = runtime
        .add_permission("api", &Permission::new("c", "lambda:Nope", "*"), None)
        .unwrap_err();
    assert!(
        matches!(&invalid, PolicyError::Invalid(e) if e.field == "action"),
        "{invalid}"
    );
    runtime
        .add_permission(
            "api",
            &Permission::new("b", "lambda:*", "*"),
            Some(&policy.revision_id),
        )
        .unwrap();
    assert_eq!(
        runtime.get_policy("api").unwrap().document["Statement"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(matches!(
        runtime.remove_permission("api", "zz", None),
        Err(PolicyError::NoSuchSid(_))
    ));
    runtime.remove_permission("api", "a", None).unwrap();
    runtime.remove_permission("api", "b", None).unwrap();
    assert!(matches!(
        runtime.get_policy("api"),
        Err(PolicyError::NoPolicy(_))
    ));
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn roles_are_validated_and_read_from_policy_documents() {
    let error = ExecutionRole::new("arn:aws:iam::123:role/x").unwrap_err();
    assert_eq!(error.field, "role");
    assert!(ExecutionRole::new("arn:aws:iam::000000000000:user/x").is_err());
    let role = ExecutionRole::from_policy(
        ROLE_ARN,
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["SQS:Receive*", "sqs:DeleteMessage"], "Resource": "arn:aws:sqs:*:000000000000:jobs-*"},
            {"Effect": "Deny", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:000000000000:jobs-secret"}
        ]}),
    )
    .unwrap();
    let queue = "arn:aws:sqs:us-east-1:000000000000:jobs-1";
    assert!(role
        .allows_all(&["sqs:ReceiveMessage", "sqs:DeleteMessage"], queue)
        .is_ok());
    assert_eq!(
        role.allows_all(&["sqs:ReceiveMessage", "sqs:GetQueueAttributes"], queue),
        Err("sqs:GetQueueAttributes")
    );
    assert!(role
        .allows_all(
            &["sqs:ReceiveMessage"],
            "arn:aws:sqs:us-east-1:000000000000:jobs-secret"
        )
        .is_err());
    assert_eq!(role.account(), ACCOUNT);
    let _ = Arc::new(role);
}

#[tokio::test(start_paused = true)]
async fn function_credentials_map_back_to_the_function_until_it_is_unregistered() {
    use nimbus_core::{init_fn, AwsCredentials, InitContext};
    let runtime = Runtime::default();
    runtime.set_lambda_endpoint(Some("http://127.0.0.1:9001".into()));
    let seen = Arc::new(parking_lot::Mutex::new(None));
    let seen_in = Arc::clone(&seen);
    runtime
        .register(Function::with_factory(
            "signer",
            init_fn(move |ctx: InitContext| {
                let seen = Arc::clone(&seen_in);
                async move {
                    *seen.lock() = Some((ctx.credentials(), ctx.lambda_endpoint()));
                    Ok::<_, FunctionError>(handler_fn(|v: Value, _ctx: Context| async move {
                        Ok::<_, FunctionError>(v)
                    }))
                }
            }),
        ))
        .await
        .unwrap();
    runtime.invoke_json("signer", json!(1)).await.unwrap();
    let (credentials, endpoint) = seen.lock().clone().expect("init ran");
    let credentials: AwsCredentials = credentials.expect("a registered function has credentials");
    assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9001"));
    assert!(credentials.access_key_id.starts_with("ASIA") && credentials.access_key_id.len() == 20);
    assert_eq!(credentials.secret_access_key.len(), 40);
    assert!(!format!("{credentials:?}").contains(&credentials.secret_access_key));
    // The same pair every time, mapping back to the function.
    assert_eq!(
        runtime.function_credentials("signer"),
        Some(credentials.clone())
    );
    assert_eq!(
        runtime.credentials_of(&credentials.access_key_id),
        Some((
            credentials.secret_access_key.clone(),
            Principal::Function("signer".into())
        ))
    );
    runtime
        .unregister("signer", std::time::Duration::from_secs(1))
        .await;
    assert_eq!(runtime.credentials_of(&credentials.access_key_id), None);
    assert_eq!(runtime.function_credentials("signer"), None);
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A handle acting as a principal is checked on every invocation: a policy change takes
/// effect on the next one, on the same thread, with the same shared principal.
#[tokio::test(start_paused = true)]
async fn a_policy_change_applies_to_the_next_invocation_of_the_same_caller() {
    let runtime = Runtime::new(RuntimeConfig::default().with_permissions_required(true)).unwrap();
    let handle = runtime
        .register(Function::new(
            "guarded",
            handler_fn(|v: u32, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        ))
        .await
        .unwrap();
    let partner = handle.acting_as(Principal::Identity {
        arn: USER_ARN.into(),
        account: OTHER_ACCOUNT.into(),
        org_id: None,
    });
    let denied = |r: Result<u32, InvokeError>| matches!(r, Err(InvokeError::AccessDenied(_)));
    assert!(denied(partner.invoke(1).await));
    assert!(
        denied(partner.invoke(2).await),
        "a remembered refusal stays one"
    );
    runtime
        .add_permission(
            "guarded",
            &Permission::new("partner", "lambda:InvokeFunction", OTHER_ACCOUNT),
            None,
        )
        .unwrap();
    assert_eq!(partner.invoke(3).await.unwrap(), 3);
    assert_eq!(partner.invoke(4).await.unwrap(), 4);
    runtime
        .remove_permission("guarded", "partner", None)
        .unwrap();
    assert!(denied(partner.invoke(5).await));
    // Another principal with the same identity is decided on its own, and equally.
    let again = handle.acting_as(Principal::Identity {
        arn: USER_ARN.into(),
        account: OTHER_ACCOUNT.into(),
        org_id: None,
    });
    assert!(denied(again.invoke(6).await));
    let metrics = runtime.metrics("guarded").unwrap();
    assert_eq!((metrics.access_denied, metrics.successes), (4, 2));
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A call made with a function's credentials (through an HTTP front end) acts as the
/// function: its role decides, on the direct path and in a dry run alike.
#[tokio::test(start_paused = true)]
async fn invoking_as_a_function_is_checked_by_its_role() {
    let runtime = Runtime::default();
    echo(&runtime, "ledger", None).await;
    echo(
        &runtime,
        "signer",
        Some(ExecutionRole::new(ROLE_ARN).unwrap()),
    )
    .await;
    let as_signer = || Principal::Function("signer".into());
    let direct = runtime
        .invoke_json_as(as_signer(), "ledger", json!(1), InvokeOptions::default())
        .await
        .result;
    assert!(
        matches!(direct, Err(CallError::Invoke(InvokeError::AccessDenied(_)))),
        "{direct:?}"
    );
    assert!(matches!(
        runtime.invoke_async_json_as(as_signer(), "ledger", json!(2)),
        Err(AsyncCallError::Rejected(r)) if matches!(r.reason, RejectReason::AccessDenied(_))
    ));
    assert!(runtime.authorize_invoke("ledger", &as_signer()).is_err());
    assert!(runtime.authorize_invoke("ledger", &Principal::Host).is_ok());
    assert!(matches!(
        runtime.authorize_invoke("nope", &Principal::Host),
        Err(CallError::Lookup(_))
    ));
    let ledger_arn = runtime.function_arn("ledger").unwrap();
    runtime
        .set_role(
            "signer",
            Some(
                ExecutionRole::new(ROLE_ARN)
                    .unwrap()
                    .allow(["lambda:InvokeFunction"], [ledger_arn]),
            ),
        )
        .unwrap();
    assert!(runtime.authorize_invoke("ledger", &as_signer()).is_ok());
    let direct = runtime
        .invoke_json_as(as_signer(), "ledger", json!(3), InvokeOptions::default())
        .await
        .result;
    assert_eq!(direct.unwrap(), json!(3));
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn negated_operators_hold_when_the_key_is_absent() {
    let not_from = statement(
        "not-partner-org",
        Effect::Deny,
        PrincipalSpec::Any,
        vec![ConditionEntry {
            operator: Operator::StringNotEquals,
            key: "aws:PrincipalOrgID".into(),
            values: vec!["o-ours".into()],
        }],
    );
    let allow = statement("all", Effect::Allow, PrincipalSpec::Any, vec![]);
    let policy = CompiledPolicy::compile(&[allow, not_from], FUNCTION_ARN);
    let mut request = AccessRequest::new(
        Requester::Aws {
            arn: USER_ARN,
            account: OTHER_ACCOUNT,
        },
        Action::InvokeFunction,
    );
    // No organization at all: the negated condition holds, so the deny applies.
    assert_eq!(
        policy.evaluate(&request),
        Decision::Deny("not-partner-org".into())
    );
    request.principal_org_id = Some("o-theirs");
    assert_eq!(
        policy.evaluate(&request),
        Decision::Deny("not-partner-org".into())
    );
    request.principal_org_id = Some("o-ours");
    assert_eq!(policy.evaluate(&request), Decision::Allow("all".into()));
}

#[tokio::test(start_paused = true)]
async fn grants_and_revisions_are_checked() {
    let runtime = Runtime::default();
    echo(&runtime, "one", None).await;
    echo(&runtime, "two", None).await;
    // A bucket is not a principal.
    let error = runtime
        .add_permission(
            "one",
            &Permission::new("b", "lambda:InvokeFunction", "arn:aws:s3:::bucket"),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(&error, PolicyError::Invalid(e) if e.field == "principal"),
        "{error}"
    );
    assert!(matches!(
        runtime.remove_permission("one", "b", None),
        Err(PolicyError::NoPolicy(_))
    ));
    let grant = Permission::new("s", "lambda:InvokeFunction", "*");
    let one = runtime
        .add_permission("one", &grant, None)
        .unwrap()
        .revision_id;
    let two = runtime
        .add_permission("two", &grant, None)
        .unwrap()
        .revision_id;
    assert_ne!(one, two, "revision ids are the function's own");
    assert_eq!(one.len(), 36);
    // One function's revision id is no good for the other.
    assert!(matches!(
        runtime.remove_permission("two", "s", Some(&one)),
        Err(PolicyError::RevisionMismatch)
    ));
    runtime.remove_permission("two", "s", Some(&two)).unwrap();
    // A policy stating a key twice under one operator is refused at registration.
    let twice = |values: &str| ConditionEntry {
        operator: Operator::StringEquals,
        key: "AWS:SourceAccount".into(),
        values: vec![values.into()],
    };
    let function = Function::new(
        "twice",
        handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
    )
    .with_policy_statement(statement(
        "t",
        Effect::Allow,
        PrincipalSpec::Any,
        vec![twice("1"), twice("2")],
    ));
    let error = runtime.register(function).await.unwrap_err();
    assert!(error.to_string().contains("policy"), "{error}");
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A destination that names what it reaches, as a queue adapter would.
struct NamedQueue(&'static str);

#[nimbus_core::async_trait]
impl nimbus_core::Destination<Value, Value> for NamedQueue {
    async fn deliver(
        &self,
        _record: nimbus_core::InvocationRecord<Value, Value>,
    ) -> Result<(), nimbus_core::DeliveryError<nimbus_core::InvocationRecord<Value, Value>>> {
        Ok(())
    }

    fn target(&self) -> Option<nimbus_core::DestinationTarget> {
        Some(nimbus_core::DestinationTarget::new(
            "sqs:SendMessage",
            self.0,
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn destinations_are_checked_against_the_role_when_configured() {
    let runtime = Runtime::default();
    let queue = "arn:aws:sqs:us-east-1:000000000000:failures";
    let function = |name: &str, role: ExecutionRole| {
        Function::new(
            name,
            handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        )
        .with_role(role)
        .with_on_failure(NamedQueue(queue))
    };
    let silent = ExecutionRole::new(ROLE_ARN)
        .unwrap()
        .allow(["sqs:ReceiveMessage"], [queue]);
    let error = runtime
        .register(function("no-send", silent))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("role") && text.contains("sqs:SendMessage") && text.contains("on_failure"),
        "{text}"
    );
    let sending = ExecutionRole::new(ROLE_ARN)
        .unwrap()
        .allow(["sqs:SendMessage"], [queue]);
    runtime.register(function("sends", sending)).await.unwrap();
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
}
