//! An on-disk cache of compiled components, so a restart or a reload of an
//! unchanged plugin skips compilation.
//!
//! Entries are keyed by the plugin's SHA-256 and the engine's compatibility
//! hash (wasmtime version + every setting that affects code generation), so
//! an artifact is only ever loaded by an engine that could have produced it.
//! Each entry carries a SHA-256 of its payload: a truncated, corrupt or
//! foreign file is ignored and rebuilt, never handed to wasmtime. Entries
//! are written to a temporary file and renamed into place, so readers never
//! see half an entry.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks a cache entry written by this host (format version 1).
const MAGIC: &[u8; 8] = b"PLUGHC01";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// A directory of compiled components.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine: Engine,
    engine_key: String,
}

impl CompileCache {
    /// A cache in `dir` (created on first write) for artifacts of `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), hasher.finish());
        Self {
            dir,
            engine: engine.clone(),
            engine_key,
        }
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Loads the compiled form of the component with SHA-256 `digest`, or
    /// compiles `bytes` and stores the result. Returns whether it was cached.
    pub fn load_or_compile(
        &self,
        digest: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<(Component, bool)> {
        let path = self.entry_path(digest);
        if let Some(component) = self.load(&path) {
            return Ok((component, true));
        }
        let serialized = self
            .engine
            .precompile_component(bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} failed to compile"))?;
        if let Err(err) = write_entry(&path, &serialized) {
            tracing::warn!(path = %path.display(), "cannot write compile cache entry: {err:#}");
        }
        // SAFETY: `serialized` was produced just now by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &serialized) }
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{what} failed to load after compiling"))?;
        Ok((component, false))
    }

    /// Reads and verifies an entry; `None` (with a warning for anything but
    /// a missing file) means "compile again".
    fn load(&self, path: &Path) -> Option<Component> {
        let data = match fs::read(path) {
            Ok(data) => data,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable cache entry: {err}");
                return None;
            }
        };
        let Some(payload) = verified_payload(&data) else {
            tracing::warn!(path = %path.display(), "ignoring corrupt cache entry; recompiling");
            return None;
        };
        // SAFETY: the payload's checksum matches what this host wrote, and
        // the file name binds it to this engine's compatibility hash;
        // wasmtime additionally rejects artifacts from another version or
        // configuration.
        match unsafe { Component::deserialize(&self.engine, payload) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "ignoring incompatible cache entry: {err}");
                None
            }
        }
    }
}

/// Compiles without a cache.
pub fn compile(engine: &Engine, bytes: &[u8], what: &str) -> Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} failed to compile"))
}

/// The payload of a well-formed entry whose checksum matches.
fn verified_payload(data: &[u8]) -> Option<&[u8]> {
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let (header, payload) = data.split_at(HEADER_LEN);
    (Sha256::digest(payload).as_slice() == &header[MAGIC.len()..]).then_some(payload)
}

/// Writes an entry atomically: a unique temporary file, then a rename.
fn write_entry(path: &Path, payload: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(MAGIC)?;
    file.write_all(&Sha256::digest(payload))?;
    file.write_all(payload)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: &[u8]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&Sha256::digest(payload));
        data.extend_from_slice(payload);
        data
    }

    #[test]
    fn intact_entries_verify() {
        assert_eq!(verified_payload(&entry(b"code")), Some(&b"code"[..]));
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_rejected() {
        let mut flipped = entry(b"code");
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(verified_payload(&flipped), None);
        let good = entry(b"code");
        assert_eq!(verified_payload(&good[..good.len() - 1]), None);
        assert_eq!(
            verified_payload(b"\x7fELF not ours at all, no header"),
            None
        );
        assert_eq!(verified_payload(b""), None);
    }
}
