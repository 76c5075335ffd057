//! What a handler's context says in Lambda's names: ARN, version, log group and stream,
//! trace header, client context and identity.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_core::{
    handler_fn, init_fn, ClientApplication, ClientContext, CognitoIdentity, Context, Function,
    FunctionError, InitContext, InvokeOptions, Runtime, RuntimeConfig,
};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// What a context says, as JSON.
fn describe(ctx: &Context) -> Value {
    json!({
        "arn": ctx.invoked_function_arn(),
        "version": ctx.function_version(),
        "group": ctx.log_group_name(),
        "stream": ctx.log_stream_name(),
        "trace": ctx.xray_trace_id(),
        "client": ctx.client_context(),
        "identity": ctx.identity(),
    })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn assert_log_stream_shape(stream: &str) {
    // YYYY/MM/DD/[$LATEST]<32 hex>
    let (date, rest) = stream.split_at(11);
    let parts: Vec<&str> = date.trim_end_matches('/').split('/').collect();
    assert_eq!(parts.len(), 3, "{stream}");
    assert!(
        parts[0].len() == 4 && parts[1].len() == 2 && parts[2].len() == 2,
        "{stream}"
    );
    let hex = rest.strip_prefix("[$LATEST]").expect(stream);
    assert!(is_hex(hex, 32), "{stream}");
}

async fn runtime_in(region: &str, account: &str) -> Runtime {
    Runtime::new(
        RuntimeConfig::default()
            .with_region(region)
            .with_account_id(account),
    )
    .unwrap()
}

#[tokio::test]
async fn a_context_names_the_function_as_lambda_does() {
    let rt = runtime_in("eu-west-2", "123456789012").await;
    let init_stream = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let seen = Arc::clone(&init_stream);
    let handle = rt
        .register(Function::with_factory(
            "orders",
            init_fn(move |init: InitContext| {
                seen.lock().push((
                    init.function_arn().to_owned(),
                    init.log_group_name().to_owned(),
                    init.log_stream_name().to_owned(),
                ));
                assert_eq!(init.function_version(), "$LATEST");
                async move {
                    Ok::<_, FunctionError>(handler_fn(|_: Value, ctx: Context| async move {
                        Ok::<_, FunctionError>(describe(&ctx))
                    }))
                }
            }),
        ))
        .await
        .unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = handle.invoke(json!(null)).await.unwrap();
    let second = handle.invoke(json!(null)).await.unwrap();
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    assert_eq!(
        first["arn"],
        "arn:aws:lambda:eu-west-2:123456789012:function:orders"
    );
    assert_eq!(first["arn"], handle.arn());
    assert_eq!(first["version"], "$LATEST");
    assert_eq!(first["group"], "/aws/lambda/orders");
    let stream = first["stream"].as_str().unwrap();
    assert_log_stream_shape(stream);
    // One instance served both: one log stream, the one its init phase saw.
    assert_eq!(second["stream"], stream);
    let init = init_stream.lock().clone();
    assert_eq!(
        init,
        vec![(
            "arn:aws:lambda:eu-west-2:123456789012:function:orders".to_owned(),
            "/aws/lambda/orders".to_owned(),
            stream.to_owned()
        )]
    );
    assert_eq!(first["client"], Value::Null);
    assert_eq!(first["identity"], Value::Null);

    // Root=1-<8 hex epoch secs>-<24 hex>;Parent=<16 hex>;Sampled=0, one per invocation.
    let trace = first["trace"].as_str().unwrap();
    let rest = trace.strip_prefix("Root=1-").expect(trace);
    let (epoch, rest) = rest.split_once('-').expect(trace);
    let (root, rest) = rest.split_once(";Parent=").expect(trace);
    let parent = rest.strip_suffix(";Sampled=0").expect(trace);
    assert!(
        is_hex(epoch, 8) && is_hex(root, 24) && is_hex(parent, 16),
        "{trace}"
    );
    let epoch = u64::from_str_radix(epoch, 16).unwrap();
    assert!(
        (before..=after).contains(&epoch),
        "{epoch} not in {before}..={after}"
    );
    assert_ne!(second["trace"], first["trace"]);
}

#[tokio::test(start_paused = true)]
async fn a_trace_header_is_the_same_on_every_call() {
    let rt = runtime_in("us-east-1", "000000000000").await;
    let handle = rt
        .register(Function::new(
            "f",
            handler_fn(|_: (), ctx: Context| async move {
                let first = ctx.xray_trace_id().into_owned();
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                Ok::<_, FunctionError>(first == ctx.xray_trace_id())
            }),
        ))
        .await
        .unwrap();
    assert!(handle.invoke(()).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn callers_set_the_trace_header_client_context_and_identity() {
    let rt = runtime_in("us-east-1", "000000000000").await;
    let handle = rt
        .register(Function::new(
            "f",
            handler_fn(
                |_: Value, ctx: Context| async move { Ok::<_, FunctionError>(describe(&ctx)) },
            ),
        ))
        .await
        .unwrap();
    let client = ClientContext {
        client: ClientApplication {
            installation_id: "install".into(),
            app_title: "Orders".into(),
            app_version_name: "1.2".into(),
            app_version_code: "12".into(),
            app_package_name: "com.example.orders".into(),
        },
        custom: [("tenant".to_owned(), "acme".to_owned())].into(),
        environment: [("platform".to_owned(), "Android".to_owned())].into(),
    };
    let identity = CognitoIdentity {
        identity_id: "us-east-1:abc".into(),
        identity_pool_id: "us-east-1:pool".into(),
    };
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let options = InvokeOptions::default()
        .with_trace_id(trace)
        .with_client_context(client)
        .with_identity(identity);
    let seen = handle
        .invoke_with(json!(null), options)
        .await
        .result
        .unwrap();
    assert_eq!(seen["trace"], trace);
    // Lambda's JSON field names.
    assert_eq!(
        seen["client"],
        json!({
            "client": {
                "installationId": "install",
                "appTitle": "Orders",
                "appVersionName": "1.2",
                "appVersionCode": "12",
                "appPackageName": "com.example.orders"
            },
            "custom": {"tenant": "acme"},
            "environment": {"platform": "Android"}
        })
    );
    assert_eq!(
        seen["identity"],
        json!({"cognitoIdentityId": "us-east-1:abc", "cognitoIdentityPoolId": "us-east-1:pool"})
    );
}

#[test]
fn a_detached_context_has_lambda_names_too() {
    let ctx = Context::detached("alone", Duration::from_secs(3));
    assert_eq!(
        ctx.invoked_function_arn(),
        "arn:aws:lambda:us-east-1:000000000000:function:alone"
    );
    assert_eq!(ctx.log_group_name(), "/aws/lambda/alone");
    assert_log_stream_shape(ctx.log_stream_name());
    assert!(ctx.xray_trace_id().starts_with("Root=1-"));
    let unbounded = Context::detached("alone", Duration::MAX);
    assert!(unbounded.xray_trace_id().ends_with(";Sampled=0"));
}

#[tokio::test(start_paused = true)]
async fn calls_by_name_pass_options_through() {
    let rt = runtime_in("us-east-1", "000000000000").await;
    rt.register(Function::new(
        "f",
        handler_fn(|_: Value, ctx: Context| async move { Ok::<_, FunctionError>(describe(&ctx)) }),
    ))
    .await
    .unwrap();
    let identity = CognitoIdentity {
        identity_id: "id".into(),
        identity_pool_id: "pool".into(),
    };
    let seen = rt
        .invoke_json_with(
            "f",
            json!(null),
            InvokeOptions::default()
                .with_trace_id("Root=1-00000000-000000000000000000000001")
                .with_identity(identity),
        )
        .await
        .unwrap();
    assert_eq!(seen["trace"], "Root=1-00000000-000000000000000000000001");
    assert_eq!(seen["identity"]["cognitoIdentityId"], "id");
    assert_eq!(seen["client"], Value::Null);
}
