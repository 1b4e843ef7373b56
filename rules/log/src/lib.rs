//! Log (ThingsBoard's `TbLogNode`): writes one line per message to the engine's log, at a
//! configured level, and forwards the message unchanged on `Success`. For debugging a chain, or
//! keeping a trace of rare events.
//!
//! The line is the configured template rendered for the message (`${key}` a metadata value,
//! `$[key]` a data field, dotted paths reach into objects), or by default the whole message as
//! JSON. A log node must never lose a message: when the template names a value the message lacks,
//! the node logs the error text instead (`log template: template placeholder $[windSpeed]: data
//! has no `windSpeed``), at the same level, and still forwards the message on `Success` — the line
//! goes where the intended one would have gone, rather than being raised to `warn` (which would
//! flood a production log with a debug node's lines) or failing the message.
//!
//! The engine shows guest lines with the node's id, filtered by `SLUICE_LOG` (default `info`:
//! `debug` lines show only with e.g. `SLUICE_LOG=debug`).
//!
//! Config:
//! ```json
//! {"level": "info", "message": "wind ${deviceName}: $[windSpeed]"}
//! ```
//! - `level` (default `"info"`): `"debug"`, `"info"`, `"warn"` or `"error"`.
//! - `message` (default: the whole message as JSON): template of the line.
use sluice_sdk::log::Level;
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default)]
    pub message: Option<Template>,
}

/// The level of the lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl From<LogLevel> for Level {
    fn from(level: LogLevel) -> Level {
        match level {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        }
    }
}

pub struct LogNode {
    level: Level,
    message: Option<Template>,
}

/// Writes one line per message to the engine's log and forwards it.
#[node(relations = ["Success"])]
impl Node for LogNode {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        Ok(LogNode { level: cfg.level.into(), message: cfg.message })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let line = match &self.message {
            Some(template) => template.render(&msg).unwrap_or_else(|err| format!("log template: {err}")),
            None => serde_json::to_string(&msg).unwrap_or_else(|err| format!("log: message not serializable: {err}")),
        };
        log::log(self.level, &line);
        out.forward(relation::SUCCESS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver(config: &str) -> TestDriver {
        TestDriver::node_from_json::<LogNode>(config).unwrap()
    }

    fn wind() -> Msg {
        Msg::telemetry("WS-1", json!({"windSpeed": "33", "gust": 41.5, "loc": {"zone": "A"}}))
            .with_id("m1")
            .with_ts(7)
            .with_meta("deviceName", "WS-1")
    }

    #[test]
    fn logs_the_template_and_forwards_unchanged() -> Result<()> {
        let mut d = driver(r#"{"message": "wind ${deviceName}: $[windSpeed] (gust $[gust], zone $[loc.zone])"}"#);
        let out = d.send(wind())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&wind()]);
        assert_eq!(d.logs(), [(Level::Info, "wind WS-1: 33 (gust 41.5, zone A)".to_string())]);
        Ok(())
    }

    #[test]
    fn default_line_is_the_whole_message() -> Result<()> {
        let mut d = driver("");
        d.send(wind())?;
        let expected = r#"{"id":"m1","ts":7,"type":"POST_TELEMETRY_REQUEST","originator":{"entityType":"DEVICE","name":"WS-1"},"metadata":{"deviceName":"WS-1"},"data":{"gust":41.5,"loc":{"zone":"A"},"windSpeed":"33"}}"#;
        assert_eq!(d.logs(), [(Level::Info, expected.to_string())]);
        Ok(())
    }

    #[test]
    fn each_level() -> Result<()> {
        for (name, level) in
            [("debug", Level::Debug), ("info", Level::Info), ("warn", Level::Warn), ("error", Level::Error)]
        {
            let mut d = driver(&format!(r#"{{"level": "{name}", "message": "x"}}"#));
            assert_eq!(d.send(wind())?.relations(), ["Success"]);
            assert_eq!(d.logs(), [(level, "x".to_string())], "{name}");
        }
        Ok(())
    }

    #[test]
    fn a_missing_value_logs_the_error_and_still_forwards() -> Result<()> {
        let mut d = driver(r#"{"level": "warn", "message": "wind $[speed] from ${deviceName}"}"#);
        let out = d.send(wind())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&wind()]);
        let mut nulled = wind();
        nulled.data_mut()["speed"] = Value::Null;
        d.send(nulled)?;
        let line = "log template: template placeholder $[speed]: data has no `speed`".to_string();
        assert_eq!(d.logs(), [(Level::Warn, line.clone()), (Level::Warn, line)]);
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<LogNode>(text).err().expect(text);
        assert_eq!(error(r#"{"level": "verbose"}"#).field, "level");
        assert_eq!(error(r#"{"level": "INFO"}"#).field, "level");
        assert_eq!(error(r#"{"message": "$[open"}"#).field, "message");
        assert_eq!(error(r#"{"message": 3}"#).field, "message");
        assert_eq!(error(r#"{"msg": "x"}"#).field, "msg");
    }
}
