//! Throwaway directories for daemons' configuration files, sockets and logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicUsize, Ordering};

static CREATED: AtomicUsize = AtomicUsize::new(0);

/// A directory under the system's temporary directory, removed with everything in it when
/// the guard drops (also when the test panics).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<tmp>/tortie-tests-<tag>-<pid>-<n>`, world-writable so that daemons that
    /// drop privileges (FRR) can still write their sockets into it.
    #[track_caller]
    pub fn new(tag: &str) -> ScratchDir {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "tortie-tests-{tag}-{}-{}",
            process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory of that name can only be a leftover of a killed process that had our
        // pid: it is nobody's now.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("cannot open up {}: {e}", path.display()));
        ScratchDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    #[track_caller]
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The contents of `name`, or a note saying why it cannot be read (for messages).
    pub fn read_lossy(&self, name: &str) -> String {
        fs::read(self.join(name))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<{name}: {e}>"))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
