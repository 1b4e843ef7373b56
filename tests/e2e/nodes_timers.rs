//! Wasm builds of the timers nodes, run in the engine.
