//! Lambda layers: [`Layer`]s (a directory, or a `.zip` archive as Lambda's layers are), the
//! [`LayerCache`] that unpacks each archive once, and the [`LayerView`] that merges a
//! function's layers into one tree standing in for Lambda's `/opt`.
//!
//! Lambda extracts a function's layers into `/opt` in order, a later layer's file replacing an
//! earlier one's. nimbus cannot give every function its own `/opt`, so it builds, once per
//! ordered list of layers, a view directory mirroring that merged `/opt` with symbolic links,
//! and points the variables Lambda derives from `/opt` (`PATH`, `LD_LIBRARY_PATH`,
//! `PYTHONPATH`, `NODE_PATH`) into it, plus `NIMBUS_OPT` for code that wants the path itself.
//!
//! The cache's layout is described at [`LayerCache`].
//!
//! # Limits
//!
//! - A directory layer is read when a view of it is first built: edits to its files show
//!   through the view's links, but files added or removed later appear only in a view built for
//!   another version of the layer.
//! - A symbolic link to a directory inside a layer is one entry: a later layer replaces it
//!   whole instead of merging into it.
//! - Code that names `/opt` literally does not see the layers; it can read `NIMBUS_OPT`.

mod archive;
mod view;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nimbus_core::ConfigError;
use sha2::{Digest, Sha256};

pub use view::LayerView;

/// The configuration scope named in errors.
const SCOPE: &str = "layer";

/// A Lambda layer: a name, a version and where its files are.
///
/// # Example
///
/// ```
/// use nimbus_process::Layer;
///
/// let dir = std::env::temp_dir();
/// let layer = Layer::directory("shared-libs", 3, &dir).unwrap();
/// assert_eq!((layer.name(), layer.version()), ("shared-libs", 3));
/// assert_eq!(Layer::directory("no spaces", 1, &dir).unwrap_err().field, "name");
/// assert_eq!(Layer::directory("libs", 0, &dir).unwrap_err().field, "version");
/// assert_eq!(Layer::archive("libs", 1, "/no/such.zip").unwrap_err().field, "path");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layer {
    name: String,
    version: u32,
    source: LayerSource,
}

/// Where a [`Layer`]'s files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerSource {
    /// A directory, used in place (its canonical path).
    Directory(PathBuf),
    /// A `.zip` archive, unpacked once into a [`LayerCache`] (its canonical path).
    Archive(PathBuf),
}

impl Layer {
    /// A layer whose files are the directory `path`, used in place.
    ///
    /// The name must match Lambda's `[a-zA-Z0-9-_]{1,64}`, the version be at least 1 and the
    /// path an existing directory; otherwise the error names the field.
    pub fn directory(
        name: impl Into<String>,
        version: u32,
        path: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let (name, path) = checked(name.into(), version, path.as_ref(), true)?;
        Ok(Self {
            name,
            version,
            source: LayerSource::Directory(path),
        })
    }

    /// A layer whose files are in the `.zip` archive `path` (Lambda's layer format), unpacked
    /// into a [`LayerCache`] the first time a view uses it.
    ///
    /// The name must match Lambda's `[a-zA-Z0-9-_]{1,64}`, the version be at least 1 and the
    /// path an existing file; otherwise the error names the field. The archive itself is read
    /// when it is unpacked.
    pub fn archive(
        name: impl Into<String>,
        version: u32,
        path: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let (name, path) = checked(name.into(), version, path.as_ref(), false)?;
        Ok(Self {
            name,
            version,
            source: LayerSource::Archive(path),
        })
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where the layer's files are.
    pub fn source(&self) -> &LayerSource {
        &self.source
    }
}

/// Validates a layer's fields, returning its name and its path made canonical (so that a view's
/// links are absolute and a layer named by two spellings of one path is one layer).
fn checked(
    name: String,
    version: u32,
    path: &Path,
    directory: bool,
) -> Result<(String, PathBuf), ConfigError> {
    let valid_name = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(ConfigError::new(
            SCOPE,
            "name",
            name,
            "1..=64 characters of a-z, A-Z, 0-9, '-' and '_'",
        ));
    }
    if version == 0 {
        return Err(ConfigError::new(
            SCOPE,
            "version",
            version,
            "1..=4294967295",
        ));
    }
    let (fits, allowed) = if directory {
        (path.is_dir(), "an existing directory")
    } else {
        (path.is_file(), "an existing .zip file")
    };
    let canonical = fs::canonicalize(path).ok().filter(|_| fits);
    match canonical {
        Some(path) => Ok((name, path)),
        None => Err(ConfigError::new(SCOPE, "path", path, allowed)),
    }
}

/// Why a layer could not be unpacked or a view built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A file system operation failed.
    #[error("layer {layer}: {path}: {source}", path = path.display())]
    Io {
        /// The layer (`name:version`), or `view` while a view is written.
        layer: String,
        /// The path the operation was on.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The archive is not a readable `.zip` file.
    #[error("layer {layer}: archive {path}: {source}", path = path.display())]
    Archive {
        /// The layer (`name:version`).
        layer: String,
        /// The archive.
        path: PathBuf,
        /// What the zip reader said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An archive entry would land outside the layer, so the archive is refused whole.
    #[error("layer {layer}: archive entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        /// The layer (`name:version`).
        layer: String,
        /// The entry's name as the archive spells it.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// The folder where archives are unpacked and views built:
///
/// ```text
/// <cache>/<name>/<version>-<content hash>/   an unpacked archive (read-only files)
/// <cache>/views/<hash of the layers>/         a merged view (symbolic links only)
/// ```
///
/// Both are written to a `.tmp-*` directory beside them and renamed into place, so a reader
/// never sees half a tree; an interrupted unpack leaves only a `.tmp-*` directory, which is
/// never read and may be deleted. Several caches (or processes) may share a folder; clones
/// share their counts. Nothing is ever removed from it: clear it when no function runs.
#[derive(Debug, Clone)]
pub struct LayerCache {
    root: PathBuf,
    /// Archives this cache unpacked and views it wrote, for [`LayerCache::unpacked`] and
    /// [`LayerCache::views_built`].
    counts: Arc<[AtomicU64; 2]>,
}

impl Default for LayerCache {
    /// A cache in [`LayerCache::default_root`].
    fn default() -> Self {
        Self::new(Self::default_root())
    }
}

impl LayerCache {
    /// A cache in the folder `root` (created when first written; a relative path is taken
    /// from the current directory now).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        Self {
            root,
            counts: Arc::default(),
        }
    }

    /// How many archives this cache (and its clones) unpacked, rather than finding them
    /// unpacked already.
    pub fn unpacked(&self) -> u64 {
        self.counts[0].load(Ordering::Relaxed)
    }

    /// How many views this cache (and its clones) wrote, rather than finding them built.
    pub fn views_built(&self) -> u64 {
        self.counts[1].load(Ordering::Relaxed)
    }

    /// `$XDG_CACHE_HOME/nimbus/layers` (if that is absolute), else `$HOME/.cache/nimbus/layers`, else
    /// `nimbus/layers` in the temporary directory.
    pub fn default_root() -> PathBuf {
        let from_env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        // The XDG spec says to ignore a relative XDG_CACHE_HOME.
        let base = from_env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
            .or_else(|| from_env("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("nimbus").join("layers")
    }

    /// The cache's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding `layer`'s files: a directory layer's own, or an archive's
    /// unpacked copy, `<cache>/<name>/<version>-<content hash>/`, which is unpacked only if no
    /// earlier call (of any process sharing the folder) did.
    pub fn resolve(&self, layer: &Layer) -> Result<PathBuf, LayerError> {
        match &layer.source {
            LayerSource::Directory(path) => Ok(path.clone()),
            LayerSource::Archive(path) => {
                let hash = file_hash(path).map_err(|source| io_error(layer, path, source))?;
                let dir = self
                    .root
                    .join(&layer.name)
                    .join(format!("{}-{hash}", layer.version));
                if !dir.is_dir() {
                    archive::unpack(layer, path, &dir)?;
                    self.counts[0].fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(layer = %label(layer), dir = %dir.display(), "layer unpacked");
                }
                Ok(dir)
            }
        }
    }
}

/// The first 32 hex digits (128 bits) of the SHA-256 of a file's content.
fn file_hash(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = io::Read::read(&mut file, &mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The first 32 hex digits of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().take(16).fold(String::new(), |mut out, b| {
        use fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A directory beside `target` to write into before renaming it to `target`; unique across
/// the threads and processes sharing the cache.
fn temp_beside(target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".tmp-{name}-{}-{n}", std::process::id()))
}

/// Renames the finished `temp` to `target`. If another writer got there first, its copy is
/// kept and ours removed: both hold the same tree.
fn publish(temp: &Path, target: &Path) -> io::Result<()> {
    match fs::rename(temp, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => remove_tree(temp),
        Err(error) => {
            let _ = remove_tree(temp);
            Err(error)
        }
    }
}

/// Removes a tree written by this module.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `name:version`, as errors name a layer.
fn label(layer: &Layer) -> String {
    format!("{}:{}", layer.name, layer.version)
}

/// An I/O error on `path` of `layer`.
fn io_error(layer: &Layer, path: &Path, source: io::Error) -> LayerError {
    LayerError::Io {
        layer: label(layer),
        path: path.to_owned(),
        source,
    }
}
