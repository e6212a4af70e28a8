//! `plugin.toml`: how to build a plugin from its source directory, so
//! `host run --plugin DIR --watch` can rebuild and swap it on every edit.
//!
//! ```toml
//! name = "echo"                                  # optional; default: directory name
//! build = "cargo build --release --target wasm32-wasip2"
//! output = "target/wasm32-wasip2/release/echo.wasm"
//! watch = ["src", "Cargo.toml"]                  # optional; default: the directory
//! ```
//!
//! `build` runs with `sh -c` in the plugin directory; `output` and `watch`
//! are relative to it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Lines of build output kept in an error message.
const BUILD_OUTPUT_TAIL: usize = 40;

/// A parsed `plugin.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name in logs.
    pub name: Option<String>,
    /// Shell command that builds the plugin.
    pub build: Option<String>,
    /// The built component, relative to the plugin directory.
    pub output: PathBuf,
    /// Paths whose changes trigger a rebuild, relative to the directory.
    #[serde(default)]
    pub watch: Vec<PathBuf>,
}

/// A plugin source directory with its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The plugin directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Project {
    /// Reads `dir/plugin.toml`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is a directory without a {MANIFEST_FILE} (it needs `build` and `output`)",
                dir.display()
            ),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: {}", path.display(), err.message()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The plugin's name: from the manifest, else the directory name.
    pub fn name(&self) -> String {
        self.manifest.name.clone().unwrap_or_else(|| {
            self.dir
                .canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "plugin".into())
        })
    }

    /// Where the built component appears.
    pub fn output(&self) -> PathBuf {
        self.dir.join(&self.manifest.output)
    }

    /// The paths to watch for source changes.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        if self.manifest.watch.is_empty() {
            vec![self.dir.clone()]
        } else {
            self.manifest
                .watch
                .iter()
                .map(|p| self.dir.join(p))
                .collect()
        }
    }

    /// Runs the build command, if any; the error carries the tail of the
    /// build's output.
    pub fn build(&self) -> Result<Option<Duration>> {
        let Some(command) = &self.manifest.build else {
            return Ok(None);
        };
        let started = Instant::now();
        let output = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("cannot run build command `{command}`"))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(BUILD_OUTPUT_TAIL)..].join("\n  ");
            bail!(
                "build command `{command}` failed ({}) in {}:\n  {tail}",
                output.status,
                self.dir.display()
            );
        }
        Ok(Some(started.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_and_reject_unknown_keys() {
        let m: Manifest = toml::from_str("build = \"make\"\noutput = \"out.wasm\"\n").unwrap();
        assert_eq!(m.output, PathBuf::from("out.wasm"));
        assert!(m.watch.is_empty());
        let err = toml::from_str::<Manifest>("output = \"x\"\nbiuld = \"make\"\n").unwrap_err();
        assert!(err.message().contains("biuld"), "{err}");
    }

    #[test]
    fn a_failing_build_reports_its_output() {
        let dir = std::env::temp_dir().join(format!("plughost-manifest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let project = Project {
            dir: dir.clone(),
            manifest: Manifest {
                name: None,
                build: Some("echo 'error[E0308]: mismatched types' >&2; exit 3".into()),
                output: "x.wasm".into(),
                watch: vec![],
            },
        };
        let err = project.build().unwrap_err().to_string();
        assert!(err.contains("mismatched types"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
