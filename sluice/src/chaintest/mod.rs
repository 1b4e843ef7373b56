//! `sluice test`: whole chains tested as code.
//!
//! A rule has its native `TestDriver`; a chain — the rules wired together, their windows,
//! timers, state and connectors — needs the same, or it is only ever tested by deploying it.
//! A test file (`*.test.json` or `*.test.yaml`, see [`spec`]) names a chain and lists tests:
//! messages in, the virtual clock moved on, and expectations on what came out where. Each test
//! runs the chain from fresh state with the engine's own worker ([`run`]), so what passes here
//! is what `sluice run` does; only the clocks are virtual and the connectors captured.
//!
//! Output: one line per test, and for a failure the step, the field and what was found
//! ([`matching`]); exit code 1 when any test failed or could not run; `--junit FILE` for CI.

pub mod matching;
pub mod run;
pub mod spec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Runtime;

pub use run::{Failure, SetupError};
pub use spec::TestFile;

/// A test file that cannot be read as one.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", file.display())]
pub struct TestFileError {
    pub file: PathBuf,
    pub kind: sluice_core::located::FileError,
}

/// Reads a test file (JSON, or YAML by its extension). Errors name the file and the field's
/// path.
pub fn read(file: &Path) -> Result<TestFile, TestFileError> {
    let error = |kind| TestFileError { file: file.to_path_buf(), kind };
    let text = std::fs::read_to_string(file).map_err(|e| error(sluice_core::located::FileError::Io(e.to_string())))?;
    let yaml = matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let value: serde_json::Value = if yaml {
        serde_saphyr::from_str(&text)
            .map_err(|e| error(sluice_core::located::FileError::Invalid(format!("invalid YAML: {e}"))))?
    } else {
        serde_json::from_str(&text).map_err(|e| error(sluice_core::located::FileError::syntax(&e, e.to_string())))?
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("`{path}`: ") };
        error(sluice_core::located::FileError::Invalid(format!("{at}{}", e.inner())))
    })
}

/// Is `path` a test file, by its name?
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    [".test.json", ".test.yaml", ".test.yml"].iter().any(|s| name.ends_with(s))
}

/// The test files under `paths` (a file is taken as given; a directory is searched, skipping
/// hidden directories and `target`), in a stable order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.exists() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: no such file", path.display())));
        }
        let walk = walkdir::WalkDir::new(path).sort_by_file_name().into_iter().filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0 || !(e.file_type().is_dir() && (name.starts_with('.') || name == "target"))
        });
        for entry in walk {
            let entry = entry.map_err(std::io::Error::other)?;
            if entry.file_type().is_file() && is_test_file(entry.path()) {
                files.push(entry.into_path());
            }
        }
    }
    Ok(files)
}

/// How one test went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: PathBuf,
    pub name: String,
    pub result: Result<Option<Failure>, SetupError>,
    pub took: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self.result, Ok(None))
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only tests whose name contains this.
    pub filter: Option<String>,
}

/// Runs every test of `file`; a file that cannot be read is one failed outcome naming it.
pub fn run_file(
    runtime: &Arc<Runtime>,
    module_dirs: &[PathBuf],
    file: &Path,
    options: &Options,
    mut each: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let tests = match read(file) {
        Ok(tests) => tests,
        Err(e) => {
            let outcome = Outcome {
                file: file.to_path_buf(),
                name: "(the test file)".into(),
                result: Err(SetupError(e.kind.to_string())),
                took: Duration::ZERO,
            };
            each(&outcome);
            return vec![outcome];
        }
    };
    let mut outcomes = Vec::new();
    for test in &tests.tests {
        if options.filter.as_deref().is_some_and(|f| !test.name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let result = run::run(runtime, module_dirs, file, &tests.connectors, tests.chain.as_deref(), test);
        let outcome = Outcome { file: file.to_path_buf(), name: test.name.clone(), result, took: started.elapsed() };
        each(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}

/// One outcome as the lines `sluice test` prints.
pub fn render(outcome: &Outcome) -> String {
    let head = format!("{} › {} ({} ms)", outcome.file.display(), outcome.name, outcome.took.as_millis());
    match &outcome.result {
        Ok(None) => format!("ok    {head}"),
        Ok(Some(f)) => {
            let mut text = format!("FAIL  {head}\n      step {} ({}): {}", f.step, f.what, f.message);
            if let Some(found) = &f.found {
                for (i, line) in found.lines().enumerate() {
                    text.push_str(if i == 0 { "\n      found: " } else { "\n             " });
                    text.push_str(line);
                }
            }
            text
        }
        Err(e) => format!("ERROR {head}\n      {e}"),
    }
}

/// The outcomes as a JUnit XML report: a suite per test file, a case per test; a failed
/// expectation is a failure, a test that could not run an error.
pub fn junit(outcomes: &[Outcome]) -> Result<String, quick_junit::SerializeError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("sluice test");
    let mut files: Vec<&Path> = outcomes.iter().map(|o| o.file.as_path()).collect();
    files.dedup();
    for file in files {
        let mut suite = TestSuite::new(file.display().to_string());
        for outcome in outcomes.iter().filter(|o| o.file == file) {
            let status = match &outcome.result {
                Ok(None) => TestCaseStatus::success(),
                Ok(Some(_)) | Err(_) => {
                    let kind = if outcome.result.is_err() { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                    let mut status = TestCaseStatus::non_success(kind);
                    let text = render(outcome);
                    let message = text.lines().nth(1).unwrap_or_default().trim().to_string();
                    status.set_message(message).set_description(text);
                    status
                }
            };
            let mut case = TestCase::new(outcome.name.clone(), status);
            case.set_time(outcome.took).set_classname(file.display().to_string());
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string()
}
