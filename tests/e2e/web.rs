//! The web view in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver, through `fantoccini`), against `sluice run --admin` reading stdin. The page
//! must draw every node and connection of the chain, count messages as they flow, and show a
//! failing node's failed message with its error when the node is clicked. A screenshot is kept
//! in `target/test-artifacts/web-view.png`.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::support::{modules, repo, sluice_bin, stderr};
use crate::tansu::free_port;

/// A process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` lines for zones 0–2; every tenth has a payload that is not JSON (the decoder fails it).
fn lines(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            let payload = if i % 10 == 0 {
                "{not json".to_string()
            } else {
                json!({"deviceName": format!("zone-{}", i % 3), "speed": (i % 37) as f64}).to_string()
            };
            format!(
                "{}\n",
                json!({"ts": 1_700_000_000_000i64 + i as i64 * 100, "deviceName": "gw", "payload": payload})
            )
        })
        .collect()
}

/// The number a node's counter starts with (`"120 in · 4/s"` → 120).
fn count(text: &str) -> u64 {
    text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn the_web_view_draws_the_chain_counts_live_and_shows_a_failing_nodes_failures() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "decode",
        "nodes": [
            {"id": "decode", "module": "json-decoder", "config": {}},
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["speed"]}},
            {"id": "avg", "module": "window-aggregate", "config": {
                "key": "originator", "value": "data.speed",
                "window": {"type": "tumbling", "sizeMs": 1000}, "aggregates": ["avg", "count"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "decode", "to": "check", "relation": "Success"},
            {"from": "decode", "to": "out", "relation": "Failure"},
            {"from": "check", "to": "avg", "relation": "True"},
            {"from": "check", "to": "out", "relation": "False"},
            {"from": "avg", "to": "out", "relation": "Success"}
        ]
    });
    let chain_file = dir.path().join("chain.json");
    std::fs::write(&chain_file, chain.to_string()).unwrap();

    // The service, with a token: the browser gets it once from `/?token=`, as a cookie.
    let admin = format!("127.0.0.1:{}", free_port());
    let mut run = Killed(
        Command::new(sluice_bin())
            .args(["run", "--chain", chain_file.to_str().unwrap(), "--no-state", "--no-watch"])
            .args(["--output", dir.path().join("out.jsonl").to_str().unwrap(), "--admin", &admin])
            .args(["--admin-token", "web-s3cret"])
            .env("SLUICE_MODULES", modules())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice"),
    );
    wait_for_port(&admin, "the admin endpoint");
    let mut input = run.0.stdin.take().unwrap();
    input.write_all(lines(0, 100).as_bytes()).unwrap();
    input.flush().unwrap();

    let driver_port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh installs Debian's chromium-driver)"),
    );
    wait_for_port(&format!("127.0.0.1:{driver_port}"), "chromedriver");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shot = runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("a WebDriver session");
        let result = async {
            client.goto(&format!("http://{admin}/?token=web-s3cret")).await?;
            let wait = Duration::from_secs(20);
            client.wait().at_most(wait).for_element(Locator::Css("#node-out")).await?;

            // Every node and every connection of the chain, drawn.
            let mut drawn = Vec::new();
            for node in client.find_all(Locator::Css("g.node")).await? {
                drawn.push(node.attr("data-node").await?.unwrap_or_default());
            }
            drawn.sort();
            assert_eq!(drawn, ["avg", "check", "decode", "out"]);
            let mut edges = Vec::new();
            for edge in client.find_all(Locator::Css("g.edge")).await? {
                let from = edge.attr("data-from").await?.unwrap_or_default();
                let to = edge.attr("data-to").await?.unwrap_or_default();
                let relation = edge.attr("data-relation").await?.unwrap_or_default();
                edges.push((from, to, relation));
            }
            edges.sort();
            let mut expected: Vec<(String, String, String)> = chain["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["from"].as_str().unwrap().into(), c["to"].as_str().unwrap().into(), c["relation"].as_str().unwrap().into()))
                .collect();
            expected.sort();
            assert_eq!(edges, expected);

            // The decoder's counter shows the first 100, then rises as 100 more flow.
            let counter = Locator::Css("#node-decode .count");
            let deadline = Instant::now() + wait;
            let first = loop {
                let n = count(&client.find(counter).await?.text().await?);
                if n >= 100 || Instant::now() > deadline {
                    break n;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(first, 100, "the decoder's counter after 100 lines");
            input.write_all(lines(100, 100).as_bytes()).unwrap();
            input.flush().unwrap();
            let deadline = Instant::now() + wait;
            loop {
                let n = count(&client.find(counter).await?.text().await?);
                if n == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "the counter stayed at {n}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let failing = client.find(Locator::Css("#node-decode")).await?;
            assert!(failing.attr("class").await?.unwrap_or_default().contains("failing"), "failures are highlighted");

            // A click on the failing node: its failures, with the failed message and the error.
            failing.click().await?;
            let failure = client.wait().at_most(wait).for_element(Locator::Css("#failures .error")).await?;
            let error = failure.text().await?;
            assert!(!error.is_empty(), "the failure's error");
            let failures = client.find(Locator::Css("#failures")).await?.text().await?;
            assert!(failures.contains("{not json"), "the failed message: {failures}");
            let config = client.find(Locator::Css("#panel pre")).await?.text().await?;
            assert!(config.contains("{}"), "the node's config: {config}");

            // The window node's chart: one line per zone and numeric field, drawn from its outputs.
            client.find(Locator::Css("#node-avg")).await?.click().await?;
            client.wait().at_most(wait).for_element(Locator::Css("#chart-svg polyline")).await?;
            let mut lines = Vec::new();
            for line in client.find_all(Locator::Css("#chart-svg polyline")).await? {
                lines.push(line.attr("data-key").await?.unwrap_or_default());
            }
            assert!(lines.iter().any(|k| k.starts_with("zone-") && k.ends_with(" avg")), "{lines:?}");
            client.screenshot().await
        }
        .await;
        client.close().await.ok();
        result
    });
    let shot = shot.unwrap_or_else(|e| panic!("the browser: {e}"));
    let artifacts = repo().join("target").join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("web-view.png"), shot).unwrap();

    drop(input);
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not end when its input did");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::mem::replace(&mut run.0, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
