//! Every seed in `fuzz/corpus/` (the regression inputs of what the fuzzers found included) runs
//! through its target on every `cargo test`, with a short burst of fuzzing on top.

use std::time::Duration;

use sluice_fuzz::targets::ALL;
use sluice_fuzz::{corpus_dir, fuzz, install_panic_hook, load_corpus, run_one};

#[test]
fn every_seed_passes_its_target() {
    install_panic_hook();
    let mut failures = Vec::new();
    for target in ALL {
        let corpus = load_corpus(&corpus_dir(target.name));
        assert!(!corpus.is_empty(), "no seeds for {}", target.name);
        for (path, input) in &corpus {
            if let Err(reason) = run_one(target, input) {
                failures.push(format!("{}: {reason}", path.display()));
            }
        }
    }
    // The quiet hook keeps fuzz findings off stderr; this test's own verdict must be seen.
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_short_fuzz_of_each_target_finds_nothing() {
    install_panic_hook();
    for target in ALL {
        let corpus = load_corpus(&corpus_dir(target.name));
        let report = fuzz(target, &corpus, Duration::from_millis(300), 0x5eed);
        assert!(report.execs > 0);
        let found: Vec<_> = report.findings.iter().map(|f| f.reason.clone()).collect();
        assert!(found.is_empty(), "{}: {found:#?}", target.name);
    }
}
