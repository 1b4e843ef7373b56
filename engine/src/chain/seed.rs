//! Table seeds: the rows a chain's `tables` put into its host tables when it starts — a device
//! registry, the entity relations `sluice import --relations` writes. Read when the chain
//! loads (a malformed line refuses the chain, naming the seed file and the line), applied by
//! [`TableSeed::apply`] once the last checkpoint is restored: a seeded row goes in only when the
//! table does not hold its key, so state a chain built while running is never overwritten by
//! its seed, and a restart or reload re-seeds only rows that were never there (or were deleted:
//! a seed is the table's starting point, not a constraint).
//!
//! A seed file is JSON Lines, one row a line: `{"key": "DEVICE:T-1", "value": {…}}`. Blank
//! lines are skipped; a key may appear once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::error::{FileError, LoadError, LoadErrorKind};
use crate::state::table::Tables;

/// The rows of one table's seed, read from `file`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSeed {
    pub table: String,
    pub file: PathBuf,
    pub rows: Vec<(String, Value)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    key: String,
    value: Value,
}

impl TableSeed {
    /// Reads the seed of `table` from `file` (the chain file `chain` names it in `field`).
    pub fn read(chain: &Path, field: &str, table: &str, file: &Path) -> Result<TableSeed, LoadError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            LoadError::new(
                chain,
                LoadErrorKind::File(FileError::Invalid(format!("seed `{}` cannot be read: {e}", file.display()))),
            )
            .field(field)
        })?;
        Self::parse(table, file, &text)
    }

    /// Parses seed text; errors name `file` and the line.
    pub fn parse(table: &str, file: &Path, text: &str) -> Result<TableSeed, LoadError> {
        let mut rows = Vec::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let at = |kind: FileError| LoadError::new(file, LoadErrorKind::File(kind)).at(format!("line {n}"));
            let row: Row = serde_json::from_str(line).map_err(|e| {
                let message = strip_position(&e.to_string());
                if e.is_syntax() || e.is_eof() {
                    // The syntax error says the line itself.
                    LoadError::new(
                        file,
                        LoadErrorKind::File(FileError::Syntax { line: n, column: e.column(), message }),
                    )
                } else {
                    at(FileError::Invalid(format!("expected {{\"key\": \"…\", \"value\": …}}: {message}")))
                }
            })?;
            if row.key.is_empty() {
                return Err(at(FileError::Invalid("the key is empty".into())).field("key"));
            }
            if let Some(first) = lines.insert(row.key.clone(), n) {
                return Err(
                    at(FileError::Invalid(format!("key `{}` is already on line {first}", row.key))).field("key")
                );
            }
            rows.push((row.key, row.value));
        }
        Ok(TableSeed { table: table.to_string(), file: file.to_path_buf(), rows })
    }

    /// Adds the rows `tables` does not hold; returns how many.
    pub fn apply(&self, tables: &Tables) -> usize {
        tables.seed(&self.table, &self.rows)
    }
}

/// Seeds every table of `seeds` in `tables`, logging how many rows each gained.
pub fn apply_all(seeds: &[TableSeed], tables: &Tables) {
    for seed in seeds {
        let added = seed.apply(tables);
        tracing::info!(table = %seed.table, file = %seed.file.display(), added, of = seed.rows.len(), "seeded table");
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<TableSeed, String> {
        TableSeed::parse("relations", Path::new("seeds/relations.jsonl"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_rows_skipping_blank_lines() {
        let seed = parse("{\"key\": \"a\", \"value\": {\"x\": 1}}\n\n  \n{\"key\": \"b\", \"value\": 2}\n").unwrap();
        assert_eq!(seed.rows, vec![("a".to_string(), json!({"x": 1})), ("b".to_string(), json!(2))]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        assert_eq!(
            parse("{\"key\": \"a\", \"value\": 1}\n{\"key\": \"b\", \"value\": \n").unwrap_err(),
            "seeds/relations.jsonl: invalid JSON at line 2, column 22: EOF while parsing a value"
        );
        assert_eq!(
            parse("\n{\"value\": 1}").unwrap_err(),
            "seeds/relations.jsonl: line 2: expected {\"key\": \"…\", \"value\": …}: missing field `key`"
        );
        assert_eq!(
            parse("{\"key\": \"a\", \"value\": 1}\n{\"key\": \"a\", \"value\": 2}").unwrap_err(),
            "seeds/relations.jsonl: line 2: field `key`: key `a` is already on line 1"
        );
        assert_eq!(
            parse("{\"key\": \"\", \"value\": 2}").unwrap_err(),
            "seeds/relations.jsonl: line 1: field `key`: the key is empty"
        );
    }
}
