//! Create alarm (ThingsBoard's `TbCreateAlarmNode`): one alarm per originator and alarm type,
//! kept in the host table `alarms` so that it survives restarts and reloads (tables are
//! checkpointed) and `clear-alarm` sees it.
//!
//! As `TbCreateAlarmNode.processAlarm` does: when the originator has no alarm of the type, or
//! only a cleared one, a new alarm is created — status `ACTIVE_UNACK`, `startTs` = `endTs` = the
//! message time (metadata `ts` when it is a number, else the message's, as `getMetaDataTs`) — and
//! the node emits on `Created`; when an active one exists, its severity, propagation flags and
//! details are replaced and `endTs` moves to the message time, on `Updated`. Either way the output
//! is a new message as `TbAbstractAlarmNode.toAlarmMsg` builds it: type `ALARM`, the incoming
//! metadata plus `isNewAlarm: "true"` or `isExistingAlarm: "true"`, data = the alarm in
//! ThingsBoard's `Alarm` shape:
//! ```json
//! {"id": {"entityType": "ALARM", "id": "<id>"}, "createdTime": 1700000000000, "type": "High Temperature",
//!  "name": "High Temperature", "originator": {"entityType": "DEVICE", "name": "T-1"}, "severity": "CRITICAL",
//!  "acknowledged": false, "cleared": false, "status": "ACTIVE_UNACK", "startTs": 1700000000000,
//!  "endTs": 1700000000000, "ackTs": 0, "clearTs": 0, "details": {…}, "propagate": false,
//!  "propagateToOwner": false, "propagateToTenant": false, "propagateRelationTypes": []}
//! ```
//! `False` is declared, as `TbCreateAlarmNode`'s `relationTypes` do, so that imported chains
//! wired on it load; like ThingsBoard 3.x+, the node never sends on it.
//!
//! The alarm id is derived from the id of the message that created it, so a replay after a crash
//! creates the same alarm. The propagation flags are also set in the output's metadata
//! (`propagate`, `propagateToOwner`, `propagateToTenant`), for a connector to route on. The
//! "alarm output" of a chain is a connection from `Created`/`Updated` (and `clear-alarm`'s
//! `Cleared`) to a sink, a file or a `kafka-action`.
//!
//! Differences from ThingsBoard, on purpose: `endTs` of an update is the message time, not the
//! wall clock, so replays give the same alarms; details are not a script run inside this node
//! (ThingsBoard's `alarmDetailsBuildJs`). Instead:
//! - `details` (default `{}`): a JSON template — every string in it is a `${metadata}`/`$[data]`
//!   template rendered against the message;
//! - `detailsFromMetadata`: the metadata key holding the details as JSON text — what the
//!   importer's `script` node in front of this one writes when the ThingsBoard node had a
//!   details script (the script runs in the `script` rule, unchanged);
//! - `keepPreviousDetails`: on update, the new details are merged over the previous ones
//!   (what ThingsBoard's default details script does with `metadata.prevAlarmDetails`).
//!
//! Config:
//! ```json
//! {"alarmType": "High Temperature", "severity": "CRITICAL", "dynamicSeverity": false,
//!  "propagate": false, "propagateToOwner": false, "propagateToTenant": false, "relationTypes": [],
//!  "details": {"temperature": "$[temperature]"}, "useMessageAlarmData": false}
//! ```
//! - `alarmType` (required): a template.
//! - `severity` (default `CRITICAL`): `CRITICAL`, `MAJOR`, `MINOR`, `WARNING`, `INDETERMINATE`;
//!   with `dynamicSeverity` a template whose result must be one of them (else `Failure`).
//! - `useMessageAlarmData`: the incoming data is an alarm (`type`, `severity`, `details`,
//!   `propagate…`), as ThingsBoard's `getAlarmFromMessage`; `overwriteAlarmDetails` then builds
//!   details from the config instead of taking the message's.
use sluice_sdk::prelude::*;

/// The table every alarm node reads and writes.
pub const ALARMS: &str = "alarms";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub alarm_type: Option<Template>,
    #[serde(default = "critical")]
    pub severity: String,
    #[serde(default)]
    pub dynamic_severity: bool,
    #[serde(default)]
    pub propagate: bool,
    #[serde(default)]
    pub propagate_to_owner: bool,
    #[serde(default)]
    pub propagate_to_tenant: bool,
    #[serde(default)]
    pub relation_types: Vec<String>,
    #[serde(default)]
    pub details: Option<Value>,
    #[serde(default)]
    pub details_from_metadata: Option<String>,
    #[serde(default)]
    pub keep_previous_details: bool,
    #[serde(default)]
    pub use_message_alarm_data: bool,
    #[serde(default)]
    pub overwrite_alarm_details: bool,
}

fn critical() -> String {
    "CRITICAL".into()
}

/// ThingsBoard's `AlarmSeverity`.
pub const SEVERITIES: &[&str] = &["CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"];

/// `getMetaDataTs`: the metadata `ts` when it is a number, else the message's.
pub fn msg_time(msg: &Msg) -> i64 {
    msg.meta("ts").and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or_else(|| msg.ts())
}

/// The key of an originator's alarm of a type in [`ALARMS`].
pub fn alarm_key(originator: &Originator, alarm_type: &str) -> String {
    format!("{}/{}/{}", originator.entity_type, originator.name, alarm_type)
}

/// Objects merged key by key, `new` over `old`.
fn merge(old: &Value, new: Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = o.clone();
            for (k, v) in n {
                out.insert(k, v);
            }
            Value::Object(out)
        }
        (_, n) => n,
    }
}

pub struct CreateAlarm {
    config: Config,
    severity: Template,
}

impl CreateAlarm {
    fn severity(&self, msg: &Msg) -> Result<String> {
        let s = self.severity.render(msg)?;
        if SEVERITIES.contains(&s.as_str()) {
            Ok(s)
        } else {
            bail!("Used incorrect pattern or Alarm Severity not included in message: `{s}`")
        }
    }

    fn details(&self, msg: &Msg, previous: Option<&Value>) -> Result<Value> {
        let mut details = match &self.config.details {
            Some(template) => sluice_sdk::template::render_json(template, msg)?,
            None => json!({}),
        };
        if let Some(key) = &self.config.details_from_metadata
            && let Some(text) = msg.meta(key)
        {
            details = serde_json::from_str(text)
                .map_err(|e| Error::new(format!("metadata `{key}` is not JSON details: {e}")))?;
        }
        Ok(match (previous, self.config.keep_previous_details) {
            (Some(prev), true) => merge(prev, details),
            _ => details,
        })
    }
}

/// Creates or updates the originator's alarm of a type (ThingsBoard's create alarm node).
#[node(relations = ["Created", "Updated", "False"])]
impl Node for CreateAlarm {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if !config.use_message_alarm_data && config.alarm_type.is_none() {
            bail_config!("alarmType", "is required unless useMessageAlarmData is set");
        }
        if !config.dynamic_severity && !SEVERITIES.contains(&config.severity.as_str()) {
            bail_config!("severity", "expected one of {}", SEVERITIES.join(", "));
        }
        let severity = match Template::parse(&config.severity) {
            Ok(t) => t,
            Err(why) => bail_config!("severity", "{why}"),
        };
        if config.details.as_ref().is_some_and(|d| !d.is_object()) {
            bail_config!("details", "expected a JSON object");
        }
        Ok(CreateAlarm { config, severity })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let now = msg_time(&msg);
        // What the message or the config says the alarm is.
        let from_msg = if cfg.use_message_alarm_data { Some(msg.data().clone()) } else { None };
        let alarm_type = match (&from_msg, &cfg.alarm_type) {
            (Some(data), _) => match data.get("type").and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None => bail!("the message is no alarm: no `type`"),
            },
            (None, Some(t)) => t.render(&msg)?,
            (None, None) => bail!("no alarm type"),
        };
        let (severity, flags) = match &from_msg {
            Some(data) => {
                let severity = data.get("severity").and_then(Value::as_str).unwrap_or("CRITICAL").to_string();
                if !SEVERITIES.contains(&severity.as_str()) {
                    bail!("unknown alarm severity `{severity}`");
                }
                let flag = |k: &str| data.get(k).and_then(Value::as_bool).unwrap_or(false);
                (severity, [flag("propagate"), flag("propagateToOwner"), flag("propagateToTenant")])
            }
            None => (self.severity(&msg)?, [cfg.propagate, cfg.propagate_to_owner, cfg.propagate_to_tenant]),
        };
        let relation_types = match &from_msg {
            Some(data) => data.get("propagateRelationTypes").cloned().unwrap_or(json!([])),
            None => json!(cfg.relation_types),
        };
        let originator = msg.originator().clone();
        let key = alarm_key(&originator, &alarm_type);
        let existing = table::get::<Value>(ALARMS, &key)?.filter(|a| a["cleared"] != json!(true));
        let build_details = from_msg.is_none() || cfg.overwrite_alarm_details;
        let details = |previous: Option<&Value>| -> Result<Value> {
            if build_details {
                self.details(&msg, previous)
            } else {
                Ok(from_msg.as_ref().and_then(|d| d.get("details")).cloned().unwrap_or(Value::Null))
            }
        };
        let (alarm, relation, flag) = match existing {
            None => {
                let alarm = json!({
                    "id": {"entityType": "ALARM", "id": format!("alarm:{}", msg.id())},
                    "createdTime": now,
                    "type": alarm_type, "name": alarm_type,
                    "originator": originator,
                    "severity": severity,
                    "acknowledged": false, "cleared": false, "status": "ACTIVE_UNACK",
                    "startTs": now, "endTs": now, "ackTs": 0, "clearTs": 0,
                    "details": details(None)?,
                    "propagate": flags[0], "propagateToOwner": flags[1], "propagateToTenant": flags[2],
                    "propagateRelationTypes": relation_types,
                });
                (alarm, "Created", "isNewAlarm")
            }
            Some(mut alarm) => {
                let previous = alarm.get("details").cloned();
                alarm["severity"] = json!(severity);
                alarm["propagate"] = json!(flags[0]);
                alarm["propagateToOwner"] = json!(flags[1]);
                alarm["propagateToTenant"] = json!(flags[2]);
                alarm["propagateRelationTypes"] = relation_types;
                alarm["details"] = details(previous.as_ref().filter(|p| !p.is_null()))?;
                alarm["endTs"] = json!(now);
                (alarm, "Updated", "isExistingAlarm")
            }
        };
        table::put(ALARMS, &key, &alarm)?;
        let mut result = msg;
        result.set_msg_type("ALARM");
        result.set_meta(flag, "true");
        result.set_meta("propagate", flags[0].to_string());
        result.set_meta("propagateToOwner", flags[1].to_string());
        result.set_meta("propagateToTenant", flags[2].to_string());
        result.set_data(alarm);
        out.emit(relation, result);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn node(cfg: Value) -> TestDriver {
        TestDriver::node_from_json::<CreateAlarm>(&cfg.to_string()).unwrap()
    }

    fn hot(id: &str, ts: i64, t: f64) -> Msg {
        Msg::telemetry("T-1", json!({"temperature": t})).with_ts(ts).with_id(id)
    }

    #[test]
    fn created_then_updated() -> Result<()> {
        let mut d = node(json!({"alarmType": "High Temperature", "severity": "MAJOR", "propagate": true,
                                "details": {"t": "$[temperature]"}, "keepPreviousDetails": true}));
        let out = d.send(hot("m1", 1000, 30.0))?;
        assert_eq!(out.relations(), ["Created"]);
        let alarm = out.messages()[0];
        assert_eq!(alarm.msg_type(), "ALARM");
        assert_eq!(alarm.meta("isNewAlarm"), Some("true"));
        assert_eq!(alarm.meta("propagate"), Some("true"));
        let data = alarm.data();
        assert_eq!(data["status"], "ACTIVE_UNACK");
        assert_eq!(data["id"]["id"], "alarm:m1");
        assert_eq!((data["startTs"].clone(), data["endTs"].clone()), (json!(1000), json!(1000)));
        assert_eq!(data["details"], json!({"t": "30.0"}));
        let out = d.send(hot("m2", 2000, 31.0).with_meta("ts", "2500"))?;
        assert_eq!(out.relations(), ["Updated"]);
        let data = out.messages()[0].data();
        assert_eq!(out.messages()[0].meta("isExistingAlarm"), Some("true"));
        assert_eq!(data["id"]["id"], "alarm:m1");
        assert_eq!((data["startTs"].clone(), data["endTs"].clone()), (json!(1000), json!(2500)));
        Ok(())
    }

    #[test]
    fn dynamic_severity() -> Result<()> {
        let mut d = node(json!({"alarmType": "${kind}", "severity": "${sev}", "dynamicSeverity": true}));
        let msg = |sev: &str| hot("x", 1, 1.0).with_meta("kind", "K").with_meta("sev", sev);
        let out = d.send(msg("NOPE"))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(d.send(msg("MINOR"))?.messages()[0].data()["severity"], "MINOR");
        let out = d.send(msg("MAJOR"))?;
        assert_eq!(out.relations(), ["Updated"]);
        assert_eq!(out.messages()[0].data()["severity"], "MAJOR");
        Ok(())
    }

    #[test]
    fn bad_configs() {
        let err = |cfg: Value| TestDriver::node_from_json::<CreateAlarm>(&cfg.to_string()).err().unwrap().to_string();
        assert!(err(json!({"severity": "MAJOR"})).contains("`alarmType`"));
        assert!(err(json!({"alarmType": "a", "severity": "HIGH"})).contains("`severity`"));
    }
}
