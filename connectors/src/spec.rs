//! What `connectors` in a chain file (or `sluice.toml`) say: the types live in `sluice-core`.

pub use sluice_core::spec::connectors::*;
