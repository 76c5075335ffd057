//! boto3 1.44 against a server with credentials: requests signed with a known key invoke as
//! its identity, so that the function's policy decides; a refused invoke raises
//! `AccessDeniedException`; a wrong secret, an unknown key and an unsigned request each get
//! the error AWS gives them.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{Principal, Runtime, RuntimeConfig};
use nimbus_http::{Credentials, HttpConfig};
use serde_json::{json, Value};

use crate::support::{boto3, python, serve_with, unique, Probe};

const PARTNER_KEY: &str = "AKIAPARTNEREXAMPLE";
const PARTNER_SECRET: &str = "partner/secret+EXAMPLE";
const OWNER_KEY: &str = "AKIAOWNEREXAMPLE";
const OWNER_SECRET: &str = "owner-secret-EXAMPLE";
const PARTNER_ARN: &str = "arn:aws:iam::111122223333:user/partner";

fn identity(arn: &str, account: &str) -> Principal {
    Principal::Identity {
        arn: Arc::from(arn),
        account: Arc::from(account),
        org_id: None,
    }
}

fn credentials() -> Credentials {
    Credentials::new()
        .with_key(
            PARTNER_KEY,
            PARTNER_SECRET,
            identity(PARTNER_ARN, "111122223333"),
        )
        .with_key(
            OWNER_KEY,
            OWNER_SECRET,
            identity("arn:aws:iam::000000000000:role/ops", "000000000000"),
        )
}

/// `command` signed with the key `key` and `secret`, one attempt.
fn signed(key: &str, secret: &str, command: Value) -> Value {
    let mut command = command;
    command["access_key"] = json!(key);
    command["secret_key"] = json!(secret);
    command["max_attempts"] = json!(1);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_is_the_caller_and_a_refused_invoke_raises_access_denied() {
    let Some(python) = python() else { return };
    let runtime = Runtime::new(RuntimeConfig::default().with_permissions_required(true)).unwrap();
    let name = unique("signed");
    let mut probe = Probe::register(&runtime, &name, false).await;
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{name}");
    let serving = serve_with(
        &runtime,
        HttpConfig::default().with_credentials(credentials()),
    )
    .await;
    let invoke = json!({"op": "invoke", "function": name, "payload": r#"{"n": 1}"#});
    let partner = |command: &Value| signed(PARTNER_KEY, PARTNER_SECRET, command.clone());
    let owner = |command: &Value| signed(OWNER_KEY, OWNER_SECRET, command.clone());

    // No statement names the partner's account: refused, sync and async, and nothing ran.
    let denied = format!(
        "{PARTNER_ARN} is not authorized to perform: lambda:InvokeFunction on resource: {arn}"
    );
    for command in [invoke.clone(), {
        let mut event = invoke.clone();
        event["invocation_type"] = json!("Event");
        event
    }] {
        let out = boto3(&python, &serving, partner(&command)).await;
        // boto3's Lambda model has no AccessDeniedException: a ClientError with its code.
        assert_eq!(out["exception"], "ClientError", "{out}");
        assert_eq!(out["code"], "AccessDeniedException", "{out}");
        assert_eq!(out["status"], 403);
        assert_eq!(out["message"], denied);
    }

    // A dry run is checked as well, and runs nothing.
    let mut dry_run = invoke.clone();
    dry_run["invocation_type"] = json!("DryRun");
    let out = boto3(&python, &serving, partner(&dry_run)).await;
    assert_eq!(out["code"], "AccessDeniedException", "{out}");

    // The partner cannot grant itself the invoke; the owner's account can.
    let grant = json!({"op": "call", "method": "add_permission",
        "args": {"FunctionName": name, "StatementId": "partner",
                 "Action": "lambda:InvokeFunction", "Principal": "111122223333"}});
    let out = boto3(&python, &serving, partner(&grant)).await;
    assert_eq!(out["code"], "AccessDeniedException", "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("lambda:AddPermission"),
        "{out}"
    );
    // Reads of settings too: only the runtime's own account.
    let get = json!({"op": "get", "function": name, "max_attempts": 1});
    let out = boto3(&python, &serving, partner(&get)).await;
    assert_eq!(out["code"], "AccessDeniedException", "{out}");
    let out = boto3(&python, &serving, owner(&get)).await;
    assert_eq!(out["Configuration"]["FunctionArn"], arn, "{out}");
    let out = boto3(&python, &serving, owner(&invoke)).await;
    assert_eq!(out["StatusCode"], 200, "same account, trusted: {out}");
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 1}));
    let out = boto3(&python, &serving, owner(&grant)).await;
    assert_eq!(out["status"], 201, "{out}");

    let out = boto3(&python, &serving, partner(&dry_run)).await;
    assert_eq!(out["StatusCode"], 204, "now granted: {out}");
    let out = boto3(&python, &serving, partner(&invoke)).await;
    assert_eq!(out["StatusCode"], 200, "now granted: {out}");
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 1}));

    // Unsigned: anonymous, whom no statement names.
    let mut anonymous = invoke.clone();
    anonymous["unsigned"] = json!(true);
    anonymous["max_attempts"] = json!(1);
    let out = boto3(&python, &serving, anonymous).await;
    assert_eq!(out["code"], "AccessDeniedException", "{out}");
    assert!(
        out["message"].as_str().unwrap().starts_with("anonymous is"),
        "{out}"
    );
    let out = boto3(
        &python,
        &serving,
        json!({"op": "list", "unsigned": true, "max_attempts": 1}),
    )
    .await;
    assert_eq!(out["code"], "AccessDeniedException", "nobody lists: {out}");

    let out = boto3(
        &python,
        &serving,
        signed(PARTNER_KEY, "not the secret", invoke.clone()),
    )
    .await;
    assert_eq!(out["code"], "InvalidSignatureException", "{out}");
    assert_eq!(out["status"], 403);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match"),
        "{out}"
    );
    let out = boto3(
        &python,
        &serving,
        signed("AKIAUNKNOWN", PARTNER_SECRET, invoke.clone()),
    )
    .await;
    assert_eq!(out["code"], "UnrecognizedClientException", "{out}");
    assert_eq!(out["status"], 403);
    assert_eq!(
        out["message"],
        "The security token included in the request is invalid."
    );

    // A client clock ten minutes off either way: the signature is out of its time.
    for (offset, starts) in [
        (-600, "Signature expired: "),
        (600, "Signature not yet current: "),
    ] {
        let mut skewed = partner(&invoke);
        skewed["clock_offset_secs"] = json!(offset);
        let out = boto3(&python, &serving, skewed).await;
        assert_eq!(out["code"], "InvalidSignatureException", "{out}");
        assert_eq!(out["status"], 403);
        assert!(
            out["message"].as_str().unwrap().starts_with(starts),
            "{out}"
        );
    }

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
    assert!(
        probe.events.try_recv().is_err(),
        "no refused invoke ran the function"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_by_arn_with_a_qualifier_and_a_body_verifies() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("signed");
    let mut probe = Probe::register(&runtime, &name, false).await;
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
        .expect("a valid grant");
    let serving = serve_with(
        &runtime,
        HttpConfig::default().with_credentials(credentials()),
    )
    .await;
    // The ARN's colons are percent-encoded in the path, and encoded again when signed.
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{name}");
    let out = boto3(
        &python,
        &serving,
        signed(
            PARTNER_KEY,
            PARTNER_SECRET,
            json!({"op": "invoke", "function": arn, "qualifier": "$LATEST",
                   "payload": r#"{"text": "a b+c/d ü"}"#}),
        ),
    )
    .await;
    assert_eq!(
        out["StatusCode"], 200,
        "the partner's statement allows it: {out}"
    );
    assert_eq!(
        probe.events.recv().await.unwrap(),
        json!({"text": "a b+c/d ü"})
    );
    // Policy reads by the owner's account, with a query string that is signed too.
    let out = boto3(
        &python,
        &serving,
        signed(
            OWNER_KEY,
            OWNER_SECRET,
            json!({"op": "call", "method": "remove_permission",
                   "args": {"FunctionName": name, "StatementId": "none",
                            "RevisionId": "a b+c/d"}}),
        ),
    )
    .await;
    assert_eq!(
        out["exception"], "PreconditionFailedException",
        "signature verified, then the revision checked: {out}"
    );
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
