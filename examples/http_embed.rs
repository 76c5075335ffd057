//! A host application serves its in-process functions over HTTP: the Lambda Invoke API that
//! the AWS SDKs speak, and an API gateway route.
//!
//! ```sh
//! cargo run --example http_embed              # serve, call it once with boto3 (or curl), stop
//! cargo run --example http_embed -- --serve   # serve until Ctrl-C
//! ```
//!
//! While it serves, any unmodified AWS client reaches it through the environment alone:
//!
//! ```sh
//! AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9001 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//!   AWS_DEFAULT_REGION=us-east-1 aws lambda invoke --function-name greet \
//!   --payload '{"name":"ada"}' out.json
//! curl http://127.0.0.1:9001/hello/ada
//! ```

use std::time::Duration;

use nimbus::http::{HttpConfig, Route, Server};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let runtime = Runtime::default();
    // One in-process function, reached by the Invoke API as `greet` and by the gateway route.
    runtime
        .register(Function::new(
            "greet",
            handler_fn(|event: Value, _ctx: Context| async move {
                // Invoked directly: {"name": ...}; through the gateway: a proxy event.
                let name = event["name"]
                    .as_str()
                    .or_else(|| event["pathParameters"]["name"].as_str())
                    .unwrap_or("world")
                    .to_owned();
                Ok::<_, FunctionError>(json!({ "greeting": format!("hello, {name}") }))
            }),
        ))
        .await?;
    let bind = if serve_forever {
        "127.0.0.1:9001"
    } else {
        "127.0.0.1:0"
    };
    let serving = Server::new(runtime.clone())
        .with_config(HttpConfig::default().with_bind(bind.parse()?))
        .route(Route::new("GET", "/hello/{name}", "greet")?)
        .bind()
        .await?;
    let endpoint = format!("http://{}", serving.local_addr());
    println!("serving `greet` at {endpoint} (Invoke API and GET /hello/{{name}})");

    if serve_forever {
        tokio::signal::ctrl_c().await?;
    } else {
        let answer = tokio::task::spawn_blocking({
            let endpoint = endpoint.clone();
            move || call_with_boto3(&endpoint)
        })
        .await??;
        println!("{answer}");
        assert!(answer.contains("hello, ada"), "unexpected answer: {answer}");
    }
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Invokes `greet` with boto3 from the clients venv (`.ci/clients`), or with curl when boto3
/// is not installed.
fn call_with_boto3(endpoint: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let dir = std::env::var_os("NIMBUS_CLIENTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/nimbus/clients")
        });
    let python = dir.join("venv/bin/python");
    let output = if python.exists() {
        println!("calling it with boto3, configured only by AWS_ENDPOINT_URL_LAMBDA");
        std::process::Command::new(python)
            .args([
                "-c",
                "import boto3; r = boto3.client('lambda').invoke(FunctionName='greet', \
                 Payload=b'{\"name\": \"ada\"}'); print(r['StatusCode'], r['Payload'].read().decode())",
            ])
            .env("AWS_ENDPOINT_URL_LAMBDA", endpoint)
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()?
    } else {
        println!("boto3 is not installed (.ci/clients installs it): calling it with curl");
        std::process::Command::new("curl")
            .args(["-sS", "-d", r#"{"name": "ada"}"#])
            .arg(format!("{endpoint}/2015-03-31/functions/greet/invocations"))
            .output()?
    };
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned().into());
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}
