//! Hot reload under load: `sluice run` streams stdin while its chain file is rewritten 50 times
//! (valid and invalid versions mixed) and its module file replaced. Nothing may be lost or
//! doubled, invalid versions must never stop the stream, and state must carry over.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{modules, repo, sluice_bin};
use crate::tansu::free_port;

/// Version `k` of the chain: a counter (state per originator, stamped into `metadata.count`)
/// from `step.wasm`, then `rename-keys` renaming `v` to `v{k}`, so each output says which version
/// ran it.
fn valid(k: usize) -> String {
    json!({
        "name": format!("reload test v{k}"),
        "entry": "count",
        "nodes": [
            {"id": "count", "module": "step.wasm", "config": {"relation": "Success"}},
            {"id": "tag", "module": "rename-keys", "config": {"renameKeysMapping": {"v": format!("v{k}")}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "count", "to": "tag", "relation": "Success"},
            {"from": "tag", "to": "out", "relation": "Success"}
        ]
    })
    .to_string()
}

/// Broken versions, each broken differently: syntax, an unknown module, a config the node
/// refuses, a connection to nowhere.
fn invalid(k: usize) -> String {
    match k % 4 {
        0 => valid(k)[..40].to_string(),
        1 => valid(k).replace("rename-keys", "no-such-rule"),
        2 => valid(k).replace(&format!("{{\"v\":\"v{k}\"}}"), "5"),
        _ => valid(k).replace("\"to\":\"out\"", "\"to\":\"nowhere\""),
    }
}

/// `module` with a custom section appended: other bytes (another hash, so a new compile), the
/// same behaviour.
fn variant(module: &[u8], n: usize) -> Vec<u8> {
    let name = b"sluice-reload-test";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = module.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // < 128: one LEB128 byte
    out.extend_from_slice(&section);
    out
}

/// Writes like an editor: a temporary file renamed over the original.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("json.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn fifty_rewrites_while_streaming_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::fs::read(modules().join("counter.wasm")).unwrap();
    std::fs::write(dir.path().join("step.wasm"), &counter).unwrap();
    let chain = dir.path().join("chain.json");
    save(&chain, &valid(0));
    let output = dir.path().join("out.jsonl");
    let admin = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("sluice.log");
    let mut child = Command::new(sluice_bin())
        .args(["run", "--chain", chain.to_str().unwrap(), "--input", "-", "--output", output.to_str().unwrap()])
        .args(["--no-state", "--workers", "2", "--admin", &admin])
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start sluice");
    let mut stdin = child.stdin.take().unwrap();

    // Stream: four devices, one message every half millisecond, until the rewrites are done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let mut batch = String::new();
                for _ in 0..10 {
                    let device = format!("dev-{}", sent % 4);
                    batch.push_str(&format!(
                        "{{\"ts\": {}, \"deviceName\": \"{device}\", \"v\": {sent}}}\n",
                        1_700_000_000_000u64 + sent
                    ));
                    sent += 1;
                }
                stdin.write_all(batch.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(stdin);
            sent
        })
    };

    // 50 rewrites, every fourth one broken; every tenth also replaces the module. Each save waits
    // until the engine has taken it (reloaded or refused, as `/status` counts), so a busy machine
    // cannot fold two saves into one quiet period and skip a case.
    let status = || -> Value {
        let out = Command::new(sluice_bin()).args(["status", "--admin", &admin]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let counters = |s: &Value| (s["reloads"].as_u64().unwrap_or(0), s["failedReloads"].as_u64().unwrap_or(0));
    let wait_for = |reloads: u64, failed: u64| -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shown = status();
            let now = counters(&shown);
            if !shown.is_null() && now.0 >= reloads && now.1 >= failed {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the engine did not take a save: {now:?}, expected {reloads}/{failed}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut taken = wait_for(0, 0); // the engine is up (and watching)
    let mut applied = BTreeSet::new();
    let mut swaps = 0;
    let started = Instant::now();
    for k in 1..=50 {
        if k % 10 == 0 {
            let tmp = dir.path().join("step.wasm.tmp");
            std::fs::write(&tmp, variant(&counter, k)).unwrap();
            std::fs::rename(&tmp, dir.path().join("step.wasm")).unwrap();
            swaps += 1;
            taken = wait_for(taken.0 + 1, taken.1);
        }
        if k % 4 == 0 {
            save(&chain, &invalid(k / 4));
            taken = wait_for(taken.0, taken.1 + 1);
        } else {
            save(&chain, &valid(k));
            applied.insert(k);
            taken = wait_for(taken.0 + 1, taken.1);
        }
        // Let messages flow through this version.
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last word is a valid version, so the run ends on a known one.
    save(&chain, &valid(51));
    wait_for(taken.0 + 1, taken.1);
    std::thread::sleep(Duration::from_millis(200));
    let status = status();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = writer.join().unwrap();
    let exit = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{log}");
    let took = started.elapsed();

    // Everything out once: as many outputs as inputs, ids unique.
    let lines: Vec<Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, sent, "outputs vs inputs over {took:?}\n{log}");
    let ids: BTreeSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), lines.len(), "duplicate ids");

    // State carried over every reload and module swap: per device, the counter's stamps are
    // exactly 1..=n (none skipped, none repeated).
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in &lines {
        let count = l["metadata"]["count"].as_str().unwrap().parse().unwrap();
        counts.entry(l["originator"]["name"].as_str().unwrap().to_string()).or_default().push(count);
    }
    for (device, mut seen) in counts {
        seen.sort();
        let n = seen.len() as u64;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{device}: the counter's state was lost or doubled");
    }

    // New versions went live while the stream ran; broken ones never did.
    let versions: BTreeSet<usize> = lines
        .iter()
        .filter_map(|l| l["data"].as_object().unwrap().keys().find_map(|k| k.strip_prefix('v')?.parse().ok()))
        .collect();
    assert!(versions.iter().all(|v| *v == 0 || *v == 51 || applied.contains(v)), "{versions:?}");
    assert!(versions.contains(&51), "the last version is live: {versions:?}");
    assert!(
        versions.len() >= applied.len() / 2,
        "most valid versions ran messages while they were live: {versions:?}\n{log}"
    );
    assert!(log.contains("reload refused"), "{log}");
    for field in ["no-such-rule", "node `tag`", "nowhere"] {
        assert!(log.contains(field), "a refused reload names `{field}`:\n{log}");
    }

    // The admin endpoint saw it all.
    // One reload per valid save and module swap (38 + 1 + 5), one refusal per broken save (12):
    // never a reload loop (every reload reads the files it watches).
    let (reloads, failed) = counters(&status);
    let expected = applied.len() as u64 + 1 + swaps;
    assert!((expected..=expected + 3).contains(&reloads), "{reloads} reloads, expected {expected}: {status}");
    assert_eq!(failed, 12, "{status}");
    assert!(status["lastError"].is_null(), "the last version was valid: {status}");
}

/// `sluice reload` reports the error that kept the old version running, and SIGHUP reloads.
#[test]
fn explicit_reload_by_command_and_signal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("step.wasm"), std::fs::read(modules().join("counter.wasm")).unwrap()).unwrap();
    let chain = dir.path().join("chain.json");
    save(&chain, &valid(1));
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(sluice_bin())
        .args([
            "run",
            "--chain",
            chain.to_str().unwrap(),
            "--input",
            "-",
            "--no-state",
            "--no-watch",
            "--admin",
            &admin,
        ])
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let status = |args: &[&str]| Command::new(sluice_bin()).args(args).args(["--admin", &admin]).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status(&["status"]).status.success() {
        assert!(Instant::now() < deadline, "no admin endpoint");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Not watched: the edit waits for an explicit reload.
    save(&chain, &invalid(2));
    let refused = status(&["reload"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("chain.json") && err.contains("node `tag`"), "{err}");
    let shown: Value = serde_json::from_slice(&status(&["status"]).stdout).unwrap();
    assert_eq!(shown["generation"], 0);
    assert!(shown["lastError"]["message"].as_str().unwrap().contains("node `tag`"), "{shown}");

    save(&chain, &valid(3));
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown: Value = serde_json::from_slice(&status(&["status"]).stdout).unwrap();
        if shown["generation"] == 1 {
            assert!(shown["lastError"].is_null());
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}
