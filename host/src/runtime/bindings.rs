//! Rust types and call stubs generated from `wit/berth.wit`, kept apart from
//! the code that uses them.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "berth:plugin/plugin",
    imports: { default: trappable },
});
