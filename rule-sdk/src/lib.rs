//! # sluice-sdk: write Sluice rule nodes in plain Rust
//!
//! A rule node is a small Rust crate compiled to `wasm32-unknown-unknown`. The engine hands it
//! its config once and then messages ([`Msg`], ThingsBoard's `TbMsg`); the node answers with
//! zero or more `(relation, message)` outputs. Everything else — time, state, actions — comes
//! from the host through the safe wrappers in [`host`].
//!
//! ```
//! use sluice_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Config { device_type: String }
//!
//! /// Keeps weather-station telemetry that carries a wind speed.
//! #[filter]                       // Ok(true) → "True", Ok(false) → "False", Err → "Failure"
//! fn weather_station(msg: &Msg, cfg: &Config) -> Result<bool> {
//!     Ok(msg.meta("deviceType") == Some(cfg.device_type.as_str()) && msg.has_field("windSpeed"))
//! }
//! ```
//!
//! The attribute writes the wasm exports (only when compiling for wasm32); the function stays a
//! plain function that [`testing::TestDriver`] runs natively. The wire contract is `ABI.md`.

pub mod abi;
pub mod config;
pub mod entity_relations;
pub mod error;
pub mod host;
pub mod java;
pub mod manifest;
pub mod msg;
pub mod node;
pub mod relation;
pub mod series;
pub mod template;
/// The native harness: for `cargo test`, never compiled into a module.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod windows;

pub use error::{Error, Result};
pub use host::{action, clock, log, state, table, timer, window};
pub use msg::{
    FieldPath, Metadata, Msg, Originator, TbMsg, as_number, data_path, derived_id, json_kind, msg_type, value_text,
};
pub use node::{NoConfig, Node, Output, Outputs};
pub use sluice_sdk_macros::{filter, node, transform};
pub use template::Template;
pub use windows::ClosedWindow;

/// Re-exported for convenience (`#[derive(Deserialize)]` still needs `serde` in the rule crate;
/// `#[derive(JsonSchema)]` finds `schemars` through the prelude).
pub use schemars;
pub use serde;
pub use serde_json;

/// Everything a rule file usually needs.
pub mod prelude {
    pub use crate::host::window::{Added, Window};
    pub use crate::host::{action, clock, log, state, table, timer, window};
    pub use crate::relation;
    pub use crate::series;
    pub use crate::windows::Timer;
    pub use crate::{
        ClosedWindow, Error, FieldPath, Metadata, Msg, NoConfig, Node, Originator, Outputs, Result, Template, bail,
        bail_config,
    };
    pub use crate::{filter, node, transform};
    pub use schemars::{self, JsonSchema};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
}
