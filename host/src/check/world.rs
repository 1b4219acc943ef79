//! berth's own world, the one a component is compared with: its WIT text,
//! its name, and the interfaces a plugin meets, parsed from that text.

use wit_parser::{Interface, Resolve};

/// The WIT text of the world this berth serves.
pub const WORLD_WIT: &str = include_str!("../../../wit/berth.wit");

/// The world a plugin must implement, as `package/world@version`.
pub const WORLD: &str = "berth:plugin/plugin@0.5.0";

/// berth's own world, parsed from the WIT it was built with.
pub(super) struct Expected {
    /// Everything the WIT defines, which the interfaces below refer into.
    pub(super) resolve: Resolve,
    /// The host calls a plugin may import.
    pub(super) host: Interface,
    /// The state calls a plugin may import.
    pub(super) state: Interface,
    /// The outbound HTTP calls a plugin may import.
    pub(super) outbound: Interface,
    /// The handler a plugin must export.
    pub(super) handler: Interface,
    /// The package version, such as `0.5.0`.
    pub(super) version: String,
}

impl Expected {
    /// Parses [`WORLD_WIT`], which berth was built with, so it does not fail.
    pub(super) fn parse() -> Expected {
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
        let outbound = interface("outbound");
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
            outbound,
            handler,
            version,
        }
    }

    /// The full name of one of berth's interfaces, such as `berth:plugin/host@0.5.0`.
    pub(super) fn name(&self, interface: &str) -> String {
        format!("berth:plugin/{interface}@{}", self.version)
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
