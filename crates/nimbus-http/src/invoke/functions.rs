//! `ListFunctions` and `GetFunction`: function configurations in the shapes boto3 accepts.

use std::time::SystemTime;

use nimbus_core::{FunctionConfig, Runtime};
use serde_json::{json, Value};

/// Lambda's `LastModified`: `2026-11-27T10:00:00.000+0000` (a string, not a timestamp).
pub(crate) fn last_modified(at: SystemTime) -> String {
    let rfc = nimbus_core::util::aws::rfc3339_millis(at);
    match rfc.strip_suffix('Z') {
        Some(stem) => format!("{stem}+0000"),
        None => rfc,
    }
}

/// A `FunctionConfiguration`.
pub(crate) fn configuration(
    runtime: &Runtime,
    name: &str,
    arn: &str,
    config: &FunctionConfig,
    since: &str,
) -> Value {
    let account = &runtime.config().account_id;
    // The execution role as it stands; a function without one shows a role named for it, as
    // Lambda has no function without a role.
    let role = runtime.function_role(name).map_or_else(
        || format!("arn:aws:iam::{account}:role/nimbus-{name}"),
        |role| role.arn().to_owned(),
    );
    json!({
        "FunctionName": name,
        "FunctionArn": arn,
        "Runtime": "provided.al2023",
        "Role": role,
        "Handler": name,
        "CodeSize": 0,
        "Description": "",
        "Timeout": config.timeout.as_secs().max(1),
        "MemorySize": config.memory_mb,
        "LastModified": since,
        "CodeSha256": "",
        "Version": "$LATEST",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    })
}

/// `GET /2015-03-31/functions`: sorted by name, `MaxItems` per page, `Marker` = the last name
/// of the previous page.
pub(crate) fn list(
    runtime: &Runtime,
    marker: Option<&str>,
    max_items: usize,
    since: &str,
) -> Value {
    let names = runtime.function_names();
    let start = marker.map_or(0, |m| names.partition_point(|n| n.as_str() <= m));
    let mut functions = Vec::new();
    let mut last = None;
    for name in names.iter().skip(start) {
        if functions.len() == max_items {
            break;
        }
        let (Some(config), Some(arn)) = (runtime.function_config(name), runtime.function_arn(name))
        else {
            continue; // unregistered meanwhile
        };
        functions.push(configuration(runtime, name, &arn, &config, since));
        last = Some(name.clone());
    }
    let more = last
        .as_ref()
        .is_some_and(|l| names.last().is_some_and(|end| end > l));
    json!({
        "Functions": functions,
        "NextMarker": if more { last.map(Value::String).unwrap_or(Value::Null) } else { Value::Null },
    })
}

/// `GET /2015-03-31/functions/{name}`.
pub(crate) fn get(
    runtime: &Runtime,
    name: &str,
    arn: &str,
    config: &FunctionConfig,
    since: &str,
) -> Value {
    let mut out = json!({
        "Configuration": configuration(runtime, name, arn, config, since),
        "Code": {"RepositoryType": "S3", "Location": ""},
        "Tags": {},
    });
    if let Some(reserved) = config.reserved_concurrency() {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_has_lambdas_offset_form() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_237_600_123);
        let text = last_modified(at);
        assert!(text.ends_with(".123+0000"), "{text}");
    }
}
