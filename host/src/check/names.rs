//! Reading the names in a component's world: an interface's parts, and
//! whether its version is the same contract as the one berth serves.

use wit_parser::{Resolve, WorldKey};

/// An interface's parts: `wasi`, `cli`, `stdout`, `0.2.3`.
pub(super) struct Name<'a> {
    /// Such as `wasi`.
    pub(super) namespace: &'a str,
    /// Such as `cli`.
    pub(super) package: &'a str,
    /// Such as `stdout`.
    pub(super) interface: &'a str,
    /// Such as `0.2.3`, when the name has one.
    pub(super) version: Option<&'a str>,
}

/// Splits a full interface name into its parts; `None` unless it has the
/// form `namespace:package/interface`.
pub(super) fn split_name(full: &str) -> Option<Name<'_>> {
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
pub(super) fn compatible(found: &str, expected: &str) -> bool {
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

/// The name of an import or export: an interface's full name, or a bare
/// function's own name.
pub(super) fn item_name(resolve: &Resolve, key: &WorldKey) -> String {
    match key {
        WorldKey::Interface(id) => resolve.id_of(*id).unwrap_or_else(|| "(unnamed)".into()),
        WorldKey::Name(name) => name.clone(),
    }
}
