//! What a chain grants a node: a connector opened from its spec, behind its call policy, and
//! the `${VAR}` expansion every connector spec goes through.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use sluice_core::Ack;
use sluice_core::connector::Connector;

use crate::policy::{ActionError, Guarded};
use crate::spec::{ConnectorKind, ConnectorSpec};
use crate::{file, http, kafka, mqtt, policy};

/// A connector as granted to a node: its name in the chain, and the connector with its policy.
#[derive(Debug, Clone)]
pub struct Granted {
    pub name: Arc<str>,
    pub connector: Arc<Guarded>,
}

impl Granted {
    /// The connector's answer, or an error naming the connector (retries, backoff and the
    /// circuit breaker applied).
    pub fn call(&self, node: &str, request: &Value, ack: &Ack, idempotency_key: &str) -> Result<Value, ActionError> {
        self.connector.call(node, request, ack, idempotency_key)
    }
}

/// Opens the connector `spec` describes. Nothing connects yet: connections are made on first
/// use, in the worker that uses them (so validating a chain touches no network and no file).
///
/// Text fields may name environment variables — `${VAR}`, or `${VAR:-default}` — so that
/// addresses and secrets stay out of chain files.
pub fn open(name: &str, spec: &ConnectorSpec, chain_dir: &Path) -> Result<Arc<Guarded>, OpenError> {
    let connector: Arc<dyn Connector> = match &spec.kind {
        ConnectorKind::File { path, append } => {
            Arc::new(file::FileConnector::new(name, &resolve(chain_dir, &expand_env(path)?)).appending(*append))
        }
        ConnectorKind::Http { base_url, headers } => {
            let base_url = base_url.as_deref().map(expand_env).transpose()?;
            let headers =
                headers.iter().map(|(k, v)| Ok((k.clone(), expand_env(v)?))).collect::<Result<_, EnvError>>()?;
            Arc::new(http::HttpConnector::new(base_url.as_deref(), headers)?)
        }
        ConnectorKind::Kafka(connection) => {
            // `brokers` and the properties (a SASL password) may name variables too.
            let mut connection = connection.clone();
            connection.brokers = expand_env(&connection.brokers)?;
            for value in connection.properties.values_mut() {
                *value = expand_env(value)?;
            }
            Arc::new(kafka::KafkaConnector::new(name, &connection)?)
        }
        ConnectorKind::Mqtt(c) => Arc::new(mqtt::MqttConnector::new(name, c)?),
    };
    Ok(Arc::new(Guarded::new(name, connector, &spec.policy)?))
}

/// Why a connector's spec could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("`baseUrl` {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("`brokers` is empty")]
    NoBrokers,
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
}

/// A `${VAR}` that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("unclosed `${{` in {text:?}")]
    Unclosed { text: String },
    #[error("environment variable `{var}` is not set (used in {text:?})")]
    Unset { var: String, text: String },
}

/// Replaces `${VAR}` and `${VAR:-default}` with the environment's values; an unset variable
/// without a default is an error naming it.
pub fn expand_env(text: &str) -> Result<String, EnvError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or_else(|| EnvError::Unclosed { text: text.into() })?;
        let (var, default) = match after[..end].split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (&after[..end], None),
        };
        match (std::env::var(var), default) {
            (Ok(value), _) => out.push_str(&value),
            (Err(_), Some(default)) => out.push_str(default),
            (Err(_), None) => return Err(EnvError::Unset { var: var.into(), text: text.into() }),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A connector's path: absolute, or relative to the working directory — like `--output` — so a
/// chain in `chains/` writes where it is run from. `{chainDir}` at the start means "next to the
/// chain file".
fn resolve(chain_dir: &Path, path: &str) -> std::path::PathBuf {
    match path.strip_prefix("{chainDir}/") {
        Some(rest) => chain_dir.join(rest),
        None => Path::new(path).to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_with_defaults() {
        // SAFETY: this test is the only user of these variable names.
        unsafe { std::env::set_var("SLUICE_TEST_CONNECTOR_HOST", "10.0.0.7") };
        assert_eq!(expand_env("http://${SLUICE_TEST_CONNECTOR_HOST}:9").unwrap(), "http://10.0.0.7:9");
        assert_eq!(expand_env("${SLUICE_TEST_UNSET_X:-out}/a.jsonl").unwrap(), "out/a.jsonl");
        assert!(expand_env("${SLUICE_TEST_UNSET_X}").unwrap_err().to_string().contains("SLUICE_TEST_UNSET_X"));
        assert!(expand_env("${OPEN").is_err());
        assert_eq!(expand_env("no vars").unwrap(), "no vars");
    }

    #[test]
    fn kafka_brokers_and_properties_are_expanded_too() {
        let kafka = |brokers: &str, password: &str| {
            let properties = [("sasl.password".to_string(), password.to_string())].into();
            ConnectorSpec::from(ConnectorKind::Kafka(crate::spec::KafkaConnection {
                brokers: brokers.into(),
                properties,
                await_delivery: false,
            }))
        };
        let dir = Path::new(".");
        // An unset variable without a default is an error naming it: both fields are expanded.
        let err = open("k", &kafka("${SLUICE_TEST_UNSET_KAFKA_BROKERS}", "x"), dir).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("SLUICE_TEST_UNSET_KAFKA_BROKERS")));
        let err =
            open("k", &kafka("127.0.0.1:1", "${SLUICE_TEST_UNSET_KAFKA_PASSWORD}"), dir).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("SLUICE_TEST_UNSET_KAFKA_PASSWORD")));
        assert!(
            open(
                "k",
                &kafka("${SLUICE_TEST_UNSET_KAFKA_BROKERS:-127.0.0.1:1}", "${SLUICE_TEST_UNSET_KAFKA_PASSWORD:-}"),
                dir
            )
            .is_ok()
        );
    }
}
