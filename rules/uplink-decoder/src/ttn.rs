//! `format: ttn-lorawan`: a The Things Stack v3 uplink message from a smart meter; its
//! `frm_payload` carries N energy readings (the layout is in the crate docs).
use base64::Engine as _;
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::Map;

use crate::{BASE64, Config, Point, Uplink, non_empty};

pub struct TtnDecoder {
    device_type: String,
    use_dev_eui: bool,
    f_port: u8,
}

/// A decoded `frm_payload`: readings oldest first, `interval_s` apart, the last `age_s` before
/// the uplink was received.
#[derive(Debug, PartialEq)]
pub struct MeterFrame {
    pub interval_s: u32,
    pub age_s: u32,
    pub energy_wh: Vec<u32>,
}

impl TtnDecoder {
    pub fn new(cfg: Config) -> Result<Self> {
        let f_port = cfg.f_port.unwrap_or(2);
        if !(1..=223).contains(&f_port) {
            bail_config!("fPort", "{f_port} is not an application port (1–223)");
        }
        Ok(TtnDecoder {
            device_type: non_empty("deviceType", cfg.device_type, "SmartMeter")?,
            use_dev_eui: cfg.use_dev_eui.unwrap_or(false),
            f_port,
        })
    }

    pub fn decode(&self, payload: Value, msg_ts: i64) -> Result<Vec<Uplink>> {
        let Value::Object(up) = payload else { bail!("the payload is not a TTN uplink object: {payload}") };
        let ids = object(&up, "end_device_ids")?;
        let device_id = text(ids, "end_device_ids", "device_id")?;
        let dev_eui = text(ids, "end_device_ids", "dev_eui");
        let device_name = if self.use_dev_eui { dev_eui.clone()? } else { device_id };
        let message = object(&up, "uplink_message")?;
        let f_port = match message.get("f_port") {
            None => bail!("`uplink_message.f_port` is missing (a MAC-only uplink carries no readings)"),
            Some(v) => v.as_u64().ok_or_else(|| Error::new(format!("`uplink_message.f_port` is not a port: {v}")))?,
        };
        if f_port != u64::from(self.f_port) {
            bail!("`uplink_message.f_port` is {f_port}, not the meter's readings port {}", self.f_port);
        }
        let frm = text(message, "uplink_message", "frm_payload")?;
        let bytes = BASE64
            .decode(frm.trim())
            .map_err(|e| Error::new(format!("`uplink_message.frm_payload` is not base64: {e}")))?;
        let frame = meter_frame(&bytes)?;
        let received = match (up.get("received_at"), message.get("received_at")) {
            (Some(t), _) => rfc3339_ms(t, "received_at")?,
            (None, Some(t)) => rfc3339_ms(t, "uplink_message.received_at")?,
            (None, None) => msg_ts,
        };
        let last = received - i64::from(frame.age_s) * 1000;
        let n = frame.energy_wh.len() as i64;
        let mut telemetry: Vec<Point> = (0..)
            .zip(&frame.energy_wh)
            .map(|(i, wh)| {
                let mut values = Map::new();
                values.insert("energyWh".into(), Value::from(*wh));
                Point { ts: Some(last - (n - 1 - i) * i64::from(frame.interval_s) * 1000), values }
            })
            .collect();
        if let (Some(point), Some(gateway)) = (telemetry.last_mut(), best_gateway(message)) {
            for key in ["rssi", "snr"] {
                if let Some(v) = gateway.get(key).filter(|v| v.is_number()) {
                    point.values.insert(key.into(), v.clone());
                }
            }
        }
        let mut attributes = Map::new();
        if let Ok(eui) = dev_eui {
            attributes.insert("devEui".into(), Value::String(eui));
        }
        attributes.insert("fPort".into(), Value::from(f_port));
        Ok(vec![Uplink { device_name, device_type: self.device_type.clone(), attributes, telemetry }])
    }
}

/// Parses the meter's `frm_payload` (see the crate docs for the layout).
pub fn meter_frame(bytes: &[u8]) -> Result<MeterFrame> {
    let [interval_min, flags, rest @ ..] = bytes else {
        bail!("`frm_payload` has {} bytes; the header alone is 2", bytes.len());
    };
    if *interval_min == 0 {
        bail!("`frm_payload` byte 0 (interval in minutes) is 0");
    }
    if flags & !1 != 0 {
        bail!("`frm_payload` byte 1 (flags) is {flags:#04x}: only bit 0 is defined");
    }
    let (age_s, readings) = if flags & 1 == 1 {
        let Some((age, readings)) = rest.split_first_chunk::<4>() else {
            bail!("`frm_payload` flags announce a 4-byte age, but only {} bytes follow the header", rest.len());
        };
        (u32::from_be_bytes(*age), readings)
    } else {
        (0, rest)
    };
    if readings.is_empty() || readings.len() % 4 != 0 {
        bail!("`frm_payload` has {} bytes of readings: expected a positive multiple of 4", readings.len());
    }
    let energy_wh = readings.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(MeterFrame { interval_s: u32::from(*interval_min) * 60, age_s, energy_wh })
}

/// The gateway that heard the uplink best: highest `rssi`, then highest `snr`, then the first.
fn best_gateway(message: &Map<String, Value>) -> Option<&Map<String, Value>> {
    type Gateway = Map<String, Value>;
    type Score = (f64, f64);
    let gateways = message.get("rx_metadata")?.as_array()?;
    let score = |g: &Gateway| -> Option<Score> {
        let get = |k: &str| g.get(k).and_then(Value::as_f64);
        get("rssi").map(|rssi| (rssi, get("snr").unwrap_or(f64::NEG_INFINITY)))
    };
    gateways
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|g| Some((g, score(g)?)))
        .fold(None, |best: Option<(&Gateway, Score)>, (g, s)| match best {
            Some((_, b)) if s <= b => best,
            _ => Some((g, s)),
        })
        .map(|(g, _)| g)
}

fn object<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>> {
    match map.get(key) {
        Some(Value::Object(obj)) => Ok(obj),
        Some(other) => bail!("`{key}` is not an object: {other}"),
        None => bail!("payload has no `{key}` (not a The Things Stack v3 uplink message)"),
    }
}

fn text(map: &Map<String, Value>, parent: &str, key: &str) -> Result<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => bail!("`{parent}.{key}` is not a non-empty string: {other}"),
        None => bail!("`{parent}.{key}` is missing"),
    }
}

/// An RFC 3339 time (`2020-02-17T07:49:09.935284891Z`) as ms since the epoch, rounded down.
fn rfc3339_ms(value: &Value, field: &str) -> Result<i64> {
    let Some(text) = value.as_str() else { bail!("`{field}` is not a time: {value}") };
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => Ok(t.timestamp_millis()),
        Err(e) => bail!("`{field}` is not an RFC 3339 time: `{text}` ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::meter_frame;
    use crate::tests::{config_error, driver, failure};
    use base64::Engine as _;
    use sluice_sdk::prelude::*;

    /// 2024-03-01T12:00:00Z in ms: 19783 days after the epoch (54 years, 13 of them leap, to
    /// 2024-01-01; then 31 + 29 days) × 86 400 000, plus 12 h.
    const NOON: i64 = (19_723 + 31 + 29) * 86_400_000 + 12 * 3_600_000;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn ttn(frm: &[u8], received_at: &str, rx: Value) -> Msg {
        let up = json!({
            "end_device_ids": {"device_id": "meter-17", "application_ids": {"application_id": "meters"},
                               "dev_eui": "70B3D57ED005B89A", "dev_addr": "260BABCD"},
            "correlation_ids": ["as:up:01HX6YGQ7E0V83YRZ7K4S5J4ZN"],
            "received_at": received_at,
            "uplink_message": {"f_port": 2, "f_cnt": 1834, "frm_payload": b64(frm), "rx_metadata": rx,
                               "received_at": "2000-01-01T00:00:00Z"}
        });
        Msg::new("UPLINK", Originator::device("ttn"), up).with_id("t1").with_ts(1)
    }

    fn energy_and_ts(out: &sluice_sdk::testing::Outcome) -> Vec<(i64, Value)> {
        out.messages()
            .iter()
            .filter(|m| m.msg_type() == "POST_TELEMETRY_REQUEST")
            .map(|m| (m.ts(), m.data()["energyWh"].clone()))
            .collect()
    }

    #[test]
    fn readings_become_one_point_each() -> Result<()> {
        // interval 15 min, flags 0, then 1000 Wh (0x000003E8) and 1250 Wh (0x000004E2).
        let frm = [15, 0, 0x00, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x04, 0xE2];
        let rx = json!([{"gateway_ids": {"gateway_id": "gw-a"}, "rssi": -97, "snr": 4.5},
                        {"gateway_ids": {"gateway_id": "gw-b"}, "rssi": -68, "channel_rssi": -68, "snr": 9.2}]);
        let out = driver(json!({"format": "ttn-lorawan"})).send(ttn(&frm, "2024-03-01T12:00:00Z", rx))?;
        assert_eq!(out.relations(), ["Success", "Success", "Success"]);
        assert_eq!(energy_and_ts(&out), [(NOON - 15 * 60_000, json!(1000)), (NOON, json!(1250))]);
        let m = out.messages();
        assert_eq!(m[0].data(), &json!({"energyWh": 1000}));
        assert_eq!(m[1].data(), &json!({"energyWh": 1250, "rssi": -68, "snr": 9.2}));
        assert_eq!(m[1].originator(), &Originator::device("meter-17"));
        assert_eq!(m[1].meta("deviceType"), Some("SmartMeter"));
        assert_eq!(m[1].meta("ts"), Some(NOON.to_string().as_str()));
        assert_eq!(m[2].msg_type(), "POST_ATTRIBUTES_REQUEST");
        assert_eq!(m[2].data(), &json!({"devEui": "70B3D57ED005B89A", "fPort": 2}));
        assert_eq!(m[2].ts(), 1);
        assert_eq!([m[0].id(), m[1].id(), m[2].id()], ["t1:0", "t1:1", "t1:2"]);
        Ok(())
    }

    #[test]
    fn age_shifts_every_reading() -> Result<()> {
        // interval 1 min, flags 1, age 90 s (0x0000005A), readings 7, 8, 4294967295 (u32::MAX).
        let frm = [1, 1, 0, 0, 0, 0x5A, 0, 0, 0, 7, 0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF];
        // received_at with nanoseconds and an offset: 13:00:30.123456789+01:00 = 12:00:30.123Z.
        let out = driver(json!({"format": "ttn-lorawan", "useDevEui": true, "deviceType": "Meter"})).send(ttn(
            &frm,
            "2024-03-01T13:00:30.123456789+01:00",
            json!([]),
        ))?;
        let last = NOON + 30_123 - 90_000;
        assert_eq!(
            energy_and_ts(&out),
            [(last - 120_000, json!(7)), (last - 60_000, json!(8)), (last, json!(4_294_967_295u64))]
        );
        // No gateway: no rssi/snr. Named by DevEUI.
        assert_eq!(out.messages()[2].data(), &json!({"energyWh": 4_294_967_295u64}));
        assert_eq!(out.messages()[2].originator().name, "70B3D57ED005B89A");
        assert_eq!(out.messages()[2].meta("deviceType"), Some("Meter"));
        Ok(())
    }

    #[test]
    fn best_gateway_ties_and_gaps() -> Result<()> {
        let frm = [5, 0, 0, 0, 0, 1];
        let mut d = driver(json!({"format": "ttn-lorawan"}));
        // Equal rssi: the higher snr wins; a gateway without rssi never does; strings are not numbers.
        let rx = json!([{"rssi": -80, "snr": 1}, {"snr": 20}, {"rssi": -80, "snr": 7.25}, {"rssi": "-10"}]);
        let out = d.send(ttn(&frm, "2024-03-01T12:00:00Z", rx))?;
        assert_eq!(out.messages()[0].data(), &json!({"energyWh": 1, "rssi": -80, "snr": 7.25}));
        // The best gateway reports no snr: rssi alone.
        let rx = json!([{"rssi": -120, "snr": 3}, {"rssi": -60}]);
        let out = d.send(ttn(&frm, "2024-03-01T12:00:00Z", rx))?;
        assert_eq!(out.messages()[0].data(), &json!({"energyWh": 1, "rssi": -60}));
        Ok(())
    }

    #[test]
    fn received_at_falls_back() -> Result<()> {
        let frm = [5, 0, 0, 0, 0, 1];
        let mut msg = ttn(&frm, "x", json!([]));
        msg.data_mut().as_object_mut().unwrap().remove("received_at");
        let out = driver(json!({"format": "ttn-lorawan"})).send(msg.clone())?;
        assert_eq!(out.messages()[0].ts(), 946_684_800_000, "uplink_message.received_at, 2000-01-01");
        msg.data_mut()["uplink_message"].as_object_mut().unwrap().remove("received_at");
        let out = driver(json!({"format": "ttn-lorawan"})).send(msg)?;
        assert_eq!(out.messages()[0].ts(), 1, "the message's ts");
        Ok(())
    }

    #[test]
    fn the_frame_layout_is_checked() {
        let err = |bytes: &[u8]| meter_frame(bytes).unwrap_err().to_string();
        assert!(err(&[15]).contains("header alone is 2"));
        assert!(err(&[0, 0, 0, 0, 0, 1]).contains("byte 0"));
        assert!(err(&[15, 2, 0, 0, 0, 1]).contains("flags) is 0x02"));
        assert!(err(&[15, 1, 0, 0]).contains("4-byte age"));
        assert!(err(&[15, 0]).contains("0 bytes of readings"));
        assert!(err(&[15, 0, 0, 0, 0, 1, 2]).contains("5 bytes of readings"));
        assert!(err(&[15, 1, 0, 0, 0, 9]).contains("0 bytes of readings"));
    }

    #[test]
    fn bad_uplinks_fail_naming_the_field() -> Result<()> {
        let mut d = driver(json!({"format": "ttn-lorawan"}));
        let good = ttn(&[5, 0, 0, 0, 0, 1], "2024-03-01T12:00:00Z", json!([]));
        let with = |path: &[&str], value: Option<Value>| {
            let mut m = good.clone();
            let mut target = m.data_mut();
            for key in &path[..path.len() - 1] {
                target = &mut target[*key];
            }
            let obj = target.as_object_mut().unwrap();
            match value {
                Some(v) => obj.insert(path[path.len() - 1].into(), v),
                None => obj.remove(path[path.len() - 1]),
            };
            m
        };
        let cases = [
            (with(&["end_device_ids"], None), "payload has no `end_device_ids`"),
            (with(&["end_device_ids", "device_id"], Some(json!(""))), "`end_device_ids.device_id` is not"),
            (with(&["uplink_message"], Some(json!("x"))), "`uplink_message` is not an object"),
            (with(&["uplink_message", "f_port"], None), "`uplink_message.f_port` is missing"),
            (with(&["uplink_message", "f_port"], Some(json!(3))), "is 3, not the meter's readings port 2"),
            (with(&["uplink_message", "f_port"], Some(json!("2"))), "`uplink_message.f_port` is not a port"),
            (with(&["uplink_message", "frm_payload"], None), "`uplink_message.frm_payload` is missing"),
            (with(&["uplink_message", "frm_payload"], Some(json!("@@@"))), "frm_payload` is not base64"),
            (with(&["uplink_message", "frm_payload"], Some(json!("DwA="))), "0 bytes of readings"),
            (with(&["received_at"], Some(json!("yesterday"))), "`received_at` is not an RFC 3339 time: `yesterday`"),
            (with(&["received_at"], Some(json!(1700))), "`received_at` is not a time"),
        ];
        for (msg, expected) in cases {
            let e = failure(&d.send(msg)?);
            assert!(e.contains(expected), "{e} does not contain {expected}");
        }
        // useDevEui without a DevEUI.
        let mut d = driver(json!({"format": "ttn-lorawan", "useDevEui": true}));
        let e = failure(&d.send(with(&["end_device_ids", "dev_eui"], None))?);
        assert!(e.contains("`end_device_ids.dev_eui` is missing"), "{e}");
        // Another readings port is configurable.
        let out = driver(json!({"format": "ttn-lorawan", "fPort": 3}))
            .send(with(&["uplink_message", "f_port"], Some(json!(3))))?;
        assert_eq!(out.messages()[1].data(), &json!({"devEui": "70B3D57ED005B89A", "fPort": 3}));
        Ok(())
    }

    #[test]
    fn bad_ttn_options_name_the_field() {
        let e = config_error(json!({"format": "ttn-lorawan", "fPort": 0}));
        assert!(e.message.starts_with("config field `fPort`"), "{e}");
        let e = config_error(json!({"format": "ttn-lorawan", "fPort": 224}));
        assert!(e.message.starts_with("config field `fPort`"), "{e}");
        let e = config_error(json!({"format": "ttn-lorawan", "deviceType": ""}));
        assert!(e.message.starts_with("config field `deviceType`"), "{e}");
    }
}
