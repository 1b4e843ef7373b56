//! ThingsBoard 2.x–4.x rule chain exports → Sluice chains.
//!
//! An export is `{ruleChain, metadata}` (the UI's export), `{ruleChains: […], metadata: […]}` (a
//! bulk export, matched by `ruleChainId` or by position) or the bare `metadata` object. The
//! metadata holds `nodes` (each a `type` = Java class, `name`, `configuration`, `debugMode` or
//! 3.9+'s `debugSettings`), `connections` (`fromIndex`, `toIndex`, `type` = relation),
//! `firstNodeIndex` and, before 3.x, `ruleChainConnections` (a relation jumping to another chain
//! by id). Any of `nodes`, `connections`, `ruleChainConnections` and `firstNodeIndex` may be
//! `null`.
//!
//! Each node class is converted by the function [`CONVERTERS`] lists for it; a class it does not
//! list becomes a placeholder, with the reason [`UNSUPPORTED`] gives (or a generic one).
//! Connections keep their relation names exactly; `Failure` leaves from every node of a fragment,
//! any other relation from its last.

use std::path::Path;

use serde_json::{Map, Value, json};

use sluice_core::spec::{CallPolicySpec, ChainSpec, ConnectorKind, ConnectorSpec, KafkaConnection, MqttConnection};

use super::Names;
use super::draft::{Draft, Fragment, Part, Placed, Want, slug};
use super::error::ImportError;
use super::fields::Fields;
use super::report::{Finding, FindingKind, UNRESOLVED_LINK};
use super::secrets;

/// One rule chain of an export, read but not converted.
#[derive(Debug, Clone)]
pub struct RuleChain {
    pub name: String,
    /// `ruleChain.id.id`, when the export has it (bulk exports do).
    pub id: Option<String>,
    /// `"type": "EDGE"`.
    pub edge: bool,
    pub first: Option<usize>,
    pub nodes: Vec<RuleNode>,
    pub connections: Vec<Connection>,
    /// Legacy `ruleChainConnections`: a relation from a node into another chain.
    pub chain_links: Vec<ChainLink>,
}

#[derive(Debug, Clone)]
pub struct RuleNode {
    /// The Java class, e.g. `org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode`.
    pub class: String,
    pub name: String,
    pub debug: bool,
    pub config: Value,
}

impl RuleNode {
    /// The class without its package: `TbMsgTypeSwitchNode`.
    pub fn short(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub from: usize,
    pub to: usize,
    pub relation: String,
}

#[derive(Debug, Clone)]
pub struct ChainLink {
    pub from: usize,
    pub target: String,
    pub relation: String,
}

/// The shape of the file and its rule chains.
pub fn parse(file: &Path, value: &Value) -> Result<(String, Vec<RuleChain>), ImportError> {
    if let Some(chains) = value.get("ruleChains") {
        let Value::Array(chains) = chains else {
            return Err(crate::error::invalid(file, "expected a list of rule chains").field("ruleChains"));
        };
        let Some(Value::Array(metadata)) = value.get("metadata") else {
            return Err(crate::error::invalid(file, "a bulk export needs a `metadata` list").field("metadata"));
        };
        let mut out = Vec::new();
        for (i, chain) in chains.iter().enumerate() {
            let id = entity_id(chain.get("id"));
            // Matched by id, else by position.
            let found =
                metadata.iter().enumerate().find(|(_, m)| id.is_some() && entity_id(m.get("ruleChainId")) == id);
            let (m, meta) = match found.or_else(|| metadata.get(i).map(|m| (i, m))) {
                Some(hit) => hit,
                None => {
                    return Err(crate::error::invalid(file, "no metadata for this rule chain")
                        .field(format!("ruleChains[{i}]")));
                }
            };
            out.push(chain_of(file, Some(chain), meta, &format!("metadata[{m}]"), &format!("ruleChains[{i}]"))?);
        }
        return Ok((format!("ThingsBoard bulk rule chain export ({} chains)", out.len()), out));
    }
    if let Some(meta) = value.get("metadata") {
        let chain = chain_of(file, value.get("ruleChain"), meta, "metadata", "ruleChain")?;
        return Ok(("ThingsBoard rule chain export".into(), vec![chain]));
    }
    let chain = chain_of(file, None, value, "", "")?;
    Ok(("ThingsBoard rule chain metadata (no ruleChain wrapper)".into(), vec![chain]))
}

/// `{"entityType": "RULE_CHAIN", "id": "…"}` or a bare id string.
fn entity_id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") }
}

fn index(file: &Path, value: Option<&Value>, len: usize, field: String) -> Result<Option<usize>, ImportError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().map(|n| n as usize) {
            Some(n) if n < len => Ok(Some(n)),
            Some(n) => Err(crate::error::invalid(file, format!("node {n} does not exist ({len} nodes)")).field(field)),
            None => Err(crate::error::invalid(file, format!("expected a node index, got {v}")).field(field)),
        },
    }
}

fn list<'a>(file: &Path, value: Option<&'a Value>, field: String) -> Result<&'a [Value], ImportError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(crate::error::invalid(file, "expected a list").field(field)),
    }
}

fn chain_of(
    file: &Path,
    header: Option<&Value>,
    meta: &Value,
    at: &str,
    header_at: &str,
) -> Result<RuleChain, ImportError> {
    if !meta.is_object() {
        return Err(crate::error::invalid(file, "expected an object").field(if at.is_empty() { "(root)" } else { at }));
    }
    let name = match header.and_then(|h| h.get("name")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(
                crate::error::invalid(file, format!("expected a string, got {other}")).field(join(header_at, "name"))
            );
        }
        None => file.file_stem().map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned()),
    };
    let id = header.and_then(|h| entity_id(h.get("id")));
    let edge = header.and_then(|h| h.get("type")).and_then(Value::as_str) == Some("EDGE");
    let raw_nodes = list(file, meta.get("nodes"), join(at, "nodes"))?;
    let mut nodes = Vec::with_capacity(raw_nodes.len());
    for (i, node) in raw_nodes.iter().enumerate() {
        let here = format!("node {i}");
        let f = Fields { file, at: &here, path: "", value: node };
        let class = f.str("type")?.to_string();
        let name = f.opt_str("name")?.unwrap_or_default().to_string();
        let settings = f.object("debugSettings", "debugSettings")?;
        // 3.9+'s `allEnabledUntil` is a time-limited debug window (long expired in exports), and
        // `failuresEnabled` is what Sluice does anyway (unhandled failures are logged): neither
        // turns `debug` on.
        let debug = f.opt_bool("debugMode")?.unwrap_or(false) || settings.opt_bool("allEnabled")?.unwrap_or(false);
        let config = node.get("configuration").cloned().unwrap_or(Value::Null);
        nodes.push(RuleNode { class, name, debug, config });
    }
    let len = nodes.len();
    let first = index(file, meta.get("firstNodeIndex"), len, join(at, "firstNodeIndex"))?;
    let mut connections = Vec::new();
    for (i, c) in list(file, meta.get("connections"), join(at, "connections"))?.iter().enumerate() {
        let field = |f: &str| join(at, &format!("connections[{i}].{f}"));
        let from = index(file, c.get("fromIndex"), len, field("fromIndex"))?;
        let to = index(file, c.get("toIndex"), len, field("toIndex"))?;
        let relation = c.get("type").and_then(Value::as_str).filter(|r| !r.trim().is_empty());
        match (from, to, relation) {
            (Some(from), Some(to), Some(relation)) => {
                connections.push(Connection { from, to, relation: relation.to_string() })
            }
            (None, _, _) => return Err(crate::error::invalid(file, "missing").field(field("fromIndex"))),
            (_, None, _) => return Err(crate::error::invalid(file, "missing").field(field("toIndex"))),
            (_, _, None) => return Err(crate::error::invalid(file, "missing or empty relation").field(field("type"))),
        }
    }
    let mut chain_links = Vec::new();
    for (i, c) in list(file, meta.get("ruleChainConnections"), join(at, "ruleChainConnections"))?.iter().enumerate() {
        let field = |f: &str| join(at, &format!("ruleChainConnections[{i}].{f}"));
        let from = index(file, c.get("fromIndex"), len, field("fromIndex"))?
            .ok_or_else(|| crate::error::invalid(file, "missing").field(field("fromIndex")))?;
        let target = entity_id(c.get("targetRuleChainId"))
            .ok_or_else(|| crate::error::invalid(file, "missing").field(field("targetRuleChainId")))?;
        let relation = c
            .get("type")
            .and_then(Value::as_str)
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| crate::error::invalid(file, "missing or empty relation").field(field("type")))?;
        chain_links.push(ChainLink { from, target, relation: relation.to_string() });
    }
    Ok(RuleChain { name, id, edge, first, nodes, connections, chain_links })
}

/// What a converter sees: the node, its configuration and the relations it is connected on.
pub(crate) struct Ctx<'a> {
    pub node: &'a RuleNode,
    pub cfg: Fields<'a>,
    pub relations: Vec<&'a str>,
    pub names: &'a Names,
    /// The file this chain becomes (a link by name never goes to its own chain).
    pub own: &'a str,
}

/// A converter's answer: the fragment, or why the node cannot be converted (a placeholder).
pub(crate) type Outcome = Result<Fragment, String>;
type Convert = fn(&Ctx) -> Result<Outcome, ImportError>;

/// Node class (without package) → converter.
pub(crate) const CONVERTERS: &[(&str, Convert)] = &[
    ("TbMsgTypeSwitchNode", msg_type_switch),
    ("TbMsgTypeFilterNode", msg_type_filter),
    ("TbOriginatorTypeFilterNode", originator_type_filter),
    ("TbJsFilterNode", |c| script(c, "filter")),
    ("TbJsSwitchNode", |c| script(c, "switch")),
    ("TbTransformMsgNode", |c| script(c, "transform")),
    ("TbMsgGeneratorNode", generator),
    ("TbLogNode", log),
    ("TbCheckMessageNode", check_fields),
    ("TbGetAttributesNode", originator_attributes),
    ("TbChangeOriginatorNode", change_originator),
    ("TbCreateRelationNode", super::thingsboard_rules::create_relation),
    ("TbDeleteRelationNode", super::thingsboard_rules::delete_relation),
    ("TbCheckRelationNode", super::thingsboard_rules::check_relation),
    ("TbGetRelatedAttributeNode", super::thingsboard_rules::related_attributes),
    ("TbMsgTimeseriesNode", save_timeseries),
    ("TbMsgAttributesNode", save_attributes),
    ("TbKafkaNode", kafka),
    ("TbRestApiCallNode", rest),
    ("TbMqttNode", mqtt),
    ("TbMsgDelayNode", delay),
    ("TbRenameKeysNode", rename_keys),
    ("TbRuleChainInputNode", rule_chain_input),
    ("TbRuleChainOutputNode", rule_chain_output),
    ("TbCheckpointNode", checkpoint),
    ("TbMathNode", super::thingsboard_rules::math),
    ("CalculateDeltaNode", super::thingsboard_rules::calculate_delta),
    ("TbCreateAlarmNode", super::thingsboard_rules::create_alarm),
    ("TbClearAlarmNode", super::thingsboard_rules::clear_alarm),
    ("TbDeviceProfileNode", super::thingsboard_rules::device_profile),
    ("TbSendRPCRequestNode", super::thingsboard_rules::rpc_request),
    ("TbSendRPCReplyNode", super::thingsboard_rules::rpc_reply),
    ("TbGetTelemetryNode", super::thingsboard_rules::get_telemetry),
];

/// The relations each built-in module sends on besides `Failure`, as its manifest declares them
/// (`#[node(relations = …)]`): a connection on any other relation would be refused at load, and
/// never carried a message in ThingsBoard either (the mapped node sends on the relations
/// ThingsBoard's does), so the importer drops it with a note. Modules whose relations also come
/// from their config or their code (`script`, `msg-type-switch`, windows, `unsupported`…) are not
/// listed: any relation may be right. The e2e tests check this table against the built modules'
/// manifests.
pub const EMITS: &[(&str, &[&str])] = &[
    ("attribute-filter", &["True", "False"]),
    ("check-fields", &["True", "False"]),
    ("expression-filter", &["True", "False"]),
    ("transform", &["Success"]),
    ("rename-keys", &["Success"]),
    ("calculate-delta", &["Success", "Other"]),
    ("change-originator", &["Success"]),
    ("check-relation", &["True", "False"]),
    ("clear-alarm", &["Cleared", "False"]),
    ("create-alarm", &["Created", "Updated", "False"]),
    ("create-relation", &["Success"]),
    ("delay", &["Success"]),
    ("delete-relation", &["Success"]),
    ("device-profile", &["Success", "Alarm Created", "Alarm Updated", "Alarm Severity Updated", "Alarm Cleared"]),
    ("generator", &["Success"]),
    ("get-telemetry", &["Success"]),
    ("json-decoder", &["Success"]),
    ("kafka-action", &["Success"]),
    ("log", &["Success"]),
    ("math", &["Success"]),
    ("mqtt-action", &["Success"]),
    ("originator-attributes", &["Success"]),
    ("rest-action", &["Success"]),
    ("rpc-reply", &["Success"]),
    ("rpc-request", &["Success"]),
    ("table-writer", &["Success"]),
    ("threshold", &["Anomaly", "Normal"]),
    ("uplink-decoder", &["Success"]),
];

/// Whether node `from`'s connection on `relation` (to `to`, for the note) is one its module never
/// sends on ([`EMITS`]): then it is left out, with a note.
fn never_sent(draft: &mut Draft, chain: &RuleChain, placed: &[Placed], from: usize, relation: &str, to: &str) -> bool {
    let Some(module) = draft.module_of(&placed[from].exit).map(str::to_string) else { return false };
    let Some(sends) = emits(&module).filter(|e| relation != crate::FAILURE && !e.contains(&relation)) else {
        return false;
    };
    let node = &chain.nodes[from];
    let text = format!(
        "connection on `{relation}` to {to} dropped: `{module}` sends only on {} and Failure, as ThingsBoard's {} does, \
         so it never carried a message",
        sends.join(", "),
        node.short()
    );
    draft.note(&format!("node {from}"), node.short(), &node.name, text);
    true
}

/// The relations `module` sends on besides `Failure`, when they are fixed ([`EMITS`]).
fn emits(module: &str) -> Option<&'static [&'static str]> {
    EMITS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Why the classes Sluice knows it cannot run yet are placeholders.
pub(crate) const UNSUPPORTED: &[(&str, &str)] = &[
    ("TbMsgPushToCloudNode", "pushes to ThingsBoard Cloud from an Edge; Sluice has no cloud link"),
    ("TbMsgPushToEdgeNode", "pushes to a ThingsBoard Edge; Sluice has no edge link"),
    ("TbGetCustomerAttributeNode", "reads attributes of the originator's customer, which Sluice does not keep"),
    ("TbGetTenantAttributeNode", "reads attributes of the tenant, which Sluice does not keep"),
    ("TbSendEmailNode", "sends e-mail; Sluice has no mail connector"),
    ("TbMsgToEmailNode", "builds e-mail for the send e-mail node; Sluice has no mail connector"),
    (
        "TbSendSmsNode",
        "sends SMS through ThingsBoard's SMS provider settings, a platform service Sluice does not have; use `rest-action` to your SMS provider's HTTP API",
    ),
    (
        "TbNotificationNode",
        "sends through ThingsBoard's notification center (templates, recipients, delivery methods), a platform service Sluice does not have; use `rest-action` to a notification HTTP API (Slack, Teams, a push service) or `kafka-action` to a notifier",
    ),
    (
        "TbSlackNode",
        "posts through the Slack settings of ThingsBoard's notification center, a platform service Sluice does not have; use `rest-action` to Slack's `chat.postMessage` (token in the connector's headers)",
    ),
    (
        "TbAiNode",
        "calls the AI model configured in ThingsBoard's AI settings, a platform service Sluice does not have; use `rest-action` to the model provider's HTTP API",
    ),
    (
        "TbDuplicateMsgToGroupNode",
        "duplicates the message to each entity of a ThingsBoard entity group (Professional Edition), which Sluice does not keep; use `change-originator` per known entity, or `kafka-action` to a fan-out service",
    ),
    (
        "TbDuplicateMsgToRelatedNode",
        "duplicates the message to related entities; Sluice does not fan a message out to them",
    ),
    (
        "TbAssignToCustomerNode",
        "assigns the originator to a ThingsBoard customer, a platform entity Sluice does not have",
    ),
    (
        "TbUnassignFromCustomerNode",
        "unassigns the originator from a ThingsBoard customer, a platform entity Sluice does not have",
    ),
    ("TbCopyAttributesToEntityViewNode", "copies attributes to ThingsBoard entity views, which Sluice does not have"),
    (
        "TbDeviceStateNode",
        "drives ThingsBoard's device state service (activity, connect/disconnect), which Sluice does not have",
    ),
    (
        "TbSendRestApiCallReplyNode",
        "answers a request of ThingsBoard's REST API (`/api/rule-engine`), which Sluice does not serve; use the `http` source and `rest-action`",
    ),
    (
        "TbIntegrationDownlinkNode",
        "sends a downlink through a ThingsBoard integration (Professional Edition), a platform service Sluice does not have; use `mqtt-action`, `rest-action` or `kafka-action` to the device's network",
    ),
];

/// What to use instead of a node whose reason in [`UNSUPPORTED`] is a ThingsBoard platform
/// service (the rows added since give it in their reason).
const INSTEAD: &[(&str, &str)] = &[
    ("TbMsgPushToCloudNode", "`kafka-action` or `mqtt-action` to where the data should go"),
    ("TbMsgPushToEdgeNode", "`kafka-action` or `mqtt-action` to where the data should go"),
    ("TbSendEmailNode", "`rest-action` to a mail HTTP API (SendGrid, Mailgun, SES)"),
    ("TbMsgToEmailNode", "`script` (transform) to build the mail and `rest-action` to a mail HTTP API"),
];

/// The built-in node classes of ThingsBoard 2.x–4.x that have no Sluice node and no reason of
/// their own in [`UNSUPPORTED`]: a class in neither list is not a built-in (a typo, or a custom
/// node), which the placeholder says differently.
const BUILT_IN: &[&str] = &[
    "TbAckNode",
    "TbAlarmsCountNode",
    "TbAlarmsCountNodeV2",
    "TbAssetTypeSwitchNode",
    "TbAwsLambdaNode",
    "TbAzureIotHubNode",
    "TbCalculatedFieldsNode",
    "TbCheckAlarmStatusNode",
    "TbClearAlarmNode",
    "TbCopyKeysNode",
    "TbCreateAlarmNode",
    "TbDeduplicationNode",
    "TbDeleteKeysNode",
    "TbDeviceProfileNode",
    "TbDeviceTypeSwitchNode",
    "TbFetchDeviceCredentialsNode",
    "TbGetCustomerDetailsNode",
    "TbGetDeviceAttrNode",
    "TbGetEntityDetailsNode",
    "TbGetOriginatorFieldsNode",
    "TbGetTenantDetailsNode",
    "TbGpsGeofencingActionNode",
    "TbGpsGeofencingFilterNode",
    "TbJsonPathNode",
    "TbMathNode",
    "CalculateDeltaNode",
    "TbMsgCountNode",
    "TbMsgDeleteAttributesNode",
    "TbOriginatorTypeSwitchNode",
    "TbPubSubNode",
    "TbRabbitMqNode",
    "TbSaveToCustomCassandraTableNode",
    "TbSnsNode",
    "TbSplitArrayMsgNode",
    "TbSqsNode",
    "TbSynchronizationBeginNode",
    "TbSynchronizationEndNode",
];

/// Why a class without a converter becomes a placeholder: its own reason, a built-in Sluice
/// has no node for yet, or a class ThingsBoard does not ship.
fn unsupported_reason(class: &str, short: &str) -> String {
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(c, _)| *c == short) {
        return match INSTEAD.iter().find(|(c, _)| *c == short) {
            Some((_, instead)) => format!("{why} (a ThingsBoard platform service Sluice does not have); use {instead}"),
            None => (*why).to_string(),
        };
    }
    if BUILT_IN.contains(&short) {
        return "a ThingsBoard built-in Sluice has no node for yet".into();
    }
    format!(
        "unknown class {class}: not a ThingsBoard 1.x–4.x built-in: a custom node? Write a rule for it (`sluice rules new`) and put it in place of this node"
    )
}

fn cel_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| Value::String(s.clone()).to_string()).collect();
    format!("[{}]", quoted.join(", "))
}

/// ThingsBoard 2.0 routed `TO_SERVER_RPC_REQUEST` on `RPC Request`; later versions on
/// `RPC Request from Device`. Connections keep their names, so the switch routes on the old one.
const LEGACY_SWITCH_RELATIONS: &[(&str, &str)] = &[("RPC Request", "TO_SERVER_RPC_REQUEST")];

fn msg_type_switch(c: &Ctx) -> Result<Outcome, ImportError> {
    let mut custom = Map::new();
    let mut fragment_notes = Vec::new();
    for (old, msg_type) in LEGACY_SWITCH_RELATIONS {
        if c.relations.contains(old) {
            custom.insert((*msg_type).into(), Value::String((*old).into()));
            fragment_notes.push(format!(
                "relation `{old}` is ThingsBoard 2.0's name for {msg_type}: kept, and the switch routes {msg_type} on it"
            ));
        }
    }
    let config = if custom.is_empty() { json!({}) } else { json!({"custom": custom}) };
    let mut fragment = Fragment::one(Part::module("msg-type-switch", config));
    fragment.notes = fragment_notes;
    Ok(Ok(fragment))
}

fn msg_type_filter(c: &Ctx) -> Result<Outcome, ImportError> {
    let types = c.cfg.strings("messageTypes")?;
    let expression = format!("msgType in {}", cel_list(&types));
    Ok(Ok(Fragment::one(Part::module("expression-filter", json!({ "expression": expression })))))
}

fn originator_type_filter(c: &Ctx) -> Result<Outcome, ImportError> {
    let types = c.cfg.strings("originatorTypes")?;
    let expression = format!("originator.entityType in {}", cel_list(&types));
    Ok(Ok(Fragment::one(Part::module("expression-filter", json!({ "expression": expression })))))
}

/// TBEL constructs that are not JavaScript (the `script` node runs TBEL bodies as JavaScript).
const TBEL_ONLY: &[(&str, &str)] = &[
    ("foreach", "`foreach` loops"),
    ("def ", "`def` functions"),
    ("[:]", "`[:]` map literals"),
    (".length()", "Java's `length()` on strings"),
    ("#{", "`#{…}` inline maps"),
];

/// The body a node runs and whether it is TBEL, or why it cannot run.
fn script_body(c: &Ctx) -> Result<Result<(String, bool), String>, ImportError> {
    let lang = c.cfg.opt_str("scriptLang")?.unwrap_or("JS");
    match lang {
        "JS" => Ok(Ok((c.cfg.str("jsScript")?.to_string(), false))),
        "TBEL" => {
            let body = c.cfg.str("tbelScript")?;
            if let Some((_, what)) = TBEL_ONLY.iter().find(|(token, _)| body.contains(token)) {
                return Ok(Err(format!("its TBEL script uses {what}, which the script node cannot run")));
            }
            Ok(Ok((body.to_string(), true)))
        }
        other => Ok(Err(format!("script language `{other}` is unknown"))),
    }
}

fn script(c: &Ctx, mode: &str) -> Result<Outcome, ImportError> {
    let (body, tbel) = match script_body(c)? {
        Ok(found) => found,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut config = json!({"mode": mode, "script": body});
    let mut fragment_note = None;
    if tbel {
        config["lang"] = json!("tbel");
        fragment_note = Some("TBEL script: runs as JavaScript with TBEL's helpers (script `lang: tbel`)");
    }
    let mut fragment = Fragment::one(Part::module("script", config));
    fragment.notes.extend(fragment_note.map(str::to_string));
    Ok(Ok(fragment))
}

fn generator(c: &Ctx) -> Result<Outcome, ImportError> {
    let (body, tbel) = match script_body(c)? {
        Ok(found) => found,
        Err(reason) => return Ok(Err(reason)),
    };
    let period_ms = match (c.cfg.opt_u64("periodInSeconds")?, c.cfg.opt_u64("periodInMillis")?) {
        (_, Some(ms)) if ms > 0 => ms,
        (Some(s), _) if s > 0 => s.saturating_mul(1000),
        _ => return Err(c.cfg.error("periodInSeconds", "missing or 0")),
    };
    let count = c.cfg.opt_u64("msgCount")?.unwrap_or(0);
    let entity_type = c.cfg.opt_str("originatorType")?.filter(|t| !t.is_empty());
    let id = c.cfg.opt_str("originatorId")?.filter(|t| !t.is_empty());
    let mut notes = Vec::new();
    let originator = match (entity_type, id) {
        (Some(t), Some(id)) => {
            notes.push(format!("originator {t} {id}: the export names it by id only, so the id is its name too"));
            json!({"entityType": t, "name": id, "id": id})
        }
        _ => {
            let name = if c.node.name.is_empty() { "generator" } else { &c.node.name };
            notes.push(format!("no originator: messages come from RULE_NODE `{name}`, as in ThingsBoard"));
            json!({"entityType": "RULE_NODE", "name": name})
        }
    };
    if count == 0 {
        // TbMsgGeneratorNode: msgCount 0 (its default) generates without end.
        notes.push(
            "msgCount 0: generates without end, as in ThingsBoard; a file run then never ends by itself: stop it with SIGTERM or Ctrl-C (what was generated is finished and flushed, exit code 0)"
                .into(),
        );
    }
    let mut config =
        json!({"mode": "generator", "script": body, "periodMs": period_ms, "count": count, "originator": originator});
    if tbel {
        config["lang"] = json!("tbel");
        notes.push("TBEL script: runs as JavaScript with TBEL's helpers (script `lang: tbel`)".into());
    }
    let mut fragment = Fragment::one(Part::module("script", config));
    fragment.notes = notes;
    Ok(Ok(fragment))
}

/// ThingsBoard's default log script: the message and metadata as JSON.
const DEFAULT_LOG_SCRIPT: &str =
    "return '\\nIncoming message:\\n' + JSON.stringify(msg) + '\\nIncoming metadata:\\n' + JSON.stringify(metadata);";

fn log(c: &Ctx) -> Result<Outcome, ImportError> {
    let lang = c.cfg.opt_str("scriptLang")?.unwrap_or("JS");
    let body = if lang == "TBEL" { c.cfg.opt_str("tbelScript")? } else { c.cfg.opt_str("jsScript")? };
    let fragment = Fragment::one(Part::module("log", json!({"level": "info"})));
    Ok(Ok(match body.map(str::trim) {
        None => fragment,
        Some(body) if body == DEFAULT_LOG_SCRIPT => fragment,
        Some(_) => fragment.note("its log script is not run: the line is the whole message as JSON"),
    }))
}

fn check_fields(c: &Ctx) -> Result<Outcome, ImportError> {
    let config = json!({
        "messageNames": c.cfg.strings("messageNames")?,
        "metadataNames": c.cfg.strings("metadataNames")?,
        "checkAllKeys": c.cfg.opt_bool("checkAllKeys")?.unwrap_or(true),
    });
    Ok(Ok(Fragment::one(Part::module("check-fields", config))))
}

/// The tables ThingsBoard's stores become: attributes per scope, latest telemetry values.
pub(crate) fn attribute_table(scope: &str) -> Option<&'static str> {
    match scope {
        "CLIENT_SCOPE" => Some("client_attributes"),
        "SERVER_SCOPE" => Some("server_attributes"),
        "SHARED_SCOPE" => Some("shared_attributes"),
        _ => None,
    }
}
pub(crate) const TIMESERIES_TABLE: &str = "timeseries";

fn originator_attributes(c: &Ctx) -> Result<Outcome, ImportError> {
    let to = match c.cfg.opt_str("fetchTo")? {
        None | Some("METADATA") => "metadata",
        Some("DATA") => "data",
        Some(other) => return Err(c.cfg.error("fetchTo", format!("expected METADATA or DATA, got {other}"))),
    };
    let tell = c.cfg.opt_bool("tellFailureIfAbsent")?.unwrap_or(false);
    let scopes: [(&str, &'static str, &str, &'static str); 4] = [
        ("clientAttributeNames", "client_attributes", "cs_", "client"),
        ("sharedAttributeNames", "shared_attributes", "shared_", "shared"),
        ("serverAttributeNames", "server_attributes", "ss_", "server"),
        ("latestTsKeyNames", TIMESERIES_TABLE, "", "latest"),
    ];
    let mut fragment: Option<Fragment> = None;
    for (field, table, prefix, suffix) in scopes {
        let names = c.cfg.strings(field)?;
        if names.is_empty() {
            continue;
        }
        let config =
            json!({"table": table, "attributes": names, "prefix": prefix, "to": to, "tellFailureIfAbsent": tell});
        let part = Part::module("originator-attributes", config);
        fragment = Some(match fragment {
            None => Fragment::one(part),
            Some(f) => f.then("Success", part.suffix(suffix).named(format!("{}: {suffix}", c.node.name))),
        });
    }
    let mut fragment = match fragment {
        Some(f) => f,
        None => pass_through("fetches nothing").note("no attribute names: passes messages on unchanged"),
    };
    if c.cfg.opt_bool("getLatestValueWithTs")?.unwrap_or(false) {
        fragment = fragment.note("getLatestValueWithTs is not supported: latest values come without their ts");
    }
    Ok(Ok(fragment))
}

/// A node that forwards every message on `Success` unchanged (a debug-level log line).
fn pass_through(what: &str) -> Fragment {
    Fragment::one(Part::module("log", json!({"level": "debug", "message": format!("{what}: ${{deviceName}}")})))
}

fn change_originator(c: &Ctx) -> Result<Outcome, ImportError> {
    let source = c.cfg.opt_str("originatorSource")?.unwrap_or("CUSTOMER");
    if source == "RELATED" {
        return super::thingsboard_rules::change_originator_related(c);
    }
    if source != "ENTITY" {
        return Ok(Err(format!(
            "originator source {source} needs ThingsBoard's entities (customers, tenants, alarms); only ENTITY and RELATED are supported"
        )));
    }
    let config = json!({"entityType": c.cfg.str("entityType")?, "name": c.cfg.str("entityNamePattern")?});
    Ok(Ok(Fragment::one(Part::module("change-originator", config))))
}

fn save(table: &str) -> Fragment {
    Fragment::one(Part::module("table-writer", json!({"table": table, "merge": true})))
        .also("Success", Part::output().named("stored (the run's output)"))
}

/// `TbMsgTimeseriesNode` → `table-writer`: the latest values into table `timeseries` (what
/// originator-attributes and math read), and every point into the telemetry history of the same
/// name (what get-telemetry reads).
fn save_timeseries(c: &Ctx) -> Result<Outcome, ImportError> {
    let config = json!({"table": TIMESERIES_TABLE, "merge": true, "series": TIMESERIES_TABLE});
    let mut fragment = Fragment::one(Part::module("table-writer", config))
        .also("Success", Part::output().named("stored (the run's output)"));
    if let Some(ttl) = c.cfg.opt_u64("defaultTTL")?.filter(|t| *t > 0) {
        fragment = fragment.note(format!(
            "TTL {ttl} s is not kept: the telemetry history keeps the newest points of each key instead \
             (`[state]` seriesMaxPoints in sluice.toml, default 1000; seriesMaxAgeMs for an age limit)"
        ));
    }
    if c.cfg.opt_bool("useServerTs")? == Some(true) {
        fragment = fragment.note("useServerTs is not kept: points are saved at the message's ts (replayable)");
    }
    Ok(Ok(fragment))
}

fn save_attributes(c: &Ctx) -> Result<Outcome, ImportError> {
    let scope = c.cfg.opt_str("scope")?.unwrap_or("SERVER_SCOPE");
    let Some(table) = attribute_table(scope) else {
        return Err(c.cfg.error("scope", format!("expected CLIENT_SCOPE, SERVER_SCOPE or SHARED_SCOPE, got {scope}")));
    };
    Ok(Ok(save(table)))
}

fn kafka(c: &Ctx) -> Result<Outcome, ImportError> {
    let mut config = json!({"topic": c.cfg.str("topicPattern")?});
    if let Some(key) = c.cfg.opt_str("keyPattern")?.filter(|k| !k.is_empty()) {
        config["key"] = json!(key);
    }
    if c.cfg.opt_bool("addMetadataKeyValuesAsKafkaHeaders")?.unwrap_or(false) {
        config["metadataHeaders"] = json!(true);
    }
    let servers = c.cfg.opt_str("bootstrapServers")?.unwrap_or("localhost:9092").to_string();
    let mut found = Vec::new();
    let properties: std::collections::BTreeMap<String, String> = c
        .cfg
        .string_map("otherProperties")?
        .into_iter()
        .map(|(k, v)| {
            let value = v.as_str().unwrap_or_default().to_string();
            // A SASL password or JAAS config: from the environment (the connector expands it).
            if (secrets::is_secret_name(&k) || k.contains("jaas")) && !value.is_empty() && !secrets::is_template(&value)
            {
                let var = secrets::var_name(&c.node.name, &k);
                found.push(secrets::Secret { what: format!("property {k}"), var: var.clone() });
                return (k, secrets::reference(&var));
            }
            (k, value)
        })
        .collect();
    let mut fragment =
        Fragment::one(Part::module("kafka-action", config).granted(kafka_connector(servers, properties)));
    for secret in found {
        fragment.findings.push((
            FindingKind::Secret,
            format!("{} -> ${{{}}} in the connector (empty when unset)", secret.what, secret.var),
        ));
    }
    Ok(Ok(fragment))
}

/// A Kafka connector at `servers`, overridable by `${<NAME>_BROKERS}`.
pub(crate) fn kafka_connector(servers: String, properties: std::collections::BTreeMap<String, String>) -> Want {
    Want {
        base: "kafka",
        build: Box::new(move |env| {
            ConnectorSpec::from(ConnectorKind::Kafka(KafkaConnection {
                brokers: format!("${{{env}_BROKERS:-{servers}}}"),
                properties: properties.clone(),
                await_delivery: false,
            }))
        }),
    }
}

fn rest(c: &Ctx) -> Result<Outcome, ImportError> {
    let method = c.cfg.opt_str("requestMethod")?.unwrap_or("POST");
    // Credentials go to the connector, whose `baseUrl` and `headers` are expanded from the
    // environment at load (see `secrets`).
    let mut url = c.cfg.str("restEndpointUrlPattern")?.to_string();
    // Basic credentials (`credentials: {type: basic, username, password}`): as the URL's
    // userinfo, which the HTTP client sends as `Authorization: Basic …`; the password then
    // moves out like any URL password.
    let credentials = c.cfg.object("credentials", "configuration.credentials")?;
    let kind = credentials.opt_str("type")?.unwrap_or("anonymous");
    let basic = match (kind, credentials.opt_str("username")?, url.split_once("://")) {
        ("basic", Some(user), Some((scheme, rest)))
            if !user.is_empty()
                && user.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
                && !rest.split(['/', '?', '#']).next().unwrap_or_default().contains('@') =>
        {
            let password = credentials.opt_str("password")?.unwrap_or_default();
            // Any placeholder does: the password is replaced by a variable below.
            let password = if password.is_empty() { "-" } else { "x" };
            url = format!("{scheme}://{user}:{password}@{rest}");
            true
        }
        _ => false,
    };
    let split = secrets::split_url(&url, &c.node.name);
    let mut headers = c.cfg.string_map("headers")?;
    let mut connector_headers = std::collections::BTreeMap::new();
    let mut found = split.secrets.clone();
    for (name, value) in headers.clone() {
        let literal = value.as_str().filter(|v| !v.is_empty() && !secrets::is_template(v));
        if secrets::is_secret_name(&name) && literal.is_some() {
            let var = secrets::var_name(&c.node.name, &name);
            headers.remove(&name);
            connector_headers.insert(name.clone(), secrets::reference(&var));
            found.push(secrets::Secret { what: format!("header {name}"), var });
        }
    }
    let config = json!({"method": method, "url": split.rest, "headers": headers});
    let timeout = c.cfg.opt_u64("readTimeoutMs")?.filter(|t| *t > 0);
    let base_url = split.base.clone();
    let want = Want {
        base: "rest",
        build: Box::new(move |_| ConnectorSpec {
            kind: ConnectorKind::Http { base_url: base_url.clone(), headers: connector_headers.clone() },
            policy: CallPolicySpec { timeout_ms: timeout, ..Default::default() },
        }),
    };
    let mut fragment = Fragment::one(Part::module("rest-action", config).granted(want));
    for secret in &found {
        fragment.findings.push((
            FindingKind::Secret,
            format!(
                "{} -> ${{{}}} in the connector (empty when unset: the chain loads, the server refuses)",
                secret.what, secret.var
            ),
        ));
    }
    if split.dropped {
        let vars: Vec<&str> = split.secrets.iter().map(|s| s.var.as_str()).collect();
        fragment = fragment.note(format!(
            "the URL is a template before its credential, so the credential could not move into the connector's baseUrl: it was removed; put it back by hand ({})",
            vars.join(", ")
        ));
    }
    fragment = fragment.note(match timeout {
        // TbRestApiCallNode (TbHttpClient): 0 is no read timeout of its own.
        None => format!(
            "no readTimeoutMs: the connector's default timeout ({} ms) applies",
            sluice_core::connector::DEFAULT_TIMEOUT_MS
        ),
        Some(ms) => format!(
            "readTimeoutMs {ms} -> the connector's timeoutMs; the node's guest deadline does not cut the call off: time blocked waiting for the answer is not guest time"
        ),
    });
    if basic {
        fragment = fragment
            .note("basic credentials: the user name in the connector's baseUrl, the password from the environment");
    } else if kind != "anonymous" {
        fragment = fragment.note(format!(
            "{kind} credentials are not carried over: add them as connector headers from the environment"
        ));
    }
    Ok(Ok(fragment))
}

fn mqtt(c: &Ctx) -> Result<Outcome, ImportError> {
    let mut config =
        json!({"topic": c.cfg.str("topicPattern")?, "retain": c.cfg.opt_bool("retainedMessage")?.unwrap_or(false)});
    if c.cfg.opt_bool("parseToPlainText")?.unwrap_or(false) {
        config["parseToPlainText"] = json!(true);
    }
    let host = c.cfg.str("host")?.to_string();
    let port = c.cfg.opt_u64("port")?.unwrap_or(1883);
    let scheme = if c.cfg.opt_bool("ssl")?.unwrap_or(false) { "mqtts" } else { "mqtt" };
    let client_id = c.cfg.opt_str("clientId")?.filter(|s| !s.is_empty()).map(str::to_string);
    let credentials = c.cfg.object("credentials", "configuration.credentials")?;
    let kind = credentials.opt_str("type")?.unwrap_or("anonymous");
    let mut notes = Vec::new();
    let (username, password) = match kind {
        "anonymous" => (None, None),
        "basic" => (
            credentials.opt_str("username")?.map(str::to_string),
            Some(credentials.opt_str("password")?.unwrap_or_default().to_string()),
        ),
        other => {
            notes.push(format!("{other} credentials are not carried over: set caFile / credentials on the connector"));
            (None, None)
        }
    };
    let url = format!("{scheme}://{host}:{port}");
    let has_password = password.as_deref().is_some_and(|p| !p.is_empty());
    let want = Want {
        base: "mqtt",
        build: Box::new(move |env| {
            ConnectorSpec::from(ConnectorKind::Mqtt(MqttConnection {
                url: format!("${{{env}_URL:-{url}}}"),
                client_id: client_id.clone(),
                username: username.clone(),
                password: password.as_ref().map(|_| format!("${{{env}_PASSWORD:-}}")),
                ca_file: None,
                keep_alive_s: None,
                protocol_version: None,
            }))
        }),
    };
    let mut fragment = Fragment::one(Part::module("mqtt-action", config).granted(want));
    fragment.notes = notes;
    if has_password {
        // The connector's variable prefix (`MQTT`, `MQTT_2`) is given when the chain's
        // connectors are declared: the report names the first.
        fragment.findings.push((
            FindingKind::Secret,
            "password -> ${MQTT_PASSWORD} (the connector's <NAME>_PASSWORD; empty when unset: the chain loads, the broker refuses)".into(),
        ));
    }
    Ok(Ok(fragment))
}

fn delay(c: &Ctx) -> Result<Outcome, ImportError> {
    if c.cfg.opt_bool("useMetadataPeriodInSecondsPatterns")?.unwrap_or(false) {
        return Ok(Err("its period comes from a metadata pattern; the delay node takes a fixed period".into()));
    }
    let unit_ms: u64 = match c.cfg.opt_str("periodTimeUnit")? {
        None | Some("SECONDS") => 1000,
        Some("MILLISECONDS") => 1,
        Some("MINUTES") => 60_000,
        Some("HOURS") => 3_600_000,
        Some(other) => return Err(c.cfg.error("periodTimeUnit", format!("unknown unit {other}"))),
    };
    let period = match (c.cfg.opt_u64("period")?, c.cfg.opt_u64("periodInSeconds")?) {
        (Some(p), _) => p.saturating_mul(unit_ms),
        (None, Some(s)) => s.saturating_mul(1000),
        (None, None) => return Err(c.cfg.error("periodInSeconds", "missing")),
    };
    let max = c.cfg.opt_u64("maxPendingMsgs")?.unwrap_or(1000);
    Ok(Ok(Fragment::one(Part::module("delay", json!({"periodMs": period, "maxPendingMsgs": max})))))
}

fn rename_keys(c: &Ctx) -> Result<Outcome, ImportError> {
    let mapping = c.cfg.string_map("renameKeysMapping")?;
    let rename_in = match (c.cfg.opt_str("renameIn")?, c.cfg.opt_bool("fromMetadata")?) {
        (Some(place), _) => place.to_string(),
        (None, Some(true)) => "METADATA".into(),
        (None, _) => "DATA".into(),
    };
    let config = json!({"renameKeysMapping": mapping, "renameIn": rename_in});
    Ok(Ok(Fragment::one(Part::module("rename-keys", config))))
}

fn rule_chain_input(c: &Ctx) -> Result<Outcome, ImportError> {
    // 3.x exports name the target `ruleChainId`; a missing or empty one is still linked by name.
    let id = c.cfg.opt_str("ruleChainId")?.unwrap_or_default();
    Ok(nested(c.names, id, Some(&c.node.name), c.own))
}

/// A nested chain node for the rule chain `id`, called from the node named `caller` (none for a
/// 2.x `ruleChainConnections` entry): the chain of the import [`Names::resolve`] finds, or why
/// none was found (a placeholder whose text starts with [`UNRESOLVED_LINK`]).
fn nested(names: &Names, id: &str, caller: Option<&str>, own: &str) -> Outcome {
    match names.resolve(id, caller, own) {
        Some((file, by)) => {
            let mut fragment = Fragment::one(Part::chain(file.clone()));
            fragment.findings.push((FindingKind::Link, format!("-> {file} (by {by})")));
            Ok(fragment)
        }
        None => {
            let by_name = match caller {
                Some(name) => format!(", and no other chain of the import is named {name:?}"),
                None => String::new(),
            };
            Err(format!(
                "{UNRESOLVED_LINK} rule chain {id} is not among the imported files{by_name}: import its export in the same run, or give --link {id}=FILE"
            ))
        }
    }
}

fn rule_chain_output(c: &Ctx) -> Result<Outcome, ImportError> {
    // A ThingsBoard output node hands the message back to the calling chain on the relation
    // named like the node; in Sluice an output no connection takes leaves through the chain node.
    let body = format!("return [{}];", Value::String(c.node.name.clone()));
    Ok(Ok(Fragment::one(Part::module("script", json!({"mode": "switch", "script": body})))))
}

fn checkpoint(c: &Ctx) -> Result<Outcome, ImportError> {
    let queue = c.cfg.opt_str("queueName")?.unwrap_or("Main");
    Ok(Ok(pass_through(&format!("checkpoint {queue}"))
        .note(format!("queue `{queue}`: Sluice has no rule engine queues, messages go straight on"))))
}

/// Converts one rule chain.
pub(crate) fn convert(
    file: &Path,
    chain: &RuleChain,
    own: &str,
    names: &Names,
) -> Result<(ChainSpec, Vec<Finding>), ImportError> {
    let mut draft = Draft::default();
    if chain.edge {
        draft.note("", "", "", "an Edge rule chain (type EDGE): imported as an ordinary chain");
    }
    let mut placed: Vec<Placed> = Vec::with_capacity(chain.nodes.len());
    for (i, node) in chain.nodes.iter().enumerate() {
        let at = format!("node {i}");
        let base = format!("n{i}-{}", slug(&node.name));
        let short = node.short();
        let relations: Vec<&str> = chain
            .connections
            .iter()
            .filter(|c| c.from == i)
            .map(|c| c.relation.as_str())
            .chain(chain.chain_links.iter().filter(|l| l.from == i).map(|l| l.relation.as_str()))
            .collect();
        let ctx = Ctx {
            node,
            cfg: Fields { file, at: &at, path: "configuration", value: &node.config },
            relations,
            names,
            own,
        };
        let outcome = match CONVERTERS.iter().find(|(class, _)| *class == short) {
            Some((_, convert)) => convert(&ctx)?,
            None => Err(unsupported_reason(&node.class, short)),
        };
        placed.push(match outcome {
            Ok(fragment) => {
                for note in &fragment.notes {
                    draft.note(&at, short, &node.name, note.clone());
                }
                for (kind, text) in &fragment.findings {
                    draft.finding(*kind, &at, short, &node.name, text.clone());
                }
                draft.add(&base, &node.name, node.debug, fragment)
            }
            Err(reason) => {
                draft.unsupported(&at, short, &node.name, reason.clone());
                draft.placeholder(&base, &node.name, node.debug, &node.class, &reason)
            }
        });
    }
    for c in &chain.connections {
        if !never_sent(&mut draft, chain, &placed, c.from, &c.relation, &format!("node {}", c.to)) {
            draft.connect_placed(&placed[c.from].clone(), &placed[c.to].clone(), &c.relation);
        }
    }
    // Legacy jumps into other chains: one nested chain node per target.
    let mut targets: Vec<(String, Placed)> = Vec::new();
    for (k, link) in chain.chain_links.iter().enumerate() {
        let target = match targets.iter().find(|(id, _)| *id == link.target) {
            Some((_, p)) => p.clone(),
            None => {
                let at = format!("ruleChainConnections[{k}]");
                let name = format!("Rule chain {}", link.target);
                let resolved = names.resolve(&link.target, None, own);
                let base = format!("chain-{}", slug(resolved.as_ref().map_or(&link.target, |(f, _)| f)));
                let p = match nested(names, &link.target, None, own) {
                    Ok(fragment) => {
                        draft.note(&at, "RuleChain", &name, "legacy ruleChainConnections: a nested chain node");
                        for (kind, text) in &fragment.findings {
                            draft.finding(*kind, &at, "RuleChain", &name, text.clone());
                        }
                        draft.add(&base, &name, false, fragment)
                    }
                    Err(reason) => {
                        draft.unsupported(&at, "RuleChain", &name, reason.clone());
                        draft.placeholder(&base, &name, false, "RuleChain", &reason)
                    }
                };
                targets.push((link.target.clone(), p.clone()));
                p
            }
        };
        if !never_sent(&mut draft, chain, &placed, link.from, &link.relation, "a rule chain") {
            draft.connect_placed(&placed[link.from].clone(), &target, &link.relation);
        }
    }
    let entry = match chain.first {
        Some(first) => placed[first].entry.clone(),
        None => {
            let reason = "the ThingsBoard chain has no first node (firstNodeIndex is null): it takes no messages";
            draft.note(
                "",
                "",
                "",
                "no first node (firstNodeIndex is null): node `no-entry` refuses messages sent to the chain; generators still run",
            );
            draft.placeholder("no-entry", "No first node", false, "firstNodeIndex", reason).entry
        }
    };
    Ok(draft.finish(&chain.name, entry))
}
