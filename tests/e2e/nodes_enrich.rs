//! Wasm builds of the enrich nodes, run in the engine.
