//! The content-addressed module store: each policy component sigward loads is kept once,
//! as `<state>/policies/<hex digest>.wasm`, so that `sigward audit replay` can evaluate a
//! recorded verdict with exactly the module that made it. Below both [`crate::policy`]
//! (which stores what it loads) and [`crate::audit`] (which reads it back); keyed by the
//! digest's text (`sha256:…`), so that it depends on neither.

use std::path::{Path, PathBuf};

/// The file that holds the module with `digest` (`sha256:<hex>`, or the bare hex).
pub fn path(store: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    store.join(format!("{hex}.wasm"))
}

/// Keep a module's bytes, once; written to a temporary name and renamed, so a reader
/// never sees half a module.
pub fn store(store: &Path, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
    let file = path(store, digest);
    if file.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(store)?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let temporary = store.join(format!(".{hex}.tmp"));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, &file)
}

/// The bytes of the module with `digest`, and the file they came from.
pub fn read(store: &Path, digest: &str) -> (PathBuf, std::io::Result<Vec<u8>>) {
    let file = path(store, digest);
    let bytes = std::fs::read(&file);
    (file, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_kept_once_under_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let digest = format!("sha256:{}", "ab".repeat(32));
        store(dir.path(), &digest, b"first").expect("store");
        store(dir.path(), &digest, b"second").expect("store again");
        let (file, bytes) = read(dir.path(), &digest);
        assert_eq!(file, dir.path().join(format!("{}.wasm", "ab".repeat(32))));
        assert_eq!(bytes.expect("read"), b"first");
        assert!(read(dir.path(), "sha256:00").1.is_err());
    }
}
