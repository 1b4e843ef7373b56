//! Device profile (ThingsBoard's `TbDeviceProfileNode`): every message goes on `Success`,
//! unchanged; on the side, the device profile's alarm rules are evaluated against the device's
//! latest values and alarms are raised, updated and cleared on ThingsBoard's relations
//! `Alarm Created`, `Alarm Updated`, `Alarm Severity Updated` and `Alarm Cleared`.
//!
//! With no `alarms` (what an import gives when the export carries no profile — ThingsBoard keeps
//! profiles apart from rule chains) it is a pass-through: the entry node of most ThingsBoard
//! 3.2+ root chains, which must let messages on.
//!
//! `profiles` lists device profiles — what `sluice import thingsboard --profiles FILE` writes
//! from ThingsBoard's device profile exports — each `{"name", "default", "alarms"}`. As
//! `TbDeviceProfileNode` evaluates the rules of the message's device's profile
//! (`DeviceProfileCache`), the node picks the profile named by the message's `deviceType`
//! metadata (ThingsBoard's transports set it to the device's profile name); else the profile
//! marked `default` (the tenant's default profile, which devices get when created without one);
//! else, when only one profile is given and the message has no `deviceType`, that one; else the
//! message is only passed on. `alarms` alone (no `profiles`) applies to every device.
//!
//! `alarms` is ThingsBoard's `profileData.alarms` as a device profile export holds it:
//! ```json
//! {"alarms": [{"alarmType": "High Temperature", "propagate": false,
//!   "createRules": {"CRITICAL": {"condition": {
//!       "condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"}, "valueType": "NUMERIC",
//!                      "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": 30}}}],
//!       "spec": {"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}}},
//!     "alarmDetails": "Temperature is ${temperature}"}},
//!   "clearRule": {"condition": {"condition": [ … "LESS_OR_EQUAL" 30 … ], "spec": {"type": "SIMPLE"}}}}]}
//! ```
//!
//! What it follows, from ThingsBoard's `rule-engine-components` (`profile/`):
//! - **Data** (`DeviceState`; devices only, as `TbDeviceProfileNode.onMsg`):
//!   `POST_TELEMETRY_REQUEST` data (`{k: v}`, `{"ts", "values"}` or a
//!   list of those) updates the device's latest time-series values, `POST_ATTRIBUTES_REQUEST` /
//!   `ATTRIBUTES_UPDATED` its attributes; other messages only pass. The snapshot is kept in host
//!   state per device, so it survives restarts.
//! - **Conditions** (`AlarmRuleState`): every key filter must hold (a missing value fails);
//!   predicates `NUMERIC` (`EQUAL`, `NOT_EQUAL`, `GREATER`, `LESS`, `GREATER_OR_EQUAL`,
//!   `LESS_OR_EQUAL`), `BOOLEAN` (`EQUAL`, `NOT_EQUAL`), `STRING` (`EQUAL`, `NOT_EQUAL`,
//!   `STARTS_WITH`, `ENDS_WITH`, `CONTAINS`, `NOT_CONTAINS`, `IN`, `NOT_IN`, `ignoreCase`) and
//!   `COMPLEX` (`AND`/`OR`); values are `defaultValue` (dynamic values are not resolved). Specs:
//!   `SIMPLE`; `DURATION` — the time the condition has held, summed over consecutive messages
//!   from the first that met it, must be *greater* than the duration (`evalDuration`);
//!   `REPEATING` — met on at least `count` consecutive messages. A rule is evaluated only when the
//!   message updates one of its keys (`validateUpdate`); a rule that fails is reset.
//! - **Alarms** (`AlarmState.createOrClearAlarms`): create rules are tried from the most severe
//!   (CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE); the first that holds raises the alarm —
//!   `Alarm Created` when there is none, else `Alarm Updated` (same severity) or `Alarm Severity
//!   Updated` (more severe; a less severe rule leaves the alarm alone, as `calculateAlarmResult`
//!   skips decreases). When none holds and an alarm is active, a clear rule that holds clears it
//!   (`Alarm Cleared`) and resets every rule. Details: `alarmDetails` with `${key}` replaced by
//!   the rule's key values, as `{"data": "…"}`; else the alarm's previous details.
//! - **Output** (`AlarmState.pushMsg`): a message of type `ALARM`, the incoming metadata plus
//!   `isNewAlarm` / `isExistingAlarm` (+ `isSeverityUpdated`) / `isClearedAlarm` and
//!   `alarmConditionDuration` / `alarmConditionRepeats`, data = the alarm in ThingsBoard's
//!   `Alarm` shape (as `create-alarm` documents). The alarm is kept in the chain's `alarms` table
//!   under the key `create-alarm` and `clear-alarm` use, with an id derived from the message
//!   that raised it: it keeps its identity across restarts.
//!
//! - **On time** (`harvestAlarms` → `AlarmRuleState.eval(ts, snapshot)`): a `DURATION` rule that
//!   holds, not yet long enough, comes true without a new message once it has held longer than
//!   its duration. ThingsBoard checks every minute; here a processing-time timer fires when the
//!   duration is exceeded (the rule is evaluated at the data's time plus the clock's time since).
//!   The alarm message carries the last message's metadata (`lastMsgMetaData`).
//!
//! Not done: schedules (alarms are always enabled), dynamic values from attributes,
//! `ENTITY_FIELD` keys, and acknowledgement. Times are event times (the message's `ts`), not
//! the wall clock, so a replay gives the same alarms.
use std::collections::BTreeMap;

use serde_json::Map;

use sluice_sdk::prelude::*;

/// The table of alarms shared with `create-alarm` / `clear-alarm`.
pub const ALARMS: &str = "alarms";

/// `AlarmSeverity` in ordinal order: the most severe first.
pub const SEVERITIES: &[&str] = &["CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"];

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// ThingsBoard's `profileData.alarms`, for every device.
    #[serde(default)]
    pub alarms: Vec<AlarmDef>,
    /// Device profiles, picked per message by `deviceType` (instead of `alarms`).
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// ThingsBoard's node settings, accepted and unused: the rule state is always kept.
    #[serde(default)]
    pub persist_alarm_rules_state: Option<bool>,
    #[serde(default)]
    pub fetch_alarm_rules_state_on_start: Option<bool>,
}

/// A device profile: its name (what `deviceType` names), whether it is the default, its alarm
/// rules.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub alarms: Vec<AlarmDef>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmDef {
    pub alarm_type: String,
    #[serde(default)]
    pub create_rules: BTreeMap<String, AlarmRule>,
    #[serde(default)]
    pub clear_rule: Option<AlarmRule>,
    #[serde(default)]
    pub propagate: bool,
    #[serde(default)]
    pub propagate_to_owner: bool,
    #[serde(default)]
    pub propagate_to_tenant: bool,
    #[serde(default)]
    pub propagate_relation_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmRule {
    pub condition: Condition,
    #[serde(default)]
    pub alarm_details: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub condition: Vec<KeyFilter>,
    #[serde(default)]
    pub spec: Option<Spec>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyFilter {
    pub key: Key,
    pub predicate: Predicate,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Key {
    /// `TIME_SERIES` or `ATTRIBUTE` (also `CLIENT_ATTRIBUTE`, `SHARED_ATTRIBUTE`,
    /// `SERVER_ATTRIBUTE`, read as attributes).
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredicateValue {
    #[serde(default)]
    pub default_value: Value,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Predicate {
    Numeric {
        operation: String,
        value: PredicateValue,
    },
    Boolean {
        operation: String,
        value: PredicateValue,
    },
    String {
        operation: String,
        value: PredicateValue,
        #[serde(default, rename = "ignoreCase")]
        ignore_case: bool,
    },
    Complex {
        operation: String,
        predicates: Vec<Predicate>,
    },
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub unit: Option<String>,
    /// 3.2's duration value / 3.2's repeat count.
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub count: Option<Value>,
    /// 3.3+: the duration or count as a predicate value.
    #[serde(default)]
    pub predicate: Option<PredicateValue>,
}

/// A rule's progress (`PersistedAlarmRuleState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct RuleState {
    last_event_ts: i64,
    duration: i64,
    event_count: i64,
}

/// What the host keeps per device: the latest values and each alarm's rule states.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeviceState {
    ts: i64,
    timeseries: Map<String, Value>,
    attributes: Map<String, Value>,
    /// alarm type → severity (or "clear") → state.
    rules: BTreeMap<String, BTreeMap<String, RuleState>>,
    /// alarm type → the pending check of a DURATION rule that holds but not yet long enough.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<String, Check>,
}

/// A DURATION rule holds but not long enough yet: its timer re-evaluates it when it would
/// (ThingsBoard's periodic `harvestAlarms`, `AlarmRuleState.eval(ts, snapshot)`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Check {
    /// The data time when the timer was set, and the clock then: at the clock's `now`, the
    /// rule is evaluated at `ts + (now - set_at)`.
    ts: i64,
    set_at: i64,
    /// What the alarm message is made from (`lastMsgMetaData`), and the profile the rules came from.
    originator: Originator,
    metadata: Metadata,
    device_type: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Eval {
    True,
    False,
    NotYet,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn holds(p: &Predicate, v: &Value) -> bool {
    match p {
        Predicate::Numeric { operation, value } => {
            let (Some(x), Some(y)) = (number(v), number(&value.default_value)) else { return false };
            match operation.as_str() {
                "EQUAL" => x == y,
                "NOT_EQUAL" => x != y,
                "GREATER" => x > y,
                "LESS" => x < y,
                "GREATER_OR_EQUAL" => x >= y,
                "LESS_OR_EQUAL" => x <= y,
                _ => false,
            }
        }
        Predicate::Boolean { operation, value } => {
            let as_bool = |v: &Value| match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) => s.parse::<bool>().ok(),
                _ => None,
            };
            let (Some(x), Some(y)) = (as_bool(v), as_bool(&value.default_value)) else { return false };
            match operation.as_str() {
                "EQUAL" => x == y,
                "NOT_EQUAL" => x != y,
                _ => false,
            }
        }
        Predicate::String { operation, value, ignore_case } => {
            let (mut x, mut y) = (text(v), text(&value.default_value));
            if *ignore_case {
                x = x.to_lowercase();
                y = y.to_lowercase();
            }
            let listed = || y.split(',').any(|item| item.trim() == x);
            match operation.as_str() {
                "EQUAL" => x == y,
                "NOT_EQUAL" => x != y,
                "STARTS_WITH" => x.starts_with(&y),
                "ENDS_WITH" => x.ends_with(&y),
                "CONTAINS" => x.contains(&y),
                "NOT_CONTAINS" => !x.contains(&y),
                "IN" => listed(),
                "NOT_IN" => !listed(),
                _ => false,
            }
        }
        Predicate::Complex { operation, predicates } => match operation.as_str() {
            "OR" => predicates.iter().any(|p| holds(p, v)),
            _ => predicates.iter().all(|p| holds(p, v)),
        },
    }
}

fn is_attribute(kind: &str) -> bool {
    kind.contains("ATTRIBUTE")
}

impl DeviceState {
    fn value(&self, key: &Key) -> Option<&Value> {
        if is_attribute(&key.kind) { self.attributes.get(&key.key) } else { self.timeseries.get(&key.key) }
    }
}

fn spec_amount(spec: &Spec, legacy: &Option<Value>) -> i64 {
    spec.predicate
        .as_ref()
        .and_then(|p| number(&p.default_value))
        .or_else(|| legacy.as_ref().and_then(number))
        .unwrap_or(0.0) as i64
}

fn unit_ms(unit: Option<&str>) -> i64 {
    match unit.unwrap_or("SECONDS") {
        "MILLISECONDS" => 1,
        "MINUTES" => 60_000,
        "HOURS" => 3_600_000,
        "DAYS" => 86_400_000,
        _ => 1000,
    }
}

/// `AlarmRuleState.eval` on the device's snapshot at `ts`.
fn eval(rule: &AlarmRule, device: &DeviceState, state: &mut RuleState) -> Eval {
    let met = rule.condition.condition.iter().all(|f| device.value(&f.key).is_some_and(|v| holds(&f.predicate, v)));
    let spec = rule.condition.spec.as_ref();
    match spec.map(|s| s.kind.as_str()).unwrap_or("SIMPLE") {
        "DURATION" => {
            if !met {
                return Eval::False;
            }
            let Some(spec) = spec else { return Eval::False };
            if state.last_event_ts > 0 {
                if device.ts > state.last_event_ts {
                    state.duration += device.ts - state.last_event_ts;
                    state.last_event_ts = device.ts;
                }
            } else {
                state.last_event_ts = device.ts;
                state.duration = 0;
            }
            let required = spec_amount(spec, &spec.value) * unit_ms(spec.unit.as_deref());
            if state.duration > required { Eval::True } else { Eval::NotYet }
        }
        "REPEATING" => {
            if !met {
                return Eval::False;
            }
            let Some(spec) = spec else { return Eval::False };
            state.event_count += 1;
            if state.event_count >= spec_amount(spec, &spec.count) { Eval::True } else { Eval::NotYet }
        }
        _ => {
            if met {
                Eval::True
            } else {
                Eval::False
            }
        }
    }
}

/// `validateUpdate`: whether the message updated one of the rule's keys.
fn touches(rule: &AlarmRule, ts_keys: &[String], attr_keys: &[String]) -> bool {
    rule.condition.condition.iter().any(|f| {
        let keys = if is_attribute(&f.key.kind) { attr_keys } else { ts_keys };
        keys.contains(&f.key.key)
    })
}

/// `createDetails`: `alarmDetails` with `${key}` replaced, as `{"data": …}`; else the previous.
fn details(rule: &AlarmRule, device: &DeviceState, previous: Option<&Value>) -> Value {
    match rule.alarm_details.as_deref().filter(|d| !d.is_empty()) {
        Some(template) => {
            let mut text_out = template.to_string();
            for f in &rule.condition.condition {
                if let Some(v) = device.value(&f.key) {
                    text_out = text_out.replace(&format!("${{{}}}", f.key.key), &text(v));
                }
            }
            json!({"data": text_out})
        }
        None => previous.cloned().unwrap_or_else(|| json!({})),
    }
}

fn condition_meta(rule: &AlarmRule, state: &RuleState, out: &mut Msg) {
    match rule.condition.spec.as_ref().map(|s| s.kind.as_str()) {
        Some("REPEATING") => out.set_meta("alarmConditionRepeats", state.event_count.to_string()),
        Some("DURATION") => out.set_meta("alarmConditionDuration", state.duration.to_string()),
        _ => {}
    }
}

/// What an alarm message is made from: the device, the metadata it carries (the message's, or
/// the device's last one for a timer, as `AlarmState.pushMsg` takes `lastMsgMetaData`), the id a
/// new alarm's id derives from, and the time.
struct Origin<'a> {
    originator: &'a Originator,
    metadata: &'a Metadata,
    id: &'a str,
    /// The alarm's time (the data's, or the timer's reckoning).
    ts: i64,
    /// The alarm message's `ts`.
    msg_ts: i64,
}

fn alarm_msg(origin: &Origin, alarm: &Value, flags: &[&str]) -> Msg {
    let mut out = Msg::new("ALARM", origin.originator.clone(), alarm.clone()).with_ts(origin.msg_ts);
    out.set_metadata(origin.metadata.clone());
    for flag in flags {
        out.set_meta(*flag, "true");
    }
    out
}

/// A create rule holds (`AlarmState.calculateAlarmResult` / `pushMsg`): the alarm is created
/// when there is none, else updated (same or more severe); a less severe rule leaves it alone.
#[allow(clippy::too_many_arguments)]
fn raise(
    def: &AlarmDef,
    severity: &str,
    rule: &AlarmRule,
    rule_state: &RuleState,
    device: &DeviceState,
    alarm_key: &str,
    current: Option<Value>,
    origin: &Origin,
    out: &mut Outputs,
) -> Result<()> {
    let ts = origin.ts;
    match current {
        None => {
            // `dataSnapshot.getTs()`: the time of the device's latest data.
            let start = if device.ts > 0 { device.ts.min(ts) } else { ts };
            let alarm = json!({
                "id": {"entityType": "ALARM", "id": format!("alarm:{}", origin.id)},
                "createdTime": ts,
                "type": def.alarm_type, "name": def.alarm_type,
                "originator": origin.originator,
                "severity": severity,
                "acknowledged": false, "cleared": false, "status": "ACTIVE_UNACK",
                "startTs": start, "endTs": start, "ackTs": 0, "clearTs": 0,
                "details": details(rule, device, None),
                "propagate": def.propagate, "propagateToOwner": def.propagate_to_owner,
                "propagateToTenant": def.propagate_to_tenant,
                "propagateRelationTypes": def.propagate_relation_types.clone().unwrap_or_default(),
            });
            table::put(ALARMS, alarm_key, &alarm)?;
            let mut m = alarm_msg(origin, &alarm, &["isNewAlarm"]);
            condition_meta(rule, rule_state, &mut m);
            out.emit("Alarm Created", m);
        }
        Some(mut alarm) => {
            let old = alarm["severity"].as_str().unwrap_or("INDETERMINATE").to_string();
            let rank = |s: &str| SEVERITIES.iter().position(|x| *x == s).unwrap_or(SEVERITIES.len());
            // A less severe rule does not touch the alarm (`calculateAlarmResult`).
            if rank(severity) <= rank(&old) {
                alarm["endTs"] = json!(ts);
                alarm["details"] = details(rule, device, alarm.get("details"));
                alarm["severity"] = json!(severity);
                table::put(ALARMS, alarm_key, &alarm)?;
                let (relation, flags): (&str, &[&str]) = if severity == old {
                    ("Alarm Updated", &["isExistingAlarm"])
                } else {
                    ("Alarm Severity Updated", &["isExistingAlarm", "isSeverityUpdated"])
                };
                let mut m = alarm_msg(origin, &alarm, flags);
                condition_meta(rule, rule_state, &mut m);
                out.emit(relation, m);
            }
        }
    }
    Ok(())
}

/// The time a DURATION rule still needs before it holds (`resolveRequiredDurationInMs` minus
/// what it has held), when it has started holding and does not hold yet. (One that holds
/// already raised its alarm; ThingsBoard's minute check would also push an `Alarm Updated`
/// every minute while it holds, which is left to the device's messages here.)
fn remaining(rule: &AlarmRule, state: &RuleState) -> Option<i64> {
    let spec = rule.condition.spec.as_ref().filter(|s| s.kind == "DURATION")?;
    let left = spec_amount(spec, &spec.value) * unit_ms(spec.unit.as_deref()) - state.duration;
    (state.last_event_ts > 0 && left >= 0).then_some(left)
}

/// Between a device's state key and an alarm type in a timer's key (a character neither
/// ThingsBoard names nor alarm types use).
const TIMER_SEP: char = '\u{1f}';

/// The timer of a device's alarm type: `<entity type>/<name>␟<alarm type>`.
fn timer_key(state_key: &str, alarm_type: &str) -> String {
    format!("{state_key}{TIMER_SEP}{alarm_type}")
}

pub struct DeviceProfile {
    config: Config,
}

impl DeviceProfile {
    /// The alarm rules that apply to `msg`'s device: `alarms`, or the profile its `deviceType`
    /// names, else the default profile, else the only profile when the message names none.
    fn alarms_for(&self, msg: &Msg) -> &[AlarmDef] {
        self.alarms_of(msg.meta("deviceType"))
    }

    /// [`DeviceProfile::alarms_for`] a message whose `deviceType` is `device_type`.
    fn alarms_of(&self, device_type: Option<&str>) -> &[AlarmDef] {
        let profiles = &self.config.profiles;
        if profiles.is_empty() {
            return &self.config.alarms;
        }
        let named = device_type.and_then(|t| profiles.iter().find(|p| p.name == t));
        let chosen = named.or_else(|| profiles.iter().find(|p| p.default)).or_else(|| match profiles.as_slice() {
            [only] if device_type.is_none() => Some(only),
            _ => None,
        });
        chosen.map_or(&[], |p| &p.alarms)
    }
}

/// Passes every message on and evaluates the device profile's alarm rules (ThingsBoard's device
/// profile node).
#[node(relations = ["Success", "Alarm Created", "Alarm Updated", "Alarm Severity Updated", "Alarm Cleared"])]
impl Node for DeviceProfile {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if !config.alarms.is_empty() && !config.profiles.is_empty() {
            bail_config!("profiles", "give either `alarms` (for every device) or `profiles`, not both");
        }
        let mut lists = vec![(String::new(), &config.alarms)];
        for (p, profile) in config.profiles.iter().enumerate() {
            if profile.name.is_empty() {
                bail_config!(format!("profiles[{p}].name"), "must not be empty");
            }
            if config.profiles[..p].iter().any(|q| q.name == profile.name) {
                bail_config!(format!("profiles[{p}].name"), "profile {:?} is listed twice", profile.name);
            }
            if profile.default && config.profiles[..p].iter().any(|q| q.default) {
                bail_config!(format!("profiles[{p}].default"), "only one profile can be the default");
            }
            lists.push((format!("profiles[{p}]."), &profile.alarms));
        }
        for (prefix, alarms) in lists {
            for (i, alarm) in alarms.iter().enumerate() {
                if alarm.alarm_type.is_empty() {
                    bail_config!(format!("{prefix}alarms[{i}].alarmType"), "must not be empty");
                }
                for severity in alarm.create_rules.keys() {
                    if !SEVERITIES.contains(&severity.as_str()) {
                        bail_config!(
                            format!("{prefix}alarms[{i}].createRules.{severity}"),
                            "not a severity ({})",
                            SEVERITIES.join(", ")
                        );
                    }
                }
            }
        }
        Ok(DeviceProfile { config })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        out.forward(relation::SUCCESS);
        let alarms = self.alarms_for(&msg);
        if alarms.is_empty() {
            return Ok(());
        }
        let telemetry = msg.msg_type() == sluice_sdk::msg_type::POST_TELEMETRY_REQUEST;
        let attributes = matches!(
            msg.msg_type(),
            sluice_sdk::msg_type::POST_ATTRIBUTES_REQUEST | sluice_sdk::msg_type::ATTRIBUTES_UPDATED
        );
        // `TbDeviceProfileNode.onMsg` evaluates devices only; other originators just pass.
        if (!telemetry && !attributes) || msg.originator().entity_type != "DEVICE" {
            return Ok(());
        }
        // Each entry of the data is an update: `{k: v}`, `{"ts", "values"}`, or a list of them.
        let entries: Vec<(i64, Map<String, Value>)> = {
            let one = |v: &Value| -> Option<(i64, Map<String, Value>)> {
                let map = v.as_object()?;
                match (map.get("ts").and_then(Value::as_i64), map.get("values").and_then(Value::as_object)) {
                    (Some(ts), Some(values)) => Some((ts, values.clone())),
                    _ => Some((msg.ts(), map.clone())),
                }
            };
            match msg.data() {
                Value::Array(items) => items.iter().filter_map(one).collect(),
                other => one(other).into_iter().collect(),
            }
        };
        let originator = msg.originator().clone();
        let state_key = format!("{}/{}", originator.entity_type, originator.name);
        let mut device: DeviceState = state::get_json(&state_key)?.unwrap_or_default();
        for (ts, values) in entries {
            let keys: Vec<String> = values.keys().cloned().collect();
            device.ts = ts;
            let (ts_keys, attr_keys) = if telemetry { (keys, Vec::new()) } else { (Vec::new(), keys) };
            for (k, v) in values {
                if telemetry {
                    device.timeseries.insert(k, v);
                } else {
                    device.attributes.insert(k, v);
                }
            }
            let origin =
                Origin { originator: &originator, metadata: msg.metadata(), id: msg.id(), ts, msg_ts: msg.ts() };
            for def in alarms {
                let alarm_key = format!("{}/{}/{}", originator.entity_type, originator.name, def.alarm_type);
                let mut current = table::get::<Value>(ALARMS, &alarm_key)?.filter(|a| a["cleared"] != json!(true));
                let mut states = device.rules.remove(&def.alarm_type).unwrap_or_default();
                let mut raised: Option<(&str, &AlarmRule, RuleState)> = None;
                for severity in SEVERITIES {
                    let Some(rule) = def.create_rules.get(*severity) else { continue };
                    if !touches(rule, &ts_keys, &attr_keys) {
                        continue;
                    }
                    let state = states.entry((*severity).to_string()).or_default();
                    match eval(rule, &device, state) {
                        Eval::True => {
                            raised = Some((severity, rule, *state));
                            break;
                        }
                        Eval::False => *state = RuleState::default(),
                        Eval::NotYet => {}
                    }
                }
                if let Some((severity, rule, rule_state)) = raised {
                    states.insert("clear".into(), RuleState::default());
                    raise(def, severity, rule, &rule_state, &device, &alarm_key, current.take(), &origin, out)?;
                } else if let (Some(mut alarm), Some(rule)) = (current, def.clear_rule.as_ref())
                    && touches(rule, &ts_keys, &attr_keys)
                {
                    let state = states.entry("clear".into()).or_default();
                    match eval(rule, &device, state) {
                        Eval::True => {
                            let rule_state = *state;
                            states.clear();
                            alarm["cleared"] = json!(true);
                            alarm["status"] = json!("CLEARED_UNACK");
                            alarm["clearTs"] = json!(ts);
                            alarm["endTs"] = json!(ts);
                            alarm["details"] = details(rule, &device, alarm.get("details"));
                            table::put(ALARMS, &alarm_key, &alarm)?;
                            let mut m = alarm_msg(&origin, &alarm, &["isClearedAlarm"]);
                            condition_meta(rule, &rule_state, &mut m);
                            out.emit("Alarm Cleared", m);
                        }
                        Eval::False => *state = RuleState::default(),
                        Eval::NotYet => {}
                    }
                }
                // A DURATION rule that holds, not yet long enough: a timer for when it would.
                let wait =
                    def.create_rules.iter().filter_map(|(severity, rule)| remaining(rule, states.get(severity)?)).min();
                let key = timer_key(&state_key, &def.alarm_type);
                match wait {
                    Some(wait) => {
                        let now = clock::now_ms();
                        timer::set(&key, now.saturating_add(wait.max(0)).saturating_add(1));
                        let check = Check {
                            ts,
                            set_at: now,
                            originator: originator.clone(),
                            metadata: msg.metadata().clone(),
                            device_type: msg.meta("deviceType").map(str::to_string),
                        };
                        device.checks.insert(def.alarm_type.clone(), check);
                    }
                    None => {
                        if device.checks.remove(&def.alarm_type).is_some() {
                            timer::cancel(&key);
                        }
                    }
                }
                device.rules.insert(def.alarm_type.clone(), states);
            }
        }
        state::put_json(&state_key, &device)?;
        Ok(())
    }

    /// A DURATION rule's check is due: as ThingsBoard's periodic `harvestAlarms` →
    /// `AlarmState.process(ctx, ts)` → `AlarmRuleState.eval(ts, snapshot)`, only DURATION rules
    /// can come true without data: one that started holding at `lastEventTs` holds at `ts` when
    /// `duration + (ts - lastEventTs)` exceeds its duration. The alarm message carries the last
    /// message's metadata and `alarmConditionDuration` as stored (`eval(ts)` does not update
    /// the rule's state; neither does this).
    fn on_timer(&mut self, timer: Timer, out: &mut Outputs) -> Result<()> {
        let Some((state_key, alarm_type)) = timer.key.rsplit_once(TIMER_SEP) else { return Ok(()) };
        let Some(mut device) = state::get_json::<DeviceState>(state_key)? else { return Ok(()) };
        let Some(check) = device.checks.remove(alarm_type) else { return Ok(()) };
        let alarms = self.alarms_of(check.device_type.as_deref());
        let Some(def) = alarms.iter().find(|d| d.alarm_type == alarm_type) else {
            state::put_json(state_key, &device)?;
            return Ok(());
        };
        let ts = check.ts.saturating_add(timer.now.saturating_sub(check.set_at).max(0));
        let alarm_key = format!("{}/{}/{}", check.originator.entity_type, check.originator.name, def.alarm_type);
        let current = table::get::<Value>(ALARMS, &alarm_key)?.filter(|a| a["cleared"] != json!(true));
        let mut states = device.rules.remove(alarm_type).unwrap_or_default();
        let mut raised = None;
        let mut wait: Option<i64> = None;
        for severity in SEVERITIES {
            let Some(rule) = def.create_rules.get(*severity) else { continue };
            let Some(state) = states.get(*severity) else { continue };
            let Some(left) = remaining(rule, state) else { continue };
            let held = ts - state.last_event_ts;
            if held > left {
                raised = Some((*severity, rule, *state));
                break;
            }
            wait = Some(wait.map_or(left - held, |w| w.min(left - held)));
        }
        if let Some((severity, rule, rule_state)) = raised {
            states.insert("clear".into(), RuleState::default());
            let origin =
                Origin { originator: &check.originator, metadata: &check.metadata, id: &timer.id, ts, msg_ts: ts };
            raise(def, severity, rule, &rule_state, &device, &alarm_key, current, &origin, out)?;
        } else if let Some(wait) = wait {
            timer::set(&timer.key, timer.now.saturating_add(wait.max(0)).saturating_add(1));
            device.checks.insert(alarm_type.to_string(), check);
        }
        device.rules.insert(alarm_type.to_string(), states);
        state::put_json(state_key, &device)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// High Temperature: CRITICAL when `temperature > 30` for more than 10 s, MAJOR when
    /// `temperature > 25` (simple); cleared when `temperature <= 25`.
    pub fn profile() -> Value {
        let above = |v: f64| {
            json!([{"key": {"type": "TIME_SERIES", "key": "temperature"}, "valueType": "NUMERIC",
                    "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": v}}}])
        };
        json!({"alarms": [{"id": "a1", "alarmType": "High Temperature", "propagate": true,
            "createRules": {
                "CRITICAL": {"condition": {"condition": above(30.0),
                    "spec": {"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}}},
                    "alarmDetails": "Temperature is ${temperature}"},
                "MAJOR": {"condition": {"condition": above(25.0), "spec": {"type": "SIMPLE"}}}},
            "clearRule": {"condition": {"condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"},
                "predicate": {"type": "NUMERIC", "operation": "LESS_OR_EQUAL", "value": {"defaultValue": 25}}}],
                "spec": {"type": "SIMPLE"}}}}]})
    }

    fn t(id: &str, ts: i64, temperature: f64) -> Msg {
        Msg::telemetry("T-1", json!({"temperature": temperature})).with_ts(ts).with_id(id)
    }

    #[test]
    fn pass_through_without_alarms() -> Result<()> {
        let mut d = TestDriver::node_from_json::<DeviceProfile>("{}").unwrap();
        let msg = t("a", 1, 99.0);
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&msg]);
        let tb = r#"{"persistAlarmRulesState": false, "fetchAlarmRulesStateOnStart": false}"#;
        assert!(TestDriver::node_from_json::<DeviceProfile>(tb).is_ok());
        Ok(())
    }

    #[test]
    fn raises_escalates_and_clears() -> Result<()> {
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&profile().to_string()).unwrap();
        assert_eq!(d.send(t("a", 1_000, 20.0))?.relations(), ["Success"]);
        // 26 > 25: MAJOR at once.
        let out = d.send(t("b", 2_000, 26.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Created"]);
        assert_eq!(out.messages()[1].data()["severity"], "MAJOR");
        // 31: CRITICAL's duration starts (0 ms, not yet) → MAJOR still holds: updated.
        let out = d.send(t("c", 3_000, 31.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Updated"]);
        // 10 s later: duration 10 000 ms is not more than 10 s → still MAJOR.
        assert_eq!(d.send(t("d", 13_000, 32.0))?.relations(), ["Success", "Alarm Updated"]);
        let out = d.send(t("e", 13_001, 32.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Severity Updated"]);
        let alarm = out.messages()[1];
        assert_eq!(alarm.meta("isSeverityUpdated"), Some("true"));
        assert_eq!(alarm.meta("alarmConditionDuration"), Some("10001"));
        assert_eq!(alarm.data()["details"], json!({"data": "Temperature is 32.0"}));
        assert_eq!(alarm.data()["id"]["id"], "alarm:b");
        // 27: MAJOR holds but is less severe: the alarm is left alone.
        assert_eq!(d.send(t("f", 14_000, 27.0))?.relations(), ["Success"]);
        let out = d.send(t("g", 15_000, 24.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Cleared"]);
        assert_eq!(out.messages()[1].data()["status"], "CLEARED_UNACK");
        assert_eq!(out.messages()[1].meta("isClearedAlarm"), Some("true"));
        // A new alarm after the clear.
        let out = d.send(t("h", 16_000, 26.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Created"]);
        assert_eq!(out.messages()[1].data()["id"]["id"], "alarm:h");
        // Messages without the key do not evaluate the rules.
        let other = Msg::telemetry("T-1", json!({"humidity": 1})).with_ts(17_000);
        assert_eq!(d.send(other)?.relations(), ["Success"]);
        // Nor do messages from an asset.
        let asset = Msg::new("POST_TELEMETRY_REQUEST", Originator::asset("A"), json!({"temperature": 99})).with_ts(1);
        assert_eq!(d.send(asset)?.relations(), ["Success"]);
        Ok(())
    }

    #[test]
    fn repeating_and_strings() -> Result<()> {
        let cfg = json!({"alarms": [{"alarmType": "Door", "createRules": {"WARNING": {"condition": {
            "condition": [{"key": {"type": "ATTRIBUTE", "key": "door"},
                "predicate": {"type": "STRING", "operation": "EQUAL", "ignoreCase": true, "value": {"defaultValue": "open"}}}],
            "spec": {"type": "REPEATING", "predicate": {"defaultValue": 2}}}}}}]});
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&cfg.to_string()).unwrap();
        let door = |v: &str| Msg::attributes("D", json!({"door": v})).with_ts(1);
        assert_eq!(d.send(door("OPEN"))?.relations(), ["Success"]);
        let out = d.send(door("Open"))?;
        assert_eq!(out.relations(), ["Success", "Alarm Created"]);
        assert_eq!(out.messages()[1].meta("alarmConditionRepeats"), Some("2"));
        Ok(())
    }

    /// `TbDeviceProfileNode` evaluates the rules of the device's own profile
    /// (`DeviceProfileCache.get(tenantId, deviceId)`): a device of profile `thermostat` raises
    /// its alarm, one of profile `meter` does not; a device of an unlisted profile gets the
    /// default profile.
    #[test]
    fn picks_the_profile_by_device_type() -> Result<()> {
        let alarms = profile()["alarms"].clone();
        let config = json!({"profiles": [
            {"name": "thermostat", "alarms": alarms},
            {"name": "meter", "default": true, "alarms": []},
        ]});
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&config.to_string()).unwrap();
        let of = |id: &str, device_type: &str| t(id, 2_000, 26.0).with_meta("deviceType", device_type);
        assert_eq!(d.send(of("a", "meter"))?.relations(), ["Success"]);
        assert_eq!(d.send(of("b", "thermostat"))?.relations(), ["Success", "Alarm Created"]);
        // An unlisted profile gets the default (`meter`: no rules).
        let other = Msg::telemetry("T-2", json!({"temperature": 40.0})).with_meta("deviceType", "boiler");
        assert_eq!(d.send(other)?.relations(), ["Success"]);

        // One profile and no default: a message naming no profile gets it, one naming another does not.
        let config = json!({"profiles": [{"name": "thermostat", "alarms": profile()["alarms"].clone()}]});
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&config.to_string()).unwrap();
        let other = Msg::telemetry("T-3", json!({"temperature": 26.0})).with_meta("deviceType", "boiler");
        assert_eq!(d.send(other)?.relations(), ["Success"]);
        assert_eq!(d.send(t("c", 2_000, 26.0))?.relations(), ["Success", "Alarm Created"]);
        Ok(())
    }

    #[test]
    fn profiles_config_errors_name_the_field() {
        let err = |config: Value| {
            TestDriver::node_from_json::<DeviceProfile>(&config.to_string()).err().expect("refused").to_string()
        };
        let both = err(json!({"alarms": profile()["alarms"].clone(), "profiles": [{"name": "a"}]}));
        assert!(both.contains("profiles") && both.contains("not both"), "{both}");
        let twice = err(json!({"profiles": [{"name": "a"}, {"name": "a"}]}));
        assert!(twice.contains("profiles[1].name"), "{twice}");
        let defaults = err(json!({"profiles": [{"name": "a", "default": true}, {"name": "b", "default": true}]}));
        assert!(defaults.contains("profiles[1].default"), "{defaults}");
        let bad = err(
            json!({"profiles": [{"name": "a", "alarms": [{"alarmType": "x", "createRules": {"HUGE": {"condition": {"condition": []}}}}]}]}),
        );
        assert!(bad.contains("profiles[0].alarms[0].createRules.HUGE"), "{bad}");
    }

    /// CRITICAL while `temperature > 30` for more than 10 s; cleared at `<= 25`.
    fn duration_only() -> Value {
        json!({"alarms": [{"alarmType": "High Temperature",
            "createRules": {"CRITICAL": {"condition": {"condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"},
                "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": 30}}}],
                "spec": {"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}}}}},
            "clearRule": {"condition": {"condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"},
                "predicate": {"type": "NUMERIC", "operation": "LESS_OR_EQUAL", "value": {"defaultValue": 25}}}],
                "spec": {"type": "SIMPLE"}}}}]})
    }

    /// A device that reports once above the threshold and then goes quiet: ThingsBoard's
    /// periodic check (`TbDeviceProfileNode.harvestAlarms` → `AlarmRuleState.eval(ts, data)`:
    /// `duration + (ts - lastEventTs) > required`) raises the alarm without a new message. Here
    /// a timer fires when the duration is exceeded; the alarm starts at the data's time
    /// (`dataSnapshot.getTs()`), carries the last message's metadata and the stored
    /// `alarmConditionDuration` (0: `eval(ts)` does not update the state).
    #[test]
    fn a_duration_rule_comes_true_on_time_without_a_message() -> Result<()> {
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&duration_only().to_string()).unwrap().at(100_000);
        let first = t("a", 1_000, 31.0).with_meta("deviceType", "thermostat");
        assert_eq!(d.send(first)?.relations(), ["Success"]);
        assert!(d.advance_to(110_000)?.outputs.is_empty(), "10 s is not more than 10 s");
        let out = d.advance_to(110_001)?;
        assert_eq!(out.relations(), ["Alarm Created"]);
        let alarm = out.messages()[0];
        assert_eq!(alarm.originator().name, "T-1");
        assert_eq!(alarm.data()["severity"], "CRITICAL");
        assert_eq!(alarm.data()["startTs"], 1_000);
        assert_eq!(alarm.meta("deviceType"), Some("thermostat"));
        assert_eq!(alarm.meta("isNewAlarm"), Some("true"));
        assert_eq!(alarm.meta("alarmConditionDuration"), Some("0"));
        let id = alarm.data()["id"]["id"].clone();
        assert!(d.advance_to(200_000)?.outputs.is_empty(), "raised once");
        // The clear rule clears the alarm the timer raised.
        d.set_time(200_000);
        let out = d.send(t("b", 2_000, 20.0))?;
        assert_eq!(out.relations(), ["Success", "Alarm Cleared"]);
        assert_eq!(out.messages()[1].data()["id"]["id"], id);
        Ok(())
    }

    /// A reading that breaks the condition resets the rule (`evalDuration` → FALSE →
    /// `clearAlarmState`): the pending check is dropped and nothing is raised later; a later
    /// reading that holds moves the check to its own reckoning.
    #[test]
    fn a_broken_condition_cancels_the_check() -> Result<()> {
        let mut d = TestDriver::node_from_json::<DeviceProfile>(&duration_only().to_string()).unwrap().at(0);
        d.send(t("a", 1_000, 31.0))?;
        d.set_time(5_000);
        d.send(t("b", 5_000, 20.0))?;
        assert!(d.advance_to(60_000)?.outputs.is_empty());
        // Held from 61 000 (data time) / 61 000 (clock); 70 000: 9 s more; due at 71 001.
        d.set_time(61_000);
        d.send(t("c", 61_000, 35.0))?;
        d.set_time(70_000);
        assert_eq!(d.send(t("d", 70_000, 36.0))?.relations(), ["Success"]);
        assert!(d.advance_to(71_000)?.outputs.is_empty());
        assert_eq!(d.advance_to(71_001)?.relations(), ["Alarm Created"]);
        Ok(())
    }
}
