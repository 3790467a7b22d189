//! A fresh directory per test (configs, logs, SQLite files), removed when
//! the test is done, kept for a look with `ROOST_TEST_KEEP_DIR=1`.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh directory under the system temp dir, removed on drop (unless
/// `ROOST_TEST_KEEP_DIR` is set).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `roost-test-LABEL-PID-N-NANOS` under the system temp dir: unique
    /// within the process (N) and across runs (PID, nanoseconds).
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "roost-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ));
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create test dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `name` in the dir and return its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ROOST_TEST_KEEP_DIR").is_some() {
            eprintln!("keeping test dir {}", self.path.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove test dir {}: {e}", self.path.display());
        }
    }
}

/// `path` opened for appending (created if missing): a child process's
/// log, kept across its restarts.
pub fn open_log(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_is_fresh_and_removed_on_drop() {
        let dir = TempDir::new("unit");
        let file = dir.write("a.txt", "hello");
        assert_eq!(fs::read_to_string(&file).unwrap(), "hello");
        let other = TempDir::new("unit");
        assert_ne!(dir.path(), other.path());
        let path = dir.path().to_owned();
        drop(dir);
        assert!(
            std::env::var_os("ROOST_TEST_KEEP_DIR").is_some() || !path.exists(),
            "removed on drop"
        );
    }
}
