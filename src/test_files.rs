//! Files the unit tests write in the temp dir, removed when the test ends.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// `dw-<prefix>-<pid>-<name>` in the temp dir: written with `contents`, or
/// absent (for a test of a missing file). Removed when dropped.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    pub(crate) fn new(prefix: &str, name: &str, contents: Option<&[u8]>) -> TempFile {
        let path = std::env::temp_dir().join(format!("dw-{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        if let Some(c) = contents {
            std::fs::write(&path, c).expect("write a temp file");
        }
        TempFile(path)
    }
}

impl Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// The path, as a test puts it in a config file's text.
impl fmt::Display for TempFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
