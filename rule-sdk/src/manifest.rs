//! What a module says about itself: its manifest and its config's schema (`ABI.md` §4a).
//!
//! The two travel differently because one is known when the module is compiled and the other is
//! not. The **manifest** — the one-line description, the kind of node and the relations it emits
//! — is text the attribute macros write from the rule's own code into the custom section
//! `sluice:manifest`: the host reads it from the module's bytes without running anything. The
//! **config schema** is built by `schemars` from the `Config` type, which only happens when code
//! runs, so the module exports `sluice_config_schema`, which the host calls once, at load.
//!
//! Which host capabilities a module uses (state, windows, tables, timers, actions) is not
//! written anywhere by the author: the host reads it from the module's imports, which are the
//! truth for any guest, hand-written WAT included.

use serde::{Deserialize, Serialize};

/// The custom section the manifest is in.
pub const SECTION: &str = "sluice:manifest";

/// The export that returns the config's JSON Schema.
pub const SCHEMA_EXPORT: &str = "sluice_config_schema";

/// The manifest format this SDK writes.
pub const FORMAT: u32 = 1;

/// A module's manifest: the JSON in its `sluice:manifest` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The format ([`FORMAT`]).
    pub manifest: u32,
    /// `filter`, `transform` or `node`: which attribute wrote it.
    #[serde(default)]
    pub kind: String,
    /// The first line of the rule's doc comment.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The relations it emits, `Failure` included; `None` when the module does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relations: Option<Vec<String>>,
    /// Relations it may emit besides [`Manifest::relations`], whose names are not known before
    /// the chain is: `config` (its config names them) or `any` (a script decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_relations: Option<MoreRelations>,
}

/// Where the relations come from that a manifest cannot list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MoreRelations {
    /// Named in the node's config (`late`, a switch's table).
    Config,
    /// Any name: decided by code the config carries (a script).
    Any,
}

impl Manifest {
    /// Parses the section's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("the `{SECTION}` section does not parse: {e}"))
    }

    /// The complete list of relations the node can emit, when the manifest gives one: a chain
    /// that connects any other relation of the node is wrong.
    pub fn closed_relations(&self) -> Option<&[String]> {
        match (&self.relations, self.more_relations) {
            (Some(list), None) if !list.is_empty() => Some(list),
            _ => None,
        }
    }
}

/// The JSON Schema of a config type, as `sluice_config_schema` returns it.
pub fn config_schema<C: schemars::JsonSchema>() -> String {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<C>();
    serde_json::to_string(&schema).unwrap_or_else(|_| "true".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_list_is_checked() {
        let m = Manifest::parse(br#"{"manifest":1,"kind":"filter","relations":["True","False","Failure"]}"#).unwrap();
        assert_eq!(m.closed_relations().unwrap(), ["True", "False", "Failure"]);
        let m = Manifest::parse(br#"{"manifest":1,"kind":"node","relations":["Success"],"moreRelations":"config"}"#)
            .unwrap();
        assert_eq!(m.closed_relations(), None);
        let m = Manifest::parse(br#"{"manifest":1,"kind":"node"}"#).unwrap();
        assert_eq!(m.closed_relations(), None);
    }

    #[test]
    fn the_schema_of_no_config_refuses_fields() {
        let schema: serde_json::Value = serde_json::from_str(&config_schema::<crate::NoConfig>()).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{schema}");
    }
}
