//! Group deviation (z-score) detector: per group and window, how far each member's value lies
//! from the group's average, in population standard deviations.
//!
//! Built for the solar sample: module sums per window come in (from `window-aggregate`), grouped
//! by panel; when the panel's window closes, every module whose `|value − avg| / deviation`
//! exceeds `thresholdSigma` goes out on `Anomaly`, then one `GROUP_STATS` summary on `Success`.
//! Worked example: sums 30, 30, 21 → avg 27, deviation √18 ≈ 4.24 → the third scores 1.41.
//!
//! Config:
//! ```json
//! {"group": "data.panel", "member": "originator", "value": "data.sum",
//!  "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
//!  "thresholdSigma": 1.0, "resultType": "ANOMALY", "late": "Late"}
//! ```
use sluice_sdk::prelude::*;
use sluice_sdk::windows::WindowKind;

#[derive(Debug, Clone, Deserialize)]
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

/// One member's value, as collected in the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    member: String,
    value: f64,
}

pub struct GroupDeviation {
    config: Config,
    window: Window,
}

#[node]
impl Node for GroupDeviation {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if !(config.threshold_sigma.is_finite() && config.threshold_sigma >= 0.0) {
            bail!("thresholdSigma must be a non-negative number");
        }
        let builder = match config.window {
            WindowKind::Tumbling { size_ms } => Window::tumbling("group", size_ms),
            WindowKind::Hopping { size_ms, advance_ms } => Window::hopping("group", size_ms, advance_ms),
            WindowKind::Session { gap_ms } => Window::session("group", gap_ms),
        };
        let window = builder.grace_ms(config.grace_ms).collect().define()?;
        Ok(GroupDeviation { config, window })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let Some(group) = cfg.group.text(&msg) else { bail!("no group: the message has no `{}`", cfg.group.name()) };
        let Some(member) = cfg.member.text(&msg) else {
            bail!("no member: the message has no `{}`", cfg.member.name())
        };
        let Some(value) = cfg.value.number(&msg) else { bail!("no numeric `{}` in the message", cfg.value.name()) };
        if self.window.collect(&group, msg.ts, &Item { member, value })? == Added::Late
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
        let n = items.len() as f64;
        let sum: f64 = items.iter().map(|i| i.value).sum();
        let avg = sum / n;
        let deviation = (items.iter().map(|i| (i.value - avg).powi(2)).sum::<f64>() / n).sqrt();
        for item in &items {
            let z = (item.value - avg).abs() / deviation;
            if deviation > 0.0 && z > cfg.threshold_sigma {
                let data = json!({"group": closed.key, "member": item.member, "value": item.value,
                    "groupAvg": avg, "deviation": deviation, "z": z, "members": items.len(),
                    "windowStart": closed.start, "windowEnd": closed.end});
                out.emit(
                    "Anomaly",
                    Msg::new(&cfg.result_type, Originator::device(&item.member), data).with_ts(closed.start),
                );
            }
        }
        let summary = json!({"group": closed.key, "members": items.len(), "sum": sum, "avg": avg,
            "deviation": deviation, "windowStart": closed.start, "windowEnd": closed.end});
        out.emit(
            relation::SUCCESS,
            Msg::new("GROUP_STATS", Originator::asset(&closed.key), summary).with_ts(closed.start),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver() -> TestDriver {
        let cfg = serde_json::from_value(json!({
            "group": "data.panel", "member": "originator", "value": "data.sum",
            "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 1000}))
        .unwrap();
        TestDriver::node::<GroupDeviation>(cfg).unwrap()
    }

    fn module_sum(module: &str, sum: f64, ts: i64) -> Msg {
        Msg::telemetry(module, json!({"panel": "P1", "sum": sum})).with_ts(ts)
    }

    /// DESIGN.md, scenario 2: 30, 30, 21 → avg 27, deviation √18 = 4.2426…; the third module
    /// scores 6 / 4.2426 = 1.414… and is flagged, the others (0.707) are not.
    #[test]
    fn the_worked_example() -> Result<()> {
        let mut d = driver();
        for (m, s) in [("M1", 30.0), ("M2", 30.0), ("M3", 21.0)] {
            assert!(d.send(module_sum(m, s, 500))?.outputs.is_empty());
        }
        let out = d.flush()?;
        assert_eq!(out.relations(), ["Anomaly", "Success"]);
        let anomaly = &out.messages()[0];
        assert_eq!(anomaly.originator.name, "M3");
        assert_eq!(anomaly.data["groupAvg"], json!(27.0));
        let dev = anomaly.data["deviation"].as_f64().unwrap();
        assert!((dev - 18f64.sqrt()).abs() < 1e-12, "{dev}");
        let z = anomaly.data["z"].as_f64().unwrap();
        assert!((z - std::f64::consts::SQRT_2).abs() < 1e-12, "{z}");
        assert_eq!(out.messages()[1].data["members"], json!(3));
        Ok(())
    }

    #[test]
    fn equal_members_raise_nothing() -> Result<()> {
        let mut d = driver();
        d.send(module_sum("M1", 5.0, 1))?;
        d.send(module_sum("M2", 5.0, 2))?;
        assert_eq!(d.flush()?.relations(), ["Success"]);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = TestDriver::node_from_json::<GroupDeviation>(
            r#"{"group": "panel", "member": "originator", "value": "data.sum", "window": {"type": "tumbling", "sizeMs": 10}}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.field, "group");
        let err = TestDriver::node_from_json::<GroupDeviation>(
            r#"{"group": "data.p", "member": "originator", "value": "data.sum", "window": {"type": "weekly"}}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.field, "window.type");
    }
}
