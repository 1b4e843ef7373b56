//! Device profiles (`--profiles FILE`): where a device profile node's alarm rules come from.
//!
//! ThingsBoard keeps a device profile apart from the rule chains: `TbDeviceProfileNode` looks up
//! the profile of the message's device at run time (`DeviceProfileCache`) and evaluates that
//! profile's `profileData.alarms`. A rule chain export therefore carries no alarm rules, and
//! without them the imported `device-profile` node only passes messages on. A device profile
//! export (`GET /api/deviceProfile/{id}`, the UI's "Export device profile") holds them, so the
//! import takes such files and gives every device profile node of the imported chains the
//! profiles' alarm rules, each profile under its name. At run time the node picks the profile
//! by the message's `deviceType` metadata — ThingsBoard's transports set it to the device's
//! profile name — and falls back on the profile marked `default` (ThingsBoard's default profile).
//!
//! A file may hold one profile export, a JSON array of them, or a page of
//! `GET /api/deviceProfiles` (`{"data": […]}`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::ImportError;
use crate::error::invalid;

/// One device profile: its name, whether it is the tenant's default, and its alarm rules
/// (`profileData.alarms`, an array; empty when the profile has none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Profile {
    pub name: String,
    pub default: bool,
    pub alarms: Vec<Value>,
    /// The file it was read from, for the report.
    pub file: PathBuf,
}

impl Profile {
    /// The profile as the `device-profile` rule's `profiles[]` entry.
    pub fn config(&self) -> Value {
        json!({"name": self.name, "default": self.default, "alarms": self.alarms})
    }
}

/// Reads the device profiles of `path`. An entry that is not a device profile (no `name`, no
/// `profileData`) or whose alarms are not a list is an error naming the file, the entry and
/// the field.
pub(crate) fn read(path: &Path, value: &Value) -> Result<Vec<Profile>, ImportError> {
    let (entries, place): (Vec<&Value>, fn(usize) -> String) = match value {
        Value::Array(items) => (items.iter().collect(), |i| format!("[{i}]")),
        Value::Object(map) if map.get("profileData").is_none() && map.get("data").is_some_and(Value::is_array) => {
            let items = map["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
            (items, |i| format!("data[{i}]"))
        }
        Value::Object(_) => (vec![value], |_| "the profile".to_string()),
        _ => {
            return Err(invalid(
                path,
                "not a ThingsBoard device profile export: expected an object with `name` and `profileData`, a list of them, or `{\"data\": […]}`",
            ));
        }
    };
    let mut profiles = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = place(i);
        let name = match entry.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            _ => {
                return Err(invalid(path, "a device profile needs a non-empty `name` (string)").at(at).field("name"));
            }
        };
        let Some(data) = entry.get("profileData").filter(|d| d.is_object()) else {
            return Err(invalid(
                path,
                format!("device profile {name:?} has no `profileData` object: not a device profile export"),
            )
            .at(at)
            .field("profileData"));
        };
        let alarms = match data.get("alarms") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(alarms)) => alarms.clone(),
            Some(_) => {
                return Err(invalid(path, format!("device profile {name:?}: `alarms` must be a list of alarm rules"))
                    .at(at)
                    .field("profileData.alarms"));
            }
        };
        for (k, alarm) in alarms.iter().enumerate() {
            if alarm.get("alarmType").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(
                    path,
                    format!("device profile {name:?}: an alarm rule needs a non-empty `alarmType`"),
                )
                .at(at)
                .field(format!("profileData.alarms[{k}].alarmType")));
            }
        }
        let default = entry.get("default").and_then(Value::as_bool).unwrap_or(false);
        profiles.push(Profile { name, default, alarms, file: path.to_path_buf() });
    }
    if profiles.is_empty() {
        return Err(invalid(path, "no device profile in the file"));
    }
    Ok(profiles)
}

/// Checks that no two profiles share a name (the node picks one by name).
pub(crate) fn check_unique(profiles: &[Profile]) -> Result<(), ImportError> {
    for (i, p) in profiles.iter().enumerate() {
        if let Some(first) = profiles[..i].iter().find(|q| q.name == p.name) {
            return Err(invalid(
                &p.file,
                format!("device profile {:?} is given twice (also in {})", p.name, first.file.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, alarms: Value) -> Value {
        json!({"name": name, "type": "DEFAULT", "default": false, "profileData": {"alarms": alarms}})
    }

    #[test]
    fn one_a_list_or_a_page_of_profiles() {
        let p = Path::new("p.json");
        let one = profile("thermostat", json!([{"alarmType": "High Temperature"}]));
        assert_eq!(read(p, &one).unwrap()[0].alarms.len(), 1);
        let list = json!([one, profile("default", Value::Null)]);
        let read_list = read(p, &list).unwrap();
        assert_eq!((read_list[1].name.as_str(), read_list[1].alarms.len()), ("default", 0));
        assert_eq!(read(p, &json!({"data": list, "totalPages": 1})).unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        let p = Path::new("p.json");
        let err = read(p, &json!([profile("a", json!([])), {"name": "b"}])).unwrap_err().to_string();
        assert_eq!(
            err,
            "p.json: [1]: field `profileData`: device profile \"b\" has no `profileData` object: not a device profile export"
        );
        let err = read(p, &profile("a", json!([{"alarmType": ""}]))).unwrap_err().to_string();
        assert!(err.contains("field `profileData.alarms[0].alarmType`"), "{err}");
        let err = read(p, &json!({"profileData": {}})).unwrap_err().to_string();
        assert!(err.contains("field `name`"), "{err}");
        assert!(read(p, &json!("x")).is_err());
        let twice =
            [read(p, &profile("a", json!([]))).unwrap(), read(Path::new("q.json"), &profile("a", json!([]))).unwrap()]
                .concat();
        assert!(check_unique(&twice).unwrap_err().to_string().contains("given twice (also in p.json)"));
    }
}
