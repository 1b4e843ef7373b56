//! ThingsBoard's text templates: `${key}` is replaced by the metadata value `key`, `$[key]` by the
//! data field `key` (a dotted path reaches into objects: `$[location.zone]`). Used by action nodes
//! (topics, URLs, bodies) and any node that builds names from a message.
//!
//! A placeholder whose value is missing is an error naming it — a Kafka key or URL with a silent
//! empty hole is worse than a message on `Failure` that says which field was absent. Non-string
//! data values are written as JSON (`$[windSpeed]` → `33.5`).

use crate::Msg;

/// A parsed template: literal text and placeholders, checked once at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Metadata(String),
    Data(String),
}

impl Template {
    /// Parses `text`; an unclosed `${` or `$[` is an error (shown at load, naming the field).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let close = match after.chars().next() {
                Some('{') => '}',
                Some('[') => ']',
                _ => {
                    literal.push('$');
                    rest = after;
                    continue;
                }
            };
            let Some(end) = after.find(close) else {
                return Err(format!("unclosed placeholder `${}` in template {text:?}", &after[..1]));
            };
            let name = after[1..end].trim();
            if name.is_empty() {
                return Err(format!("empty placeholder in template {text:?}"));
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(if close == '}' { Part::Metadata(name.into()) } else { Part::Data(name.into()) });
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The text for `msg`, or an error naming the first placeholder the message lacks.
    pub fn render(&self, msg: &Msg) -> crate::Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Metadata(k) => match msg.meta(k) {
                    Some(v) => out.push_str(v),
                    None => crate::bail!("template placeholder ${{{k}}}: metadata has no `{k}`"),
                },
                Part::Data(k) => match msg.field(k) {
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(v) if !v.is_null() => out.push_str(&v.to_string()),
                    _ => crate::bail!("template placeholder $[{k}]: data has no `{k}`"),
                },
            }
        }
        Ok(out)
    }

    /// True when the template has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Template {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Template".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "text with `${metadataKey}` and `$[dataKey]` placeholders"
        })
    }
}

/// Renders every string of a JSON template with [`Template`] (`${metadataKey}`, `$[dataKey]`);
/// keys and other values stay as written. An alarm's details, for one.
pub fn render_json(value: &serde_json::Value, msg: &Msg) -> crate::Result<serde_json::Value> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(Template::parse(s).map_err(crate::Error::new)?.render(msg)?),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, msg)).collect::<crate::Result<_>>()?),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| Ok((k.clone(), render_json(v, msg)?))).collect::<crate::Result<_>>()?)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_and_data_placeholders() {
        let msg = Msg::telemetry("WS-1", json!({"windSpeed": 33.5, "zone": "A", "loc": {"city": "Kyiv"}}))
            .with_meta("deviceName", "WS-1");
        let t = Template::parse("/api/${deviceName}/x?z=$[zone]&w=$[windSpeed]&c=$[loc.city]$").unwrap();
        assert_eq!(t.render(&msg).unwrap(), "/api/WS-1/x?z=A&w=33.5&c=Kyiv$");
        assert!(Template::parse("plain").unwrap().is_literal());
        assert_eq!(Template::parse("a$b").unwrap().render(&msg).unwrap(), "a$b");
    }

    #[test]
    fn missing_values_and_bad_templates_are_errors() {
        let msg = Msg::telemetry("d", json!({"n": null}));
        let err = Template::parse("${nope}").unwrap().render(&msg).unwrap_err().to_string();
        assert!(err.contains("${nope}"), "{err}");
        assert!(Template::parse("$[n]").unwrap().render(&msg).is_err());
        assert!(Template::parse("x ${open").unwrap_err().contains("unclosed"));
        assert!(Template::parse("$[]").unwrap_err().contains("empty"));
    }
}
