//! `host component new` and `host component embed`: turn the core module any
//! compiler produces (C, Go, Zig, hand-written WAT, ...) into a component
//! the host can run, without installing `wasm-tools`.
//!
//! * `embed` adds the `component-type` custom section that says which WIT
//!   world the module implements (`wasm-tools component embed`).
//! * `new` wraps a module carrying that section into a component
//!   (`wasm-tools component new`), adapting WASI preview1 imports with the
//!   preview1 adapter of the wasmtime release the host is built with.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::{ComponentEncoder, StringEncoding};

use super::wit_source::WitOptions;

#[derive(Debug, Args)]
pub struct ComponentArgs {
    #[command(subcommand)]
    command: ComponentCommand,
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Wrap a core module (with its WIT embedded) into a component.
    New(NewArgs),
    /// Embed a WIT world into a core module (the `component-type` section
    /// that `host component new` reads).
    Embed(EmbedArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The core WebAssembly module (e.g. from clang or `go build`).
    #[arg(value_name = "CORE.wasm")]
    input: PathBuf,

    /// Where to write the component.
    #[arg(long, short, value_name = "OUT.wasm")]
    output: PathBuf,

    /// The WASI preview1 adapter for modules that import
    /// `wasi_snapshot_preview1`: `reactor` (libraries, the usual case for
    /// plugins), `command` (modules with `_start`), or the path of an
    /// adapter module.
    #[arg(long, value_name = "reactor|command|PATH", default_value = "reactor")]
    adapter: String,

    /// Embed this world first (as `host component embed` does), for modules
    /// built without a `component-type` section.
    #[arg(long, value_name = "WORLD")]
    embed: Option<String>,

    /// WIT package for --embed [default: the host's own contract].
    #[arg(long, value_name = "PATH", requires = "embed")]
    wit: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// The core WebAssembly module.
    #[arg(value_name = "CORE.wasm")]
    input: PathBuf,

    /// Where to write the module with the WIT embedded.
    #[arg(long, short, value_name = "OUT.wasm")]
    output: PathBuf,

    #[command(flatten)]
    wit: WitOptions,

    /// How the module encodes strings.
    #[arg(long, value_enum, default_value = "utf8")]
    encoding: Encoding,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Encoding {
    Utf8,
    Utf16,
    CompactUtf16,
}

impl From<Encoding> for StringEncoding {
    fn from(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Utf8 => StringEncoding::UTF8,
            Encoding::Utf16 => StringEncoding::UTF16,
            Encoding::CompactUtf16 => StringEncoding::CompactUTF16,
        }
    }
}

impl ComponentArgs {
    pub fn run(self) -> Result<()> {
        match self.command {
            ComponentCommand::New(args) => args.run(),
            ComponentCommand::Embed(args) => args.run(),
        }
    }
}

impl NewArgs {
    fn run(self) -> Result<()> {
        let mut module = read_core_module(&self.input)?;
        if let Some(world) = &self.embed {
            let wit = WitOptions {
                wit: self.wit.clone(),
                world: world.clone(),
            };
            embed(&mut module, &wit, StringEncoding::UTF8)?;
        }
        let adapter = self.adapter_bytes()?;
        let component = new_component(&module, &adapter)
            .with_context(|| format!("cannot make a component of {}", self.input.display()))?;
        write(&self.output, &component)
    }

    fn adapter_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self.adapter.as_str() {
            "reactor" => WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER.to_vec(),
            "command" => WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER.to_vec(),
            path => fs::read(path).with_context(|| {
                format!("cannot read the adapter {path} (expected reactor, command or a file)")
            })?,
        })
    }
}

impl EmbedArgs {
    fn run(self) -> Result<()> {
        let mut module = read_core_module(&self.input)?;
        if has_component_type(&module) {
            bail!(
                "{} already has a `component-type` section (WIT embedded); \
                 `host component new` can wrap it as it is",
                self.input.display()
            );
        }
        embed(&mut module, &self.wit, self.encoding.into())?;
        write(&self.output, &module)
    }
}

/// Wraps `module` into a component, adapting `wasi_snapshot_preview1`
/// imports (if any) with `adapter`.
pub fn new_component(module: &[u8], adapter: &[u8]) -> Result<Vec<u8>> {
    if !has_component_type(module) {
        bail!(
            "the module has no `component-type` section, so which world it \
             implements is unknown: embed one with `host component embed` (or \
             `--embed handler`), or generate bindings with `host bindgen`"
        );
    }
    let mut encoder = ComponentEncoder::default();
    encoder.module(module)?.validate(true);
    if imports_module(module, WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME) {
        encoder.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)?;
    }
    encoder.encode()
}

/// Appends the `component-type` section for the selected world.
fn embed(module: &mut Vec<u8>, wit: &WitOptions, encoding: StringEncoding) -> Result<()> {
    let loaded = wit.load()?;
    wit_component::embed_component_metadata(module, &loaded.resolve, loaded.world, encoding, false)
        .with_context(|| format!("cannot embed world `{}` of {}", wit.world, wit.describe()))
}

fn read_core_module(path: &Path) -> Result<Vec<u8>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("file not found: {}", path.display())
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!(
            "{} is not a WebAssembly file (no `\\0asm` header)",
            path.display()
        );
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        bail!(
            "{} is already a component (or an unknown WebAssembly version), not a core module",
            path.display()
        );
    }
    Ok(bytes)
}

/// Whether a core module has a custom section named `component-type*`
/// (wit-bindgen names them `component-type:<world>...`).
fn has_component_type(module: &[u8]) -> bool {
    sections(module).any(|payload| {
        matches!(payload, wasmparser::Payload::CustomSection(c) if c.name().starts_with("component-type"))
    })
}

/// Whether a core module imports anything from `module_name`.
fn imports_module(module: &[u8], module_name: &str) -> bool {
    sections(module).any(|payload| match payload {
        wasmparser::Payload::ImportSection(reader) => reader
            .into_imports()
            .flatten()
            .any(|import| import.module == module_name),
        _ => false,
    })
}

/// The module's top-level sections, stopping at the first malformed one
/// (the encoder reports it properly).
fn sections(module: &[u8]) -> impl Iterator<Item = wasmparser::Payload<'_>> {
    wasmparser::Parser::new(0)
        .parse_all(module)
        .map_while(Result::ok)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module exporting the handler world's functions (by their
    /// canonical-ABI core names), importing nothing.
    fn handler_module() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction,
            MemorySection, MemoryType, Module, TypeSection, ValType,
        };
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]); // 0: setup, handle
        types.ty().function([ValType::I32], []); // 1: finish
        types.ty().function([ValType::I32; 4], [ValType::I32]); // 2: cabi_realloc
        module.section(&types);
        let mut functions = FunctionSection::new();
        for ty in [0, 0, 1, 2] {
            functions.function(ty);
        }
        module.section(&functions);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        for (index, name) in (0u32..).zip(["setup", "handle", "finish", "cabi_realloc"]) {
            exports.export(name, ExportKind::Func, index);
        }
        module.section(&exports);
        let mut code = CodeSection::new();
        for returns in [true, true, false, true] {
            let mut body = Function::new([]);
            if returns {
                body.instruction(&Instruction::I32Const(8));
            }
            body.instruction(&Instruction::End);
            code.function(&body);
        }
        module.section(&code);
        module.finish()
    }

    #[test]
    fn a_module_without_wit_is_refused_with_a_hint() {
        let err = new_component(&handler_module(), &[]).unwrap_err();
        assert!(err.to_string().contains("host component embed"), "{err}");
    }

    #[test]
    fn embed_then_new_makes_a_handler_component() {
        let mut module = handler_module();
        let wit = WitOptions {
            wit: None,
            world: "handler".into(),
        };
        embed(&mut module, &wit, StringEncoding::UTF8).unwrap();
        assert!(has_component_type(&module));
        let component = new_component(&module, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER).unwrap();
        assert_eq!(&component[4..8], &[0x0d, 0, 1, 0]);
    }
}
