//! Clear alarm (ThingsBoard's `TbClearAlarmNode`): clears the originator's active alarm of a
//! type, kept by `create-alarm` in the host table `alarms`.
//!
//! As `TbClearAlarmNode.processAlarm` / `clearAlarm` do: the alarm type is a template over the
//! message; when the originator's latest alarm of the type exists and is not cleared, it is
//! cleared — `cleared: true`, status `CLEARED_UNACK` (`CLEARED_ACK` if it was acknowledged),
//! `clearTs` and `endTs` = the message time (metadata `ts` when numeric, else the message's; the
//! event time rather than ThingsBoard's wall clock, so replays agree), details replaced by the
//! configured ones (see below) — and the node emits, on `Cleared`, a message of type `ALARM` with
//! the incoming metadata plus `isClearedAlarm: "true"` and the alarm as data (the shape
//! `create-alarm` documents). Otherwise the incoming message goes on `False`, unchanged.
//!
//! Details: ThingsBoard runs a details script; here `details` is a JSON template (strings are
//! `${metadata}`/`$[data]` templates), `detailsFromMetadata` names a metadata key with JSON
//! details written by a `script` node in front (what the importer builds from a details script),
//! and without either the alarm keeps its details — what ThingsBoard's default script does;
//! `keepPreviousDetails` merges the new details over the previous ones (a script that starts
//! from `metadata.prevAlarmDetails` and adds keys).
//!
//! Config: `{"alarmType": "High Temperature", "details": {"clearedAt": "${ts}"}}`
use sluice_sdk::prelude::*;

/// The table `create-alarm` keeps.
pub const ALARMS: &str = "alarms";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub alarm_type: Template,
    #[serde(default)]
    pub details: Option<Value>,
    #[serde(default)]
    pub details_from_metadata: Option<String>,
    #[serde(default)]
    pub keep_previous_details: bool,
}

pub struct ClearAlarm {
    config: Config,
}

/// Clears the originator's active alarm of a type (ThingsBoard's clear alarm node).
#[node(relations = ["Cleared", "False"])]
impl Node for ClearAlarm {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.details.as_ref().is_some_and(|d| !d.is_object()) {
            bail_config!("details", "expected a JSON object");
        }
        Ok(ClearAlarm { config })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let alarm_type = self.config.alarm_type.render(&msg)?;
        let originator = msg.originator();
        let key = format!("{}/{}/{}", originator.entity_type, originator.name, alarm_type);
        let Some(mut alarm) = table::get::<Value>(ALARMS, &key)?.filter(|a| a["cleared"] != json!(true)) else {
            out.forward(relation::FALSE);
            return Ok(());
        };
        let now = msg.meta("ts").and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or_else(|| msg.ts());
        let previous = alarm["details"].clone();
        if let Some(template) = &self.config.details {
            alarm["details"] = sluice_sdk::template::render_json(template, &msg)?;
        }
        if let Some(k) = &self.config.details_from_metadata
            && let Some(text) = msg.meta(k)
        {
            alarm["details"] = serde_json::from_str(text)
                .map_err(|e| Error::new(format!("metadata `{k}` is not JSON details: {e}")))?;
        }
        if self.config.keep_previous_details
            && let (Value::Object(prev), Value::Object(new)) = (&previous, &alarm["details"])
        {
            let mut merged = prev.clone();
            merged.extend(new.clone());
            alarm["details"] = Value::Object(merged);
        }
        let acked = alarm["acknowledged"] == json!(true);
        alarm["cleared"] = json!(true);
        alarm["status"] = json!(if acked { "CLEARED_ACK" } else { "CLEARED_UNACK" });
        alarm["clearTs"] = json!(now);
        alarm["endTs"] = json!(now);
        table::put(ALARMS, &key, &alarm)?;
        let mut result = msg;
        result.set_msg_type("ALARM");
        result.set_meta("isClearedAlarm", "true");
        result.set_data(alarm);
        out.emit("Cleared", result);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    #[test]
    fn clears_an_active_alarm_once() -> Result<()> {
        let mut d = TestDriver::node_from_json::<ClearAlarm>(r#"{"alarmType": "High Temperature"}"#).unwrap();
        let msg = Msg::telemetry("T-1", json!({"temperature": 20})).with_ts(5000);
        // No alarm: `False`, unchanged.
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["False"]);
        assert_eq!(out.messages()[0], &msg);
        let key = "DEVICE/T-1/High Temperature";
        let active = json!({"id": {"entityType": "ALARM", "id": "alarm:m1"}, "type": "High Temperature",
                            "acknowledged": false, "cleared": false, "status": "ACTIVE_UNACK",
                            "startTs": 1000, "endTs": 2000, "details": {"t": 30}});
        d.put_table(ALARMS, key, &active)?;
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Cleared"]);
        let alarm = out.messages()[0];
        assert_eq!(alarm.msg_type(), "ALARM");
        assert_eq!(alarm.meta("isClearedAlarm"), Some("true"));
        let data = alarm.data();
        assert_eq!(data["status"], "CLEARED_UNACK");
        assert_eq!((data["clearTs"].clone(), data["endTs"].clone()), (json!(5000), json!(5000)));
        assert_eq!(data["details"], json!({"t": 30}));
        assert_eq!(d.send(msg)?.relations(), ["False"]);
        Ok(())
    }
}
