//! What the serve tests share: loading a text, a bucket file, the example file and scratch
//! folders.

use nimbus::serve::{ServeError, ServeFile};

/// A file's text, loaded as `nimbus.toml`.
pub(crate) fn parse(text: &str) -> Result<ServeFile, ServeError> {
    ServeFile::parse(text, "nimbus.toml")
}

/// A function and a bucket whose rule invokes it.
pub(crate) const BUCKET: &str = "[[functions]]\nname = \"thumbs\"\n\n[[buckets]]\nname = \"photos\"\ndirectory = \"data\"\n\n\
                      [[buckets.notifications]]\nevents = [\"s3:ObjectCreated:*\"]\nprefix = \"in/\"\nsuffix = \".jpg\"\nfunction = \"thumbs\"\n";

/// The example file of the quick start.
pub(crate) const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/serve.toml");

/// A folder of its own under the system's temporary directory, removed when dropped.
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("nimbus-serve-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
