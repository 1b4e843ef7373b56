//! ThingsBoard 1.x rules and plugins → Sluice chains.
//!
//! Before rule chains (2.0), a ThingsBoard *rule* was a fixed pipeline: `filters` (all must pass),
//! an optional `processor`, and an `action` carried out by a *plugin* named by `pluginToken` —
//! the plugin (its own descriptor, `apiToken`) holding the connection, e.g. Kafka's
//! `bootstrapServers`. A rule becomes a straight chain: each filter a node whose `True` leads on,
//! then the processor and the action; a plugin becomes the connector of the rules naming it.
//!
//! Filters read a device's attributes as `cs.*` (client), `ss.*` (server) and `shared.*` in
//! JavaScript, and its telemetry as bare variables (`typeof windSpeed !== 'undefined'`); action
//! templates are Velocity (`$cs.get('geoZone')`, `$windSpeed.valueAsString`). In Sluice the
//! attributes are tables: a rule that reads attributes first fetches them into metadata
//! (`cs_geoZone`, as ThingsBoard 2.x's originator attributes node does), and — since 1.x stored
//! every device's posted attributes itself — a rule reading client attributes also keeps the
//! table `client_attributes` from the `POST_ATTRIBUTES_REQUEST` messages it sees. The filter's
//! JavaScript runs unchanged in the `script` node, with `cs`/`ss`/`shared` and the telemetry
//! variables declared from the message; Velocity references become `${…}` / `$[…]` templates.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use sluice_core::spec::ChainSpec;

use super::draft::{Draft, Fragment, Part, Placed, slug};
use super::error::ImportError;
use super::fields::Fields;
use super::report::Finding;
use super::thingsboard::{TIMESERIES_TABLE, kafka_connector};

/// A 1.x plugin descriptor.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub token: String,
    pub name: String,
    pub class: String,
    pub config: Value,
}

impl Plugin {
    pub fn class_short(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }
}

/// A 1.x rule descriptor.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub state: String,
    pub plugin_token: String,
    pub filters: Vec<Step>,
    pub processor: Option<Step>,
    pub action: Option<Step>,
}

impl Rule {
    /// Filters, processor and action: the rule's "nodes".
    pub fn parts(&self) -> usize {
        self.filters.len() + usize::from(self.processor.is_some()) + usize::from(self.action.is_some())
    }
}

/// A filter, processor or action: `clazz`, `name`, `configuration`.
#[derive(Debug, Clone)]
pub struct Step {
    /// Where it is, for errors and the report: `filters[1]`, `rules[2].action`.
    pub at: String,
    pub class: String,
    pub name: String,
    pub config: Value,
}

impl Step {
    fn short(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    fn fields<'a>(&'a self, file: &'a Path) -> Fields<'a> {
        Fields { file, at: &self.at, path: "configuration", value: &self.config }
    }
}

pub fn parse_plugin(file: &Path, value: &Value) -> Result<Plugin, ImportError> {
    let f = Fields { file, at: "plugin", path: "", value };
    Ok(Plugin {
        token: f.str("apiToken")?.to_string(),
        name: f.opt_str("name")?.unwrap_or_default().to_string(),
        class: f.str("clazz")?.to_string(),
        config: value.get("configuration").cloned().unwrap_or(Value::Null),
    })
}

pub fn parse_rules(file: &Path, value: &Value) -> Result<Vec<Rule>, ImportError> {
    match value.get("rules") {
        Some(Value::Array(rules)) => rules.iter().enumerate().map(|(i, r)| parse_rule(file, r, Some(i))).collect(),
        _ => Err(crate::error::invalid(file, "expected a list of 1.x rules").field("rules")),
    }
}

/// One rule; `position` is its index in a `{rules: […]}` file.
pub fn parse_rule(file: &Path, value: &Value, position: Option<usize>) -> Result<Rule, ImportError> {
    let prefix = position.map_or(String::new(), |i| format!("rules[{i}]."));
    let here = if prefix.is_empty() { "rule".to_string() } else { prefix.trim_end_matches('.').to_string() };
    let f = Fields { file, at: &here, path: "", value };
    let step = |v: &Value, at: String| -> Result<Step, ImportError> {
        let s = Fields { file, at: &at, path: "", value: v };
        Ok(Step {
            class: s.str("clazz")?.to_string(),
            name: s.opt_str("name")?.unwrap_or_default().to_string(),
            config: v.get("configuration").cloned().unwrap_or(Value::Null),
            at: at.clone(),
        })
    };
    let filters = match value.get("filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, v)| step(v, format!("{prefix}filters[{i}]"))).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(f.error("filters", "expected a list")),
    };
    let one = |key: &str| -> Result<Option<Step>, ImportError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => step(v, format!("{prefix}{key}")).map(Some),
            Some(_) => Err(f.error(key, "expected an object")),
        }
    };
    Ok(Rule {
        name: f.opt_str("name")?.unwrap_or("rule").to_string(),
        state: f.opt_str("state")?.unwrap_or("ACTIVE").to_string(),
        plugin_token: f.opt_str("pluginToken")?.unwrap_or_default().to_string(),
        processor: one("processor")?,
        action: one("action")?,
        filters,
    })
}

/// What the report says about a plugin.
pub fn plugin_note(plugin: &Plugin, used: bool) -> String {
    if used {
        format!("plugin {:?} (token `{}`) is the connector of the imported rules naming it", plugin.name, plugin.token)
    } else {
        format!(
            "plugin {:?} (token `{}`): no imported rule names it, so nothing is written (import it with its rules)",
            plugin.name, plugin.token
        )
    }
}

/// A token of a JavaScript expression, enough to find variables: identifiers, dots, the rest.
#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Dot,
    Other,
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' || c == '`' {
            // A string literal: skipped, escapes included.
            while let Some(d) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
            out.push(Token::Other);
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let mut ident = c.to_string();
            while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_' || **d == '$') {
                ident.push(d);
                chars.next();
            }
            out.push(Token::Ident(ident));
        } else if c == '.' {
            out.push(Token::Dot);
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(|d| d.is_alphanumeric() || *d == '.') {
                chars.next();
            }
            out.push(Token::Other);
        } else if !c.is_whitespace() {
            out.push(Token::Other);
        }
    }
    out
}

/// Words of JavaScript itself and the names a filter gets from Sluice; anything else free in a
/// telemetry filter is a telemetry key.
const NOT_TELEMETRY: &[&str] = &[
    "typeof",
    "undefined",
    "null",
    "true",
    "false",
    "var",
    "let",
    "const",
    "if",
    "else",
    "return",
    "function",
    "new",
    "in",
    "instanceof",
    "this",
    "void",
    "delete",
    "NaN",
    "Infinity",
    "Math",
    "JSON",
    "Number",
    "String",
    "Boolean",
    "Date",
    "Object",
    "Array",
    "parseInt",
    "parseFloat",
    "isNaN",
    "isFinite",
    "msg",
    "metadata",
    "msgType",
    "cs",
    "ss",
    "shared",
];

/// The attribute scopes of 1.x: the JavaScript object, the metadata prefix, the table.
const SCOPES: [(&str, &str, &str); 3] = [
    ("cs", "cs_", "client_attributes"),
    ("ss", "ss_", "server_attributes"),
    ("shared", "shared_", "shared_attributes"),
];

/// Attribute names referenced as `cs.x`, `ss.x`, `shared.x`, in order of appearance.
fn attribute_refs(expr: &str, refs: &mut BTreeMap<&'static str, Vec<String>>) {
    let t = tokens(expr);
    for i in 0..t.len() {
        let preceded = i > 0 && t[i - 1] == Token::Dot;
        if let (Token::Ident(scope), Some(Token::Dot), Some(Token::Ident(name))) = (&t[i], t.get(i + 1), t.get(i + 2))
            && !preceded
            && let Some((s, _, _)) = SCOPES.iter().find(|(s, _, _)| s == scope)
        {
            let names = refs.entry(*s).or_default();
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
}

/// Free variables of a telemetry filter: its telemetry keys.
fn telemetry_refs(expr: &str) -> Vec<String> {
    let t = tokens(expr);
    let mut names = Vec::new();
    for (i, token) in t.iter().enumerate() {
        if let Token::Ident(name) = token
            && !(i > 0 && t[i - 1] == Token::Dot)
            && !NOT_TELEMETRY.contains(&name.as_str())
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}

/// A 1.x filter expression as a `script` filter body: `return (EXPR);` after the declarations.
fn filter_body(declarations: &str, expr: &str) -> String {
    let expr = expr.trim().trim_end_matches(';').trim_end();
    format!("{declarations}return ({expr});")
}

const ATTRIBUTE_OBJECTS: &str = "var cs = {}, ss = {}, shared = {};\n\
for (var key in metadata) {\n\
  if (key.indexOf('cs_') === 0) cs[key.substring(3)] = metadata[key];\n\
  else if (key.indexOf('ss_') === 0) ss[key.substring(3)] = metadata[key];\n\
  else if (key.indexOf('shared_') === 0) shared[key.substring(7)] = metadata[key];\n\
}\n";

/// A Velocity template as a Sluice template, the attributes it reads, and the references it
/// could not translate (left as they are).
fn velocity(template: &str, refs: &mut BTreeMap<&'static str, Vec<String>>) -> (String, Vec<String>) {
    velocity_with(template, refs, true)
}

/// [`velocity`]; with `data` false, telemetry references (`$key.valueAsString`) stay as text and
/// are listed among those not translated.
fn velocity_with(template: &str, refs: &mut BTreeMap<&'static str, Vec<String>>, data: bool) -> (String, Vec<String>) {
    const GETTERS: &[&str] = &["valueAsString", "value", "longValue", "doubleValue", "boolValue", "strValue"];
    let mut out = String::new();
    let mut unconverted = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let ident_len = after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
        let ident = &after[..ident_len];
        let tail = &after[ident_len..];
        // $cs.get('name') / $ss.get("name") / $shared.get('name')
        if let Some((scope, prefix, _)) = SCOPES.iter().find(|(s, _, _)| *s == ident)
            && let Some(call) = tail.strip_prefix(".get(")
            && let Some(quote) = call.chars().next().filter(|q| *q == '\'' || *q == '"')
            && let Some(end) = call[1..].find(quote)
            && call[1 + end + 1..].starts_with(')')
        {
            let name = &call[1..1 + end];
            out.push_str(&format!("${{{prefix}{name}}}"));
            let names = refs.entry(*scope).or_default();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            rest = &call[1 + end + 2..];
            continue;
        }
        // $key.valueAsString (a telemetry value)
        if !ident.is_empty()
            && let Some(getter) = tail.strip_prefix('.')
            && let Some(g) = GETTERS.iter().find(|g| {
                getter.starts_with(**g) && !getter[g.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        {
            if data {
                out.push_str(&format!("$[{ident}]"));
            } else {
                out.push_str(&format!("${ident}.{g}"));
                unconverted.push(format!("${ident}.{g}"));
            }
            rest = &getter[g.len()..];
            continue;
        }
        // A Velocity reference starts with a letter (`$5` is just text).
        if ident.starts_with(|c: char| c.is_alphabetic()) {
            unconverted.push(format!("${ident}"));
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    (out, unconverted)
}

/// The 1.x message type names of `MsgTypeFilter` as ThingsBoard 2.x message types.
fn message_type(name: &str) -> &str {
    match name {
        "POST_TELEMETRY" => "POST_TELEMETRY_REQUEST",
        "POST_ATTRIBUTES" => "POST_ATTRIBUTES_REQUEST",
        "GET_ATTRIBUTES" => "GET_ATTRIBUTES_REQUEST",
        "RPC_REQUEST" => "TO_SERVER_RPC_REQUEST",
        other => other,
    }
}

/// What a step became: a fragment, or why it is a placeholder.
type Outcome = Result<Fragment, String>;

fn filter(file: &Path, step: &Step) -> Result<Outcome, ImportError> {
    let f = step.fields(file);
    Ok(match step.short() {
        "MsgTypeFilter" => {
            let types: Vec<String> = f.strings("messageTypes")?.iter().map(|t| message_type(t).to_string()).collect();
            let quoted: Vec<String> = types.iter().map(|t| Value::String(t.clone()).to_string()).collect();
            let mut fragment = Fragment::one(Part::module(
                "expression-filter",
                json!({"expression": format!("msgType in [{}]", quoted.join(", "))}),
            ));
            if types.iter().any(|t| t == "GET_ATTRIBUTES_REQUEST") {
                fragment = fragment.note(
                    "GET_ATTRIBUTES is GET_ATTRIBUTES_REQUEST here; since 2.0 ThingsBoard's transport answers those without a chain",
                );
            }
            Ok(fragment)
        }
        "DeviceAttributesFilter" => {
            let body = filter_body(ATTRIBUTE_OBJECTS, f.str("filter")?);
            Ok(Fragment::one(Part::module("script", json!({"mode": "filter", "script": body}))))
        }
        "DeviceTelemetryFilter" => {
            let expr = f.str("filter")?;
            let declarations: String = telemetry_refs(expr)
                .iter()
                .map(|k| format!("var {k} = msg[{}];\n", Value::String(k.clone())))
                .collect();
            let body = filter_body(&declarations, expr);
            Ok(Fragment::one(Part::module("script", json!({"mode": "filter", "script": body}))))
        }
        _ => Err("no Sluice node for this 1.x filter yet".to_string()),
    })
}

fn processor(file: &Path, step: &Step, refs: &mut BTreeMap<&'static str, Vec<String>>) -> Result<Outcome, ImportError> {
    Ok(match step.short() {
        "AlarmDeduplicationProcessor" => alarm_deduplication(file, step, refs)?,
        _ => Err("no Sluice node for this 1.x processor yet".into()),
    })
}

/// `template` without its `$date.get('…')` references (and the `[…]` left empty around one).
fn without_dates(template: &str) -> (String, bool) {
    let mut out = String::new();
    let mut rest = template;
    let mut found = false;
    while let Some(at) = rest.find("$date.get(") {
        let Some(close) = rest[at..].find(')') else { break };
        out.push_str(&rest[..at]);
        rest = &rest[at + close + 1..];
        found = true;
    }
    out.push_str(rest);
    let out = out.replace("[] ", "").replace("[]", "");
    (out.trim().to_string(), found)
}

/// 1.x `AlarmDeduplicationProcessor` → `create-alarm`. ThingsBoard 1.x renders `alarmIdTemplate`
/// and, when no alarm event of that id exists for the device, saves one and sets `isNewAlarm`
/// (with `alarmId`, `alarmBody`) for the action, which then acts (`SendMailAction`'s `sendFlag`);
/// a known id passes nothing on. `create-alarm` keeps one alarm per originator and type: the
/// alarm id becomes the type, the body its details, and the action is entered on `Created`
/// (an existing alarm goes on `Updated`, which nothing takes).
fn alarm_deduplication(
    file: &Path,
    step: &Step,
    refs: &mut BTreeMap<&'static str, Vec<String>>,
) -> Result<Outcome, ImportError> {
    let f = step.fields(file);
    let (id, id_dated) = without_dates(f.str("alarmIdTemplate")?);
    let (body, _) = without_dates(f.opt_str("alarmBodyTemplate")?.unwrap_or_default());
    let mut scratch = refs.clone();
    let (alarm_type, left_id) = velocity(&id, &mut scratch);
    // A telemetry value the reading lacks would fail the alarm (a template placeholder the
    // message lacks is an error); 1.x printed a missing reference as its text.
    let (details, left_body) = velocity_with(&body, &mut scratch, false);
    if !left_id.is_empty() || alarm_type.trim().is_empty() {
        return Ok(Err(format!(
            "deduplicates alarms by an id template Sluice cannot render ({}): rewrite it as `create-alarm` with an `alarmType` template",
            if left_id.is_empty() { "empty".to_string() } else { left_id.join(", ") }
        )));
    }
    *refs = scratch;
    let config = json!({"alarmType": alarm_type, "details": {"body": details}});
    let mut fragment = Fragment::one(Part::module("create-alarm", config)).note(
        "1.x alarm deduplication -> `create-alarm`: the alarm id is the alarm type, the body its `details.body`; a new alarm goes on to the action (on `Created`, metadata `isNewAlarm`), a known one stops (`Updated`); the action sees the alarm as the message data, not metadata `alarmId` / `alarmBody`",
    );
    if id_dated {
        fragment = fragment.note(
            "the alarm id's `$date.get(…)` is dropped: 1.x raised the alarm again in each new period of that date (each minute for `yyyy-MM-dd HH:mm`); `create-alarm` raises it once until it is cleared (`clear-alarm`)",
        );
    }
    if !left_body.is_empty() {
        fragment = fragment.note(format!(
            "left as text in the alarm body: {} (a reading without the value would fail the alarm; 1.x printed a missing reference as its text)",
            left_body.join(", ")
        ));
    }
    Ok(Ok(fragment))
}

fn action(
    file: &Path,
    step: &Step,
    rule: &Rule,
    plugins: &BTreeMap<String, Plugin>,
    refs: &mut BTreeMap<&'static str, Vec<String>>,
) -> Result<Outcome, ImportError> {
    let f = step.fields(file);
    Ok(match step.short() {
        "KafkaPluginAction" => {
            let mut config = json!({"topic": f.str("topic")?});
            let mut notes = Vec::new();
            if let Some(template) = f.opt_str("template")? {
                let (converted, unconverted) = velocity(template, refs);
                config["template"] = json!(converted);
                if !unconverted.is_empty() {
                    notes.push(format!("Velocity references left as text: {}", unconverted.join(", ")));
                }
            }
            let servers = match plugins.get(&rule.plugin_token) {
                Some(plugin) if plugin.class_short() == "KafkaPlugin" => {
                    let p = Fields { file, at: "plugin", path: "configuration", value: &plugin.config };
                    p.opt_str("bootstrapServers")?.unwrap_or("localhost:9092").to_string()
                }
                _ => {
                    notes.push(format!(
                        "Kafka plugin `{}` is not among the imported files: the connector defaults to localhost:9092",
                        rule.plugin_token
                    ));
                    "localhost:9092".to_string()
                }
            };
            let mut fragment = Fragment::one(
                Part::module("kafka-action", config).granted(kafka_connector(servers, Default::default())),
            );
            fragment.notes = notes;
            Ok(fragment)
        }
        "TelemetryPluginAction" => {
            let writer = |table: &str| Part::module("table-writer", json!({"table": table, "merge": true}));
            let mut fragment = Fragment::one(Part::module("msg-type-switch", json!({})));
            fragment.parts.push(writer(TIMESERIES_TABLE).suffix("timeseries").named("Save timeseries"));
            fragment.parts.push(Part::output().suffix("timeseries-out"));
            fragment.parts.push(writer("client_attributes").suffix("attributes").named("Save client attributes"));
            fragment.parts.push(Part::output().suffix("attributes-out"));
            fragment.links =
                vec![(0, 1, "Post telemetry"), (1, 2, "Success"), (0, 3, "Post attributes"), (3, 4, "Success")];
            let ttl = match (f.opt_u64("ttlValue")?, f.opt_str("timeUnit")?) {
                (Some(v), unit) if v > 0 => format!("; TTL {v} {} is not kept", unit.unwrap_or("SECONDS")),
                _ => String::new(),
            };
            Ok(fragment.note(format!(
                "telemetry and attributes go to the run's output and tables `timeseries` / `client_attributes`{ttl}"
            )))
        }
        "SendMailAction" => Err("sends e-mail through ThingsBoard's mail plugin, a platform service Sluice does not have (no mail connector); use `rest-action` to a mail HTTP API (SendGrid, Mailgun, SES)".into()),
        _ => Err("no Sluice node for this 1.x action yet".into()),
    })
}

/// Converts one 1.x rule.
pub(crate) fn convert(
    file: &Path,
    rule: &Rule,
    plugins: &BTreeMap<String, Plugin>,
) -> Result<(ChainSpec, Vec<Finding>), ImportError> {
    let mut draft = Draft::default();
    if rule.state != "ACTIVE" {
        draft.note("", "", "", format!("state {} in ThingsBoard: imported as a chain that runs", rule.state));
    }
    // Convert first (the action's template may read attributes), then lay out.
    let mut refs: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for step in &rule.filters {
        if step.short() == "DeviceAttributesFilter" {
            attribute_refs(step.fields(file).str("filter")?, &mut refs);
        }
    }
    let mut steps: Vec<(&Step, Outcome, &'static str)> = Vec::new();
    for step in &rule.filters {
        steps.push((step, filter(file, step)?, "True"));
    }
    if let Some(step) = &rule.processor {
        let outcome = processor(file, step, &mut refs)?;
        // `create-alarm` (alarm deduplication) passes a new alarm on `Created`.
        let next = if outcome.is_ok() && step.short() == "AlarmDeduplicationProcessor" { "Created" } else { "Success" };
        steps.push((step, outcome, next));
    }
    if let Some(step) = &rule.action {
        steps.push((step, action(file, step, rule, plugins, &mut refs)?, "Success"));
    }
    // Where the next node is entered from: (node id, relation).
    let mut pending: Vec<(String, &'static str)> = Vec::new();
    let mut entry: Option<String> = None;
    let mut place =
        |draft: &mut Draft, placed: Placed, next: &'static str, pending: &mut Vec<(String, &'static str)>| {
            for (from, relation) in pending.drain(..) {
                draft.connect(&from, &placed.entry, relation);
            }
            entry.get_or_insert(placed.entry.clone());
            pending.push((placed.exit, next));
        };
    if refs.contains_key("cs") {
        let gate = Part::module("expression-filter", json!({"expression": "msgType == \"POST_ATTRIBUTES_REQUEST\""}));
        let store = Part::module("table-writer", json!({"table": "client_attributes", "merge": true}));
        let name = "Keep client attributes (1.x stored them for every rule)";
        let gate = draft.add("attributes-in", name, false, Fragment::one(gate));
        place(&mut draft, gate.clone(), "False", &mut pending);
        let store = draft.add("attributes-store", "Store posted client attributes", false, Fragment::one(store));
        draft.connect(&gate.exit, &store.entry, "True");
        pending.push((store.exit, "Success"));
    }
    for (scope, prefix, table) in SCOPES {
        if let Some(names) = refs.get(scope) {
            let config = json!({"table": table, "attributes": names, "prefix": prefix});
            let fetch = Part::module("originator-attributes", config);
            let placed = draft.add(&format!("fetch-{scope}"), &format!("Fetch {scope}.*"), false, Fragment::one(fetch));
            place(&mut draft, placed, "Success", &mut pending);
        }
    }
    for (scope, _, table) in SCOPES {
        if scope != "cs" && refs.contains_key(scope) {
            draft.note(
                "",
                "",
                "",
                format!("{scope}.* is read from table `{table}`, which nothing in this chain writes"),
            );
        }
    }
    for (i, (step, outcome, next)) in steps.into_iter().enumerate() {
        let kind = if step.at.ends_with("action") {
            "action"
        } else if step.at.ends_with("processor") {
            "processor"
        } else {
            "f"
        };
        let base =
            if kind == "f" { format!("f{i}-{}", slug(&step.name)) } else { format!("{kind}-{}", slug(&step.name)) };
        let placed = match outcome {
            Ok(fragment) => {
                for note in &fragment.notes {
                    draft.note(&step.at, step.short(), &step.name, note.clone());
                }
                draft.add(&base, &step.name, false, fragment)
            }
            Err(reason) => {
                draft.unsupported(&step.at, step.short(), &step.name, reason.clone());
                draft.placeholder(&base, &step.name, false, &step.class, &reason)
            }
        };
        place(&mut draft, placed, next, &mut pending);
    }
    if rule.action.is_none() {
        let out = draft.add("passed", "Passed every filter", false, Fragment::one(Part::output()));
        place(&mut draft, out, "", &mut pending);
        draft.note("", "", "", "no action: messages that pass go to the run's output");
    }
    let entry = entry.unwrap_or_default();
    Ok(draft.finish(&rule.name, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_references_become_templates() {
        let mut refs = BTreeMap::new();
        let (t, left) =
            velocity(r#"{"geoZone":"$cs.get('geoZone')", "windSpeed":$windSpeed.valueAsString}"#, &mut refs);
        assert_eq!(t, r#"{"geoZone":"${cs_geoZone}", "windSpeed":$[windSpeed]}"#);
        assert!(left.is_empty());
        assert_eq!(refs["cs"], ["geoZone"]);
        let (t, left) = velocity("[$date.get('yyyy')] $ss.get(\"ZoneId\") costs $5", &mut refs);
        assert_eq!(t, "[$date.get('yyyy')] ${ss_ZoneId} costs $5");
        assert_eq!(left, ["$date"]);
        assert_eq!(refs["ss"], ["ZoneId"]);
    }

    /// ThingsBoard 1.x `AlarmDeduplicationProcessor.process`: the alarm id and body are Velocity
    /// templates over the device's attributes and the posted values.
    #[test]
    fn alarm_deduplication_becomes_create_alarm() {
        let step = Step {
            at: "processor".into(),
            class: "org.thingsboard.server.extensions.core.processor.AlarmDeduplicationProcessor".into(),
            name: "Alarm Processor".into(),
            config: json!({
                "alarmIdTemplate": "[$date.get('yyyy-MM-dd HH:mm')] $ss.get('ZoneId') HVAC malfunction detected!",
                "alarmBodyTemplate": "[$date.get('yyyy-MM-dd HH:mm:ss')] Temperature - $temperature.valueAsString!"
            }),
        };
        let mut refs = BTreeMap::new();
        let fragment = alarm_deduplication(Path::new("x.json"), &step, &mut refs).unwrap().unwrap();
        assert_eq!(fragment.notes.len(), 3, "{:?}", fragment.notes);
        assert_eq!(
            fragment.parts[0].config,
            json!({"alarmType": "${ss_ZoneId} HVAC malfunction detected!",
                   "details": {"body": "Temperature - $temperature.valueAsString!"}})
        );
        assert_eq!(refs["ss"], ["ZoneId"]);
        assert_eq!(
            without_dates("[$date.get('yyyy-MM-dd HH:mm')] Device $cs.get('serialNumber') is hot!"),
            ("Device $cs.get('serialNumber') is hot!".to_string(), true)
        );
        let mut bad = step.clone();
        bad.config["alarmIdTemplate"] = json!("$util.id()");
        assert!(alarm_deduplication(Path::new("x.json"), &bad, &mut refs).unwrap().is_err());
    }

    #[test]
    fn filters_name_their_attributes_and_telemetry() {
        let mut refs = BTreeMap::new();
        attribute_refs(
            "typeof cs.deviceType !== 'undefined' && cs.deviceType === 'WeatherStation' && typeof cs.geoZone !== 'undefined' && x.cs.no",
            &mut refs,
        );
        assert_eq!(refs["cs"], ["deviceType", "geoZone"]);
        assert_eq!(
            telemetry_refs(
                "(typeof temperature !== 'undefined' && (temperature <= 21 || temperature >= 24.5)) || humidity.x"
            ),
            ["temperature", "humidity"]
        );
        assert_eq!(
            telemetry_refs("typeof windSpeed !== 'undefined' && 'cs.no' && Math.abs(x) > 1e3"),
            ["windSpeed", "x"]
        );
    }
}
