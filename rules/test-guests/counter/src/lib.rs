//! Test guest: counts messages per originator in host state and stamps the count into metadata
//! (`count`). The count lives in the host, so it survives a trap and a fresh instance.
use sluice_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Relation for the stamped message.
    pub relation: String,
}

pub struct Counter {
    pub relation: String,
}

/// Counts messages per originator in host state.
#[node(relations = [config])]
impl Node for Counter {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.relation.is_empty() {
            bail!("relation must not be empty");
        }
        Ok(Counter { relation: config.relation })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let name = msg.originator_name();
        let key = format!("count/{name}");
        let count: u64 = state::get_json(&key)?.unwrap_or(0) + 1;
        state::put_json(&key, &count)?;
        log::debug(&format!("{name} has sent {count}"));
        out.emit(&self.relation, msg.with_meta("count", count.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    #[test]
    fn counts_per_originator() -> Result<()> {
        let mut driver = TestDriver::node::<Counter>(Config { relation: "Counted".into() })?;
        driver.send(Msg::telemetry("a", json!({})))?;
        driver.send(Msg::telemetry("b", json!({})))?;
        let out = driver.send(Msg::telemetry("a", json!({})))?;
        assert_eq!(out.relations(), ["Counted"]);
        assert_eq!(out.messages()[0].meta("count"), Some("2"));
        Ok(())
    }

    #[test]
    fn empty_relation_is_refused() {
        assert!(TestDriver::node_from_json::<Counter>(r#"{"relation": ""}"#).is_err());
        let err = TestDriver::node_from_json::<Counter>(r#"{"relation": 5}"#).err().unwrap();
        assert_eq!(err.field, "relation");
    }
}
