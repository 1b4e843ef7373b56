//! Group deviation (z-score) detector: per group and window, how far each member's value lies
//! from the group's average, in population standard deviations.
//!
//! Built for the solar sample: module sums per window come in (from `window-aggregate`), grouped
//! by panel. Each message adds `{"member", "value"}` to the group's window (a host collect window
//! named `group`); nothing is emitted then. When the watermark closes the window, with n items,
//! `avg = Σv / n` and `deviation = sqrt(Σ(v − avg)² / n)`:
//!
//! - for each item, in arrival order, with `deviation > 0` and `z = |v − avg| / deviation`
//!   above `thresholdSigma`: one message on `Anomaly`, type `resultType`, from the device named
//!   after the member, `ts` = window start, data `{"group", "member", "value", "groupAvg",
//!   "deviation", "z", "members": n, "windowStart", "windowEnd"}` and the member's `keep`
//!   fields (its own count, average… as its message carried them);
//! - then one summary on `Success`: type `GROUP_STATS`, from the asset named after the group,
//!   `ts` = window start, data `{"group", "members": n, "sum", "avg", "deviation", "windowStart",
//!   "windowEnd"}`.
//!
//! Messages carry no id: the engine derives `<node>/group/<group>/<start>:<n>`. A late event
//! (its window already closed) is forwarded unchanged on `late`, or dropped when `late` is
//! `null`; a message without the group, the member or a numeric value goes to `Failure`.
//!
//! Worked example: sums 30, 30, 21 → avg 27, deviation √18 ≈ 4.243; the third member scores
//! 6 / 4.243 ≈ 1.414 > 1 and is flagged, the other two (0.707) are not.
//!
//! Config:
//! ```json
//! {"group": "data.panel", "member": "originator", "value": "data.sum",
//!  "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
//!  "thresholdSigma": 1.0, "resultType": "ANOMALY", "late": "Late"}
//! ```
//! - `group`, `member` (required): `originator` (its name), `metadata.<k>` or `data.<k>` (a
//!   string, or a number or boolean rendered as text).
//! - `value` (required): `data.<k>` or `metadata.<k>`; numbers sent as strings count.
//! - `window` (required): `{"type": "tumbling", "sizeMs"}`, `{"type": "hopping", "sizeMs",
//!   "advanceMs"}` or `{"type": "session", "gapMs"}`; `graceMs` (default 0).
//! - `thresholdSigma` (default 1.0, ≥ 0), `resultType` (default `"ANOMALY"`), `late` (default
//!   `"Late"`; `null` drops late events).
//! - `keep` (default none): `data.<k>`/`metadata.<k>` fields of each member's message carried
//!   into its anomaly under their key (`data.count` → `count`): a module's count and average
//!   reach the alert without a second lookup. A key the anomaly already has is refused.
use sluice_sdk::prelude::*;
use sluice_sdk::windows::WindowKind;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub group: FieldPath,
    pub member: FieldPath,
    pub value: FieldPath,
    pub window: WindowKind,
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default = "one")]
    pub threshold_sigma: f64,
    #[serde(default = "default_result_type")]
    pub result_type: String,
    #[serde(default = "default_late")]
    pub late: Option<String>,
    #[serde(default)]
    pub keep: Vec<FieldPath>,
}

fn one() -> f64 {
    1.0
}
fn default_result_type() -> String {
    "ANOMALY".into()
}
fn default_late() -> Option<String> {
    Some(relation::LATE.to_string())
}

/// Relation of the flagged members.
pub const ANOMALY: &str = "Anomaly";
/// Type of the per-window summary.
pub const GROUP_STATS: &str = "GROUP_STATS";
/// The host window's name (it keys the window's state across restarts and reloads).
const WINDOW: &str = "group";

/// Keys of an anomaly's data, which a `keep` field must not take.
const ANOMALY_KEYS: [&str; 9] =
    ["group", "member", "value", "groupAvg", "deviation", "z", "members", "windowStart", "windowEnd"];

/// One member's value, as collected in the window: `{"member", "value"}` and the kept fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    member: String,
    value: f64,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    kept: serde_json::Map<String, Value>,
}

pub struct GroupDeviation {
    config: Config,
    window: Window,
}

/// Per group and window, how far each member's value lies from the group (z-score).
#[node(relations = ["Success", "Anomaly", config])]
impl Node for GroupDeviation {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if !(config.threshold_sigma.is_finite() && config.threshold_sigma >= 0.0) {
            bail!("thresholdSigma must be a non-negative number");
        }
        if !matches!(config.value, FieldPath::Data(_) | FieldPath::Metadata(_)) {
            bail!("`value` takes `data.<key>` or `metadata.<key>`, not `{}`", config.value.name());
        }
        if config.result_type.is_empty() {
            bail!("resultType must not be empty");
        }
        for field in &config.keep {
            if !matches!(field, FieldPath::Data(_) | FieldPath::Metadata(_)) {
                bail!("`keep` takes `data.<key>` or `metadata.<key>`, not `{}`", field.name());
            }
            if ANOMALY_KEYS.contains(&field.name()) {
                bail!("`keep` field `{}` would replace the anomaly's own `{}`", field.name(), field.name());
            }
        }
        let builder = Window::of_kind(WINDOW, config.window);
        let window = builder.grace_ms(config.grace_ms).collect().define()?;
        Ok(GroupDeviation { config, window })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let Some(group) = cfg.group.text(&msg) else { bail!("no group: the message has no `{}`", cfg.group.name()) };
        let Some(member) = cfg.member.text(&msg) else {
            bail!("no member: the message has no `{}`", cfg.member.name())
        };
        let Some(value) = cfg.value.number(&msg).filter(|v| v.is_finite()) else {
            bail!("no numeric `{}` in the message", cfg.value.name())
        };
        let kept = cfg.keep.iter().filter_map(|f| Some((f.name().to_string(), f.value(&msg)?))).collect();
        if self.window.collect(&group, msg.ts(), &Item { member: member.into_owned(), value, kept })? == Added::Late
            && let Some(late) = &cfg.late
        {
            out.forward(late);
        }
        Ok(())
    }

    fn on_window(&mut self, closed: ClosedWindow, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let items: Vec<Item> =
            closed.items().iter().map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;
        if items.is_empty() {
            return Ok(());
        }
        let members = items.len();
        let n = members as f64;
        let sum: f64 = items.iter().map(|i| i.value).sum();
        let avg = sum / n;
        let deviation = (items.iter().map(|i| (i.value - avg).powi(2)).sum::<f64>() / n).sqrt();
        if deviation > 0.0 {
            for item in &items {
                let z = (item.value - avg).abs() / deviation;
                if z > cfg.threshold_sigma {
                    let mut data = json!({"group": closed.key, "member": item.member, "value": item.value,
                        "groupAvg": avg, "deviation": deviation, "z": z, "members": members,
                        "windowStart": closed.start, "windowEnd": closed.end});
                    if let Value::Object(fields) = &mut data {
                        fields.extend(item.kept.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    let anomaly =
                        Msg::new(&cfg.result_type, Originator::device(&item.member), data).with_ts(closed.start);
                    out.emit(ANOMALY, anomaly);
                }
            }
        }
        let summary = json!({"group": closed.key, "members": members, "sum": sum, "avg": avg,
            "deviation": deviation, "windowStart": closed.start, "windowEnd": closed.end});
        out.emit(
            relation::SUCCESS,
            Msg::new(GROUP_STATS, Originator::asset(&closed.key), summary).with_ts(closed.start),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// The config of the module docs.
    const SOLAR: &str = r#"{"group": "data.panel", "member": "originator", "value": "data.sum",
        "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
        "thresholdSigma": 1.0, "resultType": "ANOMALY"}"#;

    fn driver(threshold: f64) -> TestDriver {
        let mut cfg: Value = serde_json::from_str(SOLAR).unwrap();
        cfg["thresholdSigma"] = json!(threshold);
        TestDriver::node_from_json::<GroupDeviation>(&cfg.to_string()).unwrap().named("panels")
    }

    fn module_sum(module: &str, panel: &str, sum: f64, ts: i64) -> Msg {
        Msg::telemetry(module, json!({"panel": panel, "sum": sum})).with_ts(ts).with_id(format!("{module}@{ts}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// √18 = 3√2 = 4.2426…, written out (√18 in f64).
    const SQRT_18: f64 = 4.242640687119285;
    /// z of the odd member: 6 / (3√2) = √2; of the others: 3 / (3√2) = 1/√2.
    const Z_ODD: f64 = std::f64::consts::SQRT_2;
    const Z_EVEN: f64 = std::f64::consts::FRAC_1_SQRT_2;

    /// DESIGN, scenario 2: 30, 30, 21 → avg 81 / 3 = 27; squared deviations 9, 9, 36 → 54 / 3 =
    /// 18 → deviation √18 = 4.2426…; the third scores 6 / 4.2426 = 1.414… > 1 and is flagged,
    /// the others 3 / 4.2426 = 0.707… are not.
    #[test]
    fn the_worked_example() -> Result<()> {
        let mut d = TestDriver::node_from_json::<GroupDeviation>(SOLAR).unwrap().named("panels");
        for (m, s, ts) in [("M1", 30.0, 1_000), ("M2", 30.0, 2_000), ("M3", 21.0, 3_000)] {
            assert!(d.send(module_sum(m, "P1", s, ts))?.outputs.is_empty());
        }
        let out = d.flush()?;
        assert_eq!(out.relations(), ["Anomaly", "Success"]);

        let anomaly = out.messages()[0].clone();
        assert_eq!(anomaly.id(), "panels/group/P1/0:0");
        assert_eq!((anomaly.msg_type(), anomaly.originator(), anomaly.ts()), ("ANOMALY", &Originator::device("M3"), 0));
        let (dev, z) = (anomaly.data()["deviation"].as_f64().unwrap(), anomaly.data()["z"].as_f64().unwrap());
        assert!(close(dev, SQRT_18), "{dev}");
        assert!(close(z, Z_ODD), "{z}");
        let mut rest = anomaly.data().clone();
        rest.as_object_mut().unwrap().retain(|k, _| k != "deviation" && k != "z");
        assert_eq!(
            rest,
            json!({"group": "P1", "member": "M3", "value": 21.0, "groupAvg": 27.0, "members": 3,
                "windowStart": 0, "windowEnd": 10_000})
        );

        let summary = out.messages()[1].clone();
        assert_eq!(summary.id(), "panels/group/P1/0:1");
        assert_eq!(
            (summary.msg_type(), summary.originator(), summary.ts()),
            ("GROUP_STATS", &Originator::asset("P1"), 0)
        );
        assert!(close(summary.data()["deviation"].as_f64().unwrap(), SQRT_18));
        let mut rest = summary.data().clone();
        rest.as_object_mut().unwrap().remove("deviation");
        assert_eq!(
            rest,
            json!({"group": "P1", "members": 3, "sum": 81.0, "avg": 27.0, "windowStart": 0, "windowEnd": 10_000})
        );
        Ok(())
    }

    /// Below the members' 0.707, all three are flagged, in arrival order, before the summary.
    #[test]
    fn anomalies_come_in_item_order_then_the_summary() -> Result<()> {
        let mut d = driver(0.5);
        for (m, s, ts) in [("M3", 21.0, 3_000), ("M1", 30.0, 1_000), ("M2", 30.0, 2_000)] {
            d.send(module_sum(m, "P1", s, ts))?;
        }
        let out = d.flush()?;
        assert_eq!(out.relations(), ["Anomaly", "Anomaly", "Anomaly", "Success"]);
        let flagged: Vec<(&str, f64)> = out.messages()[..3]
            .iter()
            .map(|m| (m.originator().name.as_str(), m.data()["z"].as_f64().unwrap()))
            .collect();
        assert_eq!(flagged.iter().map(|f| f.0).collect::<Vec<_>>(), ["M3", "M1", "M2"]);
        assert!(close(flagged[0].1, Z_ODD) && close(flagged[1].1, Z_EVEN) && close(flagged[2].1, Z_EVEN));
        Ok(())
    }

    #[test]
    fn groups_and_windows_are_separate() -> Result<()> {
        let mut d = driver(1.0);
        // P1 in [0, 10 000): 10 and 20 → avg 15, deviation 5, z 1 each: not above 1.
        d.send(module_sum("M1", "P1", 10.0, 1_000))?;
        d.send(module_sum("M2", "P1", 20.0, 1_500))?;
        // P2 in [0, 10 000): a single member → deviation 0, nothing flagged.
        d.send(module_sum("M9", "P2", 50.0, 2_000))?;
        // Watermark 12 000 = 10 000 + grace closes both; this one lands in [10 000, 20 000).
        let out = d.send(module_sum("M1", "P1", 1.0, 12_000))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let stats: Vec<&Value> = out.messages().iter().map(|m| m.data()).collect();
        assert_eq!(
            stats,
            [
                &json!({"group": "P1", "members": 2, "sum": 30.0, "avg": 15.0, "deviation": 5.0,
                    "windowStart": 0, "windowEnd": 10_000}),
                &json!({"group": "P2", "members": 1, "sum": 50.0, "avg": 50.0, "deviation": 0.0,
                    "windowStart": 0, "windowEnd": 10_000}),
            ]
        );
        let next = d.flush()?;
        assert_eq!(next.messages()[0].data()["windowStart"], json!(10_000));
        assert_eq!(next.messages()[0].data()["members"], json!(1));
        Ok(())
    }

    #[test]
    fn late_missing_and_non_numeric() -> Result<()> {
        let mut d = driver(1.0);
        d.send(module_sum("M1", "P1", 1.0, 30_000))?;
        let late = module_sum("M2", "P1", 1.0, 5_000);
        let out = d.send(late.clone())?;
        assert_eq!(out.relations(), ["Late"]);
        assert_eq!(out.messages(), [&late]);

        let no_panel = Msg::telemetry("M1", json!({"sum": 1})).with_ts(30_001);
        let out = d.send(no_panel)?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("no group: the message has no `panel`"));
        let text = Msg::telemetry("M1", json!({"panel": "P1", "sum": "lots"})).with_ts(30_002);
        assert_eq!(d.send(text)?.messages()[0].meta("error"), Some("no numeric `sum` in the message"));
        let as_string = Msg::telemetry("M2", json!({"panel": "P1", "sum": "3"})).with_ts(30_003);
        assert!(d.send(as_string)?.outputs.is_empty(), "a number sent as a string counts");
        assert_eq!(d.flush()?.messages()[0].data()["sum"], json!(4.0));

        let mut dropping: Value = serde_json::from_str(SOLAR).unwrap();
        dropping["late"] = Value::Null;
        let mut d = TestDriver::node_from_json::<GroupDeviation>(&dropping.to_string()).unwrap();
        d.send(module_sum("M1", "P1", 1.0, 30_000))?;
        assert!(d.send(late)?.outputs.is_empty());
        Ok(())
    }

    /// `keep`: each flagged member's own fields ride along into its anomaly.
    #[test]
    fn kept_fields_of_the_member_reach_its_anomaly() -> Result<()> {
        let mut cfg: Value = serde_json::from_str(SOLAR).unwrap();
        cfg["keep"] = json!(["data.count", "data.avg", "metadata.site"]);
        let mut d = TestDriver::node_from_json::<GroupDeviation>(&cfg.to_string()).unwrap().named("panels");
        for (m, s, count, ts) in [("M1", 30.0, 10, 1_000), ("M2", 30.0, 10, 2_000), ("M3", 21.0, 7, 3_000)] {
            let msg = Msg::telemetry(m, json!({"panel": "P1", "sum": s, "count": count, "avg": s / count as f64}))
                .with_ts(ts)
                .with_meta("site", "north");
            d.send(msg)?;
        }
        let out = d.flush()?;
        assert_eq!(out.relations(), ["Anomaly", "Success"]);
        let data = out.messages()[0].data();
        assert_eq!((&data["member"], &data["count"], &data["avg"]), (&json!("M3"), &json!(7), &json!(3.0)));
        assert_eq!(data["site"], json!("north"));
        // The summary is about the group: no member's fields.
        assert!(out.messages()[1].data().get("count").is_none());

        cfg["keep"] = json!(["data.z"]);
        let err = TestDriver::node_from_json::<GroupDeviation>(&cfg.to_string()).err().unwrap();
        assert!(err.message.contains("would replace the anomaly's own `z`"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<GroupDeviation>(text).err().unwrap();
        let err = parse(
            r#"{"group": "panel", "member": "originator", "value": "data.sum", "window": {"type": "tumbling", "sizeMs": 10}}"#,
        );
        assert_eq!(err.field, "group");
        let err =
            parse(r#"{"group": "data.p", "member": "originator", "value": "data.sum", "window": {"type": "weekly"}}"#);
        assert_eq!(err.field, "window.type");
        let err = parse(r#"{"group": "data.p", "value": "data.sum", "window": {"type": "session", "gapMs": 5}}"#);
        assert_eq!(err.field, "member");
        let err = parse(
            r#"{"group": "data.p", "member": "originator", "value": "data.sum", "window": {"type": "session", "gapMs": 5}, "thresholdSigma": "high"}"#,
        );
        assert_eq!(err.field, "thresholdSigma");
        // Refused by `init`: the whole config, with the reason.
        let err = parse(
            r#"{"group": "data.p", "member": "originator", "value": "data.sum", "window": {"type": "session", "gapMs": 5}, "thresholdSigma": -1}"#,
        );
        assert!(err.message.contains("thresholdSigma"), "{err}");
    }
}
