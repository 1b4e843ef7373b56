//! Message type switch (ThingsBoard's `TbMsgTypeSwitchNode`): forwards each message unchanged on
//! the relation ThingsBoard uses for its type — `POST_TELEMETRY_REQUEST` → `Post telemetry`,
//! `POST_ATTRIBUTES_REQUEST` → `Post attributes`, `TO_SERVER_RPC_REQUEST` → `RPC Request from
//! Device`, … (the full table is [`RELATIONS`]) — and any other type on `Other`. It never fails.
//!
//! Config (optional): `{"custom": {"MY_TYPE": "My relation", "TO_SERVER_RPC_REQUEST": "RPC Request"}}`
//! - `custom` (default empty): message type → relation, for types of your own; an entry for a
//!   standard type replaces ThingsBoard's relation (e.g. `"RPC Request"`, which ThingsBoard 2.0
//!   chains used for `TO_SERVER_RPC_REQUEST`). Types and relations must not be empty.
//!
//! The table is ThingsBoard's `TbMsgType` enum (each type's `ruleNodeConnection`;
//! `common/data/src/main/java/org/thingsboard/server/common/data/msg/TbMsgType.java` in
//! thingsboard/thingsboard, at commit c0d9b7c4dc05c2451981271b1563fb363c839ced), which
//! `TbMsgTypeSwitchNode` routes by since 3.6; types without a connection there (`ALARM`,
//! `ALARM_DELETE`, `ENTITY_ASSIGNED_TO_EDGE`, `ENTITY_UNASSIGNED_FROM_EDGE`, `PROVISION_SUCCESS`,
//! `PROVISION_FAILURE`, `SEND_EMAIL`, the self-messages) go to `Other`, as there.
use std::collections::BTreeMap;

use sluice_sdk::prelude::*;

/// ThingsBoard's message types and the relation each is routed on, in `TbMsgType`'s order.
pub const RELATIONS: [(&str, &str); 44] = [
    ("POST_ATTRIBUTES_REQUEST", "Post attributes"),
    ("POST_TELEMETRY_REQUEST", "Post telemetry"),
    ("TO_SERVER_RPC_REQUEST", "RPC Request from Device"),
    ("ACTIVITY_EVENT", "Activity Event"),
    ("INACTIVITY_EVENT", "Inactivity Event"),
    ("CONNECT_EVENT", "Connect Event"),
    ("DISCONNECT_EVENT", "Disconnect Event"),
    ("ENTITY_CREATED", "Entity Created"),
    ("ENTITY_UPDATED", "Entity Updated"),
    ("ENTITY_DELETED", "Entity Deleted"),
    ("ENTITY_ASSIGNED", "Entity Assigned"),
    ("ENTITY_UNASSIGNED", "Entity Unassigned"),
    ("ATTRIBUTES_UPDATED", "Attributes Updated"),
    ("ATTRIBUTES_DELETED", "Attributes Deleted"),
    ("ALARM_ACK", "Alarm Acknowledged"),
    ("ALARM_CLEAR", "Alarm Cleared"),
    ("ALARM_ASSIGNED", "Alarm Assigned"),
    ("ALARM_UNASSIGNED", "Alarm Unassigned"),
    ("COMMENT_CREATED", "Comment Created"),
    ("COMMENT_UPDATED", "Comment Updated"),
    ("RPC_CALL_FROM_SERVER_TO_DEVICE", "RPC Request to Device"),
    ("ENTITY_ASSIGNED_FROM_TENANT", "Entity Assigned From Tenant"),
    ("ENTITY_ASSIGNED_TO_TENANT", "Entity Assigned To Tenant"),
    ("TIMESERIES_UPDATED", "Timeseries Updated"),
    ("TIMESERIES_DELETED", "Timeseries Deleted"),
    ("RPC_QUEUED", "RPC Queued"),
    ("RPC_SENT", "RPC Sent"),
    ("RPC_DELIVERED", "RPC Delivered"),
    ("RPC_SUCCESSFUL", "RPC Successful"),
    ("RPC_TIMEOUT", "RPC Timeout"),
    ("RPC_EXPIRED", "RPC Expired"),
    ("RPC_FAILED", "RPC Failed"),
    ("RPC_DELETED", "RPC Deleted"),
    ("RELATION_ADD_OR_UPDATE", "Relation Added or Updated"),
    ("RELATION_DELETED", "Relation Deleted"),
    ("RELATIONS_DELETED", "All Relations Deleted"),
    ("REST_API_REQUEST", "REST API request"),
    // Routed on `Other` by ThingsBoard too; listed so the table is the whole enum's public part.
    ("ALARM", relation::OTHER),
    ("ALARM_DELETE", relation::OTHER),
    ("ENTITY_ASSIGNED_TO_EDGE", relation::OTHER),
    ("ENTITY_UNASSIGNED_FROM_EDGE", relation::OTHER),
    ("PROVISION_SUCCESS", relation::OTHER),
    ("PROVISION_FAILURE", relation::OTHER),
    ("SEND_EMAIL", relation::OTHER),
];

/// The relation ThingsBoard routes a message of type `msg_type` on (`Other` for unknown types).
pub fn thingsboard_relation(msg_type: &str) -> &'static str {
    RELATIONS.iter().find(|(t, _)| *t == msg_type).map_or(relation::OTHER, |(_, r)| r)
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Message type → relation, checked before ThingsBoard's table.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

/// The running switch.
pub struct MsgTypeSwitch {
    custom: BTreeMap<String, String>,
}

/// Routes each message by its type on ThingsBoard's relation names.
#[node(relations = ["Post attributes", "Post telemetry", "RPC Request from Device", "Activity Event", "Inactivity Event", "Connect Event", "Disconnect Event", "Entity Created", "Entity Updated", "Entity Deleted", "Entity Assigned", "Entity Unassigned", "Attributes Updated", "Attributes Deleted", "Alarm Acknowledged", "Alarm Cleared", "Alarm Assigned", "Alarm Unassigned", "Comment Created", "Comment Updated", "RPC Request to Device", "Entity Assigned From Tenant", "Entity Assigned To Tenant", "Timeseries Updated", "Timeseries Deleted", "RPC Queued", "RPC Sent", "RPC Delivered", "RPC Successful", "RPC Timeout", "RPC Expired", "RPC Failed", "RPC Deleted", "Relation Added or Updated", "Relation Deleted", "All Relations Deleted", "REST API request", "Other", config])]
impl Node for MsgTypeSwitch {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        for (msg_type, relation) in &config.custom {
            if msg_type.trim().is_empty() {
                bail_config!("custom", "a message type must not be empty");
            }
            if relation.trim().is_empty() {
                bail_config!(format!("custom.{msg_type}"), "the relation must not be empty");
            }
        }
        Ok(MsgTypeSwitch { custom: config.custom })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        match self.custom.get(msg.msg_type()) {
            Some(relation) => out.forward(relation.as_str()),
            None => out.forward(thingsboard_relation(msg.msg_type())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn switch(config: &str) -> TestDriver {
        TestDriver::node_from_json::<MsgTypeSwitch>(config).unwrap()
    }

    fn of_type(msg_type: &str) -> Msg {
        Msg::new(msg_type, Originator::device("D-1"), json!({"t": "21"})).with_meta("k", "v").with_id("m")
    }

    #[test]
    fn routes_thingsboard_types_on_thingsboard_relations() -> Result<()> {
        let mut d = switch("{}");
        // Spelled out by hand from TbMsgType.java, not read from the table under test.
        let expected = [
            ("POST_TELEMETRY_REQUEST", "Post telemetry"),
            ("POST_ATTRIBUTES_REQUEST", "Post attributes"),
            ("TO_SERVER_RPC_REQUEST", "RPC Request from Device"),
            ("RPC_CALL_FROM_SERVER_TO_DEVICE", "RPC Request to Device"),
            ("ACTIVITY_EVENT", "Activity Event"),
            ("INACTIVITY_EVENT", "Inactivity Event"),
            ("CONNECT_EVENT", "Connect Event"),
            ("DISCONNECT_EVENT", "Disconnect Event"),
            ("ENTITY_CREATED", "Entity Created"),
            ("ATTRIBUTES_UPDATED", "Attributes Updated"),
            ("ATTRIBUTES_DELETED", "Attributes Deleted"),
            ("ALARM_ACK", "Alarm Acknowledged"),
            ("ALARM_CLEAR", "Alarm Cleared"),
            ("TIMESERIES_UPDATED", "Timeseries Updated"),
            ("RPC_TIMEOUT", "RPC Timeout"),
            ("RELATIONS_DELETED", "All Relations Deleted"),
            ("REST_API_REQUEST", "REST API request"),
            ("ALARM", "Other"),
            ("SEND_EMAIL", "Other"),
            ("GENERATOR_NODE_SELF_MSG", "Other"),
            ("MY_TYPE", "Other"),
            ("post_telemetry_request", "Other"),
            ("", "Other"),
        ];
        for (msg_type, relation) in expected {
            let msg = of_type(msg_type);
            let out = d.send(msg.clone())?;
            assert_eq!(out.relations(), [relation], "{msg_type}");
            assert_eq!(out.messages(), [&msg], "{msg_type}: forwarded unchanged");
        }
        Ok(())
    }

    #[test]
    fn table_has_no_duplicates_and_covers_the_sdk_types() {
        let mut types: Vec<&str> = RELATIONS.iter().map(|(t, _)| *t).collect();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), RELATIONS.len());
        use sluice_sdk::msg_type::*;
        for t in [POST_TELEMETRY_REQUEST, POST_ATTRIBUTES_REQUEST, ATTRIBUTES_UPDATED, TIMESERIES_DELETED, ALARM] {
            assert!(types.contains(&t), "{t}");
        }
    }

    #[test]
    fn custom_types_and_overrides() -> Result<()> {
        let mut d = switch(
            r#"{"custom": {"MY_TYPE": "My relation", "TO_SERVER_RPC_REQUEST": "RPC Request", "ALARM": "Alarm"}}"#,
        );
        assert_eq!(d.send(of_type("MY_TYPE"))?.relations(), ["My relation"]);
        assert_eq!(d.send(of_type("TO_SERVER_RPC_REQUEST"))?.relations(), ["RPC Request"]);
        assert_eq!(d.send(of_type("ALARM"))?.relations(), ["Alarm"]);
        assert_eq!(d.send(of_type("POST_TELEMETRY_REQUEST"))?.relations(), ["Post telemetry"]);
        assert_eq!(d.send(of_type("OTHER_TYPE"))?.relations(), ["Other"]);
        Ok(())
    }

    #[test]
    fn empty_config_is_thingsboards_switch() -> Result<()> {
        for config in ["", "null", "{}", r#"{"custom": {}}"#] {
            assert_eq!(switch(config).send(of_type("POST_TELEMETRY_REQUEST"))?.relations(), ["Post telemetry"]);
        }
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<MsgTypeSwitch>(text).err().unwrap();
        assert_eq!(parse(r#"{"custom": {"MY_TYPE": 1}}"#).field, "custom.MY_TYPE");
        assert_eq!(parse(r#"{"custom": ["MY_TYPE"]}"#).field, "custom");
        assert_eq!(parse(r#"{"relations": {}}"#).field, "relations");
        let err = parse(r#"{"custom": {"MY_TYPE": " "}}"#);
        assert!(err.message.contains("config field `custom.MY_TYPE`"), "{err}");
        let err = parse(r#"{"custom": {"": "R"}}"#);
        assert!(err.message.contains("config field `custom`"), "{err}");
    }
}
