//! Access tokens → devices: the token file the HTTP and MQTT sources share.
//!
//! ThingsBoard knows a device by its access token: in the URL of its HTTP device API
//! (`/api/v1/{token}/telemetry`), as the user name of its MQTT connection. Sluice keeps no
//! device registry; a token file says which device each token is, and both sources read it:
//!
//! ```json
//! {"A1_TEST_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"}}
//! ```
//!
//! (or the same as TOML, when the name ends in `.toml`). A message from a token's device comes
//! from originator `DEVICE` `deviceName`, with metadata `deviceName` and `deviceType`, as
//! ThingsBoard's own would. Tokens are credentials: no error or log line shows one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// ThingsBoard's name for the device profile of a device that was given none.
pub const DEFAULT_DEVICE_TYPE: &str = "default";

/// A token file that cannot be used: missing, unreadable, or not a map of tokens to devices.
/// The message names the line (and the field) where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token file {}: {message}", path.display())]
pub struct TokenFileError {
    pub path: PathBuf,
    pub message: String,
}

/// A device, as the token file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    /// The originator's name: what the chain keys state and order by.
    pub device_name: String,
    /// Metadata `deviceType`, which chains switch on (default [`DEFAULT_DEVICE_TYPE`], as a
    /// ThingsBoard device without a profile).
    #[serde(default = "default_device_type")]
    pub device_type: String,
}

fn default_device_type() -> String {
    DEFAULT_DEVICE_TYPE.into()
}

impl Device {
    pub fn new(name: impl Into<String>, device_type: impl Into<String>) -> Self {
        Device { device_name: name.into(), device_type: device_type.into() }
    }
}

/// Access tokens → devices: who may post, and as whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(BTreeMap<String, Device>);

impl Tokens {
    /// Reads a token file: TOML when its name ends in `.toml`, JSON otherwise. Errors name the
    /// file and the line (and the field, when one is wrong).
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let err = |message: String| TokenFileError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let toml = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
        Self::parse(&text, toml).map_err(err)
    }

    /// Parses the text of a token file (JSON, or TOML when `toml`).
    pub fn parse(text: &str, toml: bool) -> Result<Tokens, String> {
        let map: BTreeMap<String, Device> = if toml {
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?
        } else {
            // serde_json's message carries the line and column; the token itself is left out of
            // errors (it is a credential, and errors end up in logs).
            serde_json::from_str(text).map_err(|e| e.to_string())?
        };
        if map.is_empty() {
            return Err("no tokens: no device could post".into());
        }
        if let Some(device) = map.values().find(|d| d.device_name.trim().is_empty()) {
            return Err(format!("a device of type {:?} has an empty `deviceName`", device.device_type));
        }
        Ok(Tokens(map))
    }

    pub fn from_devices(devices: impl IntoIterator<Item = (String, Device)>) -> Self {
        Tokens(devices.into_iter().collect())
    }

    /// The device `token` belongs to.
    pub fn device(&self, token: &str) -> Option<&Device> {
        self.0.get(token)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_type_defaults_as_in_thingsboard() {
        let tokens = Tokens::parse(r#"{"T": {"deviceName": "d"}}"#, false).unwrap();
        assert_eq!(tokens.device("T"), Some(&Device::new("d", "default")));
        assert_eq!(tokens.device("U"), None);
    }

    #[test]
    fn token_files_in_json_and_toml() {
        let json = r#"{"A1_TEST_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"},
                       "B2": {"deviceName": "Meter B2", "deviceType": "meter"}}"#;
        let toml = "[A1_TEST_TOKEN]\ndeviceName = \"Thermostat A1\"\ndeviceType = \"thermostat\"\n\n\
                    [B2]\ndeviceName = \"Meter B2\"\ndeviceType = \"meter\"\n";
        let expected = Tokens::from_devices([
            ("A1_TEST_TOKEN".to_string(), Device::new("Thermostat A1", "thermostat")),
            ("B2".to_string(), Device::new("Meter B2", "meter")),
        ]);
        assert_eq!(Tokens::parse(json, false).unwrap(), expected);
        assert_eq!(Tokens::parse(toml, true).unwrap(), expected);
    }

    #[test]
    fn token_file_errors_name_the_line_and_field() {
        let e = Tokens::parse("{\n  \"T\": {\"deviceType\": \"x\"}\n}", false).unwrap_err();
        assert!(e.contains("missing field `deviceName`") && e.contains("line 2"), "{e}");
        let e = Tokens::parse("{\"T\": {\"deviceName\": \"d\", \"devicetype\": \"x\"}}", false).unwrap_err();
        assert!(e.contains("unknown field `devicetype`") && e.contains("line 1"), "{e}");
        let e = Tokens::parse("[T]\ndeviceName = 3\n", true).unwrap_err();
        assert!(e.contains("line 2") && e.contains("deviceName"), "{e}");
        assert_eq!(Tokens::parse("{}", false).unwrap_err(), "no tokens: no device could post");
        assert!(Tokens::parse(r#"{"T": {"deviceName": " "}}"#, false).unwrap_err().contains("empty `deviceName`"));
    }
}
