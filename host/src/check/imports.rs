//! Checking what a component imports: berth's own interfaces function by
//! function, WASI by name and version, anything else refused.

use wit_parser::{Interface, Resolve, WorldItem, WorldKey};

use super::names::{Name, compatible, item_name, split_name};
use super::signature::compare;
use super::wasi::{wasi_meaning, wasi_problem};
use super::world::{Expected, WORLD};
use super::{Item, Report};

/// Checks one import and lists it in the report, with what it means for an
/// operator when berth knows.
pub(super) fn check_import(
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

/// Checks an import of one of berth's interfaces: its version, then each
/// function's type. Returns what the interface means.
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
        "outbound" => {
            "outbound HTTP requests: only to the origins the route grants with \
             allowed-outbound (none by default)"
        }
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
        "outbound" => &expected.outbound,
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
