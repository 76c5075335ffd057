//! Layers: two Python functions share a library layer, a later layer overrides a file of an
//! earlier one, and a third function runs a shell custom runtime (`provided`) from a layer; the
//! view is built once and instances start from it without copying a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nimbus_core::Runtime;
use nimbus_process::{Layer, LayerCache, ProcessBackend, ProcessConfig};
use serde_json::{json, Value};

use crate::support::{fixtures, unique, Client};

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Every path under `dir` (the cache's contents), to show nothing is added per instance.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            all.push(path);
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_share_layers_a_later_layer_wins_and_a_provided_runtime_runs_from_a_layer() {
    let Some(python) = Client::Python.config() else {
        return;
    };
    let scratch = Scratch(std::env::temp_dir().join(unique("layers")));
    let base = scratch.0.join("base");
    write(
        &base.join("python/shared_lib.py"),
        "VALUE = 'from the base layer'\n",
    );
    write(&base.join("python/greeting.py"), "GREETING = 'base'\n");
    // The override layer is a zip, made by Python's own zipfile.
    let over = scratch.0.join("over");
    write(&over.join("python/greeting.py"), "GREETING = 'override'\n");
    let zip = scratch.0.join("over.zip");
    let zipped = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(over.join("python"))
        .status()
        .unwrap();
    assert!(zipped.success());
    let runtime_layer = scratch.0.join("shell-runtime");
    std::fs::create_dir_all(&runtime_layer).unwrap();
    std::fs::copy(
        fixtures().join("shell/bootstrap"),
        runtime_layer.join("bootstrap"),
    )
    .unwrap();

    let cache = LayerCache::new(scratch.0.join("cache"));
    let layers = [
        Layer::directory("base", 1, &base).unwrap(),
        Layer::archive("override", 1, &zip).unwrap(),
    ];
    let with_layers = |config: ProcessConfig| {
        layers.iter().cloned().fold(
            config.with_layer_cache(cache.clone()),
            ProcessConfig::with_layer,
        )
    };
    let runtime = Runtime::default();
    let mut views = Vec::new();
    let mut handles = Vec::new();
    for name in ["orders", "invoices"] {
        let backend = ProcessBackend::<Value, Value>::new(with_layers(python.clone())).unwrap();
        views.push(backend.layer_view().unwrap().path().to_path_buf());
        let name = unique(&format!("layered-{name}"));
        handles.push(
            runtime
                .register(backend.into_function(&name).with_max_concurrency(2))
                .await
                .unwrap(),
        );
    }
    assert_eq!(views[0], views[1], "one view for both functions");
    assert_eq!((cache.unpacked(), cache.views_built()), (1, 1));
    let before = listing(cache.root());

    for handle in &handles {
        // Two instances of each, at once.
        let (a, b) = tokio::join!(
            handle.invoke(json!({"op": "layer"})),
            handle.invoke(json!({"op": "layer"}))
        );
        for answer in [a.unwrap(), b.unwrap()] {
            let layer = &answer["layer"];
            assert_eq!(layer["value"], "from the base layer");
            assert_eq!(layer["greeting"], "override", "the later layer's file wins");
            assert_eq!(layer["nimbus_opt"], views[0].to_string_lossy().as_ref());
            if nix_is_root() {
                // Root with unshare: the view is mounted at /opt too.
                assert_eq!(layer["opt"], "GREETING = 'override'");
            }
        }
        assert_eq!(handle.metrics().cold_starts, 2);
    }
    assert_eq!(
        listing(cache.root()),
        before,
        "instances copied nothing into the cache"
    );
    if nix_is_root() {
        // /opt is read-only, links included: the cached layer cannot be changed through it.
        let answer = handles[0].invoke(json!({"op": "write-opt"})).await.unwrap();
        assert_eq!(
            (answer["written"].as_bool(), answer["errno"].as_i64()),
            (Some(false), Some(30))
        );
        let greeting = views[0].join("python/greeting.py");
        assert_eq!(
            std::fs::read_to_string(greeting).unwrap(),
            "GREETING = 'override'\n"
        );
    }

    // A custom runtime from a layer: the "provided" runtime runs the layer's bootstrap.
    let empty = scratch.0.join("function");
    std::fs::create_dir_all(&empty).unwrap();
    let provided = ProcessConfig::provided()
        .with_working_dir(&empty)
        .with_layer_cache(cache.clone())
        .with_layer(Layer::directory("shell-runtime", 1, &runtime_layer).unwrap());
    let backend = ProcessBackend::<Value, Value>::new(provided).unwrap();
    let shell = runtime
        .register(backend.into_function(unique("provided")))
        .await
        .unwrap();
    let answer = shell.invoke(json!({"op": "echo", "n": 3})).await.unwrap();
    assert_eq!(
        (answer["lang"].as_str(), answer["event"]["n"].as_u64()),
        (Some("shell"), Some(3))
    );

    runtime.shutdown(Duration::from_secs(5)).await;
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
