//! The fuzz targets: each takes bytes, runs one of Sluice's parsers on them, and checks that it
//! either refuses them with an error that says where, or takes them and a property holds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use sluice::chain::LoadErrorKind;
use sluice::chain::load::Loader;
use sluice::chain::spec::ChainSpec;
use sluice::config::PayloadFormat;
use sluice::runtime::Runtime;
use sluice::sources::{http, jsonl, mqtt};
use sluice_sdk::TbMsg;

use crate::{Target, Verdict};

/// Every target, by name.
pub const ALL: &[Target] = &[
    Target { name: "jsonl-line", run: jsonl_line },
    Target { name: "chain-load", run: chain_load },
    Target { name: "thingsboard-import", run: thingsboard_import },
    Target { name: "mqtt-payload", run: mqtt_payload },
    Target { name: "http-payload", run: http_payload },
    Target { name: "guest-abi", run: guest_abi },
];

const NOW: i64 = 1_700_000_000_000;

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// What the host hands a guest is what the guest reads: the message survives the ABI unchanged.
fn crosses_the_abi(msg: &TbMsg) -> Result<(), String> {
    let bytes = serde_json::to_vec(msg).map_err(|e| format!("a parsed message does not serialize: {e}"))?;
    let decoded = sluice_sdk::abi::decode_msg(&bytes).map_err(|e| {
        format!("the guest cannot read a message the host made: {e}\n{}", String::from_utf8_lossy(&bytes))
    })?;
    check(decoded.to_tb() == *msg, || format!("the message changed across the ABI:\n{msg:?}\n{decoded:?}"))
}

/// Every number in `value` as written in `source`: digits are neither lost nor rounded. (The
/// exponent is the one thing serde_json rewrites: `1E5` is kept as `1e+5`.)
fn numbers_verbatim(value: &Value, source: &str) -> Result<(), String> {
    fn normal(text: &str) -> String {
        let text = text.to_ascii_lowercase();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == 'e' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('+');
            }
        }
        out
    }
    let source = normal(source);
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let text = normal(&n.to_string());
                check(source.contains(&text), || format!("number {text} is not in the input as written"))?;
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

/// One input line per line of the input (`sluice run --input`'s parser).
pub fn jsonl_line(input: &[u8]) -> Result<Verdict, String> {
    let mut verdict = Verdict::Rejected;
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        let n = i as u64 + 1;
        let Ok(text) = std::str::from_utf8(line) else { continue };
        match jsonl::parse_line("in.jsonl", n, text, NOW) {
            Ok(None) => check(text.trim().is_empty(), || format!("a line with text was taken as blank: {text:?}"))?,
            Ok(Some(msg)) => {
                verdict = Verdict::Accepted;
                check(!msg.id.is_empty(), || "a message without an id".into())?;
                crosses_the_abi(&msg)?;
                numbers_verbatim(&msg.data, text)?;
                // A full message read back is the same message.
                let again = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
                let reread = jsonl::parse_line("in.jsonl", n, &again, NOW)
                    .map_err(|e| format!("a message the parser made does not parse again: {e}\n{again}"))?;
                check(reread.as_ref() == Some(&msg), || format!("re-read message differs:\n{again}\n{reread:?}"))?;
            }
            Err(e) => {
                check(e.line == n && e.input == "in.jsonl", || format!("error names the wrong line: {e}"))?;
                check(!e.message.is_empty(), || "an error without a message".into())?;
            }
        }
    }
    Ok(verdict)
}

struct LoadSetup {
    runtime: Runtime,
    dir: tempfile::TempDir,
    modules: Vec<PathBuf>,
}

fn load_setup() -> &'static LoadSetup {
    static SETUP: OnceLock<LoadSetup> = OnceLock::new();
    SETUP.get_or_init(|| LoadSetup {
        // The end-to-end tests' module cache: compiled once for both.
        runtime: Runtime::new(Some(crate::repo_root().join("target").join("sluice-module-cache")))
            .expect("wasmtime runtime"),
        dir: tempfile::tempdir().expect("temp dir"),
        modules: vec![sluice::toolchain::module_dir(&crate::repo_root().join("rules"))],
    })
}

/// Whether the built-in modules are built (the chain loader then runs each node's `init`).
pub fn modules_built() -> bool {
    load_setup().modules.iter().any(|d| d.join("check_fields.wasm").is_file())
}

/// Keeps a fuzzed chain from reaching outside its temp dir: every connector becomes a file
/// connector next to the chain (a Kafka or MQTT one would start clients for brokers the input
/// names; a file one names its own path), under the same name — so action nodes stay granted one,
/// as the loader requires — and no absolute or parent paths for modules and nested chains (a
/// path like `/dev/zero` would be read forever).
fn defang_chain(value: &mut Value) {
    let Value::Object(chain) = value else { return };
    if let Some(Value::Object(connectors)) = chain.get_mut("connectors") {
        for spec in connectors.values_mut() {
            *spec = serde_json::json!({"type": "file", "path": "{chainDir}/connector.jsonl"});
        }
    } else {
        chain.remove("connectors");
    }
    let Some(Value::Array(nodes)) = chain.get_mut("nodes") else { return };
    for node in nodes {
        let Value::Object(node) = node else { continue };
        for key in ["module", "chain"] {
            if let Some(Value::String(path)) = node.get_mut(key)
                && (path.starts_with('/') || path.contains("..") || path.starts_with('~') || path.contains('\\'))
            {
                *path = path.replace(['/', '\\', '~'], "_").replace("..", "_");
            }
        }
    }
}

fn write_chain(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// `sluice validate`'s loader on a chain file.
pub fn chain_load(input: &[u8]) -> Result<Verdict, String> {
    let setup = load_setup();
    let bytes = match serde_json::from_slice::<Value>(input) {
        Ok(mut value) => {
            defang_chain(&mut value);
            serde_json::to_vec(&value).map_err(|e| e.to_string())?
        }
        Err(_) => input.to_vec(),
    };
    // A directory per call: targets run on several test threads at once, and one thread must
    // not read the chain file another is writing.
    let dir = tempfile::tempdir_in(setup.dir.path()).map_err(|e| e.to_string())?;
    let path = write_chain(dir.path(), "chain.json", &bytes)?;
    load_checked(&setup.runtime, &setup.modules, &path)
}

fn load_checked(runtime: &Runtime, modules: &[PathBuf], path: &Path) -> Result<Verdict, String> {
    let result = Loader::new(runtime, modules.to_vec()).load(path);
    match result {
        Ok(_) => {
            // What was taken reads back as the same spec after a round trip through JSON.
            let spec = Loader::read_spec(path).map_err(|e| format!("loaded, but the spec does not read: {e}"))?;
            let value = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
            let again: ChainSpec = serde_json::from_value(value.clone())
                .map_err(|e| format!("a loaded spec does not read back: {e}\n{value}"))?;
            check(again == spec, || format!("spec changed through JSON:\n{spec:?}\n{again:?}"))?;
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            let text = e.to_string();
            check(text.starts_with(&path.display().to_string()), || {
                format!("load error does not name the file: {text}")
            })?;
            Ok(Verdict::Rejected)
        }
    }
}

/// `sluice import thingsboard` on one export file; what it makes must load (connectors aside).
pub fn thingsboard_import(input: &[u8]) -> Result<Verdict, String> {
    let setup = load_setup();
    let dir = tempfile::tempdir_in(setup.dir.path()).map_err(|e| e.to_string())?;
    let file = write_chain(dir.path(), "export.json", input)?;
    match sluice::import::import_thingsboard(std::slice::from_ref(&file)) {
        Err(e) => {
            let text = e.to_string();
            check(text.starts_with(&file.display().to_string()), || {
                format!("import error does not name the file: {text}")
            })?;
            Ok(Verdict::Rejected)
        }
        Ok(imported) => {
            let out = dir.path().join("out");
            let written = imported.write(&out).map_err(|e| format!("imported chains do not write: {e}"))?;
            for path in &written {
                let text = std::fs::read(path).map_err(|e| e.to_string())?;
                let mut value: Value = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_value::<ChainSpec>(value.clone())
                    .map_err(|e| format!("an imported chain is not a chain file: {e}\n{value}"))?;
                defang_chain(&mut value);
                std::fs::write(path, serde_json::to_vec(&value).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            if modules_built() {
                for path in &written {
                    match Loader::new(&setup.runtime, setup.modules.clone()).load(path) {
                        Ok(_) => {}
                        // A value of the export's own that the node refuses (a script that does
                        // not compile, a period of 0) is for `sluice validate` to report, naming
                        // node and field; a config of the wrong shape is the importer's fault.
                        Err(e)
                            if matches!(&e.kind, LoadErrorKind::Config(m) if !shape_error(m))
                                && e.node_id().is_some() => {}
                        Err(e) => return Err(format!("an imported chain does not load: {e}")),
                    }
                }
            }
            Ok(Verdict::Accepted)
        }
    }
}

/// serde's words for a config of the wrong shape.
fn shape_error(message: &str) -> bool {
    ["invalid type", "missing field", "unknown field", "unknown variant", "invalid value", "invalid length"]
        .iter()
        .any(|p| message.starts_with(p))
}

/// `topic\npayload`: the MQTT source's mapping (a topic starting `raw:` uses `format = "raw"`).
pub fn mqtt_payload(input: &[u8]) -> Result<Verdict, String> {
    let nl = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
    let Ok(topic) = std::str::from_utf8(&input[..nl]) else { return Ok(Verdict::Rejected) };
    let payload = input.get(nl + 1..).unwrap_or_default();
    let (format, topic) = match topic.strip_prefix("raw:") {
        Some(t) => (PayloadFormat::Raw, t),
        None => (PayloadFormat::Json, topic),
    };
    let mapping = mqtt::PayloadMapping {
        format,
        msg_type: "POST_TELEMETRY_REQUEST".into(),
        tokens: None,
        input: Default::default(),
    };
    match mapping.messages(topic, payload, NOW) {
        Ok(msgs) => {
            for msg in &msgs {
                crosses_the_abi(msg)?;
                check(msg.metadata.contains_key("topic"), || "a message without metadata.topic".into())?;
                if format == PayloadFormat::Json
                    && let Ok(text) = std::str::from_utf8(payload)
                {
                    numbers_verbatim(&msg.data, text)?;
                }
            }
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            check(e.topic == topic && !e.reason.is_empty(), || format!("error without its topic: {e}"))?;
            Ok(Verdict::Rejected)
        }
    }
}

/// `telemetry\nbody` or `attributes\nbody`: the HTTP source's mapping.
pub fn http_payload(input: &[u8]) -> Result<Verdict, String> {
    let nl = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
    let body = input.get(nl + 1..).unwrap_or_default();
    let device = http::Device::new("Thermostat A1", "thermostat");
    let result = match &input[..nl] {
        b"attributes" => http::attributes(&device, body, NOW),
        _ => http::telemetry(&device, body, NOW),
    };
    match result {
        Ok(msgs) => {
            for msg in &msgs {
                crosses_the_abi(msg)?;
                check(msg.originator.name == "Thermostat A1", || "wrong originator".into())?;
                if let Ok(text) = std::str::from_utf8(body) {
                    numbers_verbatim(&msg.data, text)?;
                }
            }
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            check(!e.0.is_empty(), || "an error without a message".into())?;
            Ok(Verdict::Rejected)
        }
    }
}

/// `msg|timer|window|config\nJSON`: what a guest reads from the host (sluice-sdk's decoding).
/// Whatever decodes encodes back to the same value.
pub fn guest_abi(input: &[u8]) -> Result<Verdict, String> {
    let nl = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
    let body = input.get(nl + 1..).unwrap_or_default();
    fn round_trip<T: serde::Serialize + PartialEq + std::fmt::Debug>(
        decoded: Result<T, String>,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<Verdict, String> {
        match decoded {
            Err(e) => check(!e.is_empty(), || "empty error".into()).map(|_| Verdict::Rejected),
            Ok(value) => {
                let bytes = serde_json::to_vec(&value).map_err(|e| format!("decoded value does not encode: {e}"))?;
                let again = decode(&bytes).map_err(|e| format!("encoded value does not decode: {e}"))?;
                check(again == value, || format!("round trip changed {value:?} into {again:?}"))?;
                Ok(Verdict::Accepted)
            }
        }
    }
    use sluice_sdk::abi::{decode_msg, decode_timer, decode_window};
    match &input[..nl] {
        b"timer" => round_trip(decode_timer(body), decode_timer),
        b"window" => round_trip(decode_window(body), decode_window),
        b"config" => match sluice_sdk::config::parse::<sluice_sdk::windows::WindowSpec>(body) {
            Ok(spec) => {
                let _ = spec.validate();
                Ok(Verdict::Accepted)
            }
            Err(e) => check(!e.message.is_empty(), || format!("config error without a message: {e:?}"))
                .map(|_| Verdict::Rejected),
        },
        _ => round_trip(decode_msg(body), decode_msg),
    }
}
