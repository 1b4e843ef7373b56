//! `sluice-fuzz [--secs N] [--seed S] [TARGET…]`: fuzzes each target (default: all) for N
//! seconds (default 30, or `$SLUICE_FUZZ_SECS`) from its corpus in `fuzz/corpus/<target>/`,
//! prints executions and findings, writes failing inputs to `fuzz/artifacts/<target>/`, and
//! exits 1 when anything was found.

use std::time::Duration;

use sluice_fuzz::targets::{ALL, modules_built};
use sluice_fuzz::{corpus_dir, fuzz, install_panic_hook, load_corpus, repo_root};

fn main() {
    let mut secs: f64 = std::env::var("SLUICE_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30.0);
    let mut seed: u64 = std::env::var("SLUICE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => secs = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
            "-h" | "--help" => usage(),
            name => names.push(name.to_string()),
        }
    }
    let targets: Vec<_> = if names.is_empty() {
        ALL.iter().collect()
    } else {
        names.iter().map(|n| ALL.iter().find(|t| t.name == n.as_str()).unwrap_or_else(|| usage())).collect()
    };
    if !modules_built() {
        eprintln!("note: rules are not built (sluice rules build rules): chain-load cannot run node inits");
    }
    install_panic_hook();
    println!("seed {seed} ({secs} s per target)");
    let mut found = 0;
    for target in targets {
        let corpus = load_corpus(&corpus_dir(target.name));
        let report = fuzz(target, &corpus, Duration::from_secs_f64(secs), seed);
        println!(
            "{:<20} {:>9} execs ({:>7.0}/s), {} accepted, {} seeds, slowest {:?}, {} finding(s)",
            target.name,
            report.execs,
            report.execs as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.accepted,
            report.seeds,
            report.slowest,
            report.findings.len()
        );
        let artifacts = repo_root().join("fuzz").join("artifacts").join(target.name);
        for (i, finding) in report.findings.iter().enumerate() {
            let _ = std::fs::create_dir_all(&artifacts);
            let file = artifacts.join(format!("seed{seed}-{i}"));
            let _ = std::fs::write(&file, &finding.input);
            let reason: String = finding.reason.lines().take(6).collect::<Vec<_>>().join("\n    ");
            let reason: String = reason.chars().take(800).collect();
            println!("  FOUND ({}): {reason}", file.display());
        }
        found += report.findings.len();
    }
    std::process::exit(if found == 0 { 0 } else { 1 });
}

fn usage() -> ! {
    let names: Vec<_> = ALL.iter().map(|t| t.name).collect();
    eprintln!("usage: sluice-fuzz [--secs N] [--seed S] [TARGET…]; targets: {}", names.join(", "));
    std::process::exit(2)
}
