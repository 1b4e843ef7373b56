//! Converters for the ThingsBoard classes that became Sluice rules in issue 20: math, calculate
//! delta, create / clear alarm, device profile, RPC request / reply. Kept apart from [`super::thingsboard`] so that
//! its class table only gains one row per class here.

use serde_json::{Map, Value, json};

use sluice_core::spec::{CallPolicySpec, ConnectorKind, ConnectorSpec, MqttConnection};

use super::draft::{Fragment, Part, Want};
use super::error::ImportError;
use super::thingsboard::{Ctx, Outcome};

/// Copies the keys of `from` that `keys` names (others, such as UI-only fields, are dropped).
fn pick(from: Option<&Value>, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(Value::Object(map)) = from {
        for key in keys {
            if let Some(v) = map.get(*key).filter(|v| !v.is_null()) {
                out.insert((*key).to_string(), v.clone());
            }
        }
    }
    out
}

/// `TbMathNode` → `math`: the configuration is ThingsBoard's own (`TbMathNodeConfiguration`).
pub(crate) fn math(c: &Ctx) -> Result<Outcome, ImportError> {
    let operation = c.cfg.str("operation")?;
    let Some(Value::Array(args)) = c.cfg.get("arguments") else {
        return Err(c.cfg.error("arguments", "expected a list"));
    };
    let arguments: Vec<Value> = args
        .iter()
        .map(|a| Value::Object(pick(Some(a), &["name", "type", "key", "attributeScope", "defaultValue"])))
        .collect();
    let result = pick(
        c.cfg.get("result"),
        &["type", "key", "resultValuePrecision", "addToBody", "addToMetadata", "attributeScope"],
    );
    if result.is_empty() {
        return Err(c.cfg.error("result", "missing"));
    }
    let mut config = json!({"operation": operation, "arguments": arguments, "result": result});
    if let Some(f) = c.cfg.opt_str("customFunction")?.filter(|f| !f.trim().is_empty()) {
        config["customFunction"] = json!(f);
    }
    let mut fragment = Fragment::one(Part::module("math", config));
    let stores = |t: &Value| matches!(t.as_str(), Some("ATTRIBUTE" | "TIME_SERIES"));
    if args.iter().any(|a| a.get("type").is_some_and(stores)) || result.get("type").is_some_and(stores) {
        fragment = fragment.note(
            "attributes and time series are read from and written to the chain's tables (`server_attributes`, \
             `timeseries`, …) that save-attributes / save-timeseries nodes keep",
        );
    }
    Ok(Ok(fragment))
}

/// `CalculateDeltaNode` → `calculate-delta`: ThingsBoard's configuration keys, as they are.
pub(crate) fn calculate_delta(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = [
        "inputValueKey",
        "outputValueKey",
        "useCache",
        "addPeriodBetweenMsgs",
        "periodValueKey",
        "round",
        "tellFailureIfDeltaIsNegative",
    ];
    let config = Value::Object(pick(Some(c.cfg.value), &keys));
    let mut fragment = Fragment::one(Part::module("calculate-delta", config));
    if c.cfg.opt_bool("useCache")? == Some(false) {
        fragment = fragment.note(
            "useCache false: the previous value is the node's own (host state), not the database's latest saved value",
        );
    }
    Ok(Ok(fragment))
}

/// `TbGetTelemetryNode` → `get-telemetry`: ThingsBoard's configuration keys, upgraded as
/// `TbGetTelemetryNode.upgrade` does (version 0: a fetch mode other than FIRST, LAST or ALL becomes LAST;
/// FIRST/LAST ignore `orderBy` and `aggregation`).
pub(crate) fn get_telemetry(c: &Ctx) -> Result<Outcome, ImportError> {
    if c.cfg.strings("latestTsKeyNames")?.is_empty() {
        return Ok(Err("no telemetry keys: ThingsBoard refuses this node (\"Telemetry should be specified!\")".into()));
    }
    let keys = [
        "latestTsKeyNames",
        "fetchMode",
        "orderBy",
        "aggregation",
        "limit",
        "startInterval",
        "startIntervalTimeUnit",
        "endInterval",
        "endIntervalTimeUnit",
        "useMetadataIntervalPatterns",
        "startIntervalPattern",
        "endIntervalPattern",
    ];
    let mut config = pick(Some(c.cfg.value), &keys);
    let mut notes = Vec::new();
    let mode = c.cfg.opt_str("fetchMode")?.unwrap_or("");
    if !matches!(mode, "FIRST" | "LAST" | "ALL") {
        notes.push(format!("fetchMode `{mode}` is not FIRST, LAST or ALL: LAST, as ThingsBoard upgrades it"));
        config.insert("fetchMode".into(), json!("LAST"));
    }
    if mode != "ALL" {
        config.remove("orderBy");
        config.remove("aggregation");
    } else if config.get("orderBy").and_then(Value::as_str).is_some_and(|o| o.trim().is_empty()) {
        config.insert("orderBy".into(), json!("ASC"));
    }
    let mut fragment = Fragment::one(Part::module("get-telemetry", Value::Object(config))).note(
        "reads the telemetry history this chain's save-timeseries nodes keep (the newest `[state]` seriesMaxPoints \
         points of each key, default 1000), not ThingsBoard's database; the interval is measured from each \
         message's ts (ThingsBoard: the server clock; `useServerTime: true` for that)",
    );
    for note in notes {
        fragment = fragment.note(note);
    }
    Ok(Ok(fragment))
}

/// The metadata key the importer's details script writes for the alarm node after it.
const DETAILS_KEY: &str = "alarmDetails";

/// Whitespace and `//` comments removed: to recognise ThingsBoard's default details script.
fn normalized(body: &str) -> String {
    body.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<String>().split_whitespace().collect()
}

/// ThingsBoard's default details script (create and clear alarm, JS and TBEL): the previous
/// details, unchanged.
fn is_default_details(body: &str) -> bool {
    let n = normalized(body);
    n.is_empty()
        || n == "vardetails={};if(metadata.prevAlarmDetails){details=JSON.parse(metadata.prevAlarmDetails);deletemetadata.prevAlarmDetails;}returndetails;"
        || n == "vardetails={};if(metadata.prevAlarmDetails!=null){details=JSON.parse(metadata.prevAlarmDetails);metadata.remove('prevAlarmDetails');}returndetails;"
        || n == "returnmetadata.prevAlarmDetails!=null?JSON.parse(metadata.prevAlarmDetails):{};"
        || n == "vardetails={};if(metadata.prevAlarmDetails){details=JSON.parse(metadata.prevAlarmDetails);}returndetails;"
}

/// The alarm node's details script: `None` for the default one (the alarm keeps its details),
/// else a `script` transform that runs it and writes its result as JSON into metadata
/// [`DETAILS_KEY`].
fn details_script(c: &Ctx) -> Result<Option<Part>, ImportError> {
    let tbel = c.cfg.opt_str("scriptLang")? == Some("TBEL");
    let body = if tbel { c.cfg.opt_str("alarmDetailsBuildTbel")? } else { c.cfg.opt_str("alarmDetailsBuildJs")? };
    let Some(body) = body.filter(|b| !is_default_details(b)) else { return Ok(None) };
    let script = format!(
        "var __details = (function() {{\n{body}\n}})();\nmetadata.{DETAILS_KEY} = JSON.stringify(__details === undefined ? {{}} : __details);\nreturn {{msg: msg, metadata: metadata, msgType: msgType}};"
    );
    let mut config = json!({"mode": "transform", "script": script});
    if tbel {
        config["lang"] = json!("tbel");
    }
    Ok(Some(Part::module("script", config).suffix("details")))
}

/// `TbCreateAlarmNode` → `create-alarm` (behind a `script` node when it has a details script).
pub(crate) fn create_alarm(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = [
        "alarmType",
        "severity",
        "dynamicSeverity",
        "propagate",
        "propagateToOwner",
        "propagateToTenant",
        "relationTypes",
        "useMessageAlarmData",
        "overwriteAlarmDetails",
    ];
    let mut config = Value::Object(pick(Some(c.cfg.value), &keys));
    // Before `dynamicSeverity` (3.2), a severity pattern was simply written in `severity`.
    if config["severity"].as_str().is_some_and(|s| s.contains("${") || s.contains("$[")) {
        config["dynamicSeverity"] = json!(true);
    }
    alarm_fragment(c, "create-alarm", &mut config, true)
}

/// `TbClearAlarmNode` → `clear-alarm` (behind a `script` node when it has a details script).
pub(crate) fn clear_alarm(c: &Ctx) -> Result<Outcome, ImportError> {
    let mut config = json!({"alarmType": c.cfg.str("alarmType")?});
    alarm_fragment(c, "clear-alarm", &mut config, false)
}

fn alarm_fragment(c: &Ctx, module: &'static str, config: &mut Value, create: bool) -> Result<Outcome, ImportError> {
    let notes = vec!["the alarm lives in the chain's `alarms` table; connect Created/Updated/Cleared to a sink or an action to send alarms out".to_string()];
    let fragment = match details_script(c)? {
        None => {
            if create {
                config["keepPreviousDetails"] = json!(true);
            }
            Fragment::one(Part::module(module, config.clone()))
        }
        Some(script) => {
            config["detailsFromMetadata"] = json!(DETAILS_KEY);
            let reads_previous = ["prevAlarmDetails"].iter().any(|k| {
                let tbel = c.cfg.opt_str("alarmDetailsBuildTbel").ok().flatten().unwrap_or_default();
                let js = c.cfg.opt_str("alarmDetailsBuildJs").ok().flatten().unwrap_or_default();
                tbel.contains(k) || js.contains(k)
            });
            let note = if reads_previous {
                // `details = JSON.parse(metadata.prevAlarmDetails); details.x = …`: the new keys
                // merged over the previous details give the same alarm.
                config["keepPreviousDetails"] = json!(true);
                format!(
                    "its details script runs in a `script` node in front, writing metadata `{DETAILS_KEY}`; it reads `metadata.prevAlarmDetails`, which it does not get: what it returns is merged over the alarm's previous details (`keepPreviousDetails`)"
                )
            } else {
                format!("its details script runs in a `script` node in front, writing metadata `{DETAILS_KEY}`")
            };
            Fragment::one(script).then("Success", Part::module(module, config.clone())).note(note)
        }
    };
    let mut fragment = fragment;
    fragment.notes.extend(notes);
    Ok(Ok(fragment))
}

/// `TbDeviceProfileNode` → `device-profile`. The alarm rules live in ThingsBoard's device
/// profiles, which a rule chain export does not carry: the node passes every message on
/// `Success` (what the entry of most 3.2+ root chains must do) until `alarms` is filled in.
pub(crate) fn device_profile(c: &Ctx) -> Result<Outcome, ImportError> {
    let profiles = &c.names.profiles;
    if !profiles.is_empty() {
        let config = json!({"profiles": profiles.iter().map(|p| p.config()).collect::<Vec<_>>()});
        let listed: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        let fallback = match profiles.iter().find(|p| p.default) {
            Some(p) => format!("; a device of a profile not listed gets the default profile {:?}", p.name),
            None if profiles.len() == 1 => "; a message without `deviceType` gets it too".to_string(),
            None => "; a device of a profile not listed is only passed on (no default profile given)".to_string(),
        };
        let mut fragment = Fragment::one(Part::module("device-profile", config)).note(format!(
            "alarm rules of the device profile(s) {} (--profiles), picked by the message's `deviceType` metadata (the device's profile name){fallback}",
            listed.join(", ")
        ));
        if c.cfg.get("alarms").is_some() {
            fragment = fragment.note("the node's own `alarms` are replaced by the --profiles given");
        }
        return Ok(Ok(fragment));
    }
    let config = match c.cfg.get("alarms") {
        // A hand-edited export may carry the profile's `profileData.alarms`.
        Some(alarms @ Value::Array(_)) => json!({ "alarms": alarms }),
        _ => json!({}),
    };
    let fragment = Fragment::one(Part::module("device-profile", config.clone()));
    Ok(Ok(if config.get("alarms").is_some() {
        fragment
    } else {
        fragment.note(
            "passes every message on Success; the device profile's alarm rules are not in the export: give the device profile export with --profiles FILE (or put its `profileData.alarms` in the node's `config.alarms`) to evaluate them",
        )
    }))
}

/// The MQTT connector the RPC nodes publish through: a ThingsBoard export names no broker (the
/// device sessions are ThingsBoard's own), so `${MQTT_URL}`, default a local broker; the call
/// timeout (no PUBACK in time → `Failure`) from `timeoutInSeconds` when given.
fn rpc_connector(timeout_s: Option<u64>) -> Want {
    Want {
        base: "mqtt",
        build: Box::new(move |env| ConnectorSpec {
            kind: ConnectorKind::Mqtt(MqttConnection {
                url: format!("${{{env}_URL:-{RPC_BROKER}}}"),
                client_id: None,
                username: None,
                password: None,
                ca_file: None,
                keep_alive_s: None,
                protocol_version: None,
            }),
            policy: CallPolicySpec { timeout_ms: timeout_s.map(|s| s.saturating_mul(1000)), ..Default::default() },
        }),
    }
}

/// The broker the RPC nodes' connector defaults to.
pub(crate) const RPC_BROKER: &str = "mqtt://localhost:1883";

/// `TbSendRPCRequestNode` → `rpc-request` (one-way) with an MQTT connector.
pub(crate) fn rpc_request(c: &Ctx) -> Result<Outcome, ImportError> {
    let timeout = c.cfg.opt_u64("timeoutInSeconds")?.filter(|s| *s > 0);
    let part = Part::module("rpc-request", json!({})).granted(rpc_connector(timeout));
    let timeout = match timeout {
        Some(s) => format!("timeoutInSeconds {s} -> the connector's timeoutMs (no PUBACK in time -> Failure)"),
        None => "no timeoutInSeconds: the connector's default timeout applies".into(),
    };
    Ok(Ok(Fragment::one(part)
        .note(format!(
            "one-way only: publishes {{\"method\", \"params\"}} on `v1/devices/${{deviceName}}/rpc/request/${{requestId}}` through the MQTT connector (${{MQTT_URL:-{RPC_BROKER}}}) and sends data {{}} on Success once the broker acknowledged it; a two-way call's answer is not waited for (the connector publishes, it does not subscribe to the device's response topic); set `mode: gateway` for devices behind a ThingsBoard gateway (`v1/gateway/rpc`)"
        ))
        .note(timeout)))
}

/// `TbSendRPCReplyNode` → `rpc-reply` with an MQTT connector.
pub(crate) fn rpc_reply(c: &Ctx) -> Result<Outcome, ImportError> {
    let mut config = json!({});
    if let Some(key) = c.cfg.opt_str("requestIdMetaDataAttribute")?.filter(|k| !k.is_empty() && *k != "requestId") {
        config["requestIdMetaDataAttribute"] = json!(key);
    }
    let part = Part::module("rpc-reply", config).granted(rpc_connector(None));
    Ok(Ok(Fragment::one(part).note(format!(
        "publishes the data as the reply on `v1/devices/${{deviceName}}/rpc/response/${{requestId}}` through the MQTT connector (${{MQTT_URL:-{RPC_BROKER}}}); the serviceId / sessionId metadata (ThingsBoard's device session) are not needed"
    ))))
}

// ---- Entity relations: the relation nodes over the chains' `relations` table (see
// `crate::relations` for the table, `sluice_sdk::entity_relations` for its layout).

/// ThingsBoard's `RelationsQuery` (`direction`, `maxLevel`, `filters` of `relationType` +
/// `entityTypes`, `fetchLastLevelOnly`), keeping only those keys.
/// `field`, when given, is ThingsBoard's `EntitySearchDirection` the relation rules read
/// (`FROM`, `TO`).
fn check_direction(c: &Ctx, field: &str, value: Option<&Value>) -> Result<(), ImportError> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(()),
        Some(v) => serde_json::from_value::<sluice_sdk::entity_relations::Direction>(v.clone())
            .map(|_| ())
            .map_err(|_| c.cfg.error(field, format!("expected FROM or TO, got {v}"))),
    }
}

/// `field` as a template of the message's `${metadata}` / `$[data]`, as the rule parses it.
fn check_template(c: &Ctx, field: &str, required: bool) -> Result<(), ImportError> {
    let text = if required { Some(c.cfg.str(field)?) } else { c.cfg.opt_str(field)? };
    match text.map(sluice_sdk::Template::parse) {
        Some(Err(e)) => Err(c.cfg.error(field, format!("not a template: {e}"))),
        _ => Ok(()),
    }
}

/// `field`, when given, is a non-empty text (a relation type: the rules refuse an empty one).
fn check_nonempty(c: &Ctx, field: &str) -> Result<(), ImportError> {
    match c.cfg.opt_str(field)? {
        Some(text) if text.trim().is_empty() => Err(c.cfg.error(field, "must not be empty")),
        _ => Ok(()),
    }
}

/// An entity type the relation rules accept (`ASSET`, `DEVICE`…: not empty, no `:`).
fn check_entity_type(c: &Ctx, required: bool) -> Result<(), ImportError> {
    let kind = if required { Some(c.cfg.str("entityType")?) } else { c.cfg.opt_str("entityType")? };
    match kind {
        Some(kind) if kind.trim().is_empty() || kind.contains(':') => {
            Err(c.cfg.error("entityType", "must name an entity type such as ASSET or DEVICE"))
        }
        _ => Ok(()),
    }
}

fn relations_query(c: &Ctx) -> Result<Value, ImportError> {
    let Some(query @ Value::Object(_)) = c.cfg.get("relationsQuery") else {
        return Err(c.cfg.error("relationsQuery", "missing: the relations query to search related entities with"));
    };
    let mut out = pick(Some(query), &["direction", "maxLevel", "fetchLastLevelOnly"]);
    let filters: Vec<Value> = match query.get("filters") {
        Some(Value::Array(filters)) => {
            filters.iter().map(|f| Value::Object(pick(Some(f), &["relationType", "entityTypes"]))).collect()
        }
        _ => Vec::new(),
    };
    out.insert("filters".into(), Value::Array(filters));
    let out = Value::Object(out);
    // As the rules will read it: a direction, a number of levels, filters of texts.
    if let Err(e) = serde_json::from_value::<sluice_sdk::entity_relations::RelationsQuery>(out.clone()) {
        return Err(c.cfg.error("relationsQuery", format!("not a relations query: {e}")));
    }
    Ok(out)
}

/// `TbCreateRelationNode` → `create-relation`: ThingsBoard's configuration keys.
pub(crate) fn create_relation(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = [
        "direction",
        "entityType",
        "entityNamePattern",
        "entityTypePattern",
        "relationType",
        "removeCurrentRelations",
        "changeOriginatorToRelatedEntity",
        "createEntityIfNotExists",
        "entityCacheExpiration",
    ];
    check_direction(c, "direction", c.cfg.get("direction"))?;
    check_entity_type(c, true)?;
    check_template(c, "entityNamePattern", true)?;
    check_nonempty(c, "relationType")?;
    c.cfg.opt_str("entityTypePattern")?;
    for flag in ["removeCurrentRelations", "changeOriginatorToRelatedEntity", "createEntityIfNotExists"] {
        c.cfg.opt_bool(flag)?;
    }
    c.cfg.opt_u64("entityCacheExpiration")?;
    let config = Value::Object(pick(Some(c.cfg.value), &keys));
    let mut fragment = Fragment::one(Part::module("create-relation", config));
    if c.cfg.opt_bool("createEntityIfNotExists")? == Some(true) {
        fragment = fragment
            .note("createEntityIfNotExists is moot: Sluice keeps no entity registry, an entity exists by being named");
    }
    Ok(Ok(fragment))
}

/// `TbDeleteRelationNode` → `delete-relation`: ThingsBoard's configuration keys.
pub(crate) fn delete_relation(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = [
        "deleteForSingleEntity",
        "direction",
        "entityType",
        "entityNamePattern",
        "relationType",
        "entityCacheExpiration",
    ];
    let single = c.cfg.opt_bool("deleteForSingleEntity")?.unwrap_or(false);
    check_direction(c, "direction", c.cfg.get("direction"))?;
    if single {
        check_entity_type(c, true)?;
    } else {
        c.cfg.opt_str("entityType")?;
    }
    check_template(c, "entityNamePattern", single)?;
    check_nonempty(c, "relationType")?;
    c.cfg.opt_u64("entityCacheExpiration")?;
    let config = Value::Object(pick(Some(c.cfg.value), &keys));
    Ok(Ok(Fragment::one(Part::module("delete-relation", config))))
}

/// `TbCheckRelationNode` → `check-relation`. ThingsBoard names the single entity by id: when
/// `--relations` names that id, the node checks by name; otherwise by the id, which only
/// relations seeded with it carry (noted).
pub(crate) fn check_relation(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = ["checkForSingleEntity", "direction", "entityType", "relationType"];
    let mut config = pick(Some(c.cfg.value), &keys);
    let id = c.cfg.opt_str("entityId")?.filter(|id| !id.is_empty());
    let single = c.cfg.opt_bool("checkForSingleEntity")?.unwrap_or(id.is_some());
    check_direction(c, "direction", c.cfg.get("direction"))?;
    check_nonempty(c, "relationType")?;
    if single {
        check_entity_type(c, true)?;
    } else {
        c.cfg.opt_str("entityType")?;
    }
    let mut note = None;
    if single {
        let Some(id) = id else {
            return Err(c.cfg.error("entityId", "missing: the entity to check the relation with"));
        };
        match c.names.relations.as_ref().and_then(|r| r.name_of(id)) {
            Some((_, name)) => {
                config.insert("entityName".into(), json!(name));
            }
            None => {
                config.insert("entityId".into(), json!(id));
                note = Some(format!(
                    "checks the relation with ThingsBoard entity {id} by its id: give it a name in `--relations` \
                     (an entry with its id and name) to check by name, as Sluice names entities"
                ));
            }
        }
    } else {
        config.insert("relationsQuery".into(), relations_query(c)?);
    }
    let fragment = Fragment::one(Part::module("check-relation", Value::Object(config)));
    Ok(Ok(match note {
        Some(note) => fragment.note(note),
        None => fragment,
    }))
}

/// `TbChangeOriginatorNode` with `originatorSource` RELATED → `change-originator`.
pub(crate) fn change_originator_related(c: &Ctx) -> Result<Outcome, ImportError> {
    let config = json!({"originatorSource": "RELATED", "relationsQuery": relations_query(c)?});
    Ok(Ok(Fragment::one(Part::module("change-originator", config))))
}

/// `TbGetRelatedAttributeNode` → `originator-attributes` with `related`: the first related
/// entity's server attributes (`TbEntityGetAttrNode`: `SERVER_SCOPE`) or latest telemetry
/// (`telemetry: true`, 3.5+'s `dataToFetch: LATEST_TELEMETRY`), into metadata or (`fetchTo`)
/// data.
pub(crate) fn related_attributes(c: &Ctx) -> Result<Outcome, ImportError> {
    let table = match (c.cfg.opt_str("dataToFetch")?, c.cfg.opt_bool("telemetry")?) {
        (Some("LATEST_TELEMETRY"), _) | (None, Some(true)) => super::thingsboard::TIMESERIES_TABLE,
        (Some("ATTRIBUTES"), _) | (None, _) => "server_attributes",
        (Some("FIELDS"), _) => {
            return Ok(Err(
                "fetches entity fields (name, type, label…) of the related entity, which Sluice does not keep".into(),
            ));
        }
        (Some(other), _) => {
            return Err(c
                .cfg
                .error("dataToFetch", format!("expected ATTRIBUTES, LATEST_TELEMETRY or FIELDS, got {other}")));
        }
    };
    let field = if c.cfg.get("dataMapping").is_some() { "dataMapping" } else { "attrMapping" };
    let mapping = c.cfg.string_map(field)?;
    if mapping.is_empty() {
        return Err(c.cfg.error(field, "no keys to fetch"));
    }
    if let Some((key, value)) = mapping.iter().find(|(_, v)| !v.is_string()) {
        return Err(c.cfg.error(&format!("{field}.{key}"), format!("the target key must be a string, not {value}")));
    }
    if mapping.iter().any(|(k, v)| {
        k.contains("${") || k.contains("$[") || v.as_str().is_some_and(|v| v.contains("${") || v.contains("$["))
    }) {
        return Ok(Err(format!("its `{field}` has templates (`${{…}}`), which are not rendered per message")));
    }
    let to = match c.cfg.opt_str("fetchTo")? {
        None | Some("METADATA") => "metadata",
        Some("DATA") => "data",
        Some(other) => return Err(c.cfg.error("fetchTo", format!("expected METADATA or DATA, got {other}"))),
    };
    let config = json!({"table": table, "attributes": mapping, "to": to, "related": relations_query(c)?});
    Ok(Ok(Fragment::one(Part::module("originator-attributes", config)).note(format!(
        "reads the related entity's entry in `{table}`, which the chain's save-{} nodes keep",
        if table == "server_attributes" { "attributes (server scope)" } else { "timeseries" }
    ))))
}
