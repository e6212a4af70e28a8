//! `host new [--world protocol] <lang> <name>`: scaffold a plugin
//! directory — an echo plugin of the `handler` world (an instance per
//! connection) or of the `protocol` world (one instance serving every
//! connection) that builds as is, a `plugin.toml` (so `host run --plugin
//! DIR --watch` builds and reloads it) and a README with install, build
//! and run steps — for Rust, Python, JavaScript, C or Go.
//!
//! The templates are compiled into the binary. They reuse the sources of
//! the in-repo echo plugins (`plugins/<lang>/echo` and
//! `plugins/<lang>/proto-echo`, and the Python protocol module), so what
//! `host new` writes is what CI tests. The Rust protocol template depends
//! on the repository's `plughost-protocol` crate by path.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::wit_source::BUILTIN_WIT_FILES;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's language.
    #[arg(value_enum)]
    lang: Lang,

    /// The plugin's name: lowercase letters, digits and `-`, starting with a
    /// letter (e.g. `my-proto`).
    name: String,

    /// Directory to create [default: ./<name>]; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// The WIT world the plugin implements.
    #[arg(long, value_enum, default_value_t = World::Handler)]
    world: World,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum World {
    /// An instance per connection, with a blocking read (`setup`, `handle`,
    /// `finish`).
    Handler,
    /// One instance serving every connection through events
    /// (`connection-made`, `data-received`, ...), like Twisted's Protocol.
    Protocol,
}

impl World {
    fn name(self) -> &'static str {
        match self {
            World::Handler => "handler",
            World::Protocol => "protocol",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
    C,
    Go,
}

/// One file of a template: its path (placeholders allowed) and contents.
type Template = &'static [(&'static str, &'static str)];

/// The entry of a template that stands for the host's WIT, every file of
/// it (`handler.wit` and `deps/`) written under `wit/`.
const WIT_DIR: (&str, &str) = ("wit/", "");

const RUST: Template = &[
    ("Cargo.toml", include_str!("new/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("new/rust/lib.rs")),
    ("plugin.toml", include_str!("new/rust/plugin.toml")),
    ("README.md", include_str!("new/rust/README.md")),
    (".gitignore", include_str!("new/rust/gitignore")),
    WIT_DIR,
];

const RUST_PROTOCOL: Template = &[
    ("Cargo.toml", include_str!("new/rust/protocol/Cargo.toml")),
    (
        "src/lib.rs",
        include_str!("../../../plugins/rust/proto-echo/src/lib.rs"),
    ),
    ("plugin.toml", include_str!("new/rust/protocol/plugin.toml")),
    ("README.md", include_str!("new/rust/protocol/README.md")),
    (".gitignore", include_str!("new/rust/gitignore")),
];

const PYTHON: Template = &[
    (
        "app.py",
        include_str!("../../../plugins/python/echo/app.py"),
    ),
    ("plugin.toml", include_str!("new/python/plugin.toml")),
    ("README.md", include_str!("new/python/README.md")),
    WIT_DIR,
];

const PYTHON_PROTOCOL: Template = &[
    (
        "app.py",
        include_str!("../../../plugins/python/proto-echo/app.py"),
    ),
    (
        "plughost_protocol.py",
        include_str!("../../../plugins/python/common/plughost_protocol.py"),
    ),
    (
        "plugin.toml",
        include_str!("new/python/protocol/plugin.toml"),
    ),
    ("README.md", include_str!("new/python/protocol/README.md")),
    WIT_DIR,
];

const JS: Template = &[
    (
        "{{name}}.js",
        include_str!("../../../plugins/js/echo/echo.js"),
    ),
    ("package.json", include_str!("new/js/package.json")),
    (
        "package-lock.json",
        include_str!("../../../plugins/js/package-lock.json"),
    ),
    ("plugin.toml", include_str!("new/js/plugin.toml")),
    ("README.md", include_str!("new/js/README.md")),
    WIT_DIR,
];

const JS_PROTOCOL: Template = &[
    (
        "{{name}}.js",
        include_str!("../../../plugins/js/proto-echo/proto-echo.js"),
    ),
    ("package.json", include_str!("new/js/package.json")),
    (
        "package-lock.json",
        include_str!("../../../plugins/js/package-lock.json"),
    ),
    ("plugin.toml", include_str!("new/js/plugin.toml")),
    ("README.md", include_str!("new/js/protocol/README.md")),
    WIT_DIR,
];

const C: Template = &[
    (
        "src/{{name}}.c",
        include_str!("../../../plugins/c/echo/echo.c"),
    ),
    (
        "src/plughost.h",
        include_str!("../../../plugins/c/common/plughost.h"),
    ),
    ("build.sh", include_str!("new/c/build.sh")),
    ("plugin.toml", include_str!("new/c/plugin.toml")),
    ("README.md", include_str!("new/c/README.md")),
];

const C_PROTOCOL: Template = &[
    (
        "src/{{name}}.c",
        include_str!("../../../plugins/c/proto-echo/proto_echo.c"),
    ),
    ("build.sh", include_str!("new/c/build.sh")),
    ("plugin.toml", include_str!("new/c/plugin.toml")),
    ("README.md", include_str!("new/c/protocol/README.md")),
];

const GO: Template = &[
    (
        "src/{{name}}.go",
        include_str!("../../../plugins/go/echo/echo.go"),
    ),
    (
        "src/plughost.go",
        include_str!("../../../plugins/go/common/plughost.go"),
    ),
    ("build.sh", include_str!("new/go/build.sh")),
    ("plugin.toml", include_str!("new/go/plugin.toml")),
    ("README.md", include_str!("new/go/README.md")),
];

const GO_PROTOCOL: Template = &[
    (
        "src/{{name}}.go",
        include_str!("../../../plugins/go/proto-echo/proto_echo.go"),
    ),
    ("build.sh", include_str!("new/go/build.sh")),
    ("plugin.toml", include_str!("new/go/plugin.toml")),
    ("README.md", include_str!("new/go/protocol/README.md")),
];

/// The name the in-repo package-lock.json carries, replaced by the
/// plugin's name.
const JS_LOCK_NAME: &str = "\"name\": \"plughost-js-plugins\"";

impl Lang {
    fn template(self, world: World) -> Template {
        match (self, world) {
            (Lang::Rust, World::Handler) => RUST,
            (Lang::Rust, World::Protocol) => RUST_PROTOCOL,
            (Lang::Python, World::Handler) => PYTHON,
            (Lang::Python, World::Protocol) => PYTHON_PROTOCOL,
            (Lang::Js, World::Handler) => JS,
            (Lang::Js, World::Protocol) => JS_PROTOCOL,
            (Lang::C, World::Handler) => C,
            (Lang::C, World::Protocol) => C_PROTOCOL,
            (Lang::Go, World::Handler) => GO,
            (Lang::Go, World::Protocol) => GO_PROTOCOL,
        }
    }

    fn display(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
            Lang::Go => "Go",
        }
    }

    /// The toolchain commands its build runs that may not be on `PATH`
    /// (the project's setup installs them under `target/guest-tools`).
    fn tools(self) -> &'static [&'static str] {
        match self {
            Lang::Python => &["componentize-py"],
            Lang::Go => &["go"],
            Lang::Rust | Lang::Js | Lang::C => &[],
        }
    }

    /// How to build, shown after scaffolding.
    fn build_hint(self) -> &'static str {
        match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2",
            Lang::Python => {
                "{{componentize_py}} -d wit -w {{world}} componentize app -o {{name}}.wasm"
            }
            Lang::Js => "npm install && npm run build",
            Lang::C | Lang::Go => "sh build.sh",
        }
    }
}

impl NewArgs {
    pub fn run(self) -> Result<()> {
        check_name(&self.name)?;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        let host = std::env::current_exe()
            .context("cannot tell where the host binary is (for the build script)")?;
        let mut missing = Vec::new();
        let mut tool = |name: &str| {
            let found = find_tool(name, &host);
            if found.is_none() {
                missing.push(name.to_string());
            }
            found.map_or_else(
                || name.to_string(),
                |path| shell_quote(&path.to_string_lossy()),
            )
        };
        let protocol_sdk = match (self.lang, self.world) {
            (Lang::Rust, World::Protocol) => toml_string(&find_protocol_sdk(&host)?),
            _ => String::new(),
        };
        let vars = Vars {
            name: self.name.clone(),
            world: self.world.name(),
            host: shell_quote(&host.to_string_lossy()),
            go: tool("go"),
            componentize_py: tool("componentize-py"),
            protocol_sdk,
        };
        missing.retain(|name| self.lang.tools().contains(&name.as_str()));
        let files = render(self.lang.template(self.world), &vars);
        write_new_dir(&dir, &files)?;
        println!(
            "created {} ({} plugin `{}`: {})\n  build:  cd {} && {}\n  run:    host run --plugin {} --port 8000 --watch\n  (see {}/README.md)",
            dir.display(),
            self.lang.display(),
            self.name,
            match self.world {
                World::Handler => "an echo handler, an instance per connection",
                World::Protocol => "an echo protocol, one instance serving every connection",
            },
            dir.display(),
            vars.apply(self.lang.build_hint()),
            dir.display(),
            dir.display(),
        );
        for name in missing {
            println!(
                "  note:   `{name}` is not on PATH: install it as {}/README.md says, or run \
                 scripts/setup.sh in the plughost repository, which installs it under \
                 target/guest-tools",
                dir.display()
            );
        }
        Ok(())
    }
}

/// Where the toolchain command `name` is: on `PATH` (then the bare name
/// works, and is what the build uses), else in the virtual environment the
/// project's setup (`scripts/build-guests.sh`) installs next to the host
/// binary it built (`target/guest-tools/venv/bin`, with the host at
/// `target/<profile>/host`).
fn find_tool(name: &str, host: &Path) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    if on_path {
        return Some(PathBuf::from(name));
    }
    let target = host.parent()?.parent()?;
    let installed = target.join("guest-tools/venv/bin").join(name);
    installed.is_file().then_some(installed)
}

/// Where the `plughost-protocol` crate is: in the plughost repository whose
/// build made the host binary (`<repo>/target/<profile>/host`), or where
/// that repository was when the binary was compiled.
fn find_protocol_sdk(host: &Path) -> Result<PathBuf> {
    const SDK: &str = "plugins/rust/protocol-sdk";
    let beside_the_binary = host
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|repo| repo.join(SDK));
    let compiled_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SDK);
    let candidates: Vec<PathBuf> = beside_the_binary
        .into_iter()
        .chain([compiled_from])
        .collect();
    match candidates
        .iter()
        .find(|dir| dir.join("Cargo.toml").is_file())
    {
        Some(dir) => dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display())),
        None => bail!(
            "the Rust protocol template depends on the plughost-protocol crate of the plughost \
             repository, which is not where this host binary looks ({}); run the `host` built \
             in a plughost checkout",
            candidates
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `path` as a TOML string (quoted and escaped).
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// Values substituted into templates.
struct Vars {
    /// `{{name}}`: the plugin's name.
    name: String,
    /// `{{world}}`: the WIT world's name (`handler`, `protocol`).
    world: &'static str,
    /// `{{host}}`: the host binary's path, quoted for `sh`.
    host: String,
    /// `{{go}}`: the Go command (see [`find_tool`]), quoted for `sh`.
    go: String,
    /// `{{componentize_py}}`: the componentize-py command, quoted.
    componentize_py: String,
    /// `{{protocol_sdk}}`: the `plughost-protocol` crate's directory as a
    /// TOML string (only the Rust protocol template uses it).
    protocol_sdk: String,
}

impl Vars {
    fn apply(&self, text: &str) -> String {
        text.replace("{{name}}", &self.name)
            .replace("{{crate}}", &self.name.replace('-', "_"))
            .replace("{{world}}", self.world)
            .replace("{{host}}", &self.host)
            .replace("{{go}}", &self.go)
            .replace("{{componentize_py}}", &self.componentize_py)
            .replace("{{protocol_sdk}}", &self.protocol_sdk)
            .replace(JS_LOCK_NAME, &format!("\"name\": \"{}\"", self.name))
    }
}

fn render(template: Template, vars: &Vars) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for &(path, contents) in template {
        if (path, contents) == WIT_DIR {
            for (wit_path, wit) in BUILTIN_WIT_FILES {
                files.push((PathBuf::from(path).join(wit_path), wit.to_string()));
            }
        } else {
            files.push((PathBuf::from(vars.apply(path)), vars.apply(contents)));
        }
    }
    files
}

/// Plugin names become crate, file and package names.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "plugin name `{name}` must be lowercase letters, digits and `-`, \
             starting with a letter (e.g. `my-proto`)"
        );
    }
    Ok(())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Creates `dir` (which must not exist, or be empty) with `files`.
fn write_new_dir(dir: &Path, files: &[(PathBuf, String)]) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; choose another --dir",
                    dir.display()
                );
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} already exists and is a file", dir.display())
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    }
    for (path, contents) in files {
        super::bindgen::write_file(&dir.join(path), contents.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contents of the rendered file `name`.
    fn file<'a>(files: &'a [(PathBuf, String)], name: &str) -> &'a str {
        &files
            .iter()
            .find(|(path, _)| path == Path::new(name))
            .unwrap_or_else(|| panic!("no {name} rendered"))
            .1
    }

    fn vars() -> Vars {
        Vars {
            name: "my-proto".into(),
            world: "handler",
            host: shell_quote("/opt/it's/host"),
            go: shell_quote("/opt/tools/go"),
            componentize_py: "componentize-py".into(),
            protocol_sdk: toml_string(Path::new("/opt/plughost/plugins/rust/protocol-sdk")),
        }
    }

    fn protocol_vars() -> Vars {
        Vars {
            world: "protocol",
            ..vars()
        }
    }

    #[test]
    fn every_template_renders_completely() {
        for world in World::value_variants() {
            let vars = Vars {
                world: world.name(),
                ..vars()
            };
            for lang in Lang::value_variants() {
                let files = render(lang.template(*world), &vars);
                assert!(files.iter().any(|(p, _)| p == Path::new("plugin.toml")));
                assert!(files.iter().any(|(p, _)| p == Path::new("README.md")));
                for (path, contents) in &files {
                    let where_ = format!("{lang:?} {world:?} {}", path.display());
                    assert!(!path.to_string_lossy().contains("{{"), "{where_}");
                    assert!(!contents.contains("{{"), "{where_}: {contents}");
                }
                let manifest = file(&files, "plugin.toml");
                let parsed: toml::Table = toml::from_str(manifest).expect("plugin.toml parses");
                assert!(parsed.contains_key("output"), "{lang:?} {world:?}");
            }
        }
    }

    #[test]
    fn protocol_templates_build_the_protocol_world() {
        let vars = protocol_vars();
        let c = render(C_PROTOCOL, &vars);
        let build = file(&c, "build.sh");
        assert!(build.contains("bindgen c --world protocol"), "{build}");
        assert!(build.contains("build/gen/protocol.c"), "{build}");
        let go = render(GO_PROTOCOL, &vars);
        let build = file(&go, "build.sh");
        assert!(build.contains("bindgen go --world protocol"), "{build}");
        assert!(build.contains("--embed protocol"), "{build}");
        let js = render(JS_PROTOCOL, &vars);
        assert!(file(&js, "package.json").contains(" -n protocol "));
        assert!(file(&js, "plugin.toml").contains(" -n protocol "));
        let python = render(PYTHON_PROTOCOL, &vars);
        assert!(file(&python, "plugin.toml").contains(" -w protocol "));
        assert!(file(&python, "app.py").contains("from plughost_protocol import"));
        let rust = render(RUST_PROTOCOL, &vars);
        let cargo: toml::Table = toml::from_str(file(&rust, "Cargo.toml")).expect("Cargo.toml");
        assert_eq!(
            cargo["dependencies"]["plughost-protocol"]["path"].as_str(),
            Some("/opt/plughost/plugins/rust/protocol-sdk")
        );
    }

    #[test]
    fn the_protocol_sdk_is_found_beside_the_host_binary() {
        let repo = std::env::temp_dir().join(format!("plughost-find-sdk-{}", std::process::id()));
        let sdk = repo.join("plugins/rust/protocol-sdk");
        fs::create_dir_all(&sdk).unwrap();
        fs::write(sdk.join("Cargo.toml"), "").unwrap();
        let found = find_protocol_sdk(&repo.join("target/release/host")).unwrap();
        assert_eq!(found, sdk.canonicalize().unwrap());
        fs::remove_dir_all(repo).unwrap();
        // Elsewhere, the checkout this binary was compiled from.
        let found = find_protocol_sdk(Path::new("/nonexistent/target/release/host")).unwrap();
        assert!(
            found.ends_with("plugins/rust/protocol-sdk"),
            "{}",
            found.display()
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["echo", "my-proto", "a1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "My", "1a", "a_b", "a-", "a b", "ü"] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("lowercase"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_host_path_is_quoted_for_sh() {
        let c = render(C, &vars());
        let build = file(&c, "build.sh");
        assert!(
            build.contains(r"HOST=${HOST:-'/opt/it'\''s/host'}"),
            "{build}"
        );
        let js = render(JS, &vars());
        let lock = file(&js, "package-lock.json");
        assert!(lock.contains("\"name\": \"my-proto\""), "{lock}");
    }

    #[test]
    fn a_quoted_tool_path_survives_in_plugin_toml() {
        let vars = Vars {
            componentize_py: shell_quote("/opt/it's/componentize-py"),
            ..vars()
        };
        let python = render(PYTHON, &vars);
        let manifest = file(&python, "plugin.toml");
        let parsed: toml::Table = toml::from_str(manifest).expect("plugin.toml parses");
        let build = parsed["build"].as_str().unwrap();
        assert!(
            build.starts_with(r"'/opt/it'\''s/componentize-py' -d wit"),
            "{build}"
        );
    }

    #[test]
    fn a_tool_off_path_is_found_where_the_setup_installs_it() {
        let root = std::env::temp_dir().join(format!("plughost-find-tool-{}", std::process::id()));
        let bin = root.join("target/guest-tools/venv/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("no-such-tool-xyz"), "").unwrap();
        let host = root.join("target/release/host");
        assert_eq!(
            find_tool("no-such-tool-xyz", &host),
            Some(bin.join("no-such-tool-xyz"))
        );
        assert_eq!(find_tool("no-such-tool-abc", &host), None);
        assert_eq!(find_tool("sh", &host), Some(PathBuf::from("sh")));
        let go = render(GO, &vars());
        let build = file(&go, "build.sh");
        assert!(build.contains("GO=${GO:-'/opt/tools/go'}"), "{build}");
        fs::remove_dir_all(root).unwrap();
    }
}
