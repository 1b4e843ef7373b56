//! Wasm builds of the decoder nodes, run in the engine.
