//! The module order of nimbus-core, enforced: each module may reach only the modules below it,
//! by any path (`use crate::x`, an inline `crate::x::...`, `super::` climbing to the crate
//! root), and never through a root re-export (`crate::Runtime`). Doc links follow the module
//! order too; they may name a root re-export (`[`crate::Runtime`]`), which documents what is
//! above without depending on it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Leaf to root: a module may use only those before it.
const ORDER: &[&str] = &[
    "util",
    "error",
    "handler",
    "permission",
    "retry",
    "config",
    "metering",
    "metrics",
    "concurrency",
    "instance",
    "executor",
    "async_invoke",
    "function",
    "runtime",
];

/// One source file of a top-level module: the module, how deep the file sits below the
/// module's own file (0 for `m.rs` or `m/mod.rs`), and its text.
struct Source {
    module: String,
    depth: usize,
    path: PathBuf,
    text: String,
}

/// A path from one module to a place it may not reach.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// Every reference to the crate root's children in `sources` that is not to a module below.
fn violations(sources: &[Source]) -> Vec<Violation> {
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut found = Vec::new();
    for source in sources {
        let own = rank(&source.module).expect("every module is in ORDER");
        for (number, line) in source.text.lines().enumerate() {
            let (code, comment) = split_comment(line);
            let in_code = root_targets(code, source.depth).into_iter();
            // In comments, only module paths count: a doc link may name a root re-export.
            let in_comment = root_targets(comment, source.depth)
                .into_iter()
                .filter(|t| rank(t).is_some());
            for target in in_code.chain(in_comment) {
                let allowed = target == source.module || rank(&target).is_some_and(|r| r < own);
                if !allowed {
                    found.push(Violation {
                        file: source.path.display().to_string(),
                        line: number + 1,
                        from: source.module.clone(),
                        to: target,
                    });
                }
            }
        }
    }
    found
}

/// A line split into its code and its comment.
fn split_comment(line: &str) -> (&str, &str) {
    match line.find("//") {
        // `//` inside a string ("http://") is rare in this crate; a comment is the common case.
        Some(at) if !line[..at].contains('"') => (&line[..at], &line[at..]),
        _ => (line, ""),
    }
}

/// The names under the crate root that a line of code reaches, from a file `depth` levels
/// below its module's own file.
fn root_targets(code: &str, depth: usize) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` or an identifier ending in `crate` is not the crate root.
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            targets.extend(first_segments(after));
        }
        rest = after;
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().next_back();
        let mut after = &rest[at..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            rest = &rest[at + "super::".len()..];
            continue;
        }
        let mut climbs = 0;
        while let Some(next) = after.strip_prefix("super::") {
            climbs += 1;
            after = next;
        }
        if climbs > depth {
            targets.extend(first_segments(after));
        }
        rest = after;
    }
    targets
}

/// The first path segment after `crate::`, or each one of a `{a, b::c}` group.
fn first_segments(after: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = after.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        group[..end]
            .split(',')
            .map(ident)
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        let name = ident(after);
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name]
        }
    }
}

/// The sources of every top-level module under `src`.
fn sources_of(src: &Path) -> Vec<Source> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(src).expect("src is readable") {
        let path = entry.expect("an entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            collect(&path, &name, 0, &mut sources);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            sources.push(read(&path, &name, 0));
        }
    }
    sources
}

fn collect(dir: &Path, module: &str, depth: usize, sources: &mut Vec<Source>) {
    for entry in fs::read_dir(dir).expect("a module folder is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect(&path, module, depth + 1, sources);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let own_file = path.file_name().is_some_and(|n| n == "mod.rs");
            sources.push(read(
                &path,
                module,
                if own_file { depth } else { depth + 1 },
            ));
        }
    }
}

fn read(path: &Path, module: &str, depth: usize) -> Source {
    Source {
        module: module.to_owned(),
        depth,
        path: path.to_owned(),
        text: fs::read_to_string(path).expect("a source file is readable"),
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_has_a_place_in_the_order() {
    let mut modules: Vec<String> = sources_of(&src_dir())
        .into_iter()
        .map(|s| s.module)
        .collect();
    modules.sort();
    modules.dedup();
    let mut expected: Vec<String> = ORDER.iter().map(|m| (*m).to_owned()).collect();
    expected.sort();
    assert_eq!(
        modules, expected,
        "a new top-level module must be placed in ORDER (and in lib.rs's layout docs)"
    );
}

#[test]
fn no_module_reaches_one_above_it() {
    let found = violations(&sources_of(&src_dir()));
    let mut by_edge: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for v in &found {
        by_edge
            .entry((v.from.clone(), v.to.clone()))
            .or_default()
            .push(format!("{}:{}", v.file, v.line));
    }
    assert!(
        found.is_empty(),
        "paths that point up the module order (or through a root re-export):\n{by_edge:#?}"
    );
}

fn source(module: &str, depth: usize, text: &str) -> Source {
    Source {
        module: module.to_owned(),
        depth,
        path: PathBuf::from(format!("{module}/x.rs")),
        text: text.to_owned(),
    }
}

#[test]
fn the_check_catches_every_kind_of_upward_path() {
    let upward = [
        source("handler", 0, "use crate::runtime::Runtime;"),
        source(
            "handler",
            1,
            "let r = crate::function::FunctionHandle::new(x);",
        ),
        source("handler", 0, "use crate::{error::X, executor::Y};"),
        source("handler", 0, "use crate::Runtime;"),
        source("handler", 0, "use super::runtime::Runtime;"),
        source("handler", 1, "use super::super::runtime::Runtime;"),
        source("handler", 0, "/// see [`crate::runtime::Runtime`]"),
    ];
    for s in &upward {
        let found = violations(std::slice::from_ref(s));
        assert_eq!(found.len(), 1, "not caught: {}", s.text);
    }
    let fine = [
        source("runtime", 0, "use crate::handler::Context;"),
        source("handler", 1, "use super::Principal;"),
        source("handler", 0, "/// [`crate::Runtime`] implements it"),
        source("executor", 2, "use super::super::Executor;"),
        source("handler", 0, "let x = my_crate::runtime::y();"),
    ];
    for s in &fine {
        assert_eq!(violations(std::slice::from_ref(s)), vec![], "{}", s.text);
    }
}
