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
//!
//! The cache holds native code the host maps and runs, so whoever can
//! write to it can run code as the host. The host therefore creates the
//! directory owner-only (mode 0700) and refuses, with a clear error at
//! start, a directory that another user owns or that its group or others
//! may write to ([`CompileCache::new`]); the trust assumption is that
//! only the host's own user writes there.
//!
//! The directory is bounded: every plugin edit under `--watch` and every
//! host upgrade adds an entry (tens of MB for a Python or JavaScript
//! guest), so after each write the least recently used entries are
//! removed until the directory fits its size cap. A cache hit renews its
//! entry's modification time, which is what "recently used" goes by.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks a cache entry written by this host (format version 1).
const MAGIC: &[u8; 8] = b"PLUGHC01";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// The file name ending of a cache entry.
const ENTRY_SUFFIX: &str = ".cwasm";
/// A writer's temporary file older than this was left by a crash.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// Where compiled components are kept, and how much room they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The cache directory (created on first write).
    pub dir: PathBuf,
    /// The most the directory's entries may take together, in bytes; the
    /// newest entry is kept even when it alone is larger.
    pub max_size: u64,
}

/// A directory of compiled components.
#[derive(Clone)]
pub struct CompileCache {
    settings: CacheSettings,
    engine: Engine,
    engine_key: String,
}

impl CompileCache {
    /// A cache with `settings` for artifacts of `engine`. Creates the
    /// directory owner-only if it is missing, and fails if it is one the
    /// host must not trust (see [`trusted_dir`]).
    pub fn new(settings: CacheSettings, engine: &Engine) -> Result<Self> {
        trusted_dir(&settings.dir, crate::sys::user::effective_uid())?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), hasher.finish());
        Ok(Self {
            settings,
            engine: engine.clone(),
            engine_key,
        })
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        self.settings
            .dir
            .join(format!("{digest}-{}{ENTRY_SUFFIX}", self.engine_key))
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
        match write_entry(&path, &serialized) {
            Ok(()) => self.evict_to_fit(&path),
            Err(err) => {
                tracing::warn!(path = %path.display(), "cannot write compile cache entry: {err:#}");
            }
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
            Ok(component) => {
                mark_used(path);
                Some(component)
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), "ignoring incompatible cache entry: {err}");
                None
            }
        }
    }

    /// Removes the least recently used entries (never `newest`) until the
    /// directory fits the size cap, and temporary files of crashed writers.
    /// Another host sharing the directory may remove the same files at the
    /// same time: a file already gone is not an error.
    fn evict_to_fit(&self, newest: &Path) {
        let listing = match list_dir(&self.settings.dir) {
            Ok(listing) => listing,
            Err(err) => {
                tracing::warn!(dir = %self.settings.dir.display(), "cannot list the compile cache: {err}");
                return;
            }
        };
        let now = SystemTime::now();
        let stale_tmps = listing.tmps.iter().filter(|file| {
            now.duration_since(file.modified)
                .is_ok_and(|age| age > STALE_TMP_AGE)
        });
        let evicted = entries_to_evict(listing.entries, self.settings.max_size, newest);
        let (mut count, mut bytes) = (0, 0);
        for file in stale_tmps.chain(&evicted) {
            match fs::remove_file(&file.path) {
                Ok(()) => {
                    count += 1;
                    bytes += file.size;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(path = %file.path.display(), "cannot remove from the compile cache: {err}");
                }
            }
        }
        if count > 0 {
            tracing::info!(
                dir = %self.settings.dir.display(),
                "compile cache: removed {count} old files ({:.1} MiB) to stay under {:.1} MiB",
                mib(bytes),
                mib(self.settings.max_size)
            );
        }
    }
}

/// A file in the cache directory.
#[derive(Debug, Clone)]
struct CacheFile {
    path: PathBuf,
    size: u64,
    modified: SystemTime,
}

/// The cache directory's entries and writers' temporary files.
struct Listing {
    entries: Vec<CacheFile>,
    tmps: Vec<CacheFile>,
}

fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing {
        entries: Vec::new(),
        tmps: Vec::new(),
    };
    for item in fs::read_dir(dir)? {
        let item = item?;
        let Ok(metadata) = item.metadata() else {
            continue; // removed meanwhile
        };
        if !metadata.is_file() {
            continue;
        }
        let name = item.file_name();
        let name = name.to_string_lossy();
        let file = CacheFile {
            path: item.path(),
            size: metadata.len(),
            modified: metadata.modified()?,
        };
        if name.starts_with('.') && name.ends_with(".tmp") {
            listing.tmps.push(file);
        } else if name.ends_with(ENTRY_SUFFIX) {
            listing.entries.push(file);
        }
    }
    Ok(listing)
}

/// The entries to remove so the rest take at most `max_size` bytes: the
/// least recently used first, never `keep`.
fn entries_to_evict(mut entries: Vec<CacheFile>, max_size: u64, keep: &Path) -> Vec<CacheFile> {
    // Newest first; `keep` counts as the newest of all.
    entries.sort_by_key(|file| (file.path != keep, std::cmp::Reverse(file.modified)));
    let mut total = 0u64;
    entries
        .into_iter()
        .filter(|file| {
            total = total.saturating_add(file.size);
            total > max_size && file.path != keep
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Renews an entry's modification time: it was just used. Best effort (a
/// read-only cache still serves).
fn mark_used(path: &Path) {
    if let Ok(file) = fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Compiles without a cache.
pub fn compile(engine: &Engine, bytes: &[u8], what: &str) -> Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} failed to compile"))
}

/// Makes sure `dir` exists and only `uid` may write to it: creates it
/// (and missing parents) with mode 0700, or checks an existing one is
/// owned by `uid` and not writable by its group or others. An error says
/// what is wrong and how to fix it.
fn trusted_dir(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the compile cache directory {}",
                    dir.display()
                )
            })?;
    }
    let meta = fs::metadata(dir)
        .with_context(|| format!("cannot read the compile cache directory {}", dir.display()))?;
    let shown = dir.display();
    anyhow::ensure!(
        meta.is_dir(),
        "the compile cache path {shown} is not a directory"
    );
    let fix = "(it holds native code the host runs; use a directory of your own with \
               --cache-dir, or --no-cache)";
    if meta.uid() != uid {
        anyhow::bail!(
            "refusing the compile cache directory {shown}: it belongs to user {}, not to the \
             host's user {uid} {fix}",
            meta.uid()
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "refusing the compile cache directory {shown}: its group or others may write to it \
             (mode {:o}); `chmod go-w {shown}` {fix}",
            mode & 0o777
        );
    }
    Ok(())
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
    // Removed since start-up? Create it owner-only again.
    trusted_dir(dir, crate::sys::user::effective_uid())?;
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

    #[test]
    fn a_missing_cache_directory_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b/cache");
        let uid = crate::sys::user::effective_uid();
        trusted_dir(&dir, uid).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_cache_directory_others_may_write_or_own_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let uid = crate::sys::user::effective_uid();
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = trusted_dir(base.path(), uid).unwrap_err().to_string();
        assert!(
            err.contains("its group or others may write to it (mode 777)"),
            "{err}"
        );
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
        trusted_dir(base.path(), uid).unwrap();
        let err = trusted_dir(base.path(), uid + 1).unwrap_err().to_string();
        assert!(err.contains(&format!("belongs to user {uid}")), "{err}");
    }

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

    fn file(name: &str, size: u64, age_secs: u64) -> CacheFile {
        CacheFile {
            path: PathBuf::from(name),
            size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs),
        }
    }

    fn names(files: &[CacheFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.to_str().unwrap()).collect()
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let entries = vec![
            file("mid", 40, 20),
            file("old", 40, 30),
            file("new", 40, 10),
            file("oldest", 40, 40),
        ];
        let gone = entries_to_evict(entries.clone(), 100, Path::new("new"));
        assert_eq!(names(&gone), ["old", "oldest"]);
        assert!(entries_to_evict(entries.clone(), 160, Path::new("new")).is_empty());
        // The entry just written stays even when it is the oldest on disk
        // (a clock step) or alone over the cap.
        let gone = entries_to_evict(entries.clone(), 50, Path::new("oldest"));
        assert_eq!(names(&gone), ["new", "mid", "old"]);
        let gone = entries_to_evict(vec![file("big", 500, 0)], 100, Path::new("big"));
        assert!(gone.is_empty());
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
