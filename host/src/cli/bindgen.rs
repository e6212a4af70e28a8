//! `host bindgen c|go|wit`: generate guest bindings for the handler world
//! with the `wit-bindgen` generators built into the host (no
//! `wit-bindgen-cli` to install), or write out the WIT itself for
//! toolchains that read it (componentize-py, componentize-js).
//!
//! Go bindings import the runtime package `go.bytecodealliance.org/pkg`;
//! `host bindgen go` writes a vendored copy of it next to the bindings and
//! points the generated `go.mod` at it, so `go build` needs no network.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wit_bindgen_core::Files;

use super::wit_source::{BUILTIN_WIT_FILES, WitOptions};

#[derive(Debug, Args)]
pub struct BindgenArgs {
    #[command(subcommand)]
    language: Language,
}

#[derive(Debug, Subcommand)]
enum Language {
    /// C bindings: `<world>.h`, `<world>.c` and `<world>_component_type.o`
    /// (link the object: it carries the WIT for `host component new`).
    C(CArgs),
    /// Go bindings: a `wit_component` module (go.mod, wit_exports.go, one
    /// package per interface) plus the runtime package it imports, under
    /// `pkg/`.
    Go(GoArgs),
    /// The host's WIT contract (`handler.wit`), for toolchains that read
    /// WIT themselves (componentize-py, componentize-js).
    Wit(WitArgs),
}

#[derive(Debug, Args)]
struct CArgs {
    #[command(flatten)]
    wit: WitOptions,

    /// Directory to write the bindings into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,

    /// Let the bindings drop every borrowed handle when an export returns,
    /// so the handler need not call `..._connection_drop_borrow` itself.
    #[arg(long)]
    autodrop_borrows: bool,
}

#[derive(Debug, Args)]
struct GoArgs {
    #[command(flatten)]
    wit: WitOptions,

    /// Directory to write the bindings into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,

    /// Also write stub implementations of the exports
    /// (`export_wit_world/wit_bindings.go`), to start a plugin from.
    #[arg(long)]
    stubs: bool,
}

#[derive(Debug, Args)]
struct WitArgs {
    /// Directory to write `handler.wit` into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

/// The runtime package generated Go bindings import, vendored from the
/// `wit-bindgen-go` crate (Apache-2.0; see `bindgen/go-pkg/README.md`).
const GO_PKG: &[(&str, &str)] = &[
    ("go.mod", include_str!("bindgen/go-pkg/go.mod")),
    ("LICENSE", include_str!("bindgen/go-pkg/LICENSE")),
    ("README.md", include_str!("bindgen/go-pkg/README.md")),
    (
        "wit/runtime/runtime.go",
        include_str!("bindgen/go-pkg/wit/runtime/runtime.go"),
    ),
    (
        "wit/runtime/empty.s",
        include_str!("bindgen/go-pkg/wit/runtime/empty.s"),
    ),
    (
        "wit/types/future.go",
        include_str!("bindgen/go-pkg/wit/types/future.go"),
    ),
    (
        "wit/types/option.go",
        include_str!("bindgen/go-pkg/wit/types/option.go"),
    ),
    (
        "wit/types/result.go",
        include_str!("bindgen/go-pkg/wit/types/result.go"),
    ),
    (
        "wit/types/stream.go",
        include_str!("bindgen/go-pkg/wit/types/stream.go"),
    ),
    (
        "wit/types/tuple.go",
        include_str!("bindgen/go-pkg/wit/types/tuple.go"),
    ),
    (
        "wit/types/unit.go",
        include_str!("bindgen/go-pkg/wit/types/unit.go"),
    ),
    (
        "wit/async/async.go",
        include_str!("bindgen/go-pkg/wit/async/async.go"),
    ),
    (
        "wit/async/empty.s",
        include_str!("bindgen/go-pkg/wit/async/empty.s"),
    ),
];

/// Where `host bindgen go` puts the runtime package, relative to the
/// bindings.
const GO_PKG_DIR: &str = "pkg";

impl BindgenArgs {
    pub fn run(self) -> Result<()> {
        match self.language {
            Language::C(args) => {
                let opts = wit_bindgen_c::Opts {
                    autodrop_borrows: if args.autodrop_borrows {
                        wit_bindgen_c::Enabled::Yes
                    } else {
                        wit_bindgen_c::Enabled::No
                    },
                    ..Default::default()
                };
                let files = generate(&args.wit, &mut *opts.build())?;
                write_files(&args.out_dir, &files)
            }
            Language::Go(args) => {
                let opts = wit_bindgen_go::Opts {
                    generate_stubs: args.stubs,
                    quiet: true,
                    ..Default::default()
                };
                let mut files = generate(&args.wit, &mut *opts.build())?;
                vendor_go_runtime(&mut files)?;
                write_files(&args.out_dir, &files)
            }
            Language::Wit(args) => write_files(&args.out_dir, &wit_files()),
        }
    }
}

/// The built-in WIT as files to write.
pub fn wit_files() -> Files {
    let mut files = Files::default();
    for (path, contents) in BUILTIN_WIT_FILES {
        files.push(path, contents.as_bytes());
    }
    files
}

/// Runs a bindings generator over the selected world.
fn generate(
    wit: &WitOptions,
    generator: &mut dyn wit_bindgen_core::WorldGenerator,
) -> Result<Files> {
    let mut loaded = wit.load()?;
    let mut files = Files::default();
    generator
        .generate(&mut loaded.resolve, loaded.world, &mut files)
        .with_context(|| {
            format!(
                "cannot generate bindings for world `{}` of {}",
                wit.world,
                wit.describe()
            )
        })?;
    Ok(files)
}

/// Adds the runtime package under `pkg/` and a `replace` for it to the
/// generated `go.mod`.
fn vendor_go_runtime(files: &mut Files) -> Result<()> {
    let go_mod = files
        .remove("go.mod")
        .context("the Go generator wrote no go.mod")?;
    let go_mod = String::from_utf8(go_mod).context("the generated go.mod is not UTF-8")?;
    // The runtime package may need a newer Go than the generator assumes;
    // `go build` refuses a main module older than a dependency.
    let pkg_go = go_directive(GO_PKG[0].1).context("the vendored go.mod has no `go` line")?;
    let mut go_mod: String = go_mod
        .lines()
        .map(|line| match go_directive(line) {
            Some(_) => format!("go {pkg_go}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    go_mod.push_str(&format!(
        "\n// The runtime package, vendored by `host bindgen go` (no network needed).\n\
         replace go.bytecodealliance.org/pkg => ./{GO_PKG_DIR}\n"
    ));
    files.push("go.mod", go_mod.as_bytes());
    for (path, contents) in GO_PKG {
        files.push(&format!("{GO_PKG_DIR}/{path}"), contents.as_bytes());
    }
    Ok(())
}

/// The version in the first `go X.Y[.Z]` line of a go.mod text.
fn go_directive(go_mod: &str) -> Option<&str> {
    go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("go "))
        .map(str::trim)
}

/// Writes every file under `dir`, replacing files of the same name.
pub fn write_files(dir: &Path, files: &Files) -> Result<()> {
    for (name, contents) in files.iter() {
        write_file(&dir.join(name), contents)?;
    }
    Ok(())
}

/// Writes one file, creating its parent directories.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> WitOptions {
        WitOptions {
            wit: None,
            world: "handler".into(),
        }
    }

    fn names(files: &Files) -> Vec<String> {
        files.iter().map(|(name, _)| name.to_string()).collect()
    }

    #[test]
    fn c_bindings_name_the_borrow_drop() {
        let files = generate(&builtin(), &mut *wit_bindgen_c::Opts::default().build()).unwrap();
        let names = names(&files);
        for expected in ["handler.c", "handler.h", "handler_component_type.o"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        let header = files.iter().find(|(n, _)| *n == "handler.h").unwrap().1;
        let header = String::from_utf8_lossy(header);
        assert!(header.contains("connection_drop_borrow"), "{header}");
    }

    #[test]
    fn go_bindings_build_offline() {
        let opts = wit_bindgen_go::Opts {
            quiet: true,
            ..Default::default()
        };
        let mut files = generate(&builtin(), &mut *opts.build()).unwrap();
        vendor_go_runtime(&mut files).unwrap();
        let go_mod = files.iter().find(|(n, _)| *n == "go.mod").unwrap().1;
        let go_mod = String::from_utf8_lossy(go_mod);
        assert!(
            go_mod.contains("replace go.bytecodealliance.org/pkg => ./pkg"),
            "{go_mod}"
        );
        let names = names(&files);
        assert!(go_mod.contains("\ngo 1.27"), "{go_mod}");
        assert!(names.iter().any(|n| n == "pkg/wit/runtime/runtime.go"));
        assert!(names.iter().any(|n| n == "wit_exports.go"), "{names:?}");
    }
}
