//! Unpacking a layer's `.zip` archive into the cache: every entry checked before anything is
//! written, the tree written beside its place and renamed into it, unix permissions kept (so a
//! `bootstrap` stays executable) minus the write bits (layers are read-only, as `/opt` is).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{io_error, label, publish, remove_tree, temp_beside, Layer, LayerError};

/// The type bits of a symbolic link in a unix mode.
const S_IFLNK: u32 = 0o120_000;

/// Unpacks the archive `path` of `layer` into `dir` (which must not exist yet).
pub(super) fn unpack(layer: &Layer, path: &Path, dir: &Path) -> Result<(), LayerError> {
    let archive_error = |source: zip::result::ZipError| LayerError::Archive {
        layer: label(layer),
        path: path.to_owned(),
        source: Box::new(source),
    };
    let file = fs::File::open(path).map_err(|e| io_error(layer, path, e))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(archive_error)?;

    // Check every name first, so that a refused archive writes nothing.
    let mut entries = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(archive_error)?;
        let relative = entry_path(entry.name()).map_err(|reason| LayerError::UnsafeEntry {
            layer: label(layer),
            entry: entry.name().to_owned(),
            reason,
        })?;
        let mode = entry.unix_mode();
        let kind = if mode.is_some_and(|m| m & 0o170_000 == S_IFLNK) {
            Kind::Symlink
        } else if entry.is_dir() {
            Kind::Dir
        } else {
            Kind::File(mode.unwrap_or(0o644))
        };
        entries.push((index, relative, kind));
    }

    let parent = dir.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(|e| io_error(layer, parent, e))?;
    let temp = temp_beside(dir);
    fs::create_dir(&temp).map_err(|e| io_error(layer, &temp, e))?;
    match write_tree(layer, &mut zip, &entries, &temp) {
        Ok(()) => publish(&temp, dir).map_err(|e| io_error(layer, dir, e)),
        Err(error) => {
            let _ = remove_tree(&temp);
            Err(error)
        }
    }
}

/// What an archive entry is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A directory.
    Dir,
    /// A regular file with this unix mode.
    File(u32),
    /// A symbolic link, whose target is the entry's content.
    Symlink,
}

/// Writes the checked entries under `root`: directories and files first, then symbolic links,
/// so that no entry is ever written through a link the archive made; then the files' modes.
fn write_tree<R: io::Read + io::Seek>(
    layer: &Layer,
    zip: &mut zip::ZipArchive<R>,
    entries: &[(usize, PathBuf, Kind)],
    root: &Path,
) -> Result<(), LayerError> {
    let archive_error = |source: zip::result::ZipError| LayerError::Archive {
        layer: label(layer),
        path: root.to_owned(),
        source: Box::new(source),
    };
    let mut links = Vec::new();
    let mut modes = Vec::new();
    for (index, relative, kind) in entries {
        let target = root.join(relative);
        match kind {
            Kind::Dir => fs::create_dir_all(&target).map_err(|e| io_error(layer, &target, e))?,
            Kind::File(mode) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_error(layer, parent, e))?;
                }
                let mut entry = zip.by_index(*index).map_err(archive_error)?;
                let mut out = fs::File::create(&target).map_err(|e| io_error(layer, &target, e))?;
                io::copy(&mut entry, &mut out).map_err(|e| io_error(layer, &target, e))?;
                modes.push((target, *mode));
            }
            Kind::Symlink => {
                let mut entry = zip.by_index(*index).map_err(archive_error)?;
                let mut link = String::new();
                io::Read::read_to_string(&mut entry, &mut link)
                    .map_err(|e| io_error(layer, &target, e))?;
                link_target_check(relative, &link).map_err(|reason| LayerError::UnsafeEntry {
                    layer: label(layer),
                    entry: entry.name().to_owned(),
                    reason,
                })?;
                links.push((target, link));
            }
        }
    }
    for (target, link) in links {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(layer, parent, e))?;
        }
        std::os::unix::fs::symlink(&link, &target).map_err(|e| io_error(layer, &target, e))?;
    }
    // Modes last: a read-only file could not be rewritten by a duplicate entry.
    for (target, mode) in modes {
        let permissions = fs::Permissions::from_mode(mode & 0o555);
        fs::set_permissions(&target, permissions).map_err(|e| io_error(layer, &target, e))?;
    }
    Ok(())
}

/// The relative path of an entry named `name`, or why it is refused: an absolute path, a `..`
/// component or a NUL byte. `\` counts as a separator, as archives made on Windows use it.
fn entry_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("a NUL byte in the name");
    }
    let bytes = name.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if name.starts_with(['/', '\\']) || drive {
        return Err("an absolute path");
    }
    let mut path = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            ".." => return Err("a '..' component"),
            "" | "." => {}
            part => path.push(part),
        }
    }
    if path.as_os_str().is_empty() && !name.ends_with(['/', '\\']) {
        return Err("an empty path");
    }
    Ok(path)
}

/// Checks that the symbolic link `entry` with target `link` points inside the layer: relative,
/// and not climbing above the layer's root.
fn link_target_check(entry: &Path, link: &str) -> Result<(), &'static str> {
    if link.is_empty() || link.contains('\0') {
        return Err("a symbolic link without a target");
    }
    if link.starts_with('/') {
        return Err("a symbolic link to an absolute path");
    }
    // The link resolves from its own directory.
    let mut depth = entry.components().count().saturating_sub(1);
    for part in link.split('/') {
        match part {
            ".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("a symbolic link out of the layer")?;
            }
            "" | "." => {}
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_outside_the_layer_are_refused() {
        assert_eq!(entry_path("bin/tool").unwrap(), Path::new("bin/tool"));
        assert_eq!(entry_path("./python/").unwrap(), Path::new("python"));
        assert_eq!(entry_path("/etc/passwd"), Err("an absolute path"));
        assert_eq!(entry_path("\\etc\\passwd"), Err("an absolute path"));
        assert_eq!(entry_path("C:/x"), Err("an absolute path"));
        assert_eq!(entry_path("a/../../x"), Err("a '..' component"));
        assert_eq!(entry_path("a\\..\\x"), Err("a '..' component"));
        assert_eq!(entry_path("a\0b"), Err("a NUL byte in the name"));
    }

    #[test]
    fn link_targets_stay_in_the_layer() {
        let entry = Path::new("nodejs/node_modules/.bin/tool");
        assert!(link_target_check(entry, "../pkg/bin/tool.js").is_ok());
        assert!(link_target_check(entry, "../../../../x").is_err());
        assert!(link_target_check(Path::new("lib/libz.so"), "libz.so.1").is_ok());
        assert!(link_target_check(Path::new("lib/libz.so"), "/usr/lib/libz.so").is_err());
        assert!(link_target_check(Path::new("top"), "..").is_err());
    }
}
