//! Rename keys (ThingsBoard's `TbRenameKeysNode`): renames keys of `data` (or of `metadata`, with
//! `"renameIn": "METADATA"`) and sends the message on `Success`. Keys not present are left alone.
//!
//! Config: `{"renameKeysMapping": {"temp": "temperature"}, "renameIn": "DATA"}`
use std::collections::BTreeMap;

use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RenameIn {
    #[default]
    Data,
    Metadata,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub rename_keys_mapping: BTreeMap<String, String>,
    #[serde(default)]
    pub rename_in: RenameIn,
}

/// Renames the configured keys.
#[transform]
pub fn rename_keys(mut msg: Msg, cfg: &Config) -> Result<Msg> {
    match cfg.rename_in {
        RenameIn::Data => {
            // Key by key: only the keys renamed go back to the host, not the whole data.
            let mut renamed = false;
            for (from, to) in &cfg.rename_keys_mapping {
                if let Some(value) = msg.remove_field(from) {
                    msg.set_field(to.clone(), value);
                    renamed = true;
                }
            }
            if !renamed && !msg.data().is_object() {
                bail!("data is not a JSON object");
            }
        }
        RenameIn::Metadata => {
            for (from, to) in &cfg.rename_keys_mapping {
                if msg.meta(from).is_some()
                    && let Some(value) = msg.remove_meta(from)
                {
                    msg.set_meta(to.clone(), value);
                }
            }
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn mapping() -> BTreeMap<String, String> {
        [("temp".to_string(), "temperature".to_string())].into()
    }

    #[test]
    fn renames_data_keys() -> Result<()> {
        let cfg = Config { rename_keys_mapping: mapping(), rename_in: RenameIn::Data };
        let out = TestDriver::transform(rename_keys, cfg).send(Msg::telemetry("T", json!({"temp": 21, "h": 40})))?;
        let (rel, m) = out.single().unwrap();
        assert_eq!(rel, "Success");
        assert_eq!(m.data(), &json!({"temperature": 21, "h": 40}));
        Ok(())
    }

    #[test]
    fn renames_metadata_keys() -> Result<()> {
        let cfg = Config { rename_keys_mapping: mapping(), rename_in: RenameIn::Metadata };
        let out =
            TestDriver::transform(rename_keys, cfg).send(Msg::telemetry("T", json!({})).with_meta("temp", "x"))?;
        assert_eq!(out.messages()[0].meta("temperature"), Some("x"));
        Ok(())
    }

    #[test]
    fn non_object_data_fails() -> Result<()> {
        let cfg = Config { rename_keys_mapping: mapping(), rename_in: RenameIn::Data };
        let out = TestDriver::transform(rename_keys, cfg).send(Msg::telemetry("T", json!([1, 2])))?;
        assert_eq!(out.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn bad_rename_in_names_field() {
        let err = TestDriver::node_from_json::<RenameKeysProbe>(r#"{"renameKeysMapping":{},"renameIn":"BOTH"}"#)
            .err()
            .unwrap();
        assert_eq!(err.field, "renameIn");
    }

    /// The config's own parse, as a node, to check config errors natively.
    struct RenameKeysProbe;
    impl Node for RenameKeysProbe {
        type Config = Config;
        fn init(_: Config) -> Result<Self> {
            Ok(RenameKeysProbe)
        }
        fn on_msg(&mut self, _: Msg, _: &mut Outputs) -> Result<()> {
            Ok(())
        }
    }
}
