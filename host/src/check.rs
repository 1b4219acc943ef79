//! `berth check`: whether a file is a component that fits berth's world, said
//! in plain words, and what the component asks of the host.
//!
//! The component's own type information is decoded (no compilation) and
//! compared, function by function, with the world in `wit/berth.wit`, so that
//! every problem is listed at once rather than the first one a linker meets.
//! Types are compared by structure, the way the component model matches them:
//! record fields, variant cases and enum names count; type names do not.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use wit_parser::decoding::{DecodedWasm, decode};
use wit_parser::{Function, Interface, Resolve, Type, TypeDefKind, WorldItem, WorldKey};

/// The WIT text of the world this berth serves.
pub const WORLD_WIT: &str = include_str!("../../wit/berth.wit");

/// The world a plugin must implement, as `package/world@version`.
pub const WORLD: &str = "berth:plugin/plugin@0.4.0";

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
    /// Its full name, such as `wasi:cli/stdout@0.2.3` or `berth:plugin/host@0.4.0`.
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

/// berth's own world, parsed from the WIT it was built with.
struct Expected {
    resolve: Resolve,
    host: Interface,
    state: Interface,
    handler: Interface,
    version: String,
}

impl Expected {
    fn parse() -> Expected {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_str("berth.wit", WORLD_WIT)
            .expect("berth's own WIT parses");
        let interface = |name: &str| {
            let id = resolve.packages[package].interfaces[name];
            resolve.interfaces[id].clone()
        };
        let host = interface("host");
        let state = interface("state");
        let handler = interface("handler");
        let version = resolve.packages[package]
            .name
            .version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        Expected {
            resolve,
            host,
            state,
            handler,
            version,
        }
    }

    fn name(&self, interface: &str) -> String {
        format!("berth:plugin/{interface}@{}", self.version)
    }
}

/// An interface's parts: `wasi`, `cli`, `stdout`, `0.2.3`.
struct Name<'a> {
    namespace: &'a str,
    package: &'a str,
    interface: &'a str,
    version: Option<&'a str>,
}

fn split_name(full: &str) -> Option<Name<'_>> {
    let (path, version) = match full.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (full, None),
    };
    let (namespace, rest) = path.split_once(':')?;
    let (package, interface) = rest.split_once('/')?;
    Some(Name {
        namespace,
        package,
        interface,
        version,
    })
}

/// Whether two 0.x versions are the same contract: the component model treats
/// versions that differ only in a semver-compatible part as interchangeable.
fn compatible(found: &str, expected: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (parse(found), parse(expected)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b && a != 0,
        _ => false,
    }
}

fn item_name(resolve: &Resolve, key: &WorldKey) -> String {
    match key {
        WorldKey::Interface(id) => resolve.id_of(*id).unwrap_or_else(|| "(unnamed)".into()),
        WorldKey::Name(name) => name.clone(),
    }
}

fn check_import(
    found: &Resolve,
    key: &WorldKey,
    item: &WorldItem,
    expected: &Expected,
    report: &mut Report,
) {
    let name = item_name(found, key);
    let interface = match item {
        WorldItem::Interface { id, .. } => &found.interfaces[*id],
        WorldItem::Function(function) => {
            report.problems.push(format!(
                "imports a function `{}` that berth does not provide",
                function.name
            ));
            report.imports.push(Item {
                name,
                functions: vec![function.name.clone()],
                meaning: None,
            });
            return;
        }
        WorldItem::Type { .. } => return,
    };
    let functions = interface.functions.keys().cloned().collect::<Vec<_>>();
    let parts = match key {
        WorldKey::Interface(_) => split_name(&name),
        WorldKey::Name(_) => None,
    };
    let meaning = match &parts {
        Some(parts) if parts.namespace == "berth" && parts.package == "plugin" => {
            check_berth_import(found, &name, parts, interface, expected, report)
        }
        Some(parts) if parts.namespace == "wasi" => {
            let meaning = wasi_meaning(parts.package, parts.interface);
            let provided = meaning.is_some()
                && parts.version.is_some_and(|v| compatible(v, "0.2.0"))
                && parts.package != "http";
            if !provided {
                report.problems.push(wasi_problem(&name, parts));
            }
            meaning
        }
        _ => {
            report.problems.push(format!(
                "imports {name}, which berth does not provide (a plugin may import only \
                 {} and WASI 0.2)",
                expected.name("host")
            ));
            None
        }
    };
    report.imports.push(Item {
        name,
        functions,
        meaning,
    });
}

fn check_berth_import(
    found: &Resolve,
    name: &str,
    parts: &Name<'_>,
    interface: &Interface,
    expected: &Expected,
    report: &mut Report,
) -> Option<&'static str> {
    let version_ok = parts
        .version
        .is_some_and(|v| compatible(v, &expected.version));
    let meaning = match parts.interface {
        "host" => "berth's host calls",
        "state" => "berth's state calls (topic history, members, key-value store)",
        "types" => "berth's shared types",
        _ => {
            report.problems.push(format!(
                "imports {name}, which this berth does not have (it serves {WORLD})"
            ));
            return None;
        }
    };
    if !version_ok {
        report.problems.push(format!(
            "imports {name}, but this berth implements version {}: rebuild the plugin \
             against this berth's wit/berth.wit",
            expected.version
        ));
        return Some(meaning);
    }
    if parts.interface == "types" {
        return Some(meaning);
    }
    let provided = match parts.interface {
        "state" => &expected.state,
        _ => &expected.host,
    };
    for (fname, function) in &interface.functions {
        match provided.functions.get(fname) {
            None => report.problems.push(format!(
                "imports the host function `{fname}`, which berth does not provide"
            )),
            Some(theirs) => {
                if let Some(problem) =
                    compare("host function", function, found, theirs, &expected.resolve)
                {
                    report.problems.push(problem);
                }
            }
        }
    }
    Some(meaning)
}

/// Checks one export; returns whether it was berth's handler interface.
fn check_export(
    found: &Resolve,
    key: &WorldKey,
    item: &WorldItem,
    expected: &Expected,
    report: &mut Report,
) -> bool {
    let name = item_name(found, key);
    match item {
        WorldItem::Function(function) => {
            if expected.handler.functions.contains_key(&function.name) {
                report.problems.push(format!(
                    "exports `{}` on its own; berth calls it only inside the interface {}",
                    function.name,
                    expected.name("handler")
                ));
            }
            report.exports.push(Item {
                name,
                functions: vec![function.name.clone()],
                meaning: None,
            });
            false
        }
        WorldItem::Type { .. } => false,
        WorldItem::Interface { id, .. } => {
            let interface = &found.interfaces[*id];
            let functions = interface.functions.keys().cloned().collect::<Vec<_>>();
            let parts = split_name(&name);
            let is_handler = parts.as_ref().is_some_and(|p| {
                p.namespace == "berth" && p.package == "plugin" && p.interface == "handler"
            });
            let mut meaning = None;
            if is_handler {
                meaning = Some("the handler berth calls as connections come and go");
                let version = parts.and_then(|p| p.version).unwrap_or("none");
                if !compatible(version, &expected.version) {
                    report.problems.push(format!(
                        "exports {name}, but this berth calls version {}: rebuild the plugin \
                         against this berth's wit/berth.wit",
                        expected.version
                    ));
                } else {
                    check_handler(found, interface, expected, report);
                }
            }
            report.exports.push(Item {
                name,
                functions,
                meaning,
            });
            is_handler
        }
    }
}

fn check_handler(found: &Resolve, interface: &Interface, expected: &Expected, report: &mut Report) {
    for (fname, theirs) in &expected.handler.functions {
        match interface.functions.get(fname) {
            None => report.problems.push(format!(
                "does not export `{fname}`; berth calls it as {}",
                signature(theirs, &expected.resolve, true)
            )),
            Some(function) => {
                if let Some(problem) = compare("export", function, found, theirs, &expected.resolve)
                {
                    report.problems.push(problem);
                }
            }
        }
    }
}

/// Compares a function's type with berth's; says how they differ, if they do.
fn compare(
    what: &str,
    function: &Function,
    resolve: &Resolve,
    expected: &Function,
    expected_resolve: &Resolve,
) -> Option<String> {
    let ours = signature(expected, expected_resolve, false);
    let theirs = signature(function, resolve, false);
    (ours != theirs).then(|| {
        format!(
            "the {what} `{}` has the wrong type: berth expects {}, the plugin has {}",
            function.name,
            signature(expected, expected_resolve, true),
            signature(function, resolve, true)
        )
    })
}

/// A function's type in WIT notation, with the structure of every type spelled
/// out (so two signatures compare equal exactly when the types match).
/// `names` adds the parameter names, which the component model does not match on.
fn signature(function: &Function, resolve: &Resolve, names: bool) -> String {
    let mut out = String::from("func(");
    for (i, param) in function.params.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if names {
            let _ = write!(out, "{}: ", param.name);
        }
        render(&param.ty, resolve, &mut out);
    }
    out.push(')');
    if let Some(result) = &function.result {
        out.push_str(" -> ");
        render(result, resolve, &mut out);
    }
    out
}

fn render(ty: &Type, resolve: &Resolve, out: &mut String) {
    let name = match ty {
        Type::Bool => "bool",
        Type::U8 => "u8",
        Type::U16 => "u16",
        Type::U32 => "u32",
        Type::U64 => "u64",
        Type::S8 => "s8",
        Type::S16 => "s16",
        Type::S32 => "s32",
        Type::S64 => "s64",
        Type::F32 => "f32",
        Type::F64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::ErrorContext => "error-context",
        Type::Id(id) => return render_def(&resolve.types[*id].kind, resolve, out),
    };
    out.push_str(name);
}

fn render_def(kind: &TypeDefKind, resolve: &Resolve, out: &mut String) {
    let list = |out: &mut String, open: &str, items: Vec<String>, close: &str| {
        out.push_str(open);
        out.push_str(&items.join(", "));
        out.push_str(close);
    };
    let one = |ty: &Type| {
        let mut s = String::new();
        render(ty, resolve, &mut s);
        s
    };
    let maybe = |ty: &Option<Type>| ty.as_ref().map_or("_".to_string(), one);
    match kind {
        TypeDefKind::Type(ty) => render(ty, resolve, out),
        TypeDefKind::Record(record) => list(
            out,
            "record { ",
            record
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.name, one(&f.ty)))
                .collect(),
            " }",
        ),
        TypeDefKind::Variant(variant) => list(
            out,
            "variant { ",
            variant
                .cases
                .iter()
                .map(|c| match &c.ty {
                    Some(ty) => format!("{}({})", c.name, one(ty)),
                    None => c.name.clone(),
                })
                .collect(),
            " }",
        ),
        TypeDefKind::Enum(e) => list(
            out,
            "enum { ",
            e.cases.iter().map(|c| c.name.clone()).collect(),
            " }",
        ),
        TypeDefKind::Flags(flags) => list(
            out,
            "flags { ",
            flags.flags.iter().map(|f| f.name.clone()).collect(),
            " }",
        ),
        TypeDefKind::Tuple(tuple) => {
            list(out, "tuple<", tuple.types.iter().map(one).collect(), ">")
        }
        TypeDefKind::Option(ty) => {
            let _ = write!(out, "option<{}>", one(ty));
        }
        TypeDefKind::Result(result) => {
            let _ = write!(out, "result<{}, {}>", maybe(&result.ok), maybe(&result.err));
        }
        TypeDefKind::List(ty) => {
            let _ = write!(out, "list<{}>", one(ty));
        }
        TypeDefKind::FixedLengthList(ty, n) => {
            let _ = write!(out, "list<{}, {n}>", one(ty));
        }
        TypeDefKind::Map(k, v) => {
            let _ = write!(out, "map<{}, {}>", one(k), one(v));
        }
        TypeDefKind::Future(ty) => {
            let _ = write!(out, "future<{}>", maybe(ty));
        }
        TypeDefKind::Stream(ty) => {
            let _ = write!(out, "stream<{}>", maybe(ty));
        }
        TypeDefKind::Resource | TypeDefKind::Handle(_) | TypeDefKind::Unknown => {
            out.push_str("resource")
        }
    }
}

/// What a WASI 0.2 interface gives a plugin under berth, for the interfaces
/// berth links; `None` for the ones it does not.
fn wasi_meaning(package: &str, interface: &str) -> Option<&'static str> {
    let table: BTreeMap<(&str, &str), &str> = [
        (
            ("cli", "environment"),
            "environment variables and arguments: empty unless the route grants [route.env]",
        ),
        (("cli", "exit"), "exit: ends the current call as a failure"),
        (("cli", "stdin"), "standard input: always empty"),
        (
            ("cli", "stdout"),
            "standard output: to berth's log, at most 100 lines a second",
        ),
        (
            ("cli", "stderr"),
            "standard error: to berth's log, at most 100 lines a second",
        ),
        (
            ("cli", "terminal-input"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-output"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stdin"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stdout"),
            "terminal queries: never a terminal",
        ),
        (
            ("cli", "terminal-stderr"),
            "terminal queries: never a terminal",
        ),
        (("clocks", "monotonic-clock"), "a monotonic clock"),
        (("clocks", "wall-clock"), "the time of day"),
        (
            ("filesystem", "types"),
            "files: only in folders the route grants with [[route.dir]]; none by default",
        ),
        (
            ("filesystem", "preopens"),
            "files: only in folders the route grants with [[route.dir]]; none by default",
        ),
        (
            ("io", "error"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (
            ("io", "poll"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (
            ("io", "streams"),
            "streams and polling, used by the other WASI interfaces",
        ),
        (("random", "random"), "random numbers"),
        (("random", "insecure"), "random numbers"),
        (("random", "insecure-seed"), "random numbers"),
        (
            ("sockets", "network"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "instance-network"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "tcp"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "tcp-create-socket"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "udp"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "udp-create-socket"),
            "network sockets: berth grants no network, so every address is refused",
        ),
        (
            ("sockets", "ip-name-lookup"),
            "name lookup: berth grants no network, so every lookup fails",
        ),
    ]
    .into_iter()
    .collect();
    table.get(&(package, interface)).copied()
}

fn wasi_problem(name: &str, parts: &Name<'_>) -> String {
    if parts.package == "http" {
        return format!(
            "imports {name}: berth does not provide WASI HTTP (a JavaScript plugin built with \
             componentize-js needs disableFeatures: ['http', 'fetch-event'])"
        );
    }
    match parts.version {
        Some(version) if !compatible(version, "0.2.0") => {
            format!("imports {name}: berth provides WASI 0.2, not version {version}")
        }
        _ => format!("imports {name}, a WASI interface berth does not provide"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_world_named_in_messages_is_the_one_in_the_wit() {
        let expected = super::Expected::parse();
        assert_eq!(
            super::WORLD,
            format!("berth:plugin/plugin@{}", expected.version)
        );
    }
}
