//! Wasm builds of the script nodes, run in the engine.
