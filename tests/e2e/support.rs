//! Locating (and building, once) the `sluice` binary and the guest modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use sluice_testkit::{modules, repo, runtime};

/// The `sluice` binary of this workspace, built on first use.
pub fn sluice_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // `cargo test` gives this process the test crate's `CARGO_*` variables; build scripts
        // that watch them would make this nested build recompile half the dependency tree
        // (rustls, reqwest…) for nothing. Keep only the ones that say where cargo works.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
                build.env_remove(name.as_ref());
            }
        }
        let status = build
            .current_dir(repo())
            .args(["build", "--quiet", "-p", "sluice", "--bin", "sluice"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building sluice failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
        target.join("debug").join("sluice")
    })
}

/// Runs `sluice ARGS` with the built modules on the module path.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .output()
        .expect("run sluice")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A one-node chain: `module` with `config`, every relation in `relations` wired to the output.
fn one_node_chain(module: &str, config: &serde_json::Value, relations: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "entry": "node",
        "nodes": [
            {"id": "node", "module": module, "config": config},
            {"id": "out", "sink": "output"}
        ],
        "connections": relations.iter().map(|r| serde_json::json!({"from": "node", "to": "out", "relation": r})).collect::<Vec<_>>()
    })
}

/// Loads a chain (JSON) from a scratch file with the built modules.
pub fn load_chain(chain: &serde_json::Value) -> Result<sluice::chain::Chain, sluice::chain::LoadError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.json");
    std::fs::write(&path, serde_json::to_string_pretty(chain).expect("json")).expect("write chain");
    sluice::chain::Loader::new(&runtime(), vec![modules().to_path_buf()]).load(&path)
}

/// The load error of a one-node chain whose `module` gets `config` (panics if it loads).
pub fn node_config_error(module: &str, config: serde_json::Value) -> String {
    match load_chain(&one_node_chain(module, &config, &["Success"])) {
        Ok(_) => panic!("{module} accepted the config {config}"),
        Err(e) => e.to_string(),
    }
}

/// Runs `msgs` through a chain on one worker (event time = `ts`, windows flushed at the end) and
/// returns what reached its output sink, in order.
pub fn run_chain(chain: &serde_json::Value, msgs: &[sluice_sdk::TbMsg]) -> Vec<sluice_sdk::TbMsg> {
    sluice_testkit::run_chain(chain, msgs, 1).output
}

/// Runs `msgs` through the wasm build of `module` with `config`, once per relation, and returns
/// the messages that left on each relation (relation → messages, in order).
pub fn run_node(
    module: &str,
    config: serde_json::Value,
    msgs: &[sluice_sdk::TbMsg],
    relations: &[&str],
) -> std::collections::BTreeMap<String, Vec<sluice_sdk::TbMsg>> {
    relations
        .iter()
        .map(|relation| (relation.to_string(), run_chain(&one_node_chain(module, &config, &[relation]), msgs)))
        .collect()
}

/// `GET /metrics` of a running engine's admin endpoint (`host:port`): every sample by its name
/// with labels as written (`sluice_http_source_requests_total{outcome="accepted"}`) → value.
/// Panics when the endpoint does not answer 200.
pub fn metrics(admin: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap_or_else(|e| panic!("admin endpoint {admin}: {e}"));
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    assert!(head.starts_with("HTTP/1.1 200"), "GET /metrics: {head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

/// `GET path` on the admin endpoint: the status code and the body as JSON.
pub fn admin_json(admin: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_request(admin, "GET", path, None);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}")))
}

/// One request to the admin endpoint (with `Authorization: Bearer token` when given, and an
/// empty body): the status code and the body.
pub fn admin_request(admin: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap_or_else(|e| panic!("admin endpoint {admin}: {e}"));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The `sluice.toml` of an HTTP device API service (`tokens.json` in `dir`) on `port` writing its
/// output to `OUT.jsonl`, with `extra` TOML after it; written as `dir/OUT.toml`.
pub fn http_service_config(dir: &Path, port: u16, out: &str, extra: &str) -> PathBuf {
    crate::kafka::write(
        dir,
        &format!("{out}.toml"),
        &format!(
            "[source]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\ntokens = \"tokens.json\"\n\n\
             [output]\ntype = \"file\"\npath = \"{out}.jsonl\"\n{extra}"
        ),
    )
}

/// Posts `body` as `TOKEN-1`'s telemetry to the HTTP device API on `port`, retrying while the
/// service starts (up to 60 s); the answer must be 200.
pub fn post_telemetry(port: u16, body: &str) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = http_post(port, "/api/v1/TOKEN-1/telemetry", body) {
            assert_eq!(status, 200, "{body}");
            return;
        }
        assert!(Instant::now() < deadline, "the HTTP source did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 POST of JSON `body` to `path` on `port`: the answer's status, or `None` when
/// nothing answers (yet).
pub fn http_post(port: u16, path: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}
