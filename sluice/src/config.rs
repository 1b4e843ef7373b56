//! `sluice.toml`: the deployment around a chain — where messages come from, where the `output`
//! sink writes, dead letters, and the real connectors behind the chain's connector names.
//!
//! The chain file says *what* happens to a message; this file says *where* it runs. A chain is
//! tested against JSON lines and file connectors, then deployed with a `sluice.toml` that binds
//! the same names to Kafka, MQTT and HTTP — without editing the chain.
//!
//! ```toml
//! [source]
//! type = "kafka"
//! brokers = "${KAFKA_BROKERS:-127.0.0.1:9092}"
//! group = "wind-zones"
//! topics = ["weather-stations"]
//!
//! [output]
//! type = "kafka"
//! brokers = "${KAFKA_BROKERS:-127.0.0.1:9092}"
//! topic = "zone-averages"
//!
//! [connectors.weather-stations-data]     # replaces the chain's connector of that name
//! type = "kafka"
//! brokers = "${KAFKA_BROKERS:-127.0.0.1:9092}"
//! ```
//!
//! Keys are camelCase, as in chain files, so a connector block moves between the two unchanged.
//! Every text value may use `${VAR}` / `${VAR:-default}`: secrets stay in the environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::chain::spec::{ConnectorKind, ConnectorSpec, KafkaConnection, MqttConnection};
// Each source's and sink's spec lives beside the source or sink that reads it.
pub use crate::sinks::OutputSpec;
pub use crate::sources::http::HttpSourceSpec;
pub use crate::sources::kafka::KafkaSourceSpec;
pub use crate::sources::mqtt::MqttSourceSpec;
pub use crate::sources::{PayloadFormat, SourceSpec};

/// A `sluice.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Where messages come from (default: JSON lines, `--input`).
    #[serde(default)]
    pub source: Option<SourceSpec>,
    /// The node the source's messages enter (default: the chain's `entry`) — e.g. the decoder
    /// for raw uplinks, where decoded telemetry from another source enters further on.
    #[serde(default)]
    pub entry: Option<String>,
    /// Where the chain's `output` sink writes (default: JSON lines, `--output`).
    #[serde(default)]
    pub output: Option<OutputSpec>,
    /// Where messages go that failed with no `Failure` connection to take them, with the error
    /// in `metadata.error` (default: logged and counted only).
    #[serde(default)]
    pub dead_letter: Option<OutputSpec>,
    /// Connectors replacing the chain's declarations of the same name.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorSpec>,
    #[serde(default)]
    pub state: StateSpec,
    /// Hot reload of the chain and its modules.
    #[serde(default)]
    pub reload: ReloadSpec,
    /// The admin endpoint (status, reload, metrics).
    #[serde(default)]
    pub admin: AdminSpec,
}

/// `[reload]`: how edits to the running chain are picked up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReloadSpec {
    /// Watch the chain and module files (default true; SIGHUP and `POST /reload` always work).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last file event before reloading, ms (default 200).
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// How long the state of a node removed by a reload is kept, ms (default one hour).
    #[serde(default = "default_retention_ms")]
    pub removed_state_retention_ms: u64,
}

impl Default for ReloadSpec {
    fn default() -> Self {
        ReloadSpec {
            watch: true,
            debounce_ms: default_debounce_ms(),
            removed_state_retention_ms: default_retention_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_debounce_ms() -> u64 {
    200
}

fn default_retention_ms() -> u64 {
    3_600_000
}

/// `[admin]`: where the admin endpoint listens.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminSpec {
    /// `host:port` (e.g. `127.0.0.1:9100`); unset: no endpoint. Anything but loopback needs a
    /// `token`.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token every request must carry (`Authorization: Bearer …`), e.g.
    /// `"${SLUICE_ADMIN_TOKEN}"`: the endpoint shows message contents, reloads the chain and
    /// replays messages.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateSpec {
    /// Where checkpoints live (default `./data`).
    #[serde(default)]
    pub dir: Option<String>,
    /// Time between checkpoints (and Kafka offset commits), ms (default 1000).
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_ms: u64,
    /// Telemetry history points kept per (entity, key) for `get-telemetry` (default 1000); the
    /// oldest are evicted past it.
    #[serde(default = "default_series_max_points")]
    pub series_max_points: usize,
    /// With a value, history points older than their key's newest point minus this many ms are
    /// evicted too (default: no age limit).
    #[serde(default)]
    pub series_max_age_ms: Option<u64>,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            dir: None,
            checkpoint_ms: default_checkpoint_ms(),
            series_max_points: default_series_max_points(),
            series_max_age_ms: None,
        }
    }
}

impl StateSpec {
    /// The telemetry history's bound, checked: at least one point, an age that fits.
    pub fn series_limits(&self) -> Result<crate::state::series::Limits, StateSpecError> {
        if self.series_max_points == 0 {
            return Err(StateSpecError("`state.seriesMaxPoints` must be at least 1".into()));
        }
        let max_age_ms = match self.series_max_age_ms {
            None => None,
            Some(ms) => Some(
                i64::try_from(ms)
                    .map_err(|_| StateSpecError(format!("`state.seriesMaxAgeMs` {ms} is more than any time span")))?,
            ),
        };
        Ok(crate::state::series::Limits { max_points: self.series_max_points, max_age_ms })
    }
}

/// A `[state]` setting out of range, naming it.
#[derive(Debug, thiserror::Error)]
#[error("sluice.toml: {0}")]
pub struct StateSpecError(pub String);

fn default_series_max_points() -> usize {
    sluice_sdk::series::Limits::default().max_points
}

fn default_checkpoint_ms() -> u64 {
    1000
}

/// A `sluice.toml` that cannot be used, naming the file and the place.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl Config {
    /// Reads and checks `path`. Environment variables are expanded in every string value
    /// before the file is interpreted, so `${KAFKA_BROKERS}` works anywhere.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses the text of a `sluice.toml`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut value: toml::Value = text.parse::<toml::Table>().map(toml::Value::Table).map_err(|e| e.to_string())?;
        expand(&mut value, "")?;
        Config::deserialize(value).map_err(|e| e.to_string())
    }
}

/// Expands `${VAR}` in every string of `value`; an unset variable names where it was used.
fn expand(value: &mut toml::Value, at: &str) -> Result<(), String> {
    match value {
        toml::Value::String(s) => {
            *s = crate::connectors::expand_env(s).map_err(|e| format!("`{at}`: {e}"))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{at}[{i}]"))?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                expand(v, &path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_source_and_output_with_overrides() {
        // SAFETY: only this test uses this variable.
        unsafe { std::env::set_var("SLUICE_TEST_CONFIG_BROKERS", "10.1.1.1:9092") };
        let config = Config::parse(
            r#"
            [source]
            type = "kafka"
            brokers = "${SLUICE_TEST_CONFIG_BROKERS}"
            group = "g"
            topics = ["a", "^b-.*"]
            properties = { "security.protocol" = "SASL_SSL" }

            [output]
            type = "kafka"
            brokers = "${SLUICE_TEST_CONFIG_BROKERS}"
            topic = "out"

            [connectors.alerts]
            type = "mqtt"
            url = "mqtt://127.0.0.1:1883"
            username = "u"
            "#,
        )
        .unwrap();
        let Some(SourceSpec::Kafka(source)) = &config.source else { panic!("{config:?}") };
        assert_eq!(source.brokers, "10.1.1.1:9092");
        assert_eq!(source.properties["security.protocol"], "SASL_SSL");
        assert!(matches!(&config.output, Some(OutputSpec::Kafka { topic, .. }) if topic == "out"));
        assert!(
            matches!(&config.connectors["alerts"], ConnectorSpec { kind: ConnectorKind::Mqtt(c), .. } if c.username.as_deref() == Some("u"))
        );
        assert_eq!(config.state.checkpoint_ms, 1000);
        assert_eq!(config.state.series_limits().unwrap(), crate::state::series::Limits::default());
    }

    #[test]
    fn telemetry_history_bounds() {
        let config = Config::parse("[state]\nseriesMaxPoints = 50\nseriesMaxAgeMs = 3600000\n").unwrap();
        let limits = config.state.series_limits().unwrap();
        assert_eq!((limits.max_points, limits.max_age_ms), (50, Some(3_600_000)));
        let zero = Config::parse("[state]\nseriesMaxPoints = 0\n").unwrap();
        assert!(zero.state.series_limits().unwrap_err().to_string().contains("state.seriesMaxPoints"));
        let negative = Config::parse("[state]\nseriesMaxAgeMs = -1\n").unwrap_err();
        assert!(negative.contains("seriesMaxAgeMs"), "{negative}");
    }

    #[test]
    fn mqtt_source() {
        let config = Config::parse(
            r#"
            [source]
            type = "mqtt"
            url = "mqtt://127.0.0.1:1883"
            clientId = "sluice-1"
            topics = ["sensors/#"]
            format = "raw"
            msgType = "UPLINK"
            tokens = "tokens.json"
            "#,
        )
        .unwrap();
        let Some(SourceSpec::Mqtt(source)) = &config.source else { panic!("{config:?}") };
        assert_eq!(source.tokens.as_deref(), Some("tokens.json"));
        assert_eq!(source.connection.url, "mqtt://127.0.0.1:1883");
        assert_eq!(source.connection.client_id.as_deref(), Some("sluice-1"));
        assert_eq!(source.topics, ["sensors/#"]);
        assert_eq!((source.format, source.msg_type.as_deref()), (PayloadFormat::Raw, Some("UPLINK")));
        let e = Config::parse("[source]\ntype = \"mqtt\"\nurl = \"mqtt://h\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let e = Config::parse("[source]\ntype = \"kafka\"\nbrokers = \"x\"\ngroup = \"g\"\ntopics = []\nbogus = 1\n")
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse("[output]\ntype = \"file\"\npath = \"${SLUICE_TEST_CONFIG_UNSET}\"\n").unwrap_err();
        assert!(e.contains("output.path") && e.contains("SLUICE_TEST_CONFIG_UNSET"), "{e}");
        assert!(Config::parse("[source\n").is_err());
    }
}
