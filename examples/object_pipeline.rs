//! An object pipeline on a watched directory: files copied into `inbox/` (by `cp`, another
//! process) trigger a function that counts their lines and writes a summary under
//! `summaries/`. The rule only matches `inbox/*.txt`, so the summaries do not trigger the
//! function again: the classic loop is avoided by construction.
//!
//! Run with `cargo run --release --example object_pipeline`; it checks that every input
//! produced exactly one summary and that the function ran once per input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nimbus::sources::{
    DirectoryConfig, DirectoryStore, NotificationConfig, NotificationRule, ObjectStore, S3Event,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

const FILES: usize = 12;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join(format!("nimbus-object-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let runtime = Runtime::default();

    // The function needs the store, and the store's rule needs the function: the store is set
    // once it exists.
    let store_cell: Arc<OnceLock<Arc<DirectoryStore>>> = Arc::new(OnceLock::new());
    let invocations = Arc::new(AtomicU64::new(0));
    let summarize = runtime
        .register(
            Function::new(
                "summarize",
                handler_fn({
                    let (store_cell, invocations) = (store_cell.clone(), invocations.clone());
                    // S3's message, `{"Records": [...]}`, with one event, as S3 sends.
                    move |message: S3Event, _ctx: Context| {
                        let (store_cell, invocations) = (store_cell.clone(), invocations.clone());
                        async move {
                            invocations.fetch_add(1, Ordering::Relaxed);
                            let store = store_cell.get().ok_or_else(|| FunctionError::msg("store not ready"))?;
                            for event in &message.records {
                                let key = event.key();
                                let (_, data) = store
                                    .get(event.bucket(), &key)
                                    .await?
                                    .ok_or_else(|| FunctionError::msg(format!("{key} is gone")))?;
                                let lines = data.iter().filter(|b| **b == b'\n').count();
                                let name = key.trim_start_matches("inbox/").trim_end_matches(".txt");
                                let summary = serde_json::json!({ "source": key, "lines": lines, "bytes": data.len() });
                                store
                                    .put(event.bucket(), &format!("summaries/{name}.json"), summary.to_string().into())
                                    .await?;
                            }
                            Ok::<_, FunctionError>(())
                        }
                    }
                }),
            )
            .with_max_retries(2)
            .with_retry_backoff(nimbus::Backoff::fixed(Duration::from_millis(100)).unwrap()),
        )
        .await?;

    let rule = NotificationRule::new(
        "new-text",
        &["s3:ObjectCreated:*"],
        Arc::new(summarize.clone()),
    )?
    .with_prefix("inbox/")
    .with_suffix(".txt");
    let store = Arc::new(
        DirectoryStore::open(DirectoryConfig::new(
            &root,
            NotificationConfig::new(vec![rule])?,
        ))
        .await?,
    );
    let _ = store_cell.set(store.clone());
    store.create_bucket("work").await?;
    std::fs::create_dir_all(root.join("work").join("inbox"))?;
    println!("watching {}", root.display());

    // Another process copies files in.
    let staging =
        std::env::temp_dir().join(format!("nimbus-object-staging-{}", std::process::id()));
    std::fs::create_dir_all(&staging)?;
    for i in 0..FILES {
        let source = staging.join(format!("report {i}.txt"));
        std::fs::write(&source, "line\n".repeat(i + 1))?;
        let status = std::process::Command::new("cp")
            .arg(&source)
            .arg(root.join("work").join("inbox"))
            .status()?;
        assert!(status.success(), "cp failed");
    }
    println!("copied {FILES} files into work/inbox/");

    let started = std::time::Instant::now();
    let summaries = loop {
        let summaries = store.list("work", "summaries/").await?;
        if summaries.len() >= FILES || started.elapsed() > Duration::from_secs(30) {
            break summaries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Give a loop, if there were one, time to show itself.
    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(summaries.len(), FILES, "one summary per input");
    for i in 0..FILES {
        let (_, data) = store
            .get("work", &format!("summaries/report {i}.json"))
            .await?
            .ok_or("a summary is missing")?;
        let summary: serde_json::Value = serde_json::from_slice(&data)?;
        assert_eq!(summary["lines"], i + 1);
    }
    let ran = invocations.load(Ordering::Relaxed);
    println!(
        "{} summaries written; the function ran {ran} times",
        summaries.len()
    );
    assert_eq!(
        ran, FILES as u64,
        "no loop: summaries did not trigger the function"
    );
    runtime.shutdown(Duration::from_secs(1)).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&staging);
    println!("object_pipeline: all checks passed");
    Ok(())
}
