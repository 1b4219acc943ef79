//! Checking what a component exports: berth's handler interface, in the
//! version berth calls, with every function berth calls at berth's type.

use wit_parser::{Interface, Resolve, WorldItem, WorldKey};

use super::names::{compatible, item_name, split_name};
use super::signature::{compare, signature};
use super::world::Expected;
use super::{Item, Report};

/// Checks one export; returns whether it was berth's handler interface.
pub(super) fn check_export(
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

/// Checks that berth's handler interface, as exported, has every function
/// berth calls, each at berth's type.
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
