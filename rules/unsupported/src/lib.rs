//! Unsupported: the placeholder `sluice import thingsboard` puts where a ThingsBoard node has no
//! Sluice equivalent yet (create alarm, RPC to a device, device profile, …). The imported chain
//! keeps its shape — the node, its name and its connections are all there, so the gap is visible
//! in the chain, in `--stats` and in the logs — but no message passes it silently: every message
//! goes to `Failure` with `metadata.error` naming the class and why it is not supported.
//!
//! Why a node rather than a load error: an import should give a chain that validates and runs
//! the parts that do work (a root chain whose RPC branch is a placeholder still saves telemetry),
//! and the import report (or `--strict`) is where the gaps are refused, not the loader.
//!
//! Config:
//! ```json
//! {"class": "org.thingsboard.rule.engine.action.TbCreateAlarmNode",
//!  "reason": "alarms live in ThingsBoard's database"}
//! ```
//! - `class` (required, not empty): the ThingsBoard node class this node stands for.
//! - `reason` (default `"no Sluice node for it yet"`): why it is not supported.
//!
//! Relations: `Failure` only.
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub class: String,
    #[serde(default = "default_reason")]
    pub reason: String,
}

fn default_reason() -> String {
    "no Sluice node for it yet".into()
}

pub struct Unsupported {
    error: String,
}

/// Placeholder for a ThingsBoard node Sluice cannot run: every message to Failure.
// It emits only `Failure`, but it keeps the connections of the node it stands in for (`Success`,
// `Created`, …), so that the node that replaces it is wired already: `any` tells the loader not
// to check them against what the placeholder emits.
#[node(relations = [any])]
impl Node for Unsupported {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        if cfg.class.trim().is_empty() {
            bail_config!("class", "must name the ThingsBoard node class");
        }
        Ok(Unsupported { error: format!("unsupported ThingsBoard node {}: {}", cfg.class, cfg.reason) })
    }

    fn on_msg(&mut self, _msg: Msg, _out: &mut Outputs) -> Result<()> {
        // An `Err` sends the incoming message to `Failure` with this text in `metadata.error`.
        Err(Error::new(self.error.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    #[test]
    fn every_message_goes_to_failure_naming_the_class() -> Result<()> {
        let config = r#"{"class": "org.thingsboard.rule.engine.action.TbCreateAlarmNode", "reason": "no alarms"}"#;
        let mut d = TestDriver::node_from_json::<Unsupported>(config).unwrap();
        let msg = Msg::telemetry("T-1", json!({"temperature": 99})).with_id("m1");
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Failure"]);
        let failed = out.messages()[0];
        assert_eq!(
            failed.meta("error"),
            Some("unsupported ThingsBoard node org.thingsboard.rule.engine.action.TbCreateAlarmNode: no alarms")
        );
        assert_eq!(failed.data(), msg.data());
        let mut d = TestDriver::node_from_json::<Unsupported>(r#"{"class": "TbX"}"#).unwrap();
        let out = d.send(msg)?;
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("TbX: no Sluice node"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<Unsupported>(text).err().expect(text);
        assert_eq!(error("{}").field, "class");
        assert_eq!(error(r#"{"class": "TbX", "why": "?"}"#).field, "why");
        assert!(error(r#"{"class": " "}"#).message.contains("`class`"));
    }
}
