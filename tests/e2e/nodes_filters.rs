//! Wasm builds of the filters nodes, run in the engine.
