//! What a node is: a typed config parsed once, then messages in and `(relation, message)` out.
//!
//! Most rules are a single function under [`macro@crate::filter`] or [`macro@crate::transform`].
//! A node that keeps fields between messages, or emits several outputs, implements [`Node`] and
//! puts [`macro@crate::node`] on the impl.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Msg, Result};

/// A rule node.
///
/// ```
/// use sluice_sdk::prelude::*;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Config { relation: String }
///
/// struct Tag { relation: String, seen: u64 }
///
/// /// Tags each message with how many came before it.
/// #[node(relations = [config])]          // emits on a relation its config names
/// impl Node for Tag {
///     type Config = Config;
///     fn init(cfg: Config) -> Result<Self> { Ok(Tag { relation: cfg.relation, seen: 0 }) }
///     fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
///         self.seen += 1;
///         out.emit(&self.relation, msg.with_meta("seen", self.seen.to_string()));
///         Ok(())
///     }
/// }
/// ```
pub trait Node: Sized + 'static {
    /// The node's `config` from the chain JSON, parsed whenever an instance starts (first at load,
    /// to validate it); a config that does not deserialize is a load error naming the node and
    /// the field.
    /// Its JSON Schema (`#[derive(JsonSchema)]`) is the module's `sluice_config_schema`: the
    /// engine checks a chain's config against it before `init`, and `sluice schema` gives it to
    /// editors.
    type Config: DeserializeOwned + schemars::JsonSchema;

    /// Builds the node from its config. An `Err` here refuses the chain at load; one worded
    /// ``config field `F`: why`` names the field `config.F` in the load error.
    fn init(config: Self::Config) -> Result<Self>;

    /// Handles one message, pushing zero or more outputs.
    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()>;

    /// Handles a window of this node that closed (or, with early updates, changed): build the
    /// result message(s) from it. Messages emitted without an id get one derived from the
    /// window's id, so a replay after a crash produces the same ids.
    fn on_window(&mut self, closed: crate::ClosedWindow, out: &mut Outputs) -> Result<()> {
        let _ = (closed, out);
        Ok(())
    }

    /// Handles a processing-time timer set with [`crate::timer::set`] that came due (generators,
    /// timeouts).
    fn on_timer(&mut self, timer: crate::windows::Timer, out: &mut Outputs) -> Result<()> {
        let _ = (timer, out);
        Ok(())
    }
}

/// Config of a node that takes none: accepts an absent/`null` config or `{}`, and nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// What a node hands on, in order.
#[derive(Debug, Default)]
pub struct Outputs {
    items: Vec<(String, Output)>,
}

/// One output's message.
// A call has a handful of outputs, moved once each: boxing the message would cost an allocation
// per output to save a few hundred bytes of copying.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The incoming message, exactly as it arrived. Nothing is serialized: this is how a filter
    /// stays cheap.
    Forward,
    /// A new or changed message.
    Msg(Msg),
}

impl Outputs {
    pub fn new() -> Self {
        Outputs::default()
    }

    /// Sends `msg` down every connection labelled `relation`.
    pub fn emit(&mut self, relation: impl Into<String>, msg: Msg) {
        self.items.push((relation.into(), Output::Msg(msg)));
    }

    /// Sends the incoming message, unchanged, down every connection labelled `relation`.
    pub fn forward(&mut self, relation: impl Into<String>) {
        self.items.push((relation.into(), Output::Forward));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether any output forwards the incoming message.
    pub fn has_forward(&self) -> bool {
        self.items.iter().any(|(_, o)| matches!(o, Output::Forward))
    }

    pub fn drain(&mut self) -> impl Iterator<Item = (String, Output)> + '_ {
        self.items.drain(..)
    }
}

/// The adapter behind `#[filter]`: `true` → `True`, `false` → `False`.
pub fn filter_outputs(keep: bool, out: &mut Outputs) {
    out.forward(if keep { crate::relation::TRUE } else { crate::relation::FALSE });
}

/// The adapter behind `#[transform]`: the returned message goes to `Success`.
pub fn transform_outputs(msg: Msg, out: &mut Outputs) {
    out.emit(crate::relation::SUCCESS, msg);
}
