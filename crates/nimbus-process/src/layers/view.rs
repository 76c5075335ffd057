//! The merged view of a function's layers ([`LayerView`]): a directory of symbolic links
//! mirroring the `/opt` Lambda would build from them, and the environment that points into it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{hex, publish, remove_tree, temp_beside, Layer, LayerCache, LayerError};

/// Names a view's format in its hash, so that a change of layout gets new views.
const FORMAT: &str = "nimbus-layer-view-1";

/// One function's layers merged into one read-only tree, standing in for Lambda's `/opt`.
///
/// The view is `<cache>/views/<hash>/`, the hash being of the ordered layers' names, versions
/// and resolved directories (an archive's includes its content hash). It mirrors the union of
/// the layers' trees; where two layers hold the same path, the later layer's entry wins, file
/// by file, and directories merge.
///
/// Every file of the view is a **symbolic link** to the layer's file; no content is copied.
/// Symbolic links, not hard links: hard links cannot cross file systems (a directory layer
/// is rarely on the cache's), and a hard link would keep serving a file's old content after
/// a build replaces it by renaming, whereas a symbolic link follows the directory layer as it
/// is. A symbolic link found inside a layer is recreated in the view with the same target,
/// so a relative one resolves within the merged tree as it would in `/opt`.
///
/// Build the view once per function and share it among its instances: building it again with
/// the same layers finds and reuses the existing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerView {
    path: PathBuf,
}

/// An entry of the merged tree.
#[derive(Debug)]
enum Entry {
    /// A directory (merged across layers).
    Dir,
    /// A file of a layer, linked to.
    File(PathBuf),
    /// A symbolic link of a layer, with its target.
    Link(PathBuf),
}

impl LayerView {
    /// The merged view of `layers` (earliest first), built in `cache` unless a view of the
    /// same layers is there already. Archives are unpacked first if they have not been.
    pub fn build(cache: &LayerCache, layers: &[Layer]) -> Result<Self, LayerError> {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT);
        let mut trees = Vec::with_capacity(layers.len());
        for layer in layers {
            let tree = cache.resolve(layer)?;
            // Lengths first, so that no two lists hash alike by shifting bytes between fields.
            let tree_bytes = tree.as_os_str().as_encoded_bytes();
            for field in [layer.name.as_bytes(), tree_bytes] {
                hasher.update((field.len() as u64).to_le_bytes());
                hasher.update(field);
            }
            hasher.update(layer.version.to_le_bytes());
            trees.push((layer, tree));
        }
        let path = cache.root.join("views").join(hex(&hasher.finalize()));
        if !path.is_dir() {
            write_view(&trees, &path)?;
            cache.counts[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(view = %path.display(), layers = layers.len(), "layer view built");
        }
        Ok(Self { path })
    }

    /// The view's directory: what `/opt` is in Lambda.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<view>/bootstrap` if it is there and executable: the entry point of a function on
    /// Lambda's `provided` runtimes when the function's own code has none.
    pub fn bootstrap(&self) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let bootstrap = self.path.join("bootstrap");
        let metadata = fs::metadata(&bootstrap).ok()?;
        (metadata.is_file() && metadata.permissions().mode() & 0o111 != 0).then_some(bootstrap)
    }

    /// The variables Lambda derives from `/opt`, pointing into the view; each value but
    /// `NIMBUS_OPT`'s goes in front of the variable's existing value (see
    /// [`LayerView::prepend_to`]):
    ///
    /// - `NIMBUS_OPT`: the view;
    /// - `PATH`: `<view>/bin`; `LD_LIBRARY_PATH`: `<view>/lib` (as Lambda's always name
    ///   `/opt/bin` and `/opt/lib`);
    /// - `PYTHONPATH`, if any are present: `<view>/python/lib/python3.X/site-packages`,
    ///   newest first, then `<view>/python`, in the order of Lambda's `sys.path`;
    /// - `NODE_PATH`, if any are present: `<view>/nodejs/nodeN/node_modules`, newest first,
    ///   then `<view>/nodejs/node_modules`, in the order of Lambda's `NODE_PATH`.
    ///
    /// Python and Node.js get every version's directory, since the view does not know which
    /// interpreter runs; a layer built for another version is imported all the same.
    pub fn environment(&self) -> Vec<(String, String)> {
        let text = |path: &Path| path.to_string_lossy().into_owned();
        let mut env = vec![
            ("NIMBUS_OPT".to_owned(), text(&self.path)),
            ("PATH".to_owned(), text(&self.path.join("bin"))),
            ("LD_LIBRARY_PATH".to_owned(), text(&self.path.join("lib"))),
        ];
        let python = self.path.join("python");
        let mut python_path: Vec<PathBuf> = versioned(&python.join("lib"), "python3.")
            .into_iter()
            .map(|dir| dir.join("site-packages"))
            .filter(|dir| dir.is_dir())
            .collect();
        if python.is_dir() {
            python_path.push(python);
        }
        let nodejs = self.path.join("nodejs");
        let mut node_path: Vec<PathBuf> = versioned(&nodejs, "node")
            .into_iter()
            .map(|dir| dir.join("node_modules"))
            .filter(|dir| dir.is_dir())
            .collect();
        if nodejs.join("node_modules").is_dir() {
            node_path.push(nodejs.join("node_modules"));
        }
        for (name, paths) in [("PYTHONPATH", python_path), ("NODE_PATH", node_path)] {
            if !paths.is_empty() {
                let paths: Vec<String> = paths.iter().map(|p| text(p)).collect();
                env.push((name.to_owned(), paths.join(":")));
            }
        }
        env
    }

    /// Applies [`LayerView::environment`] to an environment being built: puts each path list
    /// in front of the variable's value in `env` (joined with `:`), or adds the variable, and
    /// sets `NIMBUS_OPT`.
    pub fn prepend_to(&self, env: &mut Vec<(String, String)>) {
        for (name, value) in self.environment() {
            match env.iter_mut().find(|(existing, _)| *existing == name) {
                Some((_, current)) if name != "NIMBUS_OPT" && !current.is_empty() => {
                    *current = format!("{value}:{current}");
                }
                Some((_, current)) => *current = value,
                None => env.push((name, value)),
            }
        }
    }
}

/// The directories of `dir` named `<prefix><number>`, highest number first.
fn versioned(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    found.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
    found.into_iter().map(|(_, path)| path).collect()
}

/// Merges the layers' trees and writes the view to `path` through a temporary directory.
fn write_view(trees: &[(&Layer, PathBuf)], path: &Path) -> Result<(), LayerError> {
    let mut merged = BTreeMap::new();
    for (layer, tree) in trees {
        merge(layer, tree, Path::new(""), &mut merged)?;
    }
    let view_error = |path: &Path, source| LayerError::Io {
        layer: "view".to_owned(),
        path: path.to_owned(),
        source,
    };
    let parent = path.parent().unwrap_or(path);
    fs::create_dir_all(parent).map_err(|e| view_error(parent, e))?;
    let temp = temp_beside(path);
    fs::create_dir(&temp).map_err(|e| view_error(&temp, e))?;
    // Parents sort before their children, so each entry's directory exists when it is made.
    let written = merged.iter().try_for_each(|(relative, entry)| {
        let target = temp.join(relative);
        let made = match entry {
            Entry::Dir => fs::create_dir(&target),
            Entry::File(source) | Entry::Link(source) => {
                std::os::unix::fs::symlink(source, &target)
            }
        };
        made.map_err(|e| view_error(&target, e))
    });
    match written {
        Ok(()) => publish(&temp, path).map_err(|e| view_error(path, e)),
        Err(error) => {
            let _ = remove_tree(&temp);
            Err(error)
        }
    }
}

/// Adds the entries of `tree`/`relative` to `merged`, replacing what earlier layers put at the
/// same paths, except that directories merge.
fn merge(
    layer: &Layer,
    tree: &Path,
    relative: &Path,
    merged: &mut BTreeMap<PathBuf, Entry>,
) -> Result<(), LayerError> {
    let dir = tree.join(relative);
    let error = |path: &Path, source| super::io_error(layer, path, source);
    for item in fs::read_dir(&dir).map_err(|e| error(&dir, e))? {
        let item = item.map_err(|e| error(&dir, e))?;
        let source = item.path();
        let kind = item.file_type().map_err(|e| error(&source, e))?;
        let path = relative.join(item.file_name());
        if kind.is_dir() {
            if !matches!(merged.get(&path), Some(Entry::Dir)) {
                merged.insert(path.clone(), Entry::Dir);
            }
            merge(layer, tree, &path, merged)?;
            continue;
        }
        let entry = if kind.is_symlink() {
            Entry::Link(fs::read_link(&source).map_err(|e| error(&source, e))?)
        } else {
            Entry::File(source)
        };
        // A file replacing an earlier layer's directory replaces its whole subtree.
        if let Some(Entry::Dir) = merged.insert(path.clone(), entry) {
            let below: Vec<PathBuf> = merged
                .range(path.clone()..)
                .skip(1)
                .take_while(|(p, _)| p.starts_with(&path))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                merged.remove(&p);
            }
        }
    }
    Ok(())
}
