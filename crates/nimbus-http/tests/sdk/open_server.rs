//! A server without credentials (the default) is open to the host's clients, but a request
//! signed with a key the runtime issued a function still acts as that function: a bad
//! signature is refused and its role decides. With credentials, an unsigned request is
//! anonymous and needs a policy statement. Driven with curl.

use std::time::Duration;

use nimbus_core::permission::ExecutionRole;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_http::{Credentials, HttpConfig, Server, Serving};
use serde_json::Value;

/// curl's answer to a POST of `body` to `path`, with `headers`: (status, body).
async fn post(serving: &Serving, path: &str, headers: &[String], body: &str) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json", "--data", body]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(format!("http://{}{path}", serving.local_addr()))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

async fn echo(runtime: &Runtime, name: &str, role: Option<ExecutionRole>) {
    let mut function = Function::new(
        name,
        handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
    );
    if let Some(role) = role {
        function = function.with_role(role);
    }
    runtime.register(function).await.expect("registered");
}

async fn serve(runtime: &Runtime, config: HttpConfig) -> Serving {
    Server::new(runtime.clone())
        .with_config(config.with_bind("127.0.0.1:0".parse().expect("an address")))
        .bind()
        .await
        .expect("bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_still_verifies_a_function_s_own_key() {
    let runtime = Runtime::default();
    echo(&runtime, "open-ledger", None).await;
    let role = ExecutionRole::new("arn:aws:iam::000000000000:role/signer")
        .expect("a role")
        .deny(["lambda:*"], ["*"]);
    echo(&runtime, "open-signer", Some(role)).await;
    let issued = runtime.function_credentials("open-signer").expect("issued");
    let serving = serve(&runtime, HttpConfig::default()).await;
    assert_eq!(
        runtime.lambda_endpoint(),
        Some(format!("http://{}", serving.local_addr()))
    );
    let invoke = "/2015-03-31/functions/open-ledger/invocations";
    // The host's client, unsigned or with a key nobody issued: the host.
    assert_eq!(post(&serving, invoke, &[], "{\"n\":1}").await.0, 200);
    let dummy = "authorization: AWS4-HMAC-SHA256 Credential=x/20261206/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".to_owned();
    let date = "x-amz-date: 20261206T030000Z".to_owned();
    assert_eq!(
        post(&serving, invoke, &[dummy, date.clone()], "{\"n\":2}")
            .await
            .0,
        200
    );
    // The function's own key with a signature that is not its: refused, and nothing ran.
    let forged = format!(
        "authorization: AWS4-HMAC-SHA256 Credential={}/20261206/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        issued.access_key_id
    );
    let (status, body) = post(
        &serving,
        invoke,
        &[forged.clone(), date.clone()],
        "{\"n\":3}",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let policy = "/2015-03-31/functions/open-ledger/policy";
    let grant =
        "{\"StatementId\":\"open\",\"Action\":\"lambda:InvokeFunction\",\"Principal\":\"*\"}";
    assert_eq!(post(&serving, policy, &[forged, date], grant).await.0, 403);
    assert_eq!(
        runtime.metrics("open-ledger").expect("ledger").invocations,
        2
    );
    serving.stop().await;
    assert_eq!(
        runtime.lambda_endpoint(),
        None,
        "stopping forgets the endpoint"
    );
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_credentials_an_unsigned_caller_needs_a_statement() {
    let runtime = Runtime::default();
    echo(&runtime, "closed-ledger", None).await;
    let serving = serve(
        &runtime,
        HttpConfig::default().with_credentials(Credentials::new()),
    )
    .await;
    let invoke = "/2015-03-31/functions/closed-ledger/invocations";
    let (status, body) = post(&serving, invoke, &[], "{\"n\":1}").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("anonymous is not authorized"), "{body}");
    runtime
        .add_permission(
            "closed-ledger",
            &nimbus_core::permission::Permission::new("anyone", "lambda:InvokeFunction", "*"),
            None,
        )
        .expect("a valid grant");
    let (status, body) = post(&serving, invoke, &[], "{\"n\":2}").await;
    assert_eq!((status, body.as_str()), (200, "{\"n\":2}"));
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
