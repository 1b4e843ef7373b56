//! Load errors: every one says which file, which node and which field.

use std::fmt;
use std::path::PathBuf;

/// Why a chain did not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The chain file (or the nested chain file) at fault.
    pub file: PathBuf,
    /// The node's id, when one node is at fault.
    pub node: Option<String>,
    /// The field, as a path (`entry`, `connections[2].to`, `config.keys[0]`).
    pub field: Option<String>,
    pub kind: LoadErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read: {0}")]
    Io(String),
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("module {module}: {message}")]
    Module { module: String, message: String },
    #[error("config rejected: {0}")]
    Config(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(node) = &self.node {
            write!(f, ": node `{node}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl LoadError {
    pub(crate) fn new(file: impl Into<PathBuf>, kind: LoadErrorKind) -> Self {
        LoadError { file: file.into(), node: None, field: None, kind }
    }

    pub(crate) fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
