//! A Python process instance calling another function through boto3, unmodified, as Lambda
//! code does: nimbus gives it its function's credentials and the Invoke API's URL, and the
//! call is allowed or refused by the calling function's role.

use std::time::Duration;

use nimbus_core::permission::ExecutionRole;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_http::{HttpConfig, Server};
use serde_json::{json, Value};

use crate::support::{register, unique, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_instance_calling_through_boto3_is_checked_by_its_role() {
    let Some(config) = Client::Python.config() else {
        return;
    };
    let runtime = Runtime::default();
    let ledger = unique("ledger");
    runtime
        .register(Function::new(
            &ledger,
            handler_fn(|v: Value, _ctx: Context| async move {
                Ok::<_, FunctionError>(json!({ "ledger": v }))
            }),
        ))
        .await
        .expect("registered");
    let caller = unique("boto3-caller");
    let role = ExecutionRole::new("arn:aws:iam::000000000000:role/boto3-caller").expect("a role");
    let registered = register(
        &runtime,
        &caller,
        config.with_handler("caller.handler"),
        Duration::from_secs(30),
        |f| f.with_role(role.clone()),
    )
    .await;
    // The default server, without credentials of its own: the instance signs with the keys
    // nimbus gave its function, and its calls act as that function.
    let serving = Server::new(runtime.clone())
        .with_config(HttpConfig::default().with_bind("127.0.0.1:0".parse().expect("an address")))
        .bind()
        .await
        .expect("bound");
    let event = json!({ "target": ledger, "payload": { "n": 1 } });

    // The role says nothing of the ledger: boto3 gets the modelled 403.
    let answer = registered
        .handle
        .invoke(event.clone())
        .await
        .expect("the caller ran");
    assert_eq!(answer["error"], "AccessDeniedException", "{answer}");
    assert_eq!(answer["status"], 403);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains(&caller)),
        "names the calling function: {answer}"
    );
    assert_eq!(runtime.metrics(&ledger).expect("ledger").invocations, 0);

    // With the statement added to the role, the same warm instance gets through.
    let ledger_arn = runtime.function_arn(&ledger).expect("an ARN");
    runtime
        .set_role(
            &caller,
            Some(role.allow(["lambda:InvokeFunction"], [ledger_arn])),
        )
        .expect("the caller exists");
    let answer = registered
        .handle
        .invoke(event)
        .await
        .expect("the caller ran");
    assert_eq!(answer, json!({ "ok": { "ledger": { "n": 1 } } }));
    let ledger_metrics = runtime.metrics(&ledger).expect("ledger");
    assert_eq!(
        (ledger_metrics.successes, ledger_metrics.access_denied),
        (1, 1)
    );
    assert_eq!(runtime.metrics(&caller).expect("caller").cold_starts, 1);

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(5)).await;
}
