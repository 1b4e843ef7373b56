//! Input as written: numbers keep their digits through the chain, nesting past the limit is
//! refused naming it and the line; and what a new user meets first — `sluice rules new` outside
//! the build tree, a TBEL body — says what is wrong.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{repo, sluice, sluice_bin, stderr};

const BIG: &str = "123456789012345678901234567890123456789";
const PRECISE: &str = "0.1000000000000000055511151231257827";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn output_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

/// A 39-digit integer and a decimal with more digits than an f64 holds go through a node that
/// does not touch them, and into a window result's kept fields, exactly as written; the window
/// still sums the values it aggregates.
#[test]
fn numbers_keep_every_digit_from_input_to_output() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["v"]}},
            {"id": "agg", "module": "window-aggregate", "config": {
                "key": "originator", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10000},
                "aggregates": ["count", "sum"], "keep": ["data.serial"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "check", "to": "out", "relation": "True"},
            {"from": "check", "to": "agg", "relation": "True"},
            {"from": "agg", "to": "out", "relation": "Success"}
        ]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    // Written by hand, not by serde_json: the digits are the input's own.
    let input = format!(
        "{{\"ts\":1700000000000,\"deviceName\":\"d1\",\"serial\":{BIG},\"precise\":{PRECISE},\"v\":0.1}}\n\
         {{\"ts\":1700000001000,\"deviceName\":\"d1\",\"serial\":{BIG},\"v\":0.2}}\n\
         {{\"ts\":1700000020000,\"deviceName\":\"d1\",\"serial\":{BIG},\"v\":1}}\n"
    );
    let input = write(dir.path(), "in.jsonl", &input);
    let output = dir.path().join("out.jsonl");
    let out =
        sluice(&["run", "--chain", &chain, "--input", &input, "--output", output.to_str().unwrap(), "--no-state"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = output_lines(&output);
    let passed: Vec<&String> = lines.iter().filter(|l| l.contains("\"type\":\"POST_TELEMETRY_REQUEST\"")).collect();
    assert_eq!(passed.len(), 3, "{lines:#?}");
    for line in &passed {
        assert!(line.contains(&format!("\"serial\":{BIG}")), "{line}");
    }
    assert!(passed[0].contains(&format!("\"precise\":{PRECISE}")), "{}", passed[0]);
    let first_window = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|m| m["type"] == "WINDOW_AGGREGATE" && m["ts"] == json!(1_700_000_000_000i64))
        .unwrap_or_else(|| panic!("no result for the first window: {lines:#?}"));
    assert_eq!(first_window["data"]["count"], json!(2));
    assert_eq!(first_window["data"]["sum"].as_f64(), Some(0.1f64 + 0.2f64));
    assert_eq!(first_window["data"]["serial"].to_string(), BIG);
}

/// `[[[…0…]]]`, `n` deep, as text.
fn nested(n: usize) -> String {
    format!("{}0{}", "[".repeat(n), "]".repeat(n))
}

/// Past 127 levels (serde_json's limit) a line is refused with the line number and the limit; a
/// message at the limit is taken, and the node (whose SDK parses with the same limit) reads it.
#[test]
fn nesting_past_the_limit_is_refused_naming_the_limit_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "check",
        "nodes": [{"id": "check", "module": "check-fields", "config": {"messageNames": ["v"]}},
                  {"id": "out", "sink": "output"}],
        "connections": [{"from": "check", "to": "out", "relation": "True"},
                        {"from": "check", "to": "out", "relation": "Failure"}]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    // Line 3: the message object, `data`, then 125 arrays: 127 levels in all.
    let input = format!(
        "{{\"deviceName\":\"d\",\"v\":1}}\n{{\"deviceName\":\"d\",\"v\":{}}}\n{{\"deviceName\":\"d\",\"v\":{}}}\n",
        nested(200),
        nested(125)
    );
    let input = write(dir.path(), "in.jsonl", &input);
    let output = dir.path().join("out.jsonl");
    let out =
        sluice(&["run", "--chain", &chain, "--input", &input, "--output", output.to_str().unwrap(), "--no-state"]);
    let err = stderr(&out);
    assert!(err.contains("in.jsonl line 2: not JSON: nesting deeper than 127 levels"), "{err}");
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("\"error\"")), "a node could not read a message: {lines:#?}");
    assert!(lines[1].contains(&nested(125)), "{}", lines[1]);
}

/// `sluice rules new` writes a `rule-sdk` path that exists for the binary as found: beside it in
/// a checkout, `$SLUICE_SDK_PATH`, an installed `share/sluice/rule-sdk`; and a clear error for a
/// lone copy of the binary — never the directory it was built in.
#[test]
fn a_scaffolded_crate_depends_on_an_sdk_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = repo().join("rule-sdk").canonicalize().unwrap();
    let sdk_dep = |crate_dir: &Path| {
        let toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
        toml.lines().find(|l| l.starts_with("sluice-sdk")).unwrap().to_string()
    };
    let new = |bin: &Path, name: &str, sdk_env: Option<&Path>| {
        let mut cmd = Command::new(bin);
        cmd.args(["rules", "new", name, "--dir", dir.path().to_str().unwrap()]).env_remove("SLUICE_SDK_PATH");
        if let Some(sdk) = sdk_env {
            cmd.env("SLUICE_SDK_PATH", sdk);
        }
        cmd.output().unwrap()
    };

    // The binary in this checkout's target/: the checkout's SDK.
    let out = new(sluice_bin(), "in-checkout", None);
    assert!(out.status.success(), "{}", stderr(&out));
    let crate_dir = dir.path().join("in-checkout");
    assert_eq!(sdk_dep(&crate_dir), format!("sluice-sdk = {{ path = \"{}\" }}", sdk.display()));
    let ignore = std::fs::read_to_string(crate_dir.join(".gitignore")).unwrap();
    for entry in ["/target/", "/data/", "/out/"] {
        assert!(ignore.lines().any(|l| l == entry), "{entry} not in .gitignore:\n{ignore}");
    }

    // A copy of the binary elsewhere: no SDK beside it.
    let bin_dir = dir.path().join("copy").join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let copy = bin_dir.join("sluice");
    std::fs::copy(sluice_bin(), &copy).unwrap();
    let out = new(&copy, "lone", None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("set $SLUICE_SDK_PATH to the `rule-sdk` directory"), "{}", stderr(&out));
    assert!(!dir.path().join("lone").exists());

    // … told where it is.
    let out = new(&copy, "told", Some(&repo().join("rule-sdk")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sdk_dep(&dir.path().join("told")), format!("sluice-sdk = {{ path = \"{}\" }}", sdk.display()));
    let out = new(&copy, "told-wrong", Some(Path::new("/nonexistent/rule-sdk")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("$SLUICE_SDK_PATH is /nonexistent/rule-sdk, which is not a sluice-sdk crate"));

    // … installed as PREFIX/bin/sluice with PREFIX/share/sluice/rule-sdk.
    let share = dir.path().join("copy").join("share").join("sluice");
    std::fs::create_dir_all(&share).unwrap();
    std::os::unix::fs::symlink(&sdk, share.join("rule-sdk")).unwrap();
    let out = new(&copy, "installed", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sdk_dep(&dir.path().join("installed")), format!("sluice-sdk = {{ path = \"{}\" }}", sdk.display()));
}

/// A TBEL-only body is refused naming `config.script`, saying TBEL syntax is not supported and
/// which construct it met, where.
#[test]
fn a_tbel_only_body_is_refused_naming_the_construct() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("var sum = 0;\nforeach (v : msg.values) { sum += v; }\nreturn sum > 10;", "`foreach`", "line 2"),
        (
            "var out = [:];\nout.put('t', msg.t);\nreturn {msg: out, metadata: metadata, msgType: msgType};",
            "`[:]`",
            "line 1",
        ),
        ("def twice(x) { return x * 2; }\nreturn twice(msg.t) > 1;", "`def`", "line 1"),
    ];
    for (body, construct, line) in cases {
        let mode = if body.contains("msgType") { "transform" } else { "filter" };
        let chain = json!({"entry": "s", "nodes": [
            {"id": "s", "module": "script", "config": {"mode": mode, "lang": "tbel", "script": body}}]});
        let chain = write(dir.path(), "chain.json", &chain.to_string());
        let out = sluice(&["validate", &chain]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(&format!("{chain}: node `s`: field `config.script`: ")), "{err}");
        assert!(err.contains("TBEL syntax is not supported"), "{err}");
        assert!(err.contains(&format!("{construct} (")) && err.contains(line), "{err}");
        assert!(!err.contains("config field"), "the field is named twice: {err}");
    }
}
