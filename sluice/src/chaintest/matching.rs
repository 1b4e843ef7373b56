//! Does what came out match what the test expects?
//!
//! Partial by default: an expected object names only the fields it cares about, at any depth
//! (`{"data": {"avg": 4}}` passes whatever the id, the metadata and the other data fields are).
//! Arrays are compared element by element and must be as long. Numbers match within a
//! tolerance (an average is a float). `exact` also refuses fields the expectation does not name.
//!
//! A mismatch names the field by its path (`data.avg`), the value expected and the one found —
//! what a failing test prints.

use std::fmt;

use serde_json::Value;

/// Where and how an actual value differs from the expected one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The field's path from the compared value's root (`data.readings[2].v`; empty: the root).
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Values differ.
    Differs { expected: Value, actual: Value },
    /// The field is not there.
    Missing { expected: Value },
    /// `exact`: a field the expectation does not name.
    Unexpected { actual: Value },
    /// Arrays of different lengths.
    Length { expected: usize, actual: usize },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() { "the value".to_string() } else { format!("`{}`", self.path) };
        match &self.problem {
            Problem::Differs { expected, actual } => write!(f, "{at}: expected {expected}, got {actual}"),
            Problem::Missing { expected } => write!(f, "{at}: expected {expected}, but there is no such field"),
            Problem::Unexpected { actual } => write!(f, "{at}: not expected (exact), got {actual}"),
            Problem::Length { expected, actual } => {
                write!(f, "{at}: expected an array of {expected}, got one of {actual}")
            }
        }
    }
}

/// How values are compared.
#[derive(Debug, Clone, Copy)]
pub struct Matching {
    pub exact: bool,
    pub tolerance: f64,
}

impl Matching {
    /// `Ok` when `actual` matches `expected`; else the first difference, in document order.
    pub fn check(&self, expected: &Value, actual: &Value) -> Result<(), Mismatch> {
        self.at(String::new(), expected, actual)
    }

    fn at(&self, path: String, expected: &Value, actual: &Value) -> Result<(), Mismatch> {
        let differs = |path: String| {
            Err(Mismatch { path, problem: Problem::Differs { expected: expected.clone(), actual: actual.clone() } })
        };
        match (expected, actual) {
            (Value::Object(want), Value::Object(got)) => {
                for (key, value) in want {
                    let path = join(&path, key);
                    match got.get(key) {
                        Some(found) => self.at(path, value, found)?,
                        None => return Err(Mismatch { path, problem: Problem::Missing { expected: value.clone() } }),
                    }
                }
                if self.exact
                    && let Some((key, value)) = got.iter().find(|(k, _)| !want.contains_key(*k))
                {
                    return Err(Mismatch {
                        path: join(&path, key),
                        problem: Problem::Unexpected { actual: value.clone() },
                    });
                }
                Ok(())
            }
            (Value::Array(want), Value::Array(got)) => {
                if want.len() != got.len() {
                    return Err(Mismatch {
                        path,
                        problem: Problem::Length { expected: want.len(), actual: got.len() },
                    });
                }
                for (i, (w, g)) in want.iter().zip(got).enumerate() {
                    self.at(format!("{path}[{i}]"), w, g)?;
                }
                Ok(())
            }
            (Value::Number(want), Value::Number(got)) => {
                // Integers written alike are equal whatever their size; otherwise as floats.
                if want.to_string() == got.to_string() {
                    return Ok(());
                }
                match (want.as_f64(), got.as_f64()) {
                    (Some(w), Some(g)) if (w - g).abs() <= self.tolerance => Ok(()),
                    _ => differs(path),
                }
            }
            _ if expected == actual => Ok(()),
            _ => differs(path),
        }
    }
}

/// `path.key`, or `key` at the root.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PARTIAL: Matching = Matching { exact: false, tolerance: 1e-9 };
    const EXACT: Matching = Matching { exact: true, tolerance: 1e-9 };

    #[test]
    fn partial_matching_names_only_what_it_checks() {
        let actual = json!({"id": "x", "data": {"avg": 4.0, "n": 2}, "metadata": {"zone": "A"}});
        assert_eq!(PARTIAL.check(&json!({"data": {"avg": 4}}), &actual), Ok(()));
        let err = PARTIAL.check(&json!({"data": {"avg": 5}}), &actual).unwrap_err();
        assert_eq!(err.path, "data.avg");
        assert_eq!(err.to_string(), "`data.avg`: expected 5, got 4.0");
        let err = PARTIAL.check(&json!({"metadata": {"site": "B"}}), &actual).unwrap_err();
        assert_eq!(err.to_string(), "`metadata.site`: expected \"B\", but there is no such field");
    }

    #[test]
    fn exact_refuses_fields_not_named() {
        let actual = json!({"avg": 4, "n": 2});
        let err = EXACT.check(&json!({"avg": 4}), &actual).unwrap_err();
        assert_eq!(err.to_string(), "`n`: not expected (exact), got 2");
        assert_eq!(EXACT.check(&json!({"avg": 4, "n": 2}), &actual), Ok(()));
    }

    #[test]
    fn numbers_within_tolerance_arrays_by_length() {
        let loose = Matching { exact: false, tolerance: 0.01 };
        assert_eq!(loose.check(&json!(3.333), &json!(3.3333333)), Ok(()));
        assert!(PARTIAL.check(&json!(3.333), &json!(3.3333333)).is_err());
        assert_eq!(PARTIAL.check(&json!(12345678901234567890u64), &json!(12345678901234567890u64)), Ok(()));
        let err = PARTIAL.check(&json!({"v": [1, 2]}), &json!({"v": [1, 2, 3]})).unwrap_err();
        assert_eq!(err.to_string(), "`v`: expected an array of 2, got one of 3");
        let err = PARTIAL.check(&json!({"v": [1, {"a": 2}]}), &json!({"v": [1, {"a": 3}]})).unwrap_err();
        assert_eq!(err.path, "v[1].a");
        assert!(PARTIAL.check(&json!("3"), &json!(3)).is_err(), "a string is not a number");
    }
}
