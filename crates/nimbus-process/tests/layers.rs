//! Lambda layers: directory and `.zip` layers merged into one view in order, archives unpacked
//! once with their modes, unsafe archives refused, and the environment pointing into the view.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_process::{Layer, LayerCache, LayerError, LayerView};

/// A directory unique to one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("nimbus-layers-{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `files` (path, content) under `root`.
fn tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}

/// An entry of a test archive.
enum Item<'a> {
    File(&'a str, &'a str, u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

/// Writes a `.zip` archive of `items` at `path`.
fn zip(path: &Path, items: &[Item<'_>]) {
    let mut writer = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for item in items {
        match item {
            Item::File(name, content, mode) => {
                writer
                    .start_file(*name, options.unix_permissions(*mode))
                    .unwrap();
                writer.write_all(content.as_bytes()).unwrap();
            }
            Item::Dir(name) => writer.add_directory(*name, options).unwrap(),
            Item::Link(name, target) => writer.add_symlink(*name, *target, options).unwrap(),
        }
    }
    writer.finish().unwrap();
}

fn read(path: PathBuf) -> String {
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-directory entry under `dir` (recursively), asserting none is a regular file.
fn assert_only_links(dir: &Path) -> usize {
    let mut links = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            links += assert_only_links(&entry.path());
        } else {
            assert!(kind.is_symlink(), "{} is copied", entry.path().display());
            links += 1;
        }
    }
    links
}

#[test]
fn later_layers_override_file_by_file_and_directories_merge() {
    let tmp = TempDir::new("override");
    tree(
        &tmp.join("one"),
        &[
            ("bin/tool", "tool 1"),
            ("lib/liba.so", "a 1"),
            ("python/pkg/__init__.py", "init 1"),
            ("python/pkg/deep/x.py", "x 1"),
            ("conf", "a file in 1"),
            ("data/old.txt", "a directory in 1"),
        ],
    );
    tree(
        &tmp.join("two"),
        &[
            ("bin/tool", "tool 2"),
            ("python/pkg/deep/y.py", "y 2"),
            ("conf/settings", "a directory in 2"),
            ("data", "a file in 2"),
        ],
    );
    let one = Layer::directory("one", 1, tmp.join("one")).unwrap();
    let two = Layer::directory("two", 4, tmp.join("two")).unwrap();
    let cache = LayerCache::new(tmp.join("cache"));
    let view = LayerView::build(&cache, &[one.clone(), two.clone()]).unwrap();
    let opt = view.path();
    assert!(opt.starts_with(tmp.join("cache/views")));

    assert_eq!(read(opt.join("bin/tool")), "tool 2", "the later layer wins");
    assert_eq!(
        read(opt.join("lib/liba.so")),
        "a 1",
        "earlier files stay visible"
    );
    assert_eq!(read(opt.join("python/pkg/__init__.py")), "init 1");
    assert_eq!(
        read(opt.join("python/pkg/deep/x.py")),
        "x 1",
        "nested dirs merge"
    );
    assert_eq!(read(opt.join("python/pkg/deep/y.py")), "y 2");
    assert_eq!(read(opt.join("conf/settings")), "a directory in 2");
    assert_eq!(read(opt.join("data")), "a file in 2");
    assert!(!opt.join("data/old.txt").exists());
    assert_eq!(assert_only_links(opt), 7);
    // Links point at the layers' files in place: an edit shows through.
    assert_eq!(
        fs::read_link(opt.join("lib/liba.so")).unwrap(),
        fs::canonicalize(tmp.join("one/lib/liba.so")).unwrap()
    );
    fs::write(tmp.join("one/lib/liba.so"), "a 1, edited").unwrap();
    assert_eq!(read(opt.join("lib/liba.so")), "a 1, edited");

    // The other order is another view, where the first layer's files win.
    let reversed = LayerView::build(&cache, &[two, one]).unwrap();
    assert_ne!(reversed.path(), opt);
    assert_eq!(read(reversed.path().join("bin/tool")), "tool 1");
    assert_eq!(
        read(reversed.path().join("data/old.txt")),
        "a directory in 1"
    );
    assert!(!reversed.path().join("conf/settings").exists());
}

#[test]
fn a_view_of_the_same_layers_is_built_once() {
    let tmp = TempDir::new("view-once");
    tree(&tmp.join("one"), &[("bin/tool", "tool")]);
    let layers = [Layer::directory("one", 1, tmp.join("one")).unwrap()];
    let cache = LayerCache::new(tmp.join("cache"));
    let first = LayerView::build(&cache, &layers).unwrap();
    assert_eq!(cache.views_built(), 1);
    let before = fs::metadata(first.path()).unwrap();
    // A file that a rebuild would not have: the view is reused, not rewritten.
    let marker = first.path().join("marker");
    std::os::unix::fs::symlink("/dev/null", &marker).unwrap();

    let again = LayerView::build(&cache, &layers).unwrap();
    assert_eq!(again, first);
    assert_eq!(cache.views_built(), 1, "the second build reuses the view");
    let other = LayerCache::new(tmp.join("cache"));
    assert_eq!(LayerView::build(&other, &layers).unwrap(), first);
    assert_eq!(
        other.views_built(),
        0,
        "so does another cache on the folder"
    );
    let after = fs::metadata(again.path()).unwrap();
    assert_eq!(after.ino(), before.ino());
    assert!(fs::symlink_metadata(&marker).is_ok());
    let views: Vec<_> = fs::read_dir(tmp.join("cache/views")).unwrap().collect();
    assert_eq!(views.len(), 1, "no temporary directory is left behind");

    // Another version of the layer is another view.
    let newer = [Layer::directory("one", 2, tmp.join("one")).unwrap()];
    let newer = LayerView::build(&cache, &newer).unwrap();
    assert_ne!(newer, first);
    assert_eq!(cache.views_built(), 2);
}

#[test]
fn an_archive_is_unpacked_once_with_its_modes() {
    let tmp = TempDir::new("archive");
    let archive = tmp.join("runtime.zip");
    zip(
        &archive,
        &[
            Item::File("bootstrap", "#!/bin/sh\necho from-layer\n", 0o755),
            Item::Dir("lib/"),
            Item::File("lib/libz.so.1", "z", 0o644),
            Item::Link("lib/libz.so", "libz.so.1"),
            Item::File("python/lib/python3.12/site-packages/m.py", "M = 1", 0o644),
        ],
    );
    let layer = Layer::archive("runtime", 7, &archive).unwrap();
    let cache = LayerCache::new(tmp.join("cache"));
    let dir = cache.resolve(&layer).unwrap();
    assert_eq!(cache.unpacked(), 1);
    assert_eq!(dir.parent().unwrap(), tmp.join("cache/runtime"));
    let dir_name = dir.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(dir_name.starts_with("7-"), "{dir_name}");

    let bootstrap = fs::metadata(dir.join("bootstrap")).unwrap();
    assert_eq!(bootstrap.permissions().mode() & 0o777, 0o555);
    assert_eq!(
        fs::metadata(dir.join("lib/libz.so.1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o444,
        "unpacked layers are read-only"
    );
    assert_eq!(read(dir.join("lib/libz.so")), "z");
    assert_eq!(
        fs::read_link(dir.join("lib/libz.so")).unwrap(),
        Path::new("libz.so.1")
    );

    // The second use, even by another cache on the folder, finds the unpacked tree.
    let before = fs::metadata(&dir).unwrap();
    assert_eq!(cache.resolve(&layer).unwrap(), dir);
    assert_eq!(cache.unpacked(), 1, "the second use does not unpack again");
    let other = LayerCache::new(tmp.join("cache"));
    let again = other.resolve(&layer).unwrap();
    assert_eq!(again, dir);
    assert_eq!(other.unpacked(), 0);
    let after = fs::metadata(&again).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec())
    );
    let unpacked: Vec<_> = fs::read_dir(tmp.join("cache/runtime")).unwrap().collect();
    assert_eq!(unpacked.len(), 1);

    // A changed archive is unpacked beside the old one, under its new content hash.
    zip(&archive, &[Item::File("bootstrap", "#!/bin/sh\n", 0o755)]);
    let changed = cache.resolve(&layer).unwrap();
    assert_ne!(changed, dir);
    assert_eq!(cache.unpacked(), 2);
    assert!(!changed.join("lib").exists());

    // The view runs the zipped bootstrap: its executable bit survived.
    let view = LayerView::build(&cache, std::slice::from_ref(&layer)).unwrap();
    assert_eq!(
        cache.unpacked(),
        2,
        "building a view uses the unpacked tree"
    );
    let bootstrap = view.bootstrap().expect("an executable bootstrap");
    assert_eq!(bootstrap, view.path().join("bootstrap"));
    let output = std::process::Command::new(&bootstrap).output().unwrap();
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
}

#[test]
fn the_view_runs_a_zipped_bootstrap_and_resolves_relative_links_in_the_merged_tree() {
    let tmp = TempDir::new("bootstrap");
    zip(
        &tmp.join("base.zip"),
        &[
            Item::File("bootstrap", "#!/bin/sh\necho from-layer\n", 0o755),
            Item::File("lib/libz.so.1", "z 1", 0o644),
            Item::Link("lib/libz.so", "libz.so.1"),
        ],
    );
    zip(
        &tmp.join("patch.zip"),
        &[Item::File("lib/libz.so.1", "z 2", 0o644)],
    );
    let layers = [
        Layer::archive("base", 1, tmp.join("base.zip")).unwrap(),
        Layer::archive("patch", 1, tmp.join("patch.zip")).unwrap(),
    ];
    let view = LayerView::build(&LayerCache::new(tmp.join("cache")), &layers).unwrap();
    let output = std::process::Command::new(view.bootstrap().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "from-layer\n");
    // As in /opt, the base layer's relative link reaches the patch layer's file.
    assert_eq!(read(view.path().join("lib/libz.so")), "z 2");

    // A bootstrap without the executable bit is not one.
    zip(
        &tmp.join("plain.zip"),
        &[Item::File("bootstrap", "x", 0o644)],
    );
    let plain = [Layer::archive("plain", 1, tmp.join("plain.zip")).unwrap()];
    let plain = LayerView::build(&LayerCache::new(tmp.join("cache")), &plain).unwrap();
    assert!(plain.path().join("bootstrap").exists());
    assert_eq!(plain.bootstrap(), None);
}

#[test]
fn archives_reaching_outside_the_layer_are_refused_whole() {
    let tmp = TempDir::new("unsafe");
    let cases: [(&str, Vec<Item<'_>>, &str); 4] = [
        (
            "parent",
            vec![
                Item::File("ok.txt", "ok", 0o644),
                Item::File("../evil", "x", 0o644),
            ],
            "../evil",
        ),
        (
            "nested",
            vec![Item::File("a/../../evil", "x", 0o644)],
            "a/../../evil",
        ),
        (
            "absolute",
            vec![Item::File("/tmp/evil", "x", 0o644)],
            "/tmp/evil",
        ),
        (
            "link",
            vec![Item::Link("lib/escape", "../../etc")],
            "lib/escape",
        ),
    ];
    for (name, items, entry) in cases {
        let archive = tmp.join(&format!("{name}.zip"));
        zip(&archive, &items);
        let layer = Layer::archive(name, 1, &archive).unwrap();
        let cache = LayerCache::new(tmp.join("cache"));
        match cache.resolve(&layer) {
            Err(LayerError::UnsafeEntry { entry: refused, .. }) => assert_eq!(refused, entry),
            other => panic!("{name}: {other:?}"),
        }
        // Nothing of it is left: no half layer, no temporary directory.
        let left: Vec<_> = fs::read_dir(tmp.join("cache"))
            .map(|d| {
                d.flat_map(|e| fs::read_dir(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: {left:?}");
        assert!(LayerView::build(&cache, &[layer]).is_err());
    }
    assert!(!tmp.0.parent().unwrap().join("evil").exists());
    assert!(!tmp.join("evil").exists());
}

#[test]
fn concurrent_first_uses_unpack_one_tree() {
    let tmp = TempDir::new("concurrent");
    let archive = tmp.join("libs.zip");
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("python/mod{i}.py"), format!("N = {i}")))
        .collect();
    let items: Vec<Item<'_>> = files
        .iter()
        .map(|(name, content)| Item::File(name, content, 0o644))
        .collect();
    zip(&archive, &items);
    let layer = Layer::archive("libs", 1, &archive).unwrap();
    let dirs: Vec<PathBuf> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| LayerCache::new(tmp.join("cache")).resolve(&layer).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    let unpacked: Vec<_> = fs::read_dir(tmp.join("cache/libs")).unwrap().collect();
    assert_eq!(unpacked.len(), 1, "losers' temporary trees are removed");
    assert_eq!(fs::read_dir(dirs[0].join("python")).unwrap().count(), 50);
}

#[test]
fn the_environment_points_into_the_view() {
    let tmp = TempDir::new("env");
    tree(
        &tmp.join("py"),
        &[
            ("python/top.py", ""),
            ("python/lib/python3.9/site-packages/old.py", ""),
            ("python/lib/python3.12/site-packages/new.py", ""),
            ("python/lib/python3.10/not-site-packages/x.py", ""),
        ],
    );
    tree(
        &tmp.join("node"),
        &[
            ("nodejs/node_modules/a/index.js", ""),
            ("nodejs/node18/node_modules/b/index.js", ""),
            ("nodejs/node22/node_modules/c/index.js", ""),
            ("nodejs/node20/other/d.js", ""),
            ("bin/tool", ""),
        ],
    );
    let layers = [
        Layer::directory("py", 1, tmp.join("py")).unwrap(),
        Layer::directory("node", 1, tmp.join("node")).unwrap(),
    ];
    let view = LayerView::build(&LayerCache::new(tmp.join("cache")), &layers).unwrap();
    let opt = view.path().to_str().unwrap();
    let expected = vec![
        ("NIMBUS_OPT".to_owned(), opt.to_owned()),
        ("PATH".to_owned(), format!("{opt}/bin")),
        ("LD_LIBRARY_PATH".to_owned(), format!("{opt}/lib")),
        (
            "PYTHONPATH".to_owned(),
            format!(
                "{opt}/python/lib/python3.12/site-packages:{opt}/python/lib/python3.9/site-packages:{opt}/python"
            ),
        ),
        (
            "NODE_PATH".to_owned(),
            format!(
                "{opt}/nodejs/node22/node_modules:{opt}/nodejs/node18/node_modules:{opt}/nodejs/node_modules"
            ),
        ),
    ];
    assert_eq!(view.environment(), expected);

    let mut env = vec![
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("PYTHONPATH".to_owned(), String::new()),
        ("NIMBUS_OPT".to_owned(), "/opt".to_owned()),
    ];
    view.prepend_to(&mut env);
    let get = |name: &str| env.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(get("PATH"), format!("{opt}/bin:/usr/bin:/bin"));
    assert_eq!(get("PYTHONPATH"), expected[3].1);
    assert_eq!(get("NIMBUS_OPT"), opt);
    assert_eq!(get("LD_LIBRARY_PATH"), format!("{opt}/lib"));
    assert_eq!(env.len(), 5);

    // Without python or nodejs directories, those variables are not set.
    let bare = [Layer::directory("node", 1, tmp.join("node/bin")).unwrap()];
    let bare = LayerView::build(&LayerCache::new(tmp.join("cache")), &bare).unwrap();
    let names: Vec<String> = bare.environment().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["NIMBUS_OPT", "PATH", "LD_LIBRARY_PATH"]);
}

#[test]
fn bad_layers_name_the_field() {
    let tmp = TempDir::new("config");
    tree(&tmp.0, &[("layer.zip", "not read yet")]);
    let dir = tmp.0.clone();
    assert!(Layer::directory("a-Z_09", 1, &dir).is_ok());
    assert!(Layer::directory("x".repeat(64), u32::MAX, &dir).is_ok());
    for name in [
        String::new(),
        "x".repeat(65),
        "a.b".into(),
        "a b".into(),
        "é".into(),
    ] {
        let error = Layer::directory(name.clone(), 1, &dir).unwrap_err();
        assert_eq!((error.scope, error.field), ("layer", "name"), "{name:?}");
    }
    assert_eq!(Layer::directory("a", 0, &dir).unwrap_err().field, "version");
    assert_eq!(
        Layer::directory("a", 1, tmp.join("none"))
            .unwrap_err()
            .field,
        "path"
    );
    assert_eq!(
        Layer::directory("a", 1, tmp.join("layer.zip"))
            .unwrap_err()
            .field,
        "path"
    );
    assert_eq!(Layer::archive("a", 1, &dir).unwrap_err().field, "path");
    assert_eq!(
        Layer::archive("a", 1, tmp.join("no.zip"))
            .unwrap_err()
            .field,
        "path"
    );

    // A file that is not a zip archive is refused when it is unpacked.
    let layer = Layer::archive("a", 1, tmp.join("layer.zip")).unwrap();
    let error = LayerCache::new(tmp.join("cache"))
        .resolve(&layer)
        .unwrap_err();
    assert!(matches!(error, LayerError::Archive { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with("layer a:1: archive "),
        "{error}"
    );
}
