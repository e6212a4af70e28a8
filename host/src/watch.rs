//! `--watch`: reload the plugin when its file changes, or rebuild and reload
//! it when its source directory changes; reload a TLS listener's
//! certificates when their files change.
//!
//! A file is watched through its parent directory, so every way an
//! editor or a build tool replaces a file is seen: written in place,
//! renamed over, or deleted and created again. Bursts of events are
//! debounced into one reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::plugin::source::PluginSource;
use crate::reload::{PluginSlot, Reloader};

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Longest a burst of events may delay a reload (a file rewritten
/// continuously still gets reloaded this often).
const MAX_DELAY: Duration = Duration::from_millis(600);

/// Directory names never watched inside a project (build output, VCS).
const IGNORED_DIRS: &[&str] = &["target", ".git", "node_modules", "__pycache__"];

/// Starts watching `source` and reloading through `reloader` on changes.
/// Built-in plugins cannot change, so there is nothing to watch for them.
pub fn spawn<S: PluginSlot>(source: &PluginSource, reloader: Reloader<S>) -> Result<()> {
    let (targets, filter): (Vec<(PathBuf, RecursiveMode)>, Filter) = match source {
        PluginSource::Builtin(name) => {
            tracing::warn!("--watch has no effect on the built-in plugin `{name}`");
            return Ok(());
        }
        PluginSource::File(path) => {
            return files(std::slice::from_ref(path), move || {
                reloader.reload_in_background("file changed");
            });
        }
        PluginSource::Project(project) => {
            let output = absolute(&project.output())?;
            let watched = project
                .watched_paths()
                .into_iter()
                .map(|p| absolute(&p).map(|p| (p, RecursiveMode::Recursive)))
                .collect::<Result<Vec<_>>>()?;
            (watched, Filter::Sources { output })
        }
    };
    paths(targets, filter, move || {
        reloader.reload_in_background("file changed");
    })
}

/// Calls `on_change` (on a thread of its own) whenever one of `files`
/// changes.
pub fn files(files: &[PathBuf], on_change: impl Fn() + Send + 'static) -> Result<()> {
    let files = files
        .iter()
        .map(|f| absolute(f))
        .collect::<Result<Vec<_>>>()?;
    let mut dirs: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for file in &files {
        let dir = file
            .parent()
            .with_context(|| format!("{} has no directory", file.display()))?
            .to_path_buf();
        if !dirs.iter().any(|(d, _)| *d == dir) {
            dirs.push((dir, RecursiveMode::NonRecursive));
        }
    }
    paths(dirs, Filter::Files(files), on_change)
}

/// Watches `targets`, calling `on_change` after each burst of events that
/// `filter` counts as a change.
fn paths(
    targets: Vec<(PathBuf, RecursiveMode)>,
    filter: Filter,
    on_change: impl Fn() + Send + 'static,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<notify::Result<Event>>();
    let mut watcher =
        notify::recommended_watcher(tx).context("cannot start watching for file changes")?;
    for (path, mode) in &targets {
        watcher
            .watch(path, *mode)
            .with_context(|| format!("cannot watch {}", path.display()))?;
        tracing::info!("watching {} for changes", path.display());
    }
    thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            // The watcher stops when dropped: keep it alive on this thread.
            let _watcher = watcher;
            while let Ok(event) = rx.recv() {
                if !filter.is_change(event) {
                    continue;
                }
                // Debounce: wait until the burst of events is over, but
                // not forever.
                let first = Instant::now();
                while first.elapsed() < MAX_DELAY && rx.recv_timeout(DEBOUNCE).is_ok() {}
                on_change();
            }
        })
        .context("cannot start the watch thread")?;
    Ok(())
}

/// Which changed paths trigger a reload.
enum Filter {
    /// Only these files (in watched directories).
    Files(Vec<PathBuf>),
    /// Anything but build output, hidden files and ignored directories.
    Sources { output: PathBuf },
}

impl Filter {
    /// Whether `event` changed a watched path (reads are not changes: the
    /// host itself reads the file when it reloads).
    fn is_change(&self, event: notify::Result<Event>) -> bool {
        match event {
            Ok(event) => {
                !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| self.matches(p))
            }
            Err(err) => {
                tracing::warn!("file watcher error: {err}");
                false
            }
        }
    }

    fn matches(&self, path: &Path) -> bool {
        match self {
            Filter::Files(files) => files.iter().any(|file| path == file),
            Filter::Sources { output } => {
                path != output
                    && !path.components().any(|c| {
                        let name = c.as_os_str().to_string_lossy();
                        IGNORED_DIRS.contains(&name.as_ref())
                            || (name.starts_with('.') && name.len() > 1 && name != "..")
                    })
            }
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_filter_matches_only_that_file() {
        let filter = Filter::Files(vec!["/p/echo.wasm".into()]);
        assert!(filter.matches(Path::new("/p/echo.wasm")));
        assert!(!filter.matches(Path::new("/p/other.wasm")));
    }

    #[test]
    fn a_source_filter_skips_build_output_and_hidden_paths() {
        let filter = Filter::Sources {
            output: "/p/out/echo.wasm".into(),
        };
        assert!(filter.matches(Path::new("/p/src/lib.rs")));
        assert!(!filter.matches(Path::new("/p/out/echo.wasm")));
        assert!(!filter.matches(Path::new("/p/target/release/x")));
        assert!(!filter.matches(Path::new("/p/src/.lib.rs.swp")));
    }
}
