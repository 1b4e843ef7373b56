//! Import errors: every one names the file, the node (by its index in the export, or its place
//! in a 1.x rule: `filters[1]`, `action`) and the field, as `LoadError` does for chains.

use std::fmt;
use std::path::PathBuf;

/// Why an export could not be imported. A node class Sluice lacks is *not* an error (it becomes
/// a placeholder, listed in the report); a file or a node that cannot be read is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    pub file: PathBuf,
    /// `node 3`, `filters[1]`, `action`, `ruleChains[2]`…
    pub at: Option<String>,
    /// A path inside the node or file: `configuration.topicPattern`, `connections[4].toIndex`.
    pub field: Option<String>,
    pub kind: ImportErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportErrorKind {
    #[error("cannot read: {0}")]
    Io(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0} unsupported node(s) and --strict (see the report)")]
    Strict(usize),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = &self.at {
            write!(f, ": {at}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl ImportError {
    pub(crate) fn new(file: impl Into<PathBuf>, kind: ImportErrorKind) -> Self {
        ImportError { file: file.into(), at: None, field: None, kind }
    }

    pub(crate) fn invalid(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(file, ImportErrorKind::Invalid(message.into()))
    }

    pub(crate) fn at(mut self, at: impl Into<String>) -> Self {
        self.at = Some(at.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
