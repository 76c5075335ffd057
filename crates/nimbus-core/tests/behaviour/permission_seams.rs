//! The permission model's seams, each a hole a review found: a caller unregistered while it
//! runs, a principal naming no function, a handle acting as a function, provisioned instances'
//! credentials, statements that would widen when a field or key is ignored, and keys standing
//! for principals that are never checked.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::permission::{parse_policy_document, Decision, ExecutionRole};
use nimbus_core::{
    handler_fn, init_fn, CallError, Context, Function, FunctionError, InitContext, InvokeError,
    InvokeOptions, Principal, Runtime,
};
use serde_json::{json, Value};

const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/caller";

async fn echo(runtime: &Runtime, name: &str) {
    runtime
        .register(Function::new(
            name,
            handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        ))
        .await
        .expect("register");
}

/// A function whose role denies calling `ledger` is refused, also while it is being
/// unregistered (it is then out of the registry, so its role cannot be checked).
#[tokio::test(start_paused = true)]
async fn a_draining_function_calls_without_its_role() {
    let runtime = Runtime::default();
    echo(&runtime, "ledger").await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
    let denying = ExecutionRole::new(ROLE_ARN)
        .unwrap()
        .deny(["lambda:*"], ["*"]);
    runtime
        .register(
            Function::new(
                "caller",
                handler_fn(move |v: Value, ctx: Context| {
                    let (g, s) = (Arc::clone(&g), Arc::clone(&s));
                    async move {
                        if v == json!("wait") {
                            let released = g.notified();
                            s.notify_one();
                            released.await;
                        }
                        match ctx.invoke_json("ledger", json!(1)).await {
                            Ok(out) => Ok::<_, FunctionError>(json!({"ok": out})),
                            Err(CallError::Invoke(InvokeError::AccessDenied(_))) => {
                                Ok(json!("denied"))
                            }
                            Err(other) => Ok(json!({"error": other.to_string()})),
                        }
                    }
                }),
            )
            .with_role(denying),
        )
        .await
        .unwrap();
    assert_eq!(
        runtime.invoke_json("caller", json!("go")).await.unwrap(),
        json!("denied")
    );
    let rt = runtime.clone();
    let call = tokio::spawn(async move { rt.invoke_json("caller", json!("wait")).await });
    started.notified().await;
    let rt = runtime.clone();
    let unreg = tokio::spawn(async move { rt.unregister("caller", Duration::from_secs(5)).await });
    // Unregister takes the function out of the registry before it waits for the draining.
    while runtime.function_names().contains(&"caller".to_owned()) {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let out = call.await.unwrap().unwrap();
    assert!(unreg.await.unwrap().is_some());
    assert_eq!(
        out,
        json!("denied"),
        "a draining caller is refused, not trusted"
    );
}

/// A function principal naming no registered function has no role to check: refused.
#[tokio::test(start_paused = true)]
async fn a_principal_naming_no_function_is_refused() {
    let runtime = Runtime::new(nimbus_core::RuntimeConfig::default()).unwrap();
    echo(&runtime, "ledger").await;
    let r = runtime
        .invoke_json_as(
            Principal::Function("ghost".into()),
            "ledger",
            json!(1),
            InvokeOptions::default(),
        )
        .await
        .result;
    assert!(
        matches!(r, Err(CallError::Invoke(InvokeError::AccessDenied(_)))),
        "{r:?}"
    );
    assert!(runtime
        .authorize_invoke("ledger", &Principal::Function("ghost".into()))
        .is_err());
}

/// A handle acting as a function cannot see that function's role: refused (the runtime's
/// `invoke_json_as` checks it instead).
#[tokio::test(start_paused = true)]
async fn a_handle_acting_as_a_function_is_refused() {
    let runtime = Runtime::default();
    let ledger = runtime
        .register(Function::new(
            "ledger",
            handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        ))
        .await
        .unwrap();
    runtime
        .register(
            Function::new(
                "signer",
                handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
            )
            .with_role(
                ExecutionRole::new(ROLE_ARN)
                    .unwrap()
                    .deny(["lambda:*"], ["*"]),
            ),
        )
        .await
        .unwrap();
    let as_signer = ledger.acting_as(Principal::Function("signer".into()));
    let r = as_signer.invoke(json!(1)).await;
    assert!(matches!(r, Err(InvokeError::AccessDenied(_))), "{r:?}");
    assert!(matches!(
        as_signer.invoke_async(json!(2)),
        Err(nimbus_core::Rejected {
            reason: nimbus_core::RejectReason::AccessDenied(_),
            ..
        })
    ));
}

/// A provisioned instance starts before its function is in the registry, and still gets its
/// credentials.
#[tokio::test(start_paused = true)]
async fn provisioned_instances_get_their_credentials() {
    let runtime = Runtime::default();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    runtime
        .register(
            Function::with_factory(
                "proc",
                init_fn(move |ctx: InitContext| {
                    let s = Arc::clone(&s);
                    async move {
                        s.lock().push(ctx.credentials().is_some());
                        Ok::<_, FunctionError>(handler_fn(|v: Value, _ctx: Context| async move {
                            Ok::<_, FunctionError>(v)
                        }))
                    }
                }),
            )
            .with_min_instances(1),
        )
        .await
        .unwrap();
    assert_eq!(
        *seen.lock(),
        vec![true],
        "provisioned init saw no credentials"
    );
    runtime.shutdown(Duration::from_secs(1)).await;
}

/// `NotResource` (and the other fields nimbus does not evaluate) are refused: dropped, an Allow
/// meant for everything but `admin` would allow `admin`.
#[test]
fn fields_nimbus_does_not_evaluate_are_refused() {
    let doc = json!({"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
        "NotResource": "arn:aws:lambda:us-east-1:000000000000:function:admin"}]});
    let role = ExecutionRole::from_policy(ROLE_ARN, &doc);
    match role {
        Err(_) => {}
        Ok(role) => assert!(
            !matches!(
                role.evaluate(
                    "lambda:InvokeFunction",
                    "arn:aws:lambda:us-east-1:000000000000:function:admin"
                ),
                Decision::Allow(_)
            ),
            "NotResource ignored: admin allowed"
        ),
    }
    // Same for a function policy: a Deny with NotPrincipal/NotResource...
    let p = parse_policy_document(&json!({"Statement": [{"Effect": "Allow", "Principal": "*",
        "Action": "lambda:InvokeFunction", "NotResource": "arn:aws:lambda:us-east-1:000000000000:function:f"}]}));
    assert!(p.is_err(), "NotResource accepted: {p:?}");
}

/// A role statement with a condition is refused: nimbus evaluates none on roles, and ignored,
/// a conditional Allow would allow unconditionally.
#[test]
fn role_conditions_are_refused() {
    let doc = json!({"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*",
        "Condition": {"StringEquals": {"aws:SourceAccount": "999999999999"}}}]});
    let error = ExecutionRole::from_policy(ROLE_ARN, &doc).unwrap_err();
    assert_eq!(error.field, "role");
}

/// A condition on a key nimbus does not evaluate (`aws:PrincipalArn`) is refused: evaluated as
/// absent, a Deny on it would never apply.
#[test]
fn a_condition_key_nimbus_does_not_evaluate_is_refused() {
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:f";
    let error = parse_policy_document(&json!({"Statement": [
        {"Sid": "no-bob", "Effect": "Deny", "Principal": "*", "Action": "lambda:InvokeFunction", "Resource": arn,
         "Condition": {"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/bob"}}}
    ]}))
    .unwrap_err();
    assert!(error.to_string().contains("aws:PrincipalArn"), "{error}");
}

/// A key may stand only for an identity: one standing for a mapping or the host would let its
/// holder skip every policy.
#[tokio::test(start_paused = true)]
async fn keys_stand_only_for_identities() {
    use nimbus_core::permission::{Effect, PrincipalSpec, Statement};
    let runtime = Runtime::default();
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:locked";
    runtime
        .register(
            Function::new(
                "locked",
                handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
            )
            .with_policy_statement(Statement {
                sid: "deny-all".into(),
                effect: Effect::Deny,
                principal: Some(PrincipalSpec::Any),
                actions: vec!["lambda:*".into()],
                resources: vec![arn.into()],
                conditions: vec![],
            }),
        )
        .await
        .unwrap();
    let anon = runtime
        .invoke_json_as(
            Principal::Anonymous,
            "locked",
            json!(1),
            InvokeOptions::default(),
        )
        .await
        .result;
    assert!(anon.is_err());
    let creds = nimbus_core::AwsCredentials::generate();
    for principal in [
        Principal::EventSource("anything".into()),
        Principal::Host,
        Principal::Function("locked".into()),
    ] {
        let error = runtime
            .add_credentials(creds.clone(), principal)
            .unwrap_err();
        assert_eq!(error.field, "principal");
    }
    assert_eq!(runtime.credentials_of(&creds.access_key_id), None);
    runtime.shutdown(Duration::from_secs(1)).await;
}

/// A second review: across accounts both the role and the policy must allow; with the model
/// off nothing is refused; a function policy's statement must name its principal; and a
/// registration that is cancelled leaves no credentials behind.
#[tokio::test(start_paused = true)]
async fn cross_accounts_enforcement_off_principal_less_statements_and_cancelled_registrations() {
    use nimbus_core::permission::{
        AccessSettings, Effect, FunctionAccess, PrincipalSpec, Statement,
    };
    let target = "arn:aws:lambda:us-east-1:000000000000:function:target";
    let abroad = "arn:aws:iam::444455556666:role/abroad";
    let grant = Statement {
        sid: "abroad".into(),
        effect: Effect::Allow,
        principal: Some(PrincipalSpec::Aws(vec![abroad.into()])),
        actions: vec!["lambda:InvokeFunction".into()],
        resources: vec![target.into()],
        conditions: vec![],
    };
    let access = FunctionAccess::new(target, None, vec![grant]);
    let caller = Principal::Function("caller".into());
    let silent = ExecutionRole::new(abroad).unwrap();
    let allowing = silent.clone().allow(["lambda:InvokeFunction"], [target]);
    let settings = AccessSettings::default();
    assert!(access
        .authorize_invoke(&caller, Some(&silent), "000000000000", settings)
        .is_err());
    assert!(access
        .authorize_invoke(&caller, Some(&allowing), "000000000000", settings)
        .is_ok());

    // The model off: a handle acting as a function is not refused.
    let off = Runtime::new(nimbus_core::RuntimeConfig::default().with_permissions_enforced(false))
        .unwrap();
    let ledger = off
        .register(Function::new(
            "ledger",
            handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        ))
        .await
        .unwrap();
    assert_eq!(
        ledger
            .acting_as(caller.clone())
            .invoke(json!(1))
            .await
            .unwrap(),
        json!(1)
    );
    let ghost = off
        .invoke_json_as(
            Principal::Function("ghost".into()),
            "ledger",
            json!(2),
            InvokeOptions::default(),
        )
        .await
        .result;
    assert_eq!(ghost.unwrap(), json!(2));
    off.shutdown(Duration::from_secs(1)).await;

    let runtime = Runtime::default();
    let principal_less = Statement {
        sid: "nobody".into(),
        effect: Effect::Deny,
        principal: None,
        actions: vec!["lambda:InvokeFunction".into()],
        resources: vec!["*".into()],
        conditions: vec![],
    };
    let error = runtime
        .register(
            Function::new(
                "no-principal",
                handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
            )
            .with_policy_statement(principal_less),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Principal"), "{error}");

    // A registration whose provisioned init never ends, given up by its caller.
    let slow = Function::with_factory(
        "slow",
        init_fn(|_ctx: InitContext| async move {
            std::future::pending::<()>().await;
            Ok::<_, FunctionError>(handler_fn(|v: Value, _ctx: Context| async move {
                Ok::<_, FunctionError>(v)
            }))
        }),
    )
    .with_min_instances(1);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), runtime.register(slow))
            .await
            .is_err()
    );
    assert_eq!(
        runtime.function_credentials("slow"),
        None,
        "no key outlives a cancelled registration"
    );
    runtime.shutdown(Duration::from_secs(1)).await;
}
