//! Where a plugin's bytes come from, as given to `--plugin`: a built-in
//! name, a component file, or a plugin source directory with a
//! `plugin.toml` (built before it is read).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::manifest::Project;
use super::{PluginVersion, builtin};

/// What the user asked for with `--plugin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A plugin compiled into the host.
    Builtin(&'static str),
    /// A file on disk.
    File(PathBuf),
    /// A source directory, built with its manifest's command.
    Project(Project),
}

impl PluginSource {
    /// Interprets a `--plugin` argument: a directory is a plugin project, an
    /// existing file wins over a built-in of the same name, and a bare
    /// built-in name is the built-in.
    pub fn parse(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::Project(Project::open(path)?));
        }
        if path.exists() {
            return Ok(Self::File(path.to_path_buf()));
        }
        if let Some(b) = builtin::find(spec) {
            return Ok(Self::Builtin(b.name));
        }
        if path.components().count() > 1 || path.extension().is_some() {
            bail!("plugin file not found: {}", path.display());
        }
        bail!(
            "plugin `{spec}` not found: no such file, and not a built-in ({})",
            builtin::names()
        )
    }

    /// A short name for logs: the built-in name or the file stem.
    pub fn name(&self) -> String {
        match self {
            Self::Builtin(name) => (*name).to_string(),
            Self::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            Self::Project(project) => project.name(),
        }
    }

    /// Reads the plugin's bytes, building a project first.
    pub fn read(&self) -> Result<PluginBytes> {
        let mut build_time = None;
        let bytes = match self {
            Self::Builtin(name) => builtin::find(name)
                .with_context(|| format!("built-in plugin `{name}` is missing"))?
                .bytes
                .to_vec(),
            Self::File(path) => match fs::read(path) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    bail!("plugin file not found: {}", path.display())
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot read plugin {}", path.display()));
                }
            },
            Self::Project(project) => {
                build_time = project.build()?;
                let output = project.output();
                fs::read(&output).with_context(|| {
                    format!(
                        "cannot read the build output {} named in {}",
                        output.display(),
                        project.dir.join(super::manifest::MANIFEST_FILE).display()
                    )
                })?
            }
        };
        let hash = Sha256::digest(&bytes);
        Ok(PluginBytes {
            version: PluginVersion {
                name: self.name(),
                hash: hex(&hash[..6]),
            },
            digest: hex(&hash),
            bytes,
            build_time,
        })
    }
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "built-in `{name}`"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Project(project) => write!(f, "{} (built from source)", project.dir.display()),
        }
    }
}

/// A plugin's bytes with their identity.
#[derive(Debug, Clone)]
pub struct PluginBytes {
    /// Name and short hash.
    pub version: PluginVersion,
    /// The full SHA-256 of the bytes, hex-encoded (the compile-cache key).
    pub digest: String,
    /// The raw file contents.
    pub bytes: Vec<u8>,
    /// How long the project's build command took, if one ran.
    pub build_time: Option<std::time::Duration>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_resolve_without_a_file() {
        assert_eq!(
            PluginSource::parse("echo").unwrap(),
            PluginSource::Builtin("echo")
        );
    }

    #[test]
    fn unknown_bare_name_lists_the_builtins() {
        let err = PluginSource::parse("nosuch").unwrap_err().to_string();
        assert!(err.contains("nosuch") && err.contains("not found"), "{err}");
        assert!(err.contains("http-hello"), "{err}");
    }

    #[test]
    fn missing_path_is_named() {
        let err = PluginSource::parse("dir/missing.wasm")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "plugin file not found: dir/missing.wasm");
    }

    #[test]
    fn versions_hash_the_bytes() {
        let a = PluginSource::Builtin("echo").read().unwrap();
        let b = PluginSource::Builtin("bot10086").read().unwrap();
        assert_eq!(a.version.hash.len(), 12);
        assert_ne!(a.version.hash, b.version.hash);
        assert!(a.digest.starts_with(&a.version.hash));
    }
}
