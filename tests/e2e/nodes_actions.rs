//! Wasm builds of the actions nodes, run in the engine.
