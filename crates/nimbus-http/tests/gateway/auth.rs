//! Route authorization end to end: API keys sent with curl, and SigV4 signatures for
//! `execute-api` made by botocore (and curl's `--aws-sigv4`), against functions whose policies
//! decide.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nimbus_core::permission::Permission;
use nimbus_core::{
    handler_fn, Context, Function, FunctionError, Principal, Runtime, RuntimeConfig,
};
use nimbus_http::{ApiKeys, Credentials, HttpConfig, PayloadVersion, Route, RouteAuth, Serving};
use serde_json::{json, Value};

use super::{args, curl, finish, serve, url, Answer};

const PARTNER_ARN: &str = "arn:aws:iam::111122223333:user/partner";
const STRANGER_ARN: &str = "arn:aws:iam::999988887777:user/stranger";
const PARTNER_KEY: &str = "partner-key-0123456789-abcdef";
const STRANGER_KEY: &str = "stranger-key-0123456789-abcdef";
const ACCESS_KEY: &str = "AKIAGATEWAYTEST";
const SECRET: &str = "gateway-test-secret";
const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
    signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
    service documentation for details.";

fn identity(arn: &str) -> Principal {
    let account = arn.split(':').nth(4).unwrap_or_default();
    Principal::Identity {
        arn: Arc::from(arn),
        account: Arc::from(account),
        org_id: None,
    }
}

/// A name unique to this process and call.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Registers `name`, which answers with its event's `requestContext.identity` (1.0) and
/// `requestContext.authorizer` (2.0); the count of its invocations.
async fn register_counted(runtime: &Runtime, name: &str) -> Arc<AtomicU32> {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let function = Function::new(
        name,
        handler_fn(move |event: Value, _ctx: Context| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let context = &event["requestContext"];
                let seen = json!({
                    "identity": context["identity"],
                    "authorizer": context["authorizer"],
                    "body": event["body"],
                });
                Ok::<_, FunctionError>(json!({
                    "statusCode": 200,
                    "headers": {"content-type": "application/json"},
                    "body": seen.to_string(),
                }))
            }
        }),
    );
    runtime.register(function).await.unwrap();
    calls
}

/// Asserts a 403 with `message` and `x-amzn-ErrorType: error_type`.
fn assert_refused(answer: &Answer, message: &str, error_type: &str) {
    assert_eq!(
        answer.status,
        403,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json(), json!({ "message": message }));
    assert_eq!(answer.header("x-amzn-ErrorType"), [error_type]);
    assert_eq!(answer.header("apigw-requestid").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_routes_take_known_keys_and_the_policy_decides() {
    let runtime = Runtime::new(RuntimeConfig::default().with_permissions_required(true)).unwrap();
    let name = unique("gw_keyed");
    let calls = register_counted(&runtime, &name).await;
    let grant = Permission::new("partner", "lambda:InvokeFunction", PARTNER_ARN);
    runtime.add_permission(&name, &grant, None).unwrap();
    let keys = ApiKeys::new()
        .with_key(PARTNER_KEY, identity(PARTNER_ARN))
        .with_key(STRANGER_KEY, identity(STRANGER_ARN));
    let serving = serve(
        &runtime,
        HttpConfig::default().with_api_keys(keys),
        vec![
            Route::new("GET", "/keyed", name.as_str())
                .unwrap()
                .with_payload(PayloadVersion::V1)
                .with_auth(RouteAuth::ApiKey),
            Route::new("GET", "/keyed/v2", name.as_str())
                .unwrap()
                .with_auth(RouteAuth::ApiKey),
            Route::new("GET", "/open", name.as_str()).unwrap(),
        ],
    )
    .await;
    let with_key = |key: &str| args(&["-H", &format!("x-api-key: {key}")]);

    let answer = curl(url(&serving, "/keyed"), with_key(PARTNER_KEY)).await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_eq!(seen["identity"]["apiKey"], PARTNER_KEY);
    assert_eq!(seen["identity"]["sourceIp"], "127.0.0.1");
    let answer = curl(url(&serving, "/keyed/v2"), with_key(PARTNER_KEY)).await;
    assert_eq!(answer.status, 200);

    let answer = curl(url(&serving, "/keyed"), vec![]).await;
    assert_refused(&answer, "Forbidden", "ForbiddenException");
    let answer = curl(
        url(&serving, "/keyed"),
        with_key(&format!("{PARTNER_KEY}0")),
    )
    .await;
    assert_refused(&answer, "Forbidden", "ForbiddenException");
    // A known key whose identity the policy does not name: refused, and not told why.
    let answer = curl(url(&serving, "/keyed/v2"), with_key(STRANGER_KEY)).await;
    assert_refused(&answer, "Forbidden", "ForbiddenException");

    // An open route invokes as the host, unchecked even when permissions are required.
    let answer = curl(url(&serving, "/open"), vec![]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "refused requests ran nothing"
    );
    finish(serving, runtime).await;
}

/// Where `.ci/clients` installs botocore (with boto3).
fn python() -> Option<PathBuf> {
    let dir = match std::env::var_os("NIMBUS_CLIENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/nimbus/clients")
        }
    };
    let python = dir.join("venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    let message = format!(
        "botocore is not installed at {}: run .ci/clients first",
        python.display()
    );
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// One request by botocore's SigV4 signer (unless `command` says `unsigned`): the status,
/// headers and JSON body it got.
async fn botocore(python: &PathBuf, serving: &Serving, path: &str, command: Value) -> Value {
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/drivers/gateway_sigv4.py"
    );
    let mut command = command;
    command["url"] = json!(url(serving, path));
    command["region"] = json!("us-east-1");
    let output = tokio::process::Command::new(python)
        .arg(driver)
        .arg(command.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut answer: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let body = answer["body"].as_str().unwrap_or_default().to_owned();
    answer["body"] = serde_json::from_str(&body).unwrap_or(Value::String(body));
    answer
}

fn signed_by(access_key: &str, secret: &str) -> Value {
    json!({"access_key": access_key, "secret_key": secret})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_routes_take_requests_botocore_signs_for_execute_api() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("gw_signed");
    let calls = register_counted(&runtime, &name).await;
    // The partner is another account: it needs a statement, as in Lambda.
    runtime
        .add_permission(
            &name,
            &nimbus_core::permission::Permission::new(
                "partner",
                "lambda:InvokeFunction",
                "111122223333",
            ),
            None,
        )
        .unwrap();
    let credentials = Credentials::new().with_key(ACCESS_KEY, SECRET, identity(PARTNER_ARN));
    let serving = serve(
        &runtime,
        HttpConfig::default().with_credentials(credentials),
        vec![
            Route::new("POST", "/signed/{id}", name.as_str())
                .unwrap()
                .with_payload(PayloadVersion::V1)
                .with_auth(RouteAuth::AwsIam),
            Route::new("GET", "/signed", name.as_str())
                .unwrap()
                .with_auth(RouteAuth::AwsIam),
        ],
    )
    .await;

    // A body, an encoded path and a query, all signed.
    let mut post = signed_by(ACCESS_KEY, SECRET);
    post["method"] = json!("POST");
    post["body"] = json!(r#"{"n": 1}"#);
    let answer = botocore(&python, &serving, "/signed/a%20b?x=1&y=z", post).await;
    assert_eq!(answer["status"], 200, "{answer}");
    let identity = &answer["body"]["identity"];
    assert_eq!(identity["userArn"], PARTNER_ARN);
    assert_eq!(identity["accountId"], "111122223333");
    assert_eq!(identity["accessKey"], ACCESS_KEY);
    assert_eq!(answer["body"]["body"], r#"{"n": 1}"#);

    let mut get = signed_by(ACCESS_KEY, SECRET);
    get["method"] = json!("GET");
    let answer = botocore(&python, &serving, "/signed", get.clone()).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(
        answer["body"]["authorizer"]["iam"]["userArn"], PARTNER_ARN,
        "{answer}"
    );

    let refusals = [
        (
            json!({"method": "GET", "unsigned": true}),
            "Missing Authentication Token",
            "MissingAuthenticationTokenException",
        ),
        (
            json!({"method": "GET", "access_key": ACCESS_KEY, "secret_key": "a guess"}),
            SIGNATURE_MISMATCH,
            "InvalidSignatureException",
        ),
        (
            json!({"method": "GET", "access_key": ACCESS_KEY, "secret_key": SECRET,
                   "service": "lambda"}),
            "Credential should be scoped to correct service: 'execute-api'.",
            "InvalidSignatureException",
        ),
        (
            json!({"method": "GET", "access_key": "AKIAUNKNOWNKEY", "secret_key": SECRET}),
            "The security token included in the request is invalid.",
            "UnrecognizedClientException",
        ),
    ];
    for (command, message, error_type) in refusals {
        let answer = botocore(&python, &serving, "/signed", command.clone()).await;
        assert_eq!(answer["status"], 403, "{command}: {answer}");
        assert_eq!(answer["body"], json!({ "message": message }), "{command}");
        assert_eq!(answer["headers"]["x-amzn-errortype"], error_type);
    }

    // curl signs too (`--aws-sigv4`), with the signer's name for the service.
    let answer = curl(
        url(&serving, "/signed"),
        args(&[
            "--aws-sigv4",
            "aws:amz:us-east-1:execute-api",
            "--user",
            &format!("{ACCESS_KEY}:{SECRET}"),
        ]),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "refused requests ran nothing"
    );
    finish(serving, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_the_policy_refuses_gets_forbidden() {
    let Some(python) = python() else { return };
    let runtime = Runtime::new(RuntimeConfig::default().with_permissions_required(true)).unwrap();
    let name = unique("gw_guarded");
    let calls = register_counted(&runtime, &name).await;
    let credentials = Credentials::new().with_key(ACCESS_KEY, SECRET, identity(STRANGER_ARN));
    let serving = serve(
        &runtime,
        HttpConfig::default().with_credentials(credentials),
        vec![Route::new("GET", "/guarded", name.as_str())
            .unwrap()
            .with_auth(RouteAuth::AwsIam)],
    )
    .await;
    let mut get = signed_by(ACCESS_KEY, SECRET);
    get["method"] = json!("GET");
    let answer = botocore(&python, &serving, "/guarded", get.clone()).await;
    assert_eq!(answer["status"], 403, "{answer}");
    assert_eq!(answer["body"], json!({"message": "Forbidden"}));
    assert_eq!(answer["headers"]["x-amzn-errortype"], "ForbiddenException");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Once the policy names the signer, the same request goes through.
    let grant = Permission::new("stranger", "lambda:InvokeFunction", STRANGER_ARN);
    runtime.add_permission(&name, &grant, None).unwrap();
    let answer = botocore(&python, &serving, "/guarded", get).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    finish(serving, runtime).await;
}
