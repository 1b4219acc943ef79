//! `berth check`: whether a file is a component that fits berth's world, said
//! in plain words, and what the component asks of the host.
//!
//! The component's own type information is decoded (no compilation) and
//! compared, function by function, with the world in `wit/berth.wit`, so that
//! every problem is listed at once rather than the first one a linker meets.
//! Types are compared by structure, the way the component model matches them:
//! record fields, variant cases and enum names count; type names do not.
//!
//! This file holds the entry point and the report. The world compared with is
//! in `world`, reading a component's names and versions in `names`, the checks
//! of imports and exports in `imports`, `wasi` and `exports`, and the type
//! comparison in `signature`.

mod exports;
mod imports;
mod names;
mod signature;
mod wasi;
mod world;

use wit_parser::decoding::{DecodedWasm, decode};

use exports::check_export;
use imports::check_import;
use world::Expected;

pub use world::{WORLD, WORLD_WIT};

/// Why a file could not be checked at all: it is not a component.
#[derive(Debug, thiserror::Error)]
pub enum NotAComponent {
    /// The file does not start with the WebAssembly header.
    #[error("not WebAssembly: the file does not start with the \\0asm header")]
    NotWasm,
    /// A core module: it has to be wrapped into a component first.
    #[error(
        "a core WebAssembly module, not a component: build for the wasm32-wasip2 target, \
         or wrap the module with `wasm-tools component new`"
    )]
    CoreModule,
    /// A binary WIT package: types only, nothing to run.
    #[error("a WIT package (types only), not a component")]
    WitPackage,
    /// The component's bytes do not decode.
    #[error("not a valid component: {0}")]
    Malformed(String),
}

/// One interface or function a component imports or exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its full name, such as `wasi:cli/stdout@0.2.3` or `berth:plugin/host@0.5.0`.
    pub name: String,
    /// The functions it carries, in the component's order.
    pub functions: Vec<String>,
    /// What it means for an operator, when berth knows.
    pub meaning: Option<&'static str>,
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Each way the component does not fit, in plain words; empty when it fits.
    pub problems: Vec<String>,
    /// What the component imports: the capabilities it asks for.
    pub imports: Vec<Item>,
    /// What the component exports.
    pub exports: Vec<Item>,
}

impl Report {
    /// Whether the component implements berth's world.
    pub fn fits(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `bytes` against berth's world.
pub fn check(bytes: &[u8]) -> Result<Report, NotAComponent> {
    if !bytes.starts_with(b"\0asm") {
        return Err(NotAComponent::NotWasm);
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(NotAComponent::CoreModule);
    }
    let (found, world) = match decode(bytes) {
        Ok(DecodedWasm::Component(resolve, world)) => (resolve, world),
        Ok(DecodedWasm::WitPackage(..)) => return Err(NotAComponent::WitPackage),
        Err(error) => {
            return Err(NotAComponent::Malformed(
                format!("{error:#}")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
    };
    let expected = Expected::parse();
    let world = &found.worlds[world];
    let mut report = Report {
        problems: Vec::new(),
        imports: Vec::new(),
        exports: Vec::new(),
    };
    for (key, item) in &world.imports {
        check_import(&found, key, item, &expected, &mut report);
    }
    let mut handler_seen = false;
    for (key, item) in &world.exports {
        handler_seen |= check_export(&found, key, item, &expected, &mut report);
    }
    if !handler_seen {
        let names = expected
            .handler
            .functions
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        report.problems.push(format!(
            "does not export the interface {} ({}), which is how berth calls a plugin",
            expected.name("handler"),
            names.join(", ")
        ));
    }
    Ok(report)
}
