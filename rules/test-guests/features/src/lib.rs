//! Test guest for the host's state services, each used the way a real rule would:
//! - `REGISTER` puts the device's data into the table `registry`; `ACCESS` looks its device up
//!   there (stream–table enrichment; unknown device → `Err`);
//! - `ACCESS` (left) and `ALARM` (right) join per door in 1 s windows → `JOINED` per pair;
//! - a guest fold collects the distinct users per region per 1 s window → `DISTINCT`;
//! - a window with early updates counts accesses per region → `COUNT` (early and final);
//! - `ARM` sets a processing-time timer `data.after` ms ahead → `TIMEOUT` when it fires.
//!
//! Every output goes to `Success`.
use sluice_sdk::prelude::*;

pub struct Features {
    joins: Window,
    distinct: Window,
    early: Window,
}

fn text(msg: &Msg, key: &str) -> Result<String> {
    match msg.field(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => bail!("no `{key}`"),
    }
}

/// Exercises the host's tables, windows, folds and timers.
#[node(relations = ["Success"])]
impl Node for Features {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self> {
        Ok(Features {
            joins: Window::tumbling("joins", 1000).join().define()?,
            distinct: Window::tumbling("distinct", 1000).fold().define()?,
            early: Window::tumbling("early", 1000).early_updates().define()?,
        })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let device = msg.originator_name().into_owned();
        match msg.msg_type() {
            "REGISTER" => table::put("registry", &device, msg.data())?,
            "ACCESS" => {
                let Some(entry) = table::get::<Value>("registry", &device)? else { bail!("unknown device {device}") };
                let region = entry["region"].as_str().unwrap_or("?").to_string();
                let (door, user) = (text(&msg, "door")?, text(&msg, "user")?);
                self.joins.join_left(&door, msg.ts(), &json!({ "user": user }))?;
                self.distinct.fold(&region, msg.ts(), |users: Option<Vec<String>>| {
                    let mut users = users.unwrap_or_default();
                    if !users.contains(&user) {
                        users.push(user.clone());
                        users.sort();
                    }
                    users
                })?;
                self.early.add(&region, msg.ts(), 1.0)?;
                out.emit(relation::SUCCESS, msg.with_meta("region", region));
            }
            "ALARM" => {
                self.joins.join_right(&text(&msg, "door")?, msg.ts(), &json!({ "alarm": text(&msg, "alarm")? }))?;
            }
            "ARM" => {
                let after = msg.number("after").unwrap_or(0.0) as i64;
                timer::set(&device, clock::now_ms() + after);
            }
            other => bail!("unexpected type {other}"),
        }
        Ok(())
    }

    fn on_window(&mut self, closed: ClosedWindow, out: &mut Outputs) -> Result<()> {
        let entity = Originator::asset(&closed.key);
        match closed.window.as_str() {
            "joins" => {
                for left in closed.items() {
                    for right in closed.right() {
                        let data = json!({"door": closed.key, "user": left["user"], "alarm": right["alarm"], "start": closed.start});
                        out.emit(relation::SUCCESS, Msg::new("JOINED", entity.clone(), data).with_ts(closed.start));
                    }
                }
            }
            "distinct" => {
                let users: Vec<String> = match closed.folds().first() {
                    Some(v) => serde_json::from_value(v.clone())?,
                    None => Vec::new(),
                };
                let data = json!({"region": closed.key, "users": users, "start": closed.start});
                out.emit(relation::SUCCESS, Msg::new("DISTINCT", entity, data).with_ts(closed.start));
            }
            _ => {
                let data = json!({"region": closed.key, "count": closed.count(), "early": closed.early, "start": closed.start});
                out.emit(relation::SUCCESS, Msg::new("COUNT", entity, data).with_ts(closed.start));
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Outputs) -> Result<()> {
        let data = json!({"at": timer.at, "now": timer.now});
        out.emit(relation::SUCCESS, Msg::new("TIMEOUT", Originator::device(&timer.key), data));
        Ok(())
    }
}
