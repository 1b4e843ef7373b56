//! Parsing a node's config, with the path of the field that failed.
//!
//! The same function runs inside the wasm module at load and in the native [`crate::testing`]
//! harness, so a bad config fails the same way in both.

use serde::de::DeserializeOwned;

/// A config the node refused: `field` is a dotted path (`thresholds.max`, `keys[2]`), empty when
/// the config as a whole is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses config JSON. No config (empty or `null`) is read as `{}` — so a config struct whose
/// fields all have defaults needs nothing in the chain — or, failing that, as `null`.
pub fn parse<C: DeserializeOwned>(json: &[u8]) -> Result<C, ConfigError> {
    let trimmed = json.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return parse_one::<C>(b"{}").or_else(|err| parse_one::<C>(b"null").map_err(|_| err));
    }
    parse_one(json)
}

fn parse_one<C: DeserializeOwned>(json: &[u8]) -> Result<C, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed: Result<C, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(c) => Ok(c),
        Err(err) => {
            let mut field = err.path().to_string();
            if field == "." {
                field.clear();
            }
            let inner = err.into_inner();
            let mut message = inner.to_string();
            // serde names a missing field only in the message (the path stops at its parent).
            if let Some(rest) = message.strip_prefix("missing field `")
                && let Some(end) = rest.find('`')
            {
                let name = &rest[..end];
                field = if field.is_empty() { name.to_string() } else { format!("{field}.{name}") };
            }
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            Err(ConfigError { field, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        max: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        key: String,
        limits: Inner,
    }

    #[test]
    fn names_the_field_of_a_wrong_type() {
        let err = parse::<Cfg>(br#"{"key":"k","limits":{"max":"high"}}"#).unwrap_err();
        assert_eq!(err.field, "limits.max");
        assert!(err.message.contains("expected f64"), "{err}");
    }

    #[test]
    fn names_a_missing_field() {
        let err = parse::<Cfg>(br#"{"limits":{"max":1}}"#).unwrap_err();
        assert_eq!(err.field, "key");
    }

    #[test]
    fn names_an_unknown_field() {
        let err = parse::<Cfg>(br#"{"key":"k","limits":{"max":1,"min":0}}"#).unwrap_err();
        assert_eq!(err.field, "limits.min");
    }

    #[test]
    fn empty_config_is_null() {
        parse::<()>(b"").unwrap();
        parse::<Option<u8>>(b"null").unwrap();
        assert_eq!(parse::<Cfg>(b"null").unwrap_err().field, "key");
        parse::<crate::NoConfig>(b"{}").unwrap();
        assert!(parse::<crate::NoConfig>(br#"{"x":1}"#).is_err());
    }
}
