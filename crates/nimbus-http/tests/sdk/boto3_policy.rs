//! boto3 1.44 against a function's policy: `AddPermission`, `GetPolicy` and `RemovePermission`
//! in the shapes boto3 parses, and the modelled exceptions of each refusal.

use std::time::Duration;

use nimbus_core::Runtime;
use serde_json::{json, Value};

use crate::support::{boto3, python, serve, unique, Probe};

/// The JSON inside a JSON string field (`Statement`, `Policy`).
fn inner(out: &Value, field: &str) -> Value {
    let text = out[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {out}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{field}: {e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_added_read_and_removed_as_lambda_shapes_them() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("guarded");
    let _probe = Probe::register(&runtime, &name, false).await;
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{name}");
    let serving = serve(&runtime).await;
    let call = |method: &str, args: Value| json!({"op": "call", "method": method, "args": args, "max_attempts": 1});

    let out = boto3(
        &python,
        &serving,
        call("get_policy", json!({"FunctionName": name})),
    )
    .await;
    assert_eq!(
        out["exception"], "ResourceNotFoundException",
        "no policy yet: {out}"
    );
    assert_eq!(out["status"], 404);

    let out = boto3(
        &python,
        &serving,
        call(
            "add_permission",
            json!({"FunctionName": name, "StatementId": "s3-photos",
                   "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com",
                   "SourceArn": "arn:aws:s3:::photos", "SourceAccount": "123456789012"}),
        ),
    )
    .await;
    assert_eq!(out["status"], 201, "{out}");
    let s3 = json!({"Sid": "s3-photos", "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction",
        "Resource": arn,
        "Condition": {"StringEquals": {"AWS:SourceAccount": "123456789012"},
                      "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::photos"}}});
    assert_eq!(inner(&out, "Statement"), s3);
    let out = boto3(
        &python,
        &serving,
        call("get_policy", json!({"FunctionName": name})),
    )
    .await;
    let first_revision = out["RevisionId"].as_str().unwrap().to_owned();

    // By its ARN, as an account grant.
    let out = boto3(
        &python,
        &serving,
        call(
            "add_permission",
            json!({"FunctionName": arn, "StatementId": "partner",
                   "Action": "lambda:InvokeFunction", "Principal": "111122223333",
                   "RevisionId": first_revision}),
        ),
    )
    .await;
    assert_eq!(out["status"], 201, "{out}");

    let out = boto3(
        &python,
        &serving,
        call("get_policy", json!({"FunctionName": name})),
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    let revision = out["RevisionId"].as_str().unwrap().to_owned();
    assert!(!revision.is_empty() && revision != first_revision, "{out}");
    let policy = inner(&out, "Policy");
    assert_eq!(policy["Version"], "2012-10-17");
    let partner = json!({"Sid": "partner", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "lambda:InvokeFunction", "Resource": arn});
    assert_eq!(policy["Statement"], json!([s3, partner]));

    let out = boto3(
        &python,
        &serving,
        call(
            "add_permission",
            json!({"FunctionName": name, "StatementId": "partner",
                   "Action": "lambda:InvokeFunction", "Principal": "444455556666"}),
        ),
    )
    .await;
    assert_eq!(out["exception"], "ResourceConflictException", "{out}");
    assert_eq!(out["status"], 409);

    let out = boto3(
        &python,
        &serving,
        call(
            "add_permission",
            json!({"FunctionName": name, "StatementId": "bad",
                   "Action": "lambda:InvokeFunction", "Principal": "who?"}),
        ),
    )
    .await;
    assert_eq!(out["exception"], "InvalidParameterValueException", "{out}");
    assert_eq!(out["status"], 400);

    let out = boto3(
        &python,
        &serving,
        call(
            "remove_permission",
            json!({"FunctionName": name, "StatementId": "partner",
                   "RevisionId": first_revision}),
        ),
    )
    .await;
    assert_eq!(
        out["exception"], "PreconditionFailedException",
        "stale: {out}"
    );
    assert_eq!(out["status"], 412);
    let out = boto3(
        &python,
        &serving,
        call(
            "add_permission",
            json!({"FunctionName": name, "StatementId": "late",
                   "Action": "lambda:InvokeFunction", "Principal": "*",
                   "RevisionId": first_revision}),
        ),
    )
    .await;
    assert_eq!(
        out["exception"], "PreconditionFailedException",
        "stale: {out}"
    );

    let out = boto3(
        &python,
        &serving,
        call(
            "remove_permission",
            json!({"FunctionName": name, "StatementId": "partner", "RevisionId": revision}),
        ),
    )
    .await;
    assert_eq!(out["status"], 204, "{out}");
    let out = boto3(
        &python,
        &serving,
        call("get_policy", json!({"FunctionName": name})),
    )
    .await;
    assert_eq!(inner(&out, "Policy")["Statement"], json!([s3]));

    let out = boto3(
        &python,
        &serving,
        call(
            "remove_permission",
            json!({"FunctionName": name, "StatementId": "partner"}),
        ),
    )
    .await;
    assert_eq!(out["exception"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["status"], 404);

    let missing = unique("missing");
    let out = boto3(
        &python,
        &serving,
        call("get_policy", json!({"FunctionName": missing})),
    )
    .await;
    assert_eq!(out["exception"], "ResourceNotFoundException", "{out}");
    assert!(out["message"]
        .as_str()
        .unwrap()
        .ends_with(&format!("function:{missing}")));
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
