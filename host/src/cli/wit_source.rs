//! The WIT that `host component embed`, `host bindgen` and `host new` work
//! from: the host's own contract (compiled into the binary, so it always
//! matches what `host run` expects) or a package given with `--wit`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use wit_parser::{Resolve, WorldId};

/// The contract this host implements, as the files of `wit/`:
/// `handler.wit` first, then the standard packages it imports (`deps/`).
pub const BUILTIN_WIT_FILES: [(&str, &str); 5] = [
    ("handler.wit", include_str!("../../../wit/handler.wit")),
    (
        "deps/keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "deps/keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "deps/keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "deps/keyvalue/batch.wit",
        include_str!("../../../wit/deps/keyvalue/batch.wit"),
    ),
];

/// Parses the built-in WIT into `resolve`: the dependencies, then the
/// contract's package.
fn push_builtin(resolve: &mut Resolve) -> Result<wit_parser::PackageId> {
    let (main, deps) = BUILTIN_WIT_FILES.split_first().context("no built-in WIT")?;
    let mut map = wit_parser::SourceMap::new();
    for (path, contents) in deps {
        map.push(Path::new(path), *contents);
    }
    let group = map
        .parse()
        .map_err(|(_, err)| anyhow::anyhow!("{err}"))
        .context("the built-in WIT's dependencies do not parse")?;
    resolve
        .push_group(group)
        .context("the built-in WIT's dependencies do not resolve")?;
    resolve
        .push_str(main.0, main.1)
        .context("the built-in WIT does not parse")
}

/// `--wit` and `--world`, shared by the subcommands that read WIT.
#[derive(Debug, Clone, Args)]
pub struct WitOptions {
    /// WIT package to use: a directory (with an optional `deps/`) or a
    /// `.wit` file [default: the host's own contract, plughost:handler].
    #[arg(long, value_name = "PATH")]
    pub wit: Option<PathBuf>,

    /// The world to use, by name (`handler`) or fully qualified
    /// (`plughost:handler/handler@0.1.1`).
    #[arg(long, value_name = "WORLD", default_value = "handler")]
    pub world: String,
}

/// A parsed WIT package and the selected world.
pub struct Wit {
    /// Every package parsed.
    pub resolve: Resolve,
    /// The world selected with `--world`.
    pub world: WorldId,
}

impl WitOptions {
    /// Parses the WIT and selects the world.
    pub fn load(&self) -> Result<Wit> {
        load(self.wit.as_deref(), &self.world)
    }

    /// A short description of where the WIT comes from, for messages.
    pub fn describe(&self) -> String {
        match &self.wit {
            Some(path) => path.display().to_string(),
            None => "the built-in WIT".into(),
        }
    }
}

/// Parses `wit` (the built-in contract if `None`) and selects `world`.
pub fn load(wit: Option<&Path>, world: &str) -> Result<Wit> {
    let mut resolve = Resolve::default();
    let package = match wit {
        None => push_builtin(&mut resolve)?,
        Some(path) => {
            if !path.exists() {
                anyhow::bail!("WIT path not found: {}", path.display());
            }
            resolve
                .push_path(path)
                .with_context(|| format!("cannot parse the WIT in {}", path.display()))?
                .0
        }
    };
    let world = resolve
        .select_world(&[package], Some(world))
        .with_context(|| {
            let name = &resolve.packages[package].name;
            format!("no world `{world}` in WIT package {name}")
        })?;
    Ok(Wit { resolve, world })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_wit_has_the_handler_world() {
        let wit = load(None, "handler").unwrap();
        let world = &wit.resolve.worlds[wit.world];
        assert_eq!(world.name, "handler");
        assert_eq!(world.exports.len(), 3);
    }

    #[test]
    fn an_unknown_world_is_named() {
        let err = load(None, "nope").err().unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("no world `nope`"), "{text}");
        assert!(text.contains("plughost:handler"), "{text}");
    }
}
