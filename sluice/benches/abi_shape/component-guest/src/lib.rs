//! The wind-station filter as a component (`wit/rule.wit`, guest glue by wit-bindgen): the same
//! logic as `core-guest`, through a borrowed `message` resource. Strings returned by the host are
//! allocated in the guest (`cabi_realloc`) and freed here when dropped.

wit_bindgen::generate!({ path: "../wit", world: "rule" });

struct Rule;

impl Guest for Rule {
    fn on_msg(m: &Message) -> Result<(), String> {
        let keep = m.msg_type() == "POST_TELEMETRY_REQUEST"
            && m.ts() > 0
            && m.meta("deviceType").as_deref() == Some("WeatherStation")
            && m.number("data.windSpeed").is_some();
        forward(if keep { "True" } else { "False" });
        Ok(())
    }

    fn on_msg_ts(m: &Message) -> Result<(), String> {
        if m.ts() < 0 { Err("negative ts".into()) } else { Ok(()) }
    }

    fn on_msg_forward(_m: &Message) -> Result<(), String> {
        forward("True");
        Ok(())
    }

    fn on_msg_empty(_m: &Message) -> Result<(), String> {
        Ok(())
    }

    fn ping() {}
}

export!(Rule);
