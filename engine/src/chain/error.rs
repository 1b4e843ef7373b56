//! Load errors: every one says which file, which node and which field.

pub use crate::core::located::{Located, Place};

/// Why a chain did not load: where ([`Located`]: file, node, field), and what.
pub type LoadError = Located<LoadErrorKind>;

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
