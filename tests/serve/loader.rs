//! The loader: a valid file, and mistakes that name their line and field.

use nimbus::serve::{ServeError, ServeFile};

use crate::support::{parse, BUCKET, EXAMPLE};

fn error_of(text: &str) -> ServeError {
    parse(text).expect_err("the file has a mistake")
}

const TWO_FUNCTIONS: &str = r#"
[[functions]]
name = "orders"
command = "python3"

[[functions]]
name = "host-side"
"#;

#[test]
fn the_example_file_is_valid() {
    let file = ServeFile::load(EXAMPLE).expect("examples/serve.toml is valid");
    assert_eq!(file.function_names(), ["orders", "shipping"]);
}

#[test]
fn an_unknown_field_names_its_line_and_field() {
    let error = error_of(&format!("{TWO_FUNCTIONS}memory = 128\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "memory"));
    assert!(
        error
            .to_string()
            .starts_with("nimbus.toml:8: `memory`: unknown field"),
        "{error}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_line_and_field() {
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = \"ten\"\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "timeout"));
    let error = error_of("[[routes]]\nmethod = \"GET\"\npath = \"/\"\nfunction = \"f\"\nthrottle = { rate = \"x\", burst = 1 }\n");
    assert_eq!((error.line, error.field.as_str()), (Some(5), "rate"));
}

#[test]
fn a_route_to_an_undeclared_function_names_its_line() {
    let text = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/b\"\nfunction = \"ordres\"\n"
    );
    let error = error_of(&text);
    assert_eq!((error.line, error.field.as_str()), (Some(17), "function"));
    assert!(error.message.contains("`ordres`"), "{error}");
}

#[test]
fn an_invalid_value_is_checked_by_the_runtime_and_names_its_line() {
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = 3\nmemory_mb = 1\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(9), "memory_mb"));
    assert!(error.message.contains("128"), "the allowed range: {error}");
    let error = error_of(&format!("{TWO_FUNCTIONS}timeout = -1\n"));
    assert_eq!((error.line, error.field.as_str()), (Some(8), "timeout"));
}

#[test]
fn references_to_queues_and_payloads_are_checked() {
    let error = error_of(&format!(
        "{TWO_FUNCTIONS}\n[[mappings]]\nfunction = \"orders\"\nqueue = \"nowhere\"\n"
    ));
    assert_eq!((error.line, error.field.as_str()), (Some(11), "queue"));
    let error = error_of(&format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/\"\nfunction = \"orders\"\npayload = \"3.0\"\n"
    ));
    assert_eq!((error.line, error.field.as_str()), (Some(13), "payload"));
}

#[tokio::test]
async fn a_function_without_command_must_come_from_the_host() {
    let file = parse(TWO_FUNCTIONS).unwrap();
    let error = file
        .start(nimbus::Runtime::default())
        .await
        .expect_err("host-side is not provided");
    assert_eq!((error.line, error.field.as_str()), (Some(7), "name"));
    assert!(error.message.contains("`host-side`"), "{error}");
}

#[test]
fn a_field_after_a_layer_sub_table_names_its_own_line() {
    let text = "[[functions]]\nname = \"orders\"\n\n[[functions.layers]]\n\
                name = \"deps\"\npath = \"layer\"\n\n[[functions]]\nname = \"other\"\n\n\
                [[functions.layers]]\nname = \"l\"\npath = \"l\"\n\n[functions.async]\nmax_retries = 9\n";
    let error = error_of(text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "max_retries"),
        "{error}"
    );
    // A layer that is not there: the line of its `[[functions.layers]]` header.
    let error = error_of(&text.replace(
        "name = \"orders\"\n",
        "name = \"orders\"\ncommand = \"python3\"\n",
    ));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(5), "layers"),
        "{error}"
    );
}

#[test]
fn a_route_that_takes_the_requests_of_another_names_the_second_route() {
    let text = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"get\"\npath = \"/orders/{{order}}\"\nfunction = \"orders\"\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "path"),
        "{error}"
    );
    assert!(error.message.contains("GET /orders/{id}"), "{error}");
    let greedy = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"ANY\"\npath = \"/f/{{proxy+}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"ANY\"\npath = \"/f/{{rest+}}\"\nfunction = \"orders\"\n"
    );
    assert_eq!(error_of(&greedy).line, Some(16));
    // Another method, or a parameter where the other has a literal, is another route.
    let distinct = format!(
        "{TWO_FUNCTIONS}\n[[routes]]\nmethod = \"GET\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"POST\"\npath = \"/orders/{{id}}\"\nfunction = \"orders\"\n\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/orders/new\"\nfunction = \"orders\"\n"
    );
    parse(&distinct).expect("three distinct routes");
}

const MAPPED: &str = "[[functions]]\nname = \"worker\"\n\n[[queues]]\nname = \"jobs\"\n\n";

#[test]
fn a_mapping_may_allow_fewer_concurrent_batches_than_the_default_start() {
    for max in [2, 3, 4, 5, 1000] {
        let text = format!("{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\nmax_concurrency = {max}\n");
        parse(&text).unwrap_or_else(|e| panic!("max_concurrency = {max}: {e}"));
    }
    let text = format!(
        "{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\nmax_concurrency = 1\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(10), "max_concurrency"),
        "{error}"
    );
}

#[test]
fn two_mappings_of_one_name_are_an_error() {
    let text = format!(
        "{MAPPED}[[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\n\n\
         [[mappings]]\nfunction = \"worker\"\nqueue = \"jobs\"\n"
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    assert!(error.message.contains("`worker-jobs`"), "{error}");
    let named = format!(
        "{MAPPED}[[mappings]]\nname = \"m\"\nfunction = \"worker\"\nqueue = \"jobs\"\n\n\
         [[mappings]]\nfunction = \"worker\"\nname = \"m\"\nqueue = \"jobs\"\n"
    );
    let error = error_of(&named);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(14), "name"),
        "{error}"
    );
}

#[test]
fn errors_name_the_field_the_file_spells() {
    // A generated name too long: it comes from `function` (and the source).
    let long = "q".repeat(80);
    let text = format!(
        "[[functions]]\nname = \"{}\"\n\n[[queues]]\nname = \"{long}\"\n\n[[mappings]]\nfunction = \"{}\"\nqueue = \"{long}\"\n",
        "f".repeat(60),
        "f".repeat(60)
    );
    let error = error_of(&text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(8), "function"),
        "{error}"
    );
    // An empty broker name is the broker table's `name`.
    let text = "[[functions]]\nname = \"w\"\n\n[[mappings]]\nfunction = \"w\"\nbatch_size = 5\n\
                redis = { url = \"redis://127.0.0.1:6379\", name = \"\" }\n";
    let error = error_of(text);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(7), "name"),
        "{error}"
    );
}

#[test]
fn an_empty_file_or_an_empty_name_is_an_error() {
    let error = error_of("");
    assert_eq!(error.field, "functions");
    assert!(error.message.contains("declares no functions"), "{error}");
    let error = error_of("[http]\nbind = \"127.0.0.1:0\"\n");
    assert!(error.message.contains("declares no functions"), "{error}");
    let error = error_of("[[functions]]\ncommand = \"x\"\nname = \"\"\n");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(3), "name"),
        "{error}"
    );
    let error = error_of("[[functions]]\nname = \"a b\"\n");
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(2), "name"),
        "{error}"
    );
}

#[test]
fn buckets_and_their_notification_rules_are_checked() {
    parse(BUCKET).expect("a bucket with one rule");
    let error = error_of(&BUCKET.replace("s3:ObjectCreated:*", "s3:ObjectMade"));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(9), "events"),
        "{error}"
    );
    let error = error_of(&BUCKET.replace("function = \"thumbs\"\n", "function = \"thumb\"\n"));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    let error = error_of(&BUCKET.replace("\"photos\"", "\"Photos\""));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(5), "name"),
        "{error}"
    );
    // Two rules that match the same events of the same keys.
    let twice = format!(
        "{BUCKET}\n[[buckets.notifications]]\nevents = [\"s3:ObjectCreated:Put\"]\nprefix = \"in/\"\nfunction = \"thumbs\"\n"
    );
    let error = error_of(&twice);
    assert_eq!(error.line, Some(14), "{error}");
    // A mapping's target takes queue batches, not S3 events.
    let mapped = format!("{BUCKET}\n[[queues]]\nname = \"q\"\n\n[[mappings]]\nfunction = \"thumbs\"\nqueue = \"q\"\n");
    let error = error_of(&mapped);
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(12), "function"),
        "{error}"
    );
    let error = error_of(&format!(
        "{BUCKET}\n[[buckets]]\nname = \"other\"\ndirectory = \"data\"\n"
    ));
    assert_eq!(
        (error.line, error.field.as_str()),
        (Some(16), "directory"),
        "{error}"
    );
}

#[test]
fn roles_and_policies_are_read_and_checked() {
    let file = parse(&format!(
        "{TWO_FUNCTIONS}policy = {{ Statement = [{{ Sid = \"s3\", Effect = \"Allow\", Principal = {{ Service = \"s3.amazonaws.com\" }}, Action = \"lambda:InvokeFunction\", Resource = \"*\" }}] }}\n\
         [functions.role]\narn = \"arn:aws:iam::000000000000:role/host-side\"\n\
         policy = {{ Statement = [{{ Effect = \"Allow\", Action = [\"lambda:InvokeFunction\"], Resource = \"*\" }}] }}\n"
    ));
    assert!(file.is_ok(), "{file:?}");
    let error = error_of(&format!(
        "{TWO_FUNCTIONS}[functions.role]\narn = \"arn:aws:iam::12:role/x\"\n"
    ));
    assert_eq!(error.field.as_str(), "role", "{error}");
    assert!(
        error.message.contains("arn:aws:iam::<account>:role/<name>"),
        "{error}"
    );
    let error = error_of(&format!("{TWO_FUNCTIONS}policy = {{ Statement = 3 }}\n"));
    assert_eq!(error.field.as_str(), "policy", "{error}");
}
